"""Nova's NUMATopologyFilter: the guest's NUMA topology (hardware.numa_get_constraints on the
flavor and image) fits the host's cells (hardware.numa_fit_instance_to_host with the host's
NUMA limits), PCI devices with their NUMA affinity policy included. A request that asks no
topology passes every host; a host without a topology fails one that does.

The kernel's bound (numa_topology_filter.pxi) refuses, from per-host columns, the hosts that
cannot fit whatever the packing: too few cells, too few free dedicated CPUs in all or in any one
cell, no cell with enough shared CPUs. The hosts it passes get the exact fit (engine.numa), the
same function the reference runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters, numa
from placecheck_engine.model import Host, Request
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.pci_passthrough_filter import request_pci
from placecheck_engine.verdict import Rejection

NUMA_NO_HOST_TOPOLOGY = numa.NUMA_NO_HOST_TOPOLOGY


@dataclass(frozen=True, eq=False)
class NumaParams:
    request: Request  # numa.decide reads its raw CPU policy values
    profile: object  # engine.config.Profile: the fit reads its packing strategy and default ratios
    topology: numa.GuestTopology
    pci_requests: tuple
    guest_cells: int
    dedicated_total: int  # dedicated vCPUs over all guest cells
    dedicated_cell_max: int  # the most dedicated vCPUs one guest cell has
    shared_cell_max: int  # the most shared vCPUs one guest cell has


def guest_demands(request, profile) -> tuple[numa.GuestTopology | None, tuple]:
    """The guest topology and PCI requests Nova's API builds for the request (InvalidField where
    it refuses them, which it does whichever filters run: engine.decide calls this for every request)."""
    return numa.guest_topology(request, profile), request_pci(request, profile)


def host_for_fit(columns, row: int, profile) -> Host:
    """The row as the fit reads it: its cells, pools and NUMA limits."""
    cpu_ratio, ram_ratio = (float(columns.arrays[name][row]) for name in ("numa_cpu_ratio", "numa_ram_ratio"))
    return Host(columns.host_name(row), numa_cells=columns.numa_cells_at(row), pci_pools=columns.pci_pools_at(row),
                cpu_allocation_ratio=profile.cpu_allocation_ratio if math.isnan(cpu_ratio) else cpu_ratio,
                ram_allocation_ratio=profile.ram_allocation_ratio if math.isnan(ram_ratio) else ram_ratio)


def decide_after(host: Host, params: NumaParams, placed: int) -> numa.Fit | numa.Misfit:
    """numa.decide for one more instance on a host that already took `placed` of this request's."""
    for _ in range(placed):
        fitted = numa.decide(host, params.request, params.topology, params.pci_requests, params.profile)
        if not isinstance(fitted, numa.Fit):
            return fitted
        host = numa.consume(host, fitted)
    return numa.decide(host, params.request, params.topology, params.pci_requests, params.profile)


class NUMATopologyFilter(Rule):
    name = "NUMATopologyFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        topology, pci_requests = guest_demands(request, profile)
        if topology is None:
            return [Active(self, self.name, None)]
        cells = topology.cells
        return [Active(self, self.name, NumaParams(
            request, profile, topology, pci_requests, len(cells), sum(len(cell.pcpus) for cell in cells),
            max(len(cell.pcpus) for cell in cells), max(len(cell.cpus) for cell in cells)))]

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        params: NumaParams = active.params
        if params is None:
            return 0
        arrays = columns.arrays
        candidates = np.empty(stop - start, dtype=np.int32)
        passing = _fastfilters.scan_numa_bound(
            arrays["numa_cell_count"], arrays["numa_free_pcpus"], arrays["numa_max_free_pcpus"],
            arrays["numa_max_cpus"], params.guest_cells, params.dedicated_total, params.dedicated_cell_max,
            params.shared_cell_max, fail_bits, bit, start, stop, placed, candidates)
        refused = (stop - start) - passing
        mask = np.uint64(1 << bit)
        for row in candidates[:passing].tolist():
            if not isinstance(decide_after(host_for_fit(columns, row, params.profile), params, placed), numa.Fit):
                fail_bits[row] |= mask
                refused += 1
        return refused

    def explain(self, active, columns, row, placed) -> Rejection:
        params: NumaParams = active.params
        misfit = decide_after(host_for_fit(columns, row, params.profile), params, placed)
        return Rejection(active.name, misfit.reason, misfit.explanation)

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        topology, pci_requests = guest_demands(request, profile)
        if topology is None:
            return True
        params = NumaParams(request, profile, topology, pci_requests, 0, 0, 0, 0)
        return isinstance(decide_after(host, params, placed), numa.Fit)
