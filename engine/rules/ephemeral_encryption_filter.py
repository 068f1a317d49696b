"""Nova's request filter ephemeral_encryption_filter: encrypted ephemeral storage (flavor
`hw:ephemeral_encryption` or image `hw_ephemeral_encryption` true) needs
COMPUTE_EPHEMERAL_ENCRYPTION, and with a format (`hw:ephemeral_encryption_format` /
`hw_ephemeral_encryption_format`: plain, luks, luksv2) COMPUTE_EPHEMERAL_ENCRYPTION_<FORMAT> too.

Always on in Nova. A flavor and image that disagree, or an unknown format, is InvalidField.
"""
from __future__ import annotations

from placecheck_engine.nova_fields import BLOCK_DEVICE_ENCRYPTION_FORMAT
from placecheck_engine.rules.request_filter_traits import (FlavorImageValue, RequestFilterTraits, TraitOrigins,
                                                image_properties)

NO_EPHEMERAL_ENCRYPTION_SUPPORT = "NO_EPHEMERAL_ENCRYPTION_SUPPORT"


class EphemeralEncryptionFilter(RequestFilterTraits):
    name = "ephemeral_encryption_filter"
    reason = NO_EPHEMERAL_ENCRYPTION_SUPPORT

    def required_traits(self, request, profile) -> TraitOrigins:
        properties = image_properties(request)
        encryption = FlavorImageValue.of("ephemeral_encryption", request, properties)
        if not encryption.unique_bool():
            return {}
        origins = {"COMPUTE_EPHEMERAL_ENCRYPTION": (encryption.origin(),)}
        encryption_format = FlavorImageValue.of("ephemeral_encryption_format", request, properties)
        chosen = encryption_format.unique()
        if chosen:
            if chosen not in BLOCK_DEVICE_ENCRYPTION_FORMAT.valid:
                raise encryption_format.invalid(chosen, BLOCK_DEVICE_ENCRYPTION_FORMAT)
            origins[f"COMPUTE_EPHEMERAL_ENCRYPTION_{chosen.upper()}"] = (encryption_format.origin(),)
        return origins
