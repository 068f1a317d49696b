"""Nova's request filter packed_virtqueue_filter: a packed virtqueue (flavor
`hw:virtio_packed_ring` or image `hw_virtio_packed_ring` true) needs COMPUTE_NET_VIRTIO_PACKED.

Always on in Nova. Both set with opposite values is Nova's FlavorImageConflict: InvalidField.
"""
from __future__ import annotations

from placecheck_engine.rules.request_filter_traits import (FlavorImageValue, RequestFilterTraits, TraitOrigins,
                                                image_properties)

NO_PACKED_VIRTQUEUE_SUPPORT = "NO_PACKED_VIRTQUEUE_SUPPORT"


class PackedVirtqueueFilter(RequestFilterTraits):
    name = "packed_virtqueue_filter"
    reason = NO_PACKED_VIRTQUEUE_SUPPORT

    def required_traits(self, request, profile) -> TraitOrigins:
        packed_ring = FlavorImageValue.of("virtio_packed_ring", request, image_properties(request))
        if not packed_ring.unique_bool():
            return {}
        return {"COMPUTE_NET_VIRTIO_PACKED": (packed_ring.origin(),)}
