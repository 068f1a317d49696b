"""Nova's SameHostFilter: with a same_host hint, the host runs at least one of those instances."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

NOT_WITH_SAME_HOST_INSTANCES = "NOT_WITH_SAME_HOST_INSTANCES"


@dataclass(frozen=True, eq=False)
class InstanceHintParams:
    uuids: frozenset[str]
    rows: np.ndarray  # sorted rows of the hosts running any of them


class InstanceHintRule(Rule):
    """A rule on the hosts running the instances of one scheduler hint (same_host, different_host)."""

    hint: str  # the SchedulerHints field

    def compile(self, request, columns, profile) -> list[Active]:
        uuids = frozenset(getattr(request.scheduler_hints, self.hint))
        if not uuids:
            return [Active(self, self.name, None)]
        return [Active(self, self.name, InstanceHintParams(uuids, columns.rows_of_instances(uuids)))]


class SameHostFilter(InstanceHintRule):
    name = "SameHostFilter"
    hint = "same_host"

    def kernel(self, active, columns):
        return _fastfilters.OnlyRowsKernel(active.params.rows, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        return Rejection(active.name, NOT_WITH_SAME_HOST_INSTANCES,
                         f"the host runs none of the same_host instances: {listed(active.params.uuids)}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        uuids = set(request.scheduler_hints.same_host)
        return not uuids or bool(uuids & set(host.instances))
