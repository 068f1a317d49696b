"""Nova's request filter accelerators_filter: a flavor with a device profile needs a compute
service that handles accelerator requests (the trait COMPUTE_ACCELERATORS).

Always on in Nova. Only the trait is checked here: the device profile's resource groups live in
Cyborg, which placecheck does not hold.
"""
from __future__ import annotations

from placecheck_engine.rules.request_filter_traits import RequestFilterTraits, TraitOrigins

NO_ACCELERATOR_SUPPORT = "NO_ACCELERATOR_SUPPORT"
DEVICE_PROFILE_SPEC = "accel:device_profile"


class AcceleratorsFilter(RequestFilterTraits):
    name = "accelerators_filter"
    reason = NO_ACCELERATOR_SUPPORT

    def required_traits(self, request, profile) -> TraitOrigins:
        device_profile = request.flavor.extra_specs.get(DEVICE_PROFILE_SPEC)
        if not device_profile:
            return {}
        return {"COMPUTE_ACCELERATORS": (f"flavor {DEVICE_PROFILE_SPEC}={device_profile}",)}
