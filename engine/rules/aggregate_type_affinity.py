"""Nova's AggregateTypeAffinityFilter: where aggregates set `instance_type` (comma lists of
flavor names), the flavor's name must be in one of them."""
from __future__ import annotations

from placecheck_engine.rules.aggregate_metadata import AggregateMetadataRule, aggregate_values_from_key
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

INSTANCE_TYPE_KEY = "instance_type"
FLAVOR_NOT_IN_AGGREGATE_TYPES = "FLAVOR_NOT_IN_AGGREGATE_TYPES"


class AggregateTypeAffinityFilter(AggregateMetadataRule):
    name = "AggregateTypeAffinityFilter"

    def verdict_key(self, request, profile) -> str:
        return request.flavor.name

    def passes_value(self, metadatas, request, profile, columns) -> bool:
        values = aggregate_values_from_key(metadatas, INSTANCE_TYPE_KEY)
        return not values or any(request.flavor.name in [name.strip() for name in value.split(",")]
                                 for value in values)

    def explain(self, active, columns, row, placed) -> Rejection:
        values = aggregate_values_from_key(self.value_of(columns, row), INSTANCE_TYPE_KEY)
        return Rejection(active.name, FLAVOR_NOT_IN_AGGREGATE_TYPES,
                         f"flavor {active.params.request.flavor.name!r} is not in the aggregates' "
                         f"{INSTANCE_TYPE_KEY} {listed(values)}")
