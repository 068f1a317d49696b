"""Nova's request filter compute_status_filter (always on): the trait COMPUTE_STATUS_DISABLED,
which Nova's compute service sets on its node while the service is disabled, is a forbidden
trait of every request. ForbiddenTraits' mask and kernel, with this one trait."""
from __future__ import annotations

from placecheck_engine.rules.base import Active
from placecheck_engine.rules.forbidden_traits import ForbiddenTraits
from placecheck_engine.rules.required_traits import compile_trait_mask
from placecheck_engine.verdict import Rejection

COMPUTE_STATUS_DISABLED = "COMPUTE_STATUS_DISABLED"  # the trait (os_traits) and the reason code
STATUS_TRAITS = frozenset({COMPUTE_STATUS_DISABLED})


class ComputeStatusFilter(ForbiddenTraits):
    name = "compute_status_filter"

    def compile(self, request, columns, profile) -> list[Active]:
        return [compile_trait_mask(self, STATUS_TRAITS, columns)]

    def explain(self, active, columns, row, placed) -> Rejection:
        return Rejection(active.name, COMPUTE_STATUS_DISABLED,
                         f"the host has the trait {COMPUTE_STATUS_DISABLED}: "
                         f"its compute service is disabled")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return COMPUTE_STATUS_DISABLED not in host.traits
