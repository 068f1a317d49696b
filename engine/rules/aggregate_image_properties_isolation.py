"""Nova's AggregateImagePropertiesIsolation: for every metadata key of the host's aggregates
(only keys under `namespace + separator` when a namespace is configured), an image property of
that name, when set and true, must be one of the key's comma-split values.

The properties are ImageMetaProps' (engine.image_meta): a name it has no field for never
conflicts, and a value is compared as str() of Nova's typed value ("True", "4", "x86_64"), so a
false boolean or a zero integer is never compared at all."""
from __future__ import annotations

from placecheck_engine.columns import aggregate_metadata_get_by_host
from placecheck_engine.image_meta import image_meta_props
from placecheck_engine.rules.aggregate_metadata import AggregateMetadataRule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

IMAGE_PROPERTY_NOT_IN_AGGREGATE = "IMAGE_PROPERTY_NOT_IN_AGGREGATE"


def first_conflict(metadatas, properties: dict[str, object], profile) -> tuple[str, str, set[str]] | None:
    """(key, str() of the image's value, the aggregates' values) of the first conflicting property, or None."""
    namespace = profile.aggregate_image_properties_isolation_namespace
    prefix = namespace + profile.aggregate_image_properties_isolation_separator
    for key, options in aggregate_metadata_get_by_host(metadatas).items():
        if namespace and not key.startswith(prefix):
            continue
        prop = properties.get(key)
        if prop and str(prop) not in options:
            return key, str(prop), options
    return None


class AggregateImagePropertiesIsolation(AggregateMetadataRule):
    name = "AggregateImagePropertiesIsolation"

    def engages(self, request, profile) -> bool:
        return request.image is not None and any(image_meta_props(request.image.properties).values())

    def verdict_key(self, request, profile) -> tuple:
        # The raw properties decide the typed ones.
        return (tuple(request.image.properties.items()),
                profile.aggregate_image_properties_isolation_namespace,
                profile.aggregate_image_properties_isolation_separator)

    def passes_value(self, metadatas, request, profile, columns) -> bool:
        return first_conflict(metadatas, image_meta_props(request.image.properties), profile) is None

    def explain(self, active, columns, row, placed) -> Rejection:
        key, prop, options = first_conflict(self.value_of(columns, row),
                                            image_meta_props(active.params.request.image.properties),
                                            active.params.profile)
        return Rejection(active.name, IMAGE_PROPERTY_NOT_IN_AGGREGATE,
                         f"image property {key}={prop!r} is not among the aggregates' {key} {listed(options)}")
