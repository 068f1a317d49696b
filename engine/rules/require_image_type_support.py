"""Nova's request filter require_image_type_support: the host must support the image's disk format.

With `[scheduler] query_placement_for_image_type_support`, Nova requires the trait
COMPUTE_IMAGE_TYPE_<DISK_FORMAT> (a qcow2 image needs COMPUTE_IMAGE_TYPE_QCOW2). It adds nothing
for a boot from volume (no disk_format here), or when os-traits has no such trait (Nova logs an
error and goes on without it).
"""
from __future__ import annotations

from placecheck_engine.rules.request_filter_traits import STANDARD_TRAITS, RequestFilterTraits, TraitOrigins

IMAGE_TYPE_NOT_SUPPORTED = "IMAGE_TYPE_NOT_SUPPORTED"


class RequireImageTypeSupport(RequestFilterTraits):
    name = "require_image_type_support"
    reason = IMAGE_TYPE_NOT_SUPPORTED

    def required_traits(self, request, profile) -> TraitOrigins:
        if not profile.query_placement_for_image_type_support or request.image is None:
            return {}
        disk_format = request.image.disk_format
        trait = f"COMPUTE_IMAGE_TYPE_{disk_format.upper()}"
        if not disk_format or trait not in STANDARD_TRAITS:
            return {}
        return {trait: (f"image disk_format={disk_format}",)}
