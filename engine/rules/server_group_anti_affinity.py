"""Nova's ServerGroupAntiAffinityFilter: fewer than max_server_per_host group members on the host.

As in Nova, the host already running the requested instance passes (resize to the same host).
`placed` members this request already put on a host count as members there."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import GroupPolicy
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

TOO_MANY_GROUP_MEMBERS = "TOO_MANY_GROUP_MEMBERS"


@dataclass(frozen=True, eq=False)
class AntiAffinityParams:
    member_rows: np.ndarray  # sorted rows running at least one member
    member_counts: np.ndarray  # distinct members on each of member_rows
    exempt_rows: np.ndarray  # rows already running the requested instance
    max_per_host: int


def _exempt_rows(request, columns) -> np.ndarray:
    return (columns.rows_of_instances([request.instance_uuid]) if request.instance_uuid
            else np.empty(0, dtype=np.int32)).astype(np.int32)


class ServerGroupAntiAffinityFilter(Rule):
    name = "ServerGroupAntiAffinityFilter"
    reads_instance_uuid = True  # a host already running the instance is exempt

    def compile(self, request, columns, profile) -> list[Active]:
        group = request.server_group
        if group is None or group.policy is not GroupPolicy.ANTI_AFFINITY:
            return [Active(self, self.name, None)]
        # A row once per distinct member it runs, so each member counts once per host.
        member_rows, member_counts = np.unique(columns.instance_rows(group.members), return_counts=True)
        return [Active(self, self.name, AntiAffinityParams(
            member_rows.astype(np.int32), member_counts.astype(np.int32),
            _exempt_rows(request, columns), int(group.max_server_per_host)))]

    def for_instance(self, active, request, columns, profile) -> Active:
        # Only the exempt rows depend on the instance; the members' rows stay.
        if active.params is None:
            return active
        return Active(self, self.name, dataclasses.replace(active.params, exempt_rows=_exempt_rows(request, columns)))

    def kernel(self, active, columns):
        params: AntiAffinityParams = active.params
        return _fastfilters.AntiAffinityKernel(params.member_rows, params.member_counts, params.exempt_rows,
                                               params.max_per_host, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: AntiAffinityParams = active.params
        position = np.searchsorted(params.member_rows, row)
        members = (int(params.member_counts[position])
                   if position < len(params.member_rows) and params.member_rows[position] == row
                   else 0)
        already = f" + {placed} placed here by this request" if placed else ""
        return Rejection(active.name, TOO_MANY_GROUP_MEMBERS,
                         f"{members}{already} anti-affinity group members on the host, "
                         f"max_server_per_host {params.max_per_host}",
                         {"actual": members + placed, "limit": params.max_per_host})

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        group = request.server_group
        if group is None or group.policy is not GroupPolicy.ANTI_AFFINITY:
            return True
        if request.instance_uuid and request.instance_uuid in host.instances:
            return True
        return len(set(host.instances) & set(group.members)) + placed < group.max_server_per_host
