"""Nova's NUMATopologyFilter: the guest's NUMA topology (hardware.numa_get_constraints on the
flavor and image) fits the host's cells (hardware.numa_fit_instance_to_host with the host's
NUMA limits), PCI devices with their NUMA affinity policy included. A request that asks no
topology passes every host; a host without a topology fails one that does.

Three steps, one answer (engine.numa.decide's, which the reference runs):
- the kernel's bound (scan_numa_bound) refuses, from per-host columns, the hosts that cannot fit
  whatever the packing: too few cells, too few free dedicated CPUs in all or in any one cell, no
  cell with enough shared CPUs;
- the compiled fit (numa_fit_rows) answers for the rest from the per-cell columns: Nova's search
  step for step, reduced to pass or fail;
- engine.numa.decide, in Python, answers the rows the compiled fit leaves undecided (the cells fit
  and PCI devices must be found near them; topologies beyond its bounds) and every row of a
  multi-instance pick that already holds instances of the request (their use is not in the columns).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters, numa, pci
from placecheck_engine.model import Host, Request
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.pci_passthrough_filter import pool_kinds, request_pci
from placecheck_engine.verdict import Rejection

# The reasons are engine.numa's NUMA_* codes: its fit says which check refused a guest cell.
# numa_fit_rows' outcomes
NUMA_MISFITS, NUMA_FITS, NUMA_UNDECIDED = 0, 1, 2
# numa_fit_rows' codes for GuestCell.cpu_thread_policy
THREAD_POLICY_CODES = {None: 0, numa.PREFER: 0, numa.ISOLATE: 1, numa.REQUIRE: 2}
# The per-cell columns numa_fit_rows reads, in its argument order.
CELL_COLUMNS = ("numa_cell_first", "numa_cell_id", "numa_cell_memory", "numa_cell_memory_usage",
                "numa_cell_cpu_usage", "numa_cell_cpus", "numa_cell_pcpus", "numa_cell_free_pcpus",
                "numa_cell_same_sets", "numa_cell_threads_per_core", "numa_cell_free_in_sets",
                "numa_cell_sets_with_free", "numa_cell_page_first", "numa_page_size_kb", "numa_page_total",
                "numa_page_free", "pci_pool_offsets", "pci_pool_numa_node", "pci_pool_count",
                "numa_cpu_ratio", "numa_ram_ratio", "numa_cell_socket", "pci_pool_kind")
# numa_fit_rows' codes for PciRequest.numa_policy
PCI_POLICY_CODES = {pci.REQUIRED: 0, pci.LEGACY: 1, pci.PREFERRED: 2, pci.SOCKET: 3}


def pci_near_tables(pci_requests, columns) -> tuple | None:
    """The PCI requests as numa_fit_rows checks them near the chosen cells: which pool kinds match
    each request's specs and which serve it, its count and NUMA policy; None when no PCI device is
    asked for or two requests could take from one pool kind (then only engine.pci answers)."""
    if not pci_requests:
        return None
    kinds = pool_kinds(columns)
    spec_matches = np.array([[pci.matches_spec(pool, request) for pool in kinds] for request in pci_requests],
                            dtype=np.uint8).reshape(len(pci_requests), len(kinds))
    if (spec_matches.sum(axis=0) > 1).any():
        return None
    serves = np.array([[pci.serves(pool, request) for pool in kinds] for request in pci_requests],
                      dtype=np.uint8).reshape(len(pci_requests), len(kinds))
    return (spec_matches, serves, np.array([request.count for request in pci_requests], dtype=np.int64),
            np.array([PCI_POLICY_CODES[request.numa_policy or pci.LEGACY] for request in pci_requests],
                     dtype=np.int32))


def guest_cell_table(topology: numa.GuestTopology) -> np.ndarray | None:
    """The guest cells as numa_fit_rows reads them (cpus, pcpus, memory, page size, pinned, shared,
    thread policy, id); None when a page size is not a whole number of KiB (Nova then compares
    floats: left to engine.numa)."""
    rows = []
    for cell in topology.cells:
        pagesize = cell.pagesize or 0
        if pagesize != int(pagesize):
            return None
        rows.append((len(cell.cpus), len(cell.pcpus), cell.memory, int(pagesize),
                     cell.cpu_policy in numa.PINNED_POLICIES, cell.cpu_policy in numa.SHARED_POLICIES,
                     THREAD_POLICY_CODES[cell.cpu_thread_policy], cell.id))
    return np.array(rows, dtype=np.int64).reshape(len(rows), 8)


@dataclass(frozen=True, eq=False)
class GuestDemands:
    """What numa.decide reads of one request."""
    request: Request  # its raw CPU policy values
    profile: object  # engine.config.Profile: the packing strategy and default ratios
    topology: numa.GuestTopology
    pci_requests: tuple


@dataclass(frozen=True, eq=False)
class NumaParams:
    demands: GuestDemands
    guest_cell_count: int
    dedicated_total: int  # dedicated vCPUs over all guest cells
    dedicated_cell_max: int  # the most dedicated vCPUs one guest cell has
    shared_cell_max: int  # the most shared vCPUs one guest cell has
    guest_cells: np.ndarray | None = None  # guest_cell_table's; None: every candidate goes to engine.numa
    requires_smt: bool = False  # numa.requires_smt
    pci_near: tuple | None = None  # pci_near_tables


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


def decide_after(host: Host, demands: GuestDemands, placed: int) -> numa.Fit | numa.Misfit:
    """numa.decide for one more instance on a host that already took `placed` of this request's."""
    def decide(host: Host):
        return numa.decide(host, demands.request, demands.topology, demands.pci_requests, demands.profile)

    for _ in range(placed):
        fitted = decide(host)
        if not isinstance(fitted, numa.Fit):
            return fitted
        host = numa.consume(host, fitted)
    return decide(host)


def compiled_outcomes(params: NumaParams, columns, rows: np.ndarray) -> np.ndarray:
    """numa_fit_rows over these rows (int32): NUMA_MISFITS, NUMA_FITS or NUMA_UNDECIDED each."""
    demands, profile = params.demands, params.demands.profile
    outcome = np.empty(len(rows), dtype=np.uint8)
    _fastfilters.numa_fit_rows(
        rows, len(rows), outcome, *(columns.arrays[name] for name in CELL_COLUMNS),
        profile.cpu_allocation_ratio, profile.ram_allocation_ratio, params.guest_cells,
        demands.topology.emulator_threads_isolated, demands.topology.cpu_policy in (None, numa.SHARED),
        profile.packing_host_numa_cells_allocation_strategy, bool(demands.pci_requests),
        params.requires_smt, params.pci_near)
    return outcome


class NUMATopologyFilter(Rule):
    name = "NUMATopologyFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        topology, pci_requests = guest_demands(request, profile)
        if topology is None:
            return [Active(self, self.name, None)]
        cells = topology.cells
        return [Active(self, self.name, NumaParams(
            GuestDemands(request, profile, topology, pci_requests), len(cells), sum(len(cell.pcpus) for cell in cells),
            max(len(cell.pcpus) for cell in cells), max(len(cell.cpus) for cell in cells),
            guest_cell_table(topology), numa.requires_smt(request), pci_near_tables(pci_requests, columns)))]

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        params: NumaParams = active.params
        if params is None:
            return 0
        arrays = columns.arrays
        candidates = np.empty(stop - start, dtype=np.int32)
        passing = _fastfilters.scan_numa_bound(
            arrays["numa_cell_count"], arrays["numa_free_pcpus"], arrays["numa_max_free_pcpus"],
            arrays["numa_max_cpus"], params.guest_cell_count, params.dedicated_total, params.dedicated_cell_max,
            params.shared_cell_max, fail_bits, bit, start, stop, placed, candidates)
        refused = (stop - start) - passing
        candidates = candidates[:passing]
        if placed == 0 and params.guest_cells is not None and passing:
            outcome = compiled_outcomes(params, columns, candidates)
            misfits = candidates[outcome == NUMA_MISFITS]
            fail_bits[misfits] |= np.uint64(1 << bit)
            refused += len(misfits)
            candidates = candidates[outcome == NUMA_UNDECIDED]
        mask = np.uint64(1 << bit)
        for row in candidates.tolist():
            if not isinstance(decide_after(host_for_fit(columns, row, params.demands.profile), params.demands, placed),
                              numa.Fit):
                fail_bits[row] |= mask
                refused += 1
        return refused

    def explain(self, active, columns, row, placed) -> Rejection:
        params: NumaParams = active.params
        misfit = decide_after(host_for_fit(columns, row, params.demands.profile), params.demands, placed)
        return Rejection(active.name, misfit.reason, misfit.explanation)

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        topology, pci_requests = guest_demands(request, profile)
        if topology is None:
            return True
        return isinstance(decide_after(host, GuestDemands(request, profile, topology, pci_requests), placed), numa.Fit)
