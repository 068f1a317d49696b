"""Nova's ServerGroupAffinityFilter: an affinity group with hosts keeps its members on them.

For multi-instance selection the caller adds each chosen host to the group, so `placed`
plays no part here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import GroupPolicy
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import listed, rows_of_hosts
from placecheck_engine.verdict import Rejection

NOT_ON_GROUP_HOST = "NOT_ON_GROUP_HOST"


@dataclass(frozen=True, eq=False)
class GroupHostsParams:
    hosts: tuple[str, ...]
    rows: np.ndarray  # sorted rows of the group's hosts that are in the fleet


class ServerGroupAffinityFilter(Rule):
    name = "ServerGroupAffinityFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        group = request.server_group
        if group is None or group.policy is not GroupPolicy.AFFINITY or not group.hosts:
            return [Active(self, self.name, None)]
        return [Active(self, self.name,
                       GroupHostsParams(tuple(group.hosts), rows_of_hosts(columns, group.hosts)))]

    def kernel(self, active, columns):
        return _fastfilters.OnlyRowsKernel(active.params.rows, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        return Rejection(active.name, NOT_ON_GROUP_HOST,
                         f"the affinity group's members run on {listed(set(active.params.hosts))}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        group = request.server_group
        if group is None or group.policy is not GroupPolicy.AFFINITY or not group.hosts:
            return True
        return host.name in group.hosts
