"""Rules decided per distinct value of a dictionary-encoded host attribute.

A host column such as `aggregate_set_id` or `host_profile_id` numbers each host's value
among the fleet's distinct values. A rule built on it writes only its predicate on one
value: compile evaluates it once per distinct value (Python work per request and value,
never per host) and the kernel broadcasts the verdicts over hosts through the ids. A rule
whose predicate reads only a few repeating request values (verdict_key) decides them once per
snapshot generation and key (Columns.memo).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Hashable, Sequence

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule


@dataclass(frozen=True, eq=False)
class ValueVerdicts:
    refused_by_value: np.ndarray  # uint8 per distinct value: 1 where the value fails the rule
    request: Any = None  # what the verdicts were decided for, for explanations
    profile: Any = None


class ValueTableRule(Rule):
    id_column: ClassVar[str]  # int32 [n]: each host's index into distinct_values(columns)

    def distinct_values(self, columns) -> Sequence:
        raise NotImplementedError

    def engages(self, request, profile) -> bool:
        """False when the request cannot refuse any host (then nothing is evaluated)."""
        return True

    def passes_value(self, value, request, profile, columns) -> bool:
        raise NotImplementedError

    def verdict_key(self, request, profile) -> Hashable | None:
        """Everything of the request and profile that passes_value reads, when it is a few values
        that repeat across requests (a project, a flavor, an image): the verdicts are then
        decided once per key and snapshot generation. None: decided per request."""
        return None

    def compile(self, request, columns, profile) -> list[Active]:
        if not self.engages(request, profile):
            return [Active(self, self.name, None)]
        key = self.verdict_key(request, profile)
        if key is None:
            refused = self._refused_values(request, columns, profile)
        else:
            refused = columns.memo(self.name, key, lambda: self._refused_values(request, columns, profile))
        return [Active(self, self.name, None if refused is None else ValueVerdicts(refused, request, profile))]

    def _refused_values(self, request, columns, profile) -> np.ndarray | None:
        """uint8 per distinct value, 1 where it fails; None when none does."""
        values = self.distinct_values(columns)
        refused = np.fromiter((not self.passes_value(value, request, profile, columns) for value in values),
                              dtype=np.uint8, count=len(values))
        return refused if refused.any() else None

    def kernel(self, active, columns):
        return _fastfilters.RefusedValuesKernel(columns.arrays[self.id_column], active.params.refused_by_value)

    def value_of(self, columns, row: int) -> Any:
        return self.distinct_values(columns)[int(columns.arrays[self.id_column][row])]


@dataclass(frozen=True, eq=False)
class ValueLimits:
    limit_by_value: np.ndarray  # int64 per distinct value
    # The one limit of every value (no aggregate sets its own, say), else None. The scan then
    # compares with it and reads no value ids: a third of the time of a table lookup per row.
    uniform_limit: int | None = None
    # Otherwise, when kept across requests (ValueLimitRule.limit_key): int64 per row, each row's
    # limit looked up once, so the scan compares two columns (a third of the time of a table
    # lookup per row). A row whose value id is outside the table, only in a damaged segment,
    # takes INT64_MIN: refused, as the table lookup refuses it.
    limit_of_row: np.ndarray | None = None


class ValueLimitRule(Rule):
    """count + placed < limit, the limit chosen per distinct value of `id_column`."""

    id_column: ClassVar[str]
    count_column: ClassVar[str]  # int32 [n]

    def distinct_values(self, columns) -> Sequence:
        raise NotImplementedError

    def limit_of_value(self, value, request, profile) -> int:
        raise NotImplementedError

    def limit_key(self, request, profile) -> Hashable | None:
        """As ValueTableRule.verdict_key, for what limit_of_value reads."""
        return None

    def compile(self, request, columns, profile) -> list[Active]:
        key = self.limit_key(request, profile)
        if key is None:
            return [Active(self, self.name, self._limits(request, columns, profile, False))]
        return [Active(self, self.name, columns.memo(self.name, key,
                                                     lambda: self._limits(request, columns, profile, True)))]

    def _limits(self, request, columns, profile, kept: bool) -> ValueLimits:
        values = self.distinct_values(columns)
        limits = np.fromiter((self.limit_of_value(value, request, profile) for value in values),
                             dtype=np.int64, count=len(values))
        if len(limits) > 0 and bool((limits == limits[0]).all()):
            return ValueLimits(limits, int(limits[0]))
        return ValueLimits(limits, limit_of_row=self._limit_of_row(columns, limits) if kept else None)

    def _limit_of_row(self, columns, limits: np.ndarray) -> np.ndarray:
        value_ids = columns.arrays[self.id_column]
        limit_of_row = np.full(len(value_ids), np.iinfo(np.int64).min)
        in_table = (value_ids >= 0) & (value_ids < len(limits))
        limit_of_row[in_table] = limits[value_ids[in_table]]
        return limit_of_row

    def kernel(self, active, columns):
        params: ValueLimits = active.params
        counts = columns.arrays[self.count_column]
        if params.uniform_limit is not None:
            return _fastfilters.CountBelowKernel(counts, params.uniform_limit)
        if params.limit_of_row is not None:
            return _fastfilters.CountBelowRowLimitKernel(counts, params.limit_of_row)
        return _fastfilters.CountBelowValueLimitKernel(counts, columns.arrays[self.id_column], params.limit_by_value)

    def limit_of_row(self, active, columns, row: int) -> int:
        return int(active.params.limit_by_value[columns.arrays[self.id_column][row]])
