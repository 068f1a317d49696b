"""MoveSource (placecheck's, not Nova's): a move may not land on its source host.

Nova keeps the source out by putting it in ignore_hosts, except for a resize with
allow_resize_to_same_host and a cold migration whose source has the trait
COMPUTE_SAME_HOST_COLD_MIGRATE (nova-scheduler.md section 1.3)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import _fastfilters
from engine.model import Operation
from engine.rules.base import Active, Rule
from engine.rules.host_rows import rows_of_hosts
from engine.verdict import Rejection

DESTINATION_IS_SOURCE = "DESTINATION_IS_SOURCE"
SAME_HOST_COLD_MIGRATE_TRAIT = "COMPUTE_SAME_HOST_COLD_MIGRATE"


@dataclass(frozen=True, eq=False)
class SourceParams:
    operation: Operation
    source_host: str
    rows: np.ndarray  # the source's row, if it is in the fleet


class MoveSource(Rule):
    name = "MoveSource"

    def compile(self, request, columns, profile) -> list[Active]:
        operation, source = request.operation, request.source_host
        if not operation.is_move or not source:
            return [Active(self, self.name, None)]
        if operation is Operation.RESIZE and profile.allow_resize_to_same_host:
            return [Active(self, self.name, None)]
        rows = rows_of_hosts(columns, [source])
        if (operation is Operation.COLD_MIGRATE and len(rows)
                and columns.has_trait(int(rows[0]), SAME_HOST_COLD_MIGRATE_TRAIT)):
            return [Active(self, self.name, None)]
        return [Active(self, self.name, SourceParams(operation, source, rows))]

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        if active.params is None:
            return 0
        return _fastfilters.scan_listed_rows(active.params.rows, fail_bits, bit, start, stop)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: SourceParams = active.params
        why = {
            Operation.RESIZE: "stays only with allow_resize_to_same_host",
            Operation.COLD_MIGRATE: f"stays only when the source has trait {SAME_HOST_COLD_MIGRATE_TRAIT}",
        }.get(params.operation, "always leaves its host")
        return Rejection(active.name, DESTINATION_IS_SOURCE,
                         f"{params.source_host} is the instance's source host: {params.operation.value} {why}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        operation = request.operation
        if not operation.is_move or host.name != request.source_host:
            return True
        if operation is Operation.RESIZE:
            return profile.allow_resize_to_same_host
        if operation is Operation.COLD_MIGRATE:
            return SAME_HOST_COLD_MIGRATE_TRAIT in host.traits
        return False
