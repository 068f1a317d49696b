"""Nova's AggregateImagePropertiesIsolation: for every metadata key of the host's aggregates
(only keys under `namespace + separator` when a namespace is configured), an image property of
that name, when set, must be one of the key's comma-split values."""
from __future__ import annotations

from engine.columns import aggregate_metadata_get_by_host
from engine.rules.aggregate_metadata import AggregateMetadataRule
from engine.rules.host_rows import listed
from engine.verdict import Rejection

IMAGE_PROPERTY_NOT_IN_AGGREGATE = "IMAGE_PROPERTY_NOT_IN_AGGREGATE"


def first_conflict(metadatas, properties: dict[str, str], profile) -> tuple[str, str, set[str]] | None:
    """(key, the image's value, the aggregates' values) of the first conflicting property, or None."""
    namespace = profile.aggregate_image_properties_isolation_namespace
    prefix = namespace + profile.aggregate_image_properties_isolation_separator
    for key, options in aggregate_metadata_get_by_host(metadatas).items():
        if namespace and not key.startswith(prefix):
            continue
        prop = properties.get(key)
        if prop and str(prop) not in options:
            return key, prop, options
    return None


class AggregateImagePropertiesIsolation(AggregateMetadataRule):
    name = "AggregateImagePropertiesIsolation"

    def engages(self, request, profile) -> bool:
        return request.image is not None and any(request.image.properties.values())

    def passes_value(self, metadatas, request, profile, columns) -> bool:
        return first_conflict(metadatas, request.image.properties, profile) is None

    def explain(self, active, columns, row, placed) -> Rejection:
        key, prop, options = first_conflict(self.value_of(columns, row), active.params.request.image.properties,
                                            active.params.profile)
        return Rejection(active.name, IMAGE_PROPERTY_NOT_IN_AGGREGATE,
                         f"image property {key}={prop!r} is not among the aggregates' {key} {listed(options)}")
