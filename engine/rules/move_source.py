"""MoveSource (placecheck's, not Nova's): a move may not land on its source host.

Nova keeps the source out by putting it in ignore_hosts, except for a resize with
allow_resize_to_same_host and a cold migration whose source has the trait
COMPUTE_SAME_HOST_COLD_MIGRATE (nova-scheduler.md section 1.3). Nova's host manager matches
ignored hosts case-insensitively, so a source named COMPUTE-B keeps out compute-b. An unshelved
instance was offloaded: it has no source to keep out, and may land on the host it left."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import Operation
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import sorted_rows
from placecheck_engine.verdict import Rejection

DESTINATION_IS_SOURCE = "DESTINATION_IS_SOURCE"
SAME_HOST_COLD_MIGRATE_TRAIT = "COMPUTE_SAME_HOST_COLD_MIGRATE"


@dataclass(frozen=True, eq=False)
class SourceParams:
    operation: Operation
    source_host: str
    rows: np.ndarray  # the source's row, if it is in the fleet


def rows_named_in_any_case(columns, name: str) -> np.ndarray:
    """Rows of the hosts whose names equal `name` ignoring case (a per-generation index)."""
    def index(columns) -> dict[str, list[int]]:
        rows_by_folded_name = {}
        for row in range(columns.host_count):
            rows_by_folded_name.setdefault(columns.host_name(row).lower(), []).append(row)
        return rows_by_folded_name
    return sorted_rows(columns.derived("rows_by_folded_name", index).get(name.lower(), []))


class MoveSource(Rule):
    name = "MoveSource"

    def compile(self, request, columns, profile) -> list[Active]:
        operation, source = request.operation, request.source_host
        if not operation.leaves_a_host or not source:
            return [Active(self, self.name, None)]
        if operation is Operation.RESIZE and profile.allow_resize_to_same_host:
            return [Active(self, self.name, None)]
        rows = rows_named_in_any_case(columns, source)
        if (operation is Operation.COLD_MIGRATE
                and any(columns.has_trait(row, SAME_HOST_COLD_MIGRATE_TRAIT) for row in rows.tolist())):
            return [Active(self, self.name, None)]
        return [Active(self, self.name, SourceParams(operation, source, rows))]

    def kernel(self, active, columns):
        return _fastfilters.ListedRowsKernel(active.params.rows, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: SourceParams = active.params
        why = {
            Operation.RESIZE: "stays only with allow_resize_to_same_host",
            Operation.COLD_MIGRATE: f"stays only when the source has trait {SAME_HOST_COLD_MIGRATE_TRAIT}",
        }.get(params.operation, "always leaves its host")
        return Rejection(active.name, DESTINATION_IS_SOURCE,
                         f"{params.source_host} is the instance's source host: {params.operation.value} {why}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        operation, source = request.operation, request.source_host.lower()
        if not operation.leaves_a_host or host.name.lower() != source:
            return True
        if operation is Operation.RESIZE:
            return profile.allow_resize_to_same_host
        if operation is Operation.COLD_MIGRATE:
            return any(SAME_HOST_COLD_MIGRATE_TRAIT in other.traits
                       for other in fleet.hosts if other.name.lower() == source)
        return False
