"""Nova's AggregateMultiTenancyIsolation: a host in aggregates whose metadata keys start with
`filter_tenant_id` takes only the projects listed there (united over keys and aggregates).

A request without a project (an empty project_id) is Nova's project_id None, which is no
listed project, not even an empty `filter_tenant_id` value: such hosts refuse it."""
from __future__ import annotations

from placecheck_engine.columns import aggregate_metadata_get_by_host
from placecheck_engine.rules.aggregate_metadata import AggregateMetadataRule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

TENANT_KEY_PREFIX = "filter_tenant_id"
PROJECT_NOT_IN_AGGREGATE_TENANTS = "PROJECT_NOT_IN_AGGREGATE_TENANTS"


def allowed_projects(metadatas) -> set[str]:
    """Every project listed under a filter_tenant_id* key; empty when the host is unrestricted."""
    return {project for key, projects in aggregate_metadata_get_by_host(metadatas).items()
            if key.startswith(TENANT_KEY_PREFIX) for project in projects}


class AggregateMultiTenancyIsolation(AggregateMetadataRule):
    name = "AggregateMultiTenancyIsolation"

    def verdict_key(self, request, profile) -> str:
        return request.project_id

    def passes_value(self, metadatas, request, profile, columns) -> bool:
        projects = allowed_projects(metadatas)
        return not projects or (bool(request.project_id) and request.project_id in projects)

    def explain(self, active, columns, row, placed) -> Rejection:
        projects = allowed_projects(self.value_of(columns, row))
        project_id = active.params.request.project_id
        project = f"project {project_id!r} is" if project_id else "a request without a project is"
        return Rejection(active.name, PROJECT_NOT_IN_AGGREGATE_TENANTS,
                         f"{project} not among the host's aggregate tenants: {listed(projects)}")
