"""Nova's DifferentHostFilter: with a different_host hint, the host runs none of those instances."""
from __future__ import annotations

from placecheck_engine import _fastfilters
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.rules.same_host import InstanceHintRule
from placecheck_engine.verdict import Rejection

RUNS_DIFFERENT_HOST_INSTANCE = "RUNS_DIFFERENT_HOST_INSTANCE"


class DifferentHostFilter(InstanceHintRule):
    name = "DifferentHostFilter"
    hint = "different_host"

    def kernel(self, active, columns):
        return _fastfilters.ListedRowsKernel(active.params.rows, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        here = active.params.uuids & set(columns.instances_of(row))
        return Rejection(active.name, RUNS_DIFFERENT_HOST_INSTANCE,
                         f"the host runs different_host instances: {listed(here)}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return not set(request.scheduler_hints.different_host) & set(host.instances)
