"""Nova's request filter require_tenant_aggregate ([scheduler] limit_tenants_to_placement_aggregate):
the host must be in one of the aggregates that name the project, a Placement member_of.

Nova asks its database for the aggregates having a metadata entry whose value *equals* the
project id (not comma-split, unlike AggregateMultiTenancyIsolation) and keeps those whose matching
entry's key starts with `filter_tenant_id`: an entry `filter_tenant_id=other` next to
`owner=p1` does not make an aggregate p1's. When no aggregate names the project, nothing is
required, unless `placement_aggregate_required_for_tenants` is set: then Nova fails the request
("No hosts available for tenant") and every host is refused here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import InvalidField
from placecheck_engine.rules.aggregate_multitenancy_isolation import TENANT_KEY_PREFIX
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.member_of import aggregate_mask
from placecheck_engine.verdict import Rejection

NOT_IN_TENANT_AGGREGATE = "NOT_IN_TENANT_AGGREGATE"
NO_TENANT_AGGREGATE = "NO_TENANT_AGGREGATE"


def tenant_aggregate_ids(aggregates, project_id: str) -> frozenset[int]:
    """Ids of the (id, metadata) aggregates with a `filter_tenant_id*` entry equal to the project."""
    return frozenset(aggregate_id for aggregate_id, metadata in aggregates
                     if any(key.startswith(TENANT_KEY_PREFIX) and value == project_id
                            for key, value in metadata.items()))


def fleet_aggregates(columns):
    """Every aggregate of the snapshot as (id, metadata), hosts or not."""
    return zip(columns.dicts["aggregates"], columns.dicts["aggregate_metadata"])


@dataclass(frozen=True, eq=False)
class TenantAggregates:
    project_id: str
    aggregate_ids: frozenset[int]  # empty: no aggregate names the project
    set_masks: np.ndarray  # uint64 [1, aggregate words]: one member_of set


def _project(request) -> str:
    # Nova's lookup asserts on a missing project (get_by_metadata with neither key nor value):
    # the request fails in the scheduler, so there is no answer to give.
    if not request.project_id:
        raise InvalidField("request.project_id",
                           "limit_tenants_to_placement_aggregate needs the project: "
                           "Nova's require_tenant_aggregate fails without one")
    return request.project_id


class RequireTenantAggregate(Rule):
    name = "require_tenant_aggregate"

    def compile(self, request, columns, profile) -> list[Active]:
        if not profile.limit_tenants_to_placement_aggregate:
            return [Active(self, self.name, None)]
        project_id = _project(request)
        params = columns.memo(self.name, project_id, lambda: self._params(project_id, columns))
        if not params.aggregate_ids and not profile.placement_aggregate_required_for_tenants:
            return [Active(self, self.name, None)]
        return [Active(self, self.name, params)]

    @staticmethod
    def _params(project_id, columns) -> TenantAggregates:
        ids = tenant_aggregate_ids(fleet_aggregates(columns), project_id)
        return TenantAggregates(project_id, ids, aggregate_mask(columns, ids)[np.newaxis, :])

    def kernel(self, active, columns):
        params: TenantAggregates = active.params
        if not params.aggregate_ids:
            return _fastfilters.RefuseEveryRow(columns.host_count)
        return _fastfilters.MemberOfKernel(columns.arrays["aggregates"], params.set_masks)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: TenantAggregates = active.params
        if not params.aggregate_ids:
            return Rejection(active.name, NO_TENANT_AGGREGATE,
                             f"no aggregate names project {params.project_id!r} under a "
                             f"{TENANT_KEY_PREFIX}* key, and placement_aggregate_required_for_tenants "
                             f"is set")
        ids = ", ".join(map(str, sorted(params.aggregate_ids)))
        return Rejection(active.name, NOT_IN_TENANT_AGGREGATE,
                         f"the host is in none of project {params.project_id!r}'s aggregates "
                         f"({TENANT_KEY_PREFIX}*): {ids}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        if not profile.limit_tenants_to_placement_aggregate:
            return True
        ids = tenant_aggregate_ids(((agg.id, agg.metadata) for agg in fleet.aggregates), _project(request))
        if not ids:
            return not profile.placement_aggregate_required_for_tenants
        return any(agg.id in ids for agg in fleet.aggregates_of(host.name))
