"""Nova's AggregateInstanceExtraSpecsFilter: every flavor extra spec without a scope, or scoped
`aggregate_instance_extra_specs:`, needs its key in the host's aggregate metadata and one of the
comma-split values to satisfy extra_specs_ops.match."""
from __future__ import annotations

from placecheck_engine.columns import aggregate_metadata_get_by_host
from placecheck_engine.model import InvalidField
from placecheck_engine.rules.aggregate_metadata import AggregateMetadataRule
from placecheck_engine.rules.extra_specs_ops import match, requirement_problem
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

SCOPE = "aggregate_instance_extra_specs"
MISSING_AGGREGATE_METADATA = "MISSING_AGGREGATE_METADATA"
AGGREGATE_METADATA_MISMATCH = "AGGREGATE_METADATA_MISMATCH"


def considered_specs(extra_specs: dict[str, str]) -> list[tuple[str, str]]:
    """(metadata key, requirement) for the specs this filter reads, in the flavor's order:
    unscoped specs and those scoped `aggregate_instance_extra_specs:`; other scopes are ignored."""
    specs = []
    for key, req in extra_specs.items():
        scope, colon, name = key.partition(":")
        if colon and scope != SCOPE:
            continue
        if problem := requirement_problem(req):
            raise InvalidField(f"request.flavor.extra_specs[{key}]", problem)
        specs.append((name if colon else key, req))
    return specs


def matches_any(values: set[str], req: str) -> bool:
    """Nova stops at the first matching value. A value float() cannot read raises in Nova and
    fails the whole request; here it only does not match, so the other hosts are still answered."""
    for value in values:
        try:
            if match(value, req):
                return True
        except ValueError:
            continue
    return False


def first_failure(metadatas, extra_specs) -> tuple[str, str, set[str]] | None:
    """(key, requirement, the host's values for it) of the first spec the host fails, or None."""
    metadata = aggregate_metadata_get_by_host(metadatas)
    for key, req in considered_specs(extra_specs):
        values = metadata.get(key)
        if not values or not matches_any(values, req):
            return key, req, values or set()
    return None


class AggregateInstanceExtraSpecsFilter(AggregateMetadataRule):
    name = "AggregateInstanceExtraSpecsFilter"

    def engages(self, request, profile) -> bool:
        return bool(considered_specs(request.flavor.extra_specs))

    def verdict_key(self, request, profile) -> tuple:
        return tuple(considered_specs(request.flavor.extra_specs))

    def passes_value(self, metadatas, request, profile, columns) -> bool:
        return first_failure(metadatas, request.flavor.extra_specs) is None

    def explain(self, active, columns, row, placed) -> Rejection:
        key, req, values = first_failure(self.value_of(columns, row), active.params.request.flavor.extra_specs)
        if not values:
            return Rejection(active.name, MISSING_AGGREGATE_METADATA,
                             f"extra spec {key}={req!r}: no aggregate of the host has metadata {key!r}")
        return Rejection(active.name, AGGREGATE_METADATA_MISMATCH,
                         f"extra spec {key}={req!r}: the aggregates' {key} {listed(values)} do not match")
