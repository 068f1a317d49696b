"""Nova's request filter virtio_sound_filter: a virtio sound device (flavor `hw:sound_model` or
image `hw_sound_model` = virtio) needs COMPUTE_SOUND_MODEL_VIRTIO.

Always on in Nova. A flavor and image that disagree, or an unknown model, is InvalidField.
"""
from __future__ import annotations

from placecheck_engine.nova_fields import SOUND_MODEL
from placecheck_engine.rules.request_filter_traits import (FlavorImageValue, RequestFilterTraits, TraitOrigins,
                                                image_properties)

NO_VIRTIO_SOUND_SUPPORT = "NO_VIRTIO_SOUND_SUPPORT"


class VirtioSoundFilter(RequestFilterTraits):
    name = "virtio_sound_filter"
    reason = NO_VIRTIO_SOUND_SUPPORT

    def required_traits(self, request, profile) -> TraitOrigins:
        sound = FlavorImageValue.of("sound_model", request, image_properties(request))
        model = sound.unique()
        if model and model not in SOUND_MODEL.valid:
            raise sound.invalid(model, SOUND_MODEL)
        if model != "virtio":
            return {}
        return {"COMPUTE_SOUND_MODEL_VIRTIO": (sound.origin(),)}
