"""Nova's request filter transform_image_metadata: image properties become required traits.

With `[scheduler] image_metadata_prefilter`, each of these image properties requires the trait
<prefix>_<VALUE> (the typed value upper-cased, `-` as `_`): `hw_disk_bus=scsi` needs
COMPUTE_STORAGE_BUS_SCSI. As in Nova, one computed name os-traits does not define drops them all:
the filter then adds nothing (so any `hw_viommu_model`, whose traits os-traits names
COMPUTE_VIOMMU_MODEL_*, not COMPUTE_VIOMMU_*, and `hw_architecture=armv7l` turn it off).
"""
from __future__ import annotations

from placecheck_engine.rules.request_filter_traits import (STANDARD_TRAITS, RequestFilterTraits, TraitOrigins,
                                                image_properties)

MISSING_IMAGE_METADATA_TRAIT = "MISSING_IMAGE_METADATA_TRAIT"

# Nova's prefix_map, in its order.
TRAIT_PREFIXES = {
    "hw_cdrom_bus": "COMPUTE_STORAGE_BUS",
    "hw_disk_bus": "COMPUTE_STORAGE_BUS",
    "hw_video_model": "COMPUTE_GRAPHICS_MODEL",
    "hw_vif_model": "COMPUTE_NET_VIF_MODEL",
    "hw_architecture": "HW_ARCH",
    "hw_emulation_architecture": "COMPUTE_ARCH",
    "hw_viommu_model": "COMPUTE_VIOMMU",
}


class TransformImageMetadata(RequestFilterTraits):
    name = "transform_image_metadata"
    reason = MISSING_IMAGE_METADATA_TRAIT

    def required_traits(self, request, profile) -> TraitOrigins:
        if not profile.image_metadata_prefilter:
            return {}
        properties = image_properties(request)
        origins: TraitOrigins = {}
        for key, prefix in TRAIT_PREFIXES.items():
            if key not in properties:
                continue
            value = str(properties[key])
            trait = f"{prefix}_{value.replace('-', '_').upper()}"
            if trait not in STANDARD_TRAITS:
                return {}
            origins[trait] = origins.get(trait, ()) + (f"image {key}={value}",)
        return origins
