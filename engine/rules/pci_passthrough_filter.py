"""Nova's PciPassthroughFilter: every PCI request of the boot (one per `pci_passthrough:alias`
entry, one per SR-IOV port) can be met from the host's device pools, ignoring NUMA (PCI NUMA
affinity is NUMATopologyFilter's: engine/numa.py).

The kernel sums, per request, the free devices of the host's pools whose kind can serve it
(decided once per request over the fleet's distinct pool kinds by the reference's own per-pool
test, engine.pci.serves). When no two requests can take from the same kind, that bound is
Nova's answer; otherwise the hosts it passes get the reference's exact, request-after-request
consumption (engine.pci.supports).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters, pci
from placecheck_engine.model import PciPool
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

PCI_DEVICES_UNAVAILABLE = pci.PCI_DEVICES_UNAVAILABLE


@functools.lru_cache(maxsize=64)
def _aliases(entries: tuple[str, ...]):
    return pci.parse_aliases(entries)


def request_pci(request, profile) -> tuple[pci.PciRequest, ...]:
    """The boot's PCI requests as Nova's API builds them (InvalidField where it refuses)."""
    return pci.pci_requests(request, _aliases(profile.pci_alias))


@dataclass(frozen=True, eq=False)
class PciParams:
    requests: tuple[pci.PciRequest, ...]
    kind_matches: np.ndarray  # uint8 [requests, pool kinds]: 1 where the kind can serve the request
    counts: np.ndarray  # int64 [requests]: devices each request asks for
    exact: bool  # no kind serves two requests: the kernel's sums are Nova's answer


def pool_kinds(columns) -> list[PciPool]:
    """The fleet's distinct pool kinds (columns.dicts["pci_pool_kinds"]) as pools of no count."""
    return [PciPool(vendor_id, product_id, dev_type, tags=dict(tags))
            for vendor_id, product_id, dev_type, tags in columns.dicts["pci_pool_kinds"]]


def compile_pci(requests: tuple[pci.PciRequest, ...], columns) -> PciParams:
    kinds = pool_kinds(columns)
    kind_matches = np.array([[pci.serves(pool, request) for pool in kinds] for request in requests],
                            dtype=np.uint8).reshape(len(requests), len(kinds))
    exact = bool((kind_matches.sum(axis=0) <= 1).all())
    counts = np.array([request.count for request in requests], dtype=np.int64)
    return PciParams(requests, kind_matches, counts, exact)


class PciPassthroughFilter(Rule):
    name = "PciPassthroughFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        requests = request_pci(request, profile)
        if not requests:
            return [Active(self, self.name, None)]
        return [Active(self, self.name, compile_pci(requests, columns))]

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        params: PciParams = active.params
        if params is None:
            return 0
        arrays = columns.arrays
        refused = _fastfilters.scan_pci_bound(arrays["pci_pool_offsets"], arrays["pci_pool_kind"],
                                              arrays["pci_pool_count"], params.kind_matches, params.counts,
                                              fail_bits, bit, start, stop, placed)
        if params.exact:
            return refused
        mask = np.uint64(1 << bit)
        for row in np.flatnonzero((fail_bits[start:stop] & mask) == 0) + start:
            if not self._fits(params, columns, int(row), placed):
                fail_bits[row] |= mask
                refused += 1
        return refused

    @staticmethod
    def _fits(params: PciParams, columns, row: int, placed: int) -> bool:
        return pci.supports(columns.pci_pools_at(row), params.requests * (placed + 1))

    def explain(self, active, columns, row, placed) -> Rejection:
        request, free = pci.unmet_request(columns.pci_pools_at(row), active.params.requests * (placed + 1))
        return Rejection(active.name, PCI_DEVICES_UNAVAILABLE, pci.describe_unmet(request, free),
                         {"requested": request.count, "free": free})

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        requests = request_pci(request, profile)
        return not requests or pci.supports(host.pci_pools, requests * (placed + 1))
