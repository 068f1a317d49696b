"""Placement's member_of: for every requested set, the host is in at least one of its aggregates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

NOT_IN_REQUIRED_AGGREGATE = "NOT_IN_REQUIRED_AGGREGATE"


@dataclass(frozen=True, eq=False)
class MemberOfParams:
    sets: tuple[frozenset[int], ...]
    set_masks: np.ndarray  # uint64 [sets, aggregate words]; ids not in the fleet have no bit


def aggregate_mask(columns, aggregate_ids) -> np.ndarray:
    mask = np.zeros(columns.arrays["aggregates"].shape[1], dtype=np.uint64)
    for aggregate_id in aggregate_ids:
        bit = columns.aggregate_bit(aggregate_id)
        if bit is not None:
            mask[bit // 64] |= np.uint64(1 << (bit % 64))
    return mask


class MemberOf(Rule):
    name = "MemberOf"

    def compile(self, request, columns, profile) -> list[Active]:
        if not request.member_of:
            return [Active(self, self.name, None)]
        sets = tuple(request.member_of)
        return [Active(self, self.name, columns.memo(self.name, sets, lambda: MemberOfParams(
            sets, np.stack([aggregate_mask(columns, ids) for ids in sets]))))]

    def kernel(self, active, columns):
        return _fastfilters.MemberOfKernel(columns.arrays["aggregates"], active.params.set_masks)

    def explain(self, active, columns, row, placed) -> Rejection:
        host_aggregates = set(columns.aggregates_of(row))
        unmet = [sorted(ids) for ids in active.params.sets if not ids & host_aggregates]
        sets = "; ".join("any of " + ", ".join(map(str, ids)) for ids in unmet)
        return Rejection(active.name, NOT_IN_REQUIRED_AGGREGATE,
                         f"the host is not in a required aggregate: {sets}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        host_aggregates = {agg.id for agg in fleet.aggregates_of(host.name)}
        return all(ids & host_aggregates for ids in request.member_of)
