"""Rules that keep a host count strictly below a configured limit (IoOpsFilter, NumInstancesFilter)."""
from __future__ import annotations

from typing import ClassVar

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection


class CountLimitRule(Rule):
    column: ClassVar[str]  # the host field and the Columns array of the same name
    limit_option: ClassVar[str]  # the Profile field holding the limit
    reason: ClassVar[str]

    def compile(self, request, columns, profile) -> list[Active]:
        return [Active(self, self.name, int(getattr(profile, self.limit_option)))]

    def kernel(self, active, columns):
        return _fastfilters.CountBelowKernel(columns.arrays[self.column], active.params)

    def explain(self, active, columns, row, placed) -> Rejection:
        value = int(columns.arrays[self.column][row])
        already = f" + {placed} placed here by this request" if placed else ""
        return Rejection(active.name, self.reason,
                         f"{self.column} {value}{already} is not below "
                         f"{self.limit_option} {active.params}",
                         {"actual": value + placed, "limit": active.params})

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return getattr(host, self.column) + placed < getattr(profile, self.limit_option)
