"""Nova's ComputeFilter: the host's compute service is enabled and up."""
from __future__ import annotations

from placecheck_engine import _fastfilters
from placecheck_engine.columns import FLAG_ENABLED
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

SERVICE_DISABLED = "SERVICE_DISABLED"
SERVICE_DOWN = "SERVICE_DOWN"


class ComputeFilter(Rule):
    name = "ComputeFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        return [Active(self, self.name, True)]

    def kernel(self, active, columns):
        return _fastfilters.ComputeFilterKernel(columns.arrays["flags"])

    def explain(self, active, columns, row, placed) -> Rejection:
        # Nova looks at disabled first and only then asks whether the service is up.
        if not columns.arrays["flags"][row] & FLAG_ENABLED:
            return Rejection(active.name, SERVICE_DISABLED, "the compute service is disabled")
        return Rejection(active.name, SERVICE_DOWN,
                         "the compute service has not been heard from in a while")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return host.enabled and host.up
