"""Fleet -> Columns: the columnar encoding every rule reads.

A `Columns` is only numpy arrays plus JSON-serialisable dicts, so the snapshot
layer can put it in shared memory and hand it back as read-only views. Every
lookup below only reads those arrays and dicts (binary search over the sorted
host names, hash indexes over instance uuids, bisection of sorted lists): nothing
is rebuilt per generation.
"""
from __future__ import annotations

import json
import math
import socket
import sys
import threading
import uuid
from bisect import bisect_left
from collections import defaultdict
from itertools import chain
from typing import Sequence

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import Fleet, Host, Inventory, MemPages, NumaCell, PciPool

INT32_MAX = np.iinfo(np.int32).max

FLAG_ENABLED = 1
FLAG_UP = 2
FLAG_HOST_IPV4 = 8  # host_ip parses as IPv4; host_ipv4 holds it
# The host gives its own cpu / ram_allocation_ratio: numa_cpu_ratio / numa_ram_ratio is that
# (host_at tells it apart from one taken from the inventory).
FLAG_CPU_RATIO_GIVEN = 16
FLAG_RAM_RATIO_GIVEN = 32

AVAILABILITY_ZONE_KEY = "availability_zone"

# Columns of rc_unit_bounds
LARGEST_MIN_UNIT, SMALLEST_MAX_UNIT, SMALLEST_STEP, LARGEST_STEP = range(4)
UNIT_BOUND_COUNT = 4


class Columns:
    """The fleet, one row per host in fleet order; see docs/architecture.md for the arrays.

    dicts:
      resource_classes    sorted class names; index = first axis of the rc_* arrays
      traits              sorted trait names; index = bit in `traits`
      aggregates          sorted aggregate ids; index = bit in `aggregates`
      aggregate_names, aggregate_metadata   parallel to `aggregates`
      aggregate_sets      per aggregate_set_id: the aggregate bits of that distinct membership
      host_profiles       per host_profile_id: {"hypervisor_type", "hypervisor_version" (None when
                          unknown), "supported_instances" ([arch, hv_type, vm_mode] lists), "stats"}
      host_ips            sorted distinct host_ip strings ("" included); index = host_ip_id
      metric_sets         per metric_set_id: the sorted metric names a host reports
      metric_names        sorted names of every metric; index = first axis of metric_values
      pci_pool_kinds      per pci_pool_kind: [vendor_id, product_id, dev_type, {tags, sorted by key}]

    Rules on string-valued host attributes evaluate their predicate once per distinct value
    (the *_id columns index these dicts) and broadcast the verdicts over hosts in the kernel.
    """

    __slots__ = ("arrays", "dicts", "_derived", "_shared", "_instance_overlay")

    def __init__(self, arrays: dict[str, np.ndarray], dicts: dict,
                 instance_overlay: "_InstanceOverlay | None" = None, shared: dict | None = None):
        self.arrays = _Arrays(arrays)
        self.dicts = dicts
        self._derived = {}  # derived from this generation's usage
        # Derived from anything else: one dict for a base and every generation overlaid on it.
        self._shared = {} if shared is None else shared
        # An overlaid generation's instance lists of the rows whose list changed since its base.
        self._instance_overlay = instance_overlay

    def derived(self, name: str, compute):
        """compute(self), once per Columns: a Columns and its arrays never change (a worker holds
        one per snapshot generation), so what rules derive from them is computed on first use
        rather than per request. A value computed without reading usage (USAGE_ARRAYS, overlaid
        instance lists) is kept for the base and all its overlaid generations, so a usage update
        does not make every rule derive its tables again. Two threads may both compute it; either
        result is the same."""
        return _cached(self._derived, self._shared, name, lambda: compute(self))

    def memo(self, name: str, key, compute, limit: int = 256):
        """compute(), once per (name, key) on this Columns (or its base, as for `derived`), for
        request-derived values that repeat across requests (a project, a flavor, an image); at
        most `limit` keys per name and kind, the oldest dropped first."""
        own, shared = (cache.setdefault(("memo", name), {}) for cache in (self._derived, self._shared))
        return _cached(own, shared, key, compute, limit)

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], dicts: dict) -> "Columns":
        return cls(dict(arrays), dicts)

    @property
    def host_count(self) -> int:
        return len(self.arrays["host_name_order"])

    def host_name(self, row: int) -> str:
        offsets = self.arrays["host_name_offsets"]
        return self.arrays["host_name_bytes"][offsets[row]:offsets[row + 1]].tobytes().decode()

    def row_of(self, host_name: str) -> int | None:
        row = _fastfilters.find_in_sorted_heap(self.arrays["host_name_offsets"], self.arrays["host_name_bytes"],
                                               self.arrays["host_name_order"], host_name.encode())
        return row if row >= 0 else None

    def rows_of_instances(self, uuids) -> np.ndarray:
        """Sorted unique rows of the hosts running any of these instance uuids."""
        rows = self._instance_index().rows_per_instance(uuids, True)
        overlay = self._instance_overlay
        if overlay is None:
            return rows
        _note_usage_read()
        return np.union1d(overlay.without_changed_rows(rows),
                          np.array(sorted({row for uuid_ in uuids for row in overlay.rows_running(uuid_)}),
                                   dtype=np.int32)).astype(np.int32)

    def instance_rows(self, uuids) -> np.ndarray:
        """For each distinct uuid, the rows of the hosts running it: a row appears once per
        distinct uuid among these that it runs (counts per host, as Nova's set intersection)."""
        distinct = set(uuids)
        rows = self._instance_index().rows_per_instance(distinct, False)
        overlay = self._instance_overlay
        if overlay is None:
            return rows
        _note_usage_read()
        changed_rows = [row for uuid_ in distinct for row in overlay.rows_running(uuid_)]
        return np.concatenate([overlay.without_changed_rows(rows),
                               np.array(changed_rows, dtype=np.int32)]).astype(np.int32)

    def instances_of(self, row: int) -> list[str]:
        overlay = self._instance_overlay
        if overlay is not None:
            _note_usage_read()
            if overlay.changed(row):
                return list(overlay.lists()[row])
        first, last = self.arrays["instance_offsets"][row:row + 2]
        other_entries = self.arrays["instance_other_entries"]
        other_offsets, other_bytes = self.arrays["instance_other_offsets"], self.arrays["instance_other_bytes"]
        instances = []
        for entry in range(first, last):
            other = bisect_left(other_entries, entry)
            if other < len(other_entries) and other_entries[other] == entry:
                instances.append(other_bytes[other_offsets[other]:other_offsets[other + 1]].tobytes().decode())
            else:
                instances.append(str(uuid.UUID(bytes=self.arrays["instance_uuids"][entry].tobytes())))
        return instances

    def _instance_index(self) -> _fastfilters.InstanceIndex:
        return self.derived("instance_index", lambda columns: _fastfilters.InstanceIndex(columns.arrays))

    def resource_class_index(self, name: str) -> int | None:
        return _index_in_sorted(self.dicts["resource_classes"], name)

    def trait_bit(self, name: str) -> int | None:
        return _index_in_sorted(self.dicts["traits"], name)

    def aggregate_bit(self, aggregate_id: int) -> int | None:
        return _index_in_sorted(self.dicts["aggregates"], aggregate_id)

    def has_trait(self, row: int, name: str) -> bool:
        bit = self.trait_bit(name)
        return bit is not None and bool(int(self.arrays["traits"][row, bit // 64]) >> (bit % 64) & 1)

    def traits_of(self, row: int) -> list[str]:
        return [self.dicts["traits"][bit] for bit in _set_bits(self.arrays["traits"][row])]

    def aggregates_of(self, row: int) -> list[int]:
        return [self.dicts["aggregates"][bit] for bit in _set_bits(self.arrays["aggregates"][row])]

    def aggregate_metadata_of_set(self, set_id: int) -> list[dict[str, str]]:
        """The metadata of each aggregate in one distinct membership (aggregate_set_id)."""
        return self.aggregate_memberships()[set_id]

    def aggregate_memberships(self) -> list[list[dict[str, str]]]:
        """Per aggregate_set_id, the metadata dicts of its aggregates (shared: do not modify)."""
        return self.derived("aggregate_memberships", lambda columns: [
            [columns.dicts["aggregate_metadata"][bit] for bit in bits] for bits in columns.dicts["aggregate_sets"]])

    def numa_cells_at(self, row: int) -> tuple[NumaCell, ...]:
        """The host's NUMA cells, as build_columns was given them."""
        offsets = self.arrays["numa_cells_offsets"]
        encoded = self.arrays["numa_cells_bytes"][offsets[row]:offsets[row + 1]].tobytes()
        return _decoded_cells(encoded) if encoded else ()

    def pci_pools_at(self, row: int) -> tuple[PciPool, ...]:
        """The host's PCI device pools, in its order."""
        first, last = self.arrays["pci_pool_offsets"][row:row + 2].tolist()
        kinds = self.dicts["pci_pool_kinds"]
        return tuple(PciPool(*kinds[kind][:3], numa_node=None if node < 0 else node, count=count,
                             tags=dict(kinds[kind][3]))
                     for kind, node, count in zip(*(self.arrays[name][first:last].tolist() for name in
                                                    ("pci_pool_kind", "pci_pool_numa_node", "pci_pool_count"))))

    def aggregate_metadata_by_set(self, set_id: int) -> dict[str, set[str]]:
        """Nova's aggregate_metadata_get_by_host for the hosts of one aggregate_set_id."""
        return aggregate_metadata_get_by_host(self.aggregate_metadata_of_set(set_id))


# Derived computations in progress on this thread, innermost last: each a [reads usage] flag.
_computing = threading.local()


def _frames() -> list[list[bool]]:
    try:
        return _computing.frames
    except AttributeError:
        _computing.frames = []
        return _computing.frames


def _note_usage_read() -> None:
    """Whatever is being derived now depends on the generation's usage."""
    for frame in getattr(_computing, "frames", ()):
        frame[0] = True


def _cached(own: dict, shared: dict, key, compute, limit: int | None = None):
    """own[key] (derived from usage) or shared[key], else compute() kept in the one it belongs to."""
    try:
        value = own[key]
        _note_usage_read()  # whoever uses it depends on usage too
        return value
    except KeyError:
        pass
    try:
        return shared[key]
    except KeyError:
        pass
    frames = _frames()
    frames.append(frame := [False])
    try:
        value = compute()
    finally:
        frames.pop()
    if frame[0]:
        _note_usage_read()
    table = own if frame[0] else shared
    if limit is not None and len(table) >= limit:
        table.pop(next(iter(table), None), None)
    table[key] = value
    return value


class _Arrays(dict):
    """A Columns' arrays; reading a usage array (or all of them) notes it for `_cached`."""

    def __getitem__(self, name: str) -> np.ndarray:
        if name in _USAGE_ARRAY_SET:
            _note_usage_read()
        return dict.__getitem__(self, name)

    def get(self, name: str, default=None):
        if name in _USAGE_ARRAY_SET:
            _note_usage_read()
        return dict.get(self, name, default)

    def values(self):
        _note_usage_read()
        return dict.values(self)

    def items(self):
        _note_usage_read()
        return dict.items(self)


def aggregate_metadata_get_by_host(metadatas) -> dict[str, set[str]]:
    """Nova's scheduler.filters.utils.aggregate_metadata_get_by_host over the metadata dicts of a
    host's aggregates: every key, each value comma-split and stripped, united over aggregates."""
    merged = defaultdict(set)
    for metadata in metadatas:
        for key, value in metadata.items():
            merged[key].update(part.strip() for part in value.split(","))
    return dict(merged)


def _index_in_sorted(items: list, key) -> int | None:
    index = bisect_left(items, key)
    return index if index < len(items) and items[index] == key else None


def _set_bits(words: np.ndarray) -> list[int]:
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).tolist()


def _heap(strings) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 heap of strings: offsets [len+1] and the bytes."""
    _, offsets, heap_bytes = _fastfilters.pack_string_groups((strings,))
    return offsets, heap_bytes


def _sorted_order(strings: list[str]) -> np.ndarray:
    # UTF-8 byte order is code point order, so sorting the str sorts the heap's bytes.
    return np.array(sorted(range(len(strings)), key=strings.__getitem__), dtype=np.int32)


def _hash_index(offsets: np.ndarray, heap: np.ndarray) -> np.ndarray:
    """Open-addressing slots over the heap's entries (load <= 3/4); -1 is empty."""
    slots = np.full(_slot_count(len(offsets) - 1), -1, dtype=np.int32)
    _fastfilters.build_heap_index(offsets, heap, slots)
    return slots


def _bitset(rows: np.ndarray, bits: np.ndarray, row_count: int, bit_count: int) -> np.ndarray:
    """uint64 [row_count, ceil(bit_count/64) or 1] with bit `bits[i]` set in row `rows[i]`."""
    words = max(1, math.ceil(bit_count / 64))
    bitset = np.zeros((row_count, words), dtype=np.uint64)
    if len(rows):
        flat = bitset.reshape(-1)
        cells = rows.astype(np.int64) * words + bits // 64
        values = np.left_shift(np.uint64(1), (bits % 64).astype(np.uint64))
        np.bitwise_or.at(flat, cells, values)
    return bitset


def build_columns(fleet: Fleet) -> Columns:
    hosts = fleet.hosts
    n = len(hosts)
    names = [host.name for host in hosts]
    row_by_name = {name: row for row, name in enumerate(names)}

    # One pass over hosts collecting flat values; everything after is vectorised.
    flags = np.fromiter(((h.enabled * FLAG_ENABLED) | (h.up * FLAG_UP) for h in hosts),
                        dtype=np.uint8, count=n)
    num_instances = np.fromiter((h.num_instances for h in hosts), dtype=np.int64, count=n)
    num_io_ops = np.fromiter((h.num_io_ops for h in hosts), dtype=np.int64, count=n)

    resource_classes = sorted({rc for h in hosts for rc in h.resources})
    rc_index = {rc: i for i, rc in enumerate(resource_classes)}
    inventory_rows, inventory_classes, inventory_ints, inventory_ratios = [], [], [], []
    for row, host in enumerate(hosts):
        for rc, inv in host.resources.items():
            inventory_rows.append(row)
            inventory_classes.append(rc_index[rc])
            inventory_ints.extend((inv.total, inv.reserved, inv.min_unit, inv.max_unit,
                                   inv.step_size, inv.used))
            inventory_ratios.append(inv.allocation_ratio)
    arrays = _resource_arrays(len(resource_classes), n, inventory_rows, inventory_classes,
                              inventory_ints, inventory_ratios)

    trait_names = sorted({t for h in hosts for t in h.traits})
    trait_index = {t: i for i, t in enumerate(trait_names)}
    trait_rows = [row for row, h in enumerate(hosts) for _ in h.traits]
    trait_bits = [trait_index[t] for h in hosts for t in h.traits]
    arrays["traits"] = _bitset(np.array(trait_rows, dtype=np.int64),
                               np.array(trait_bits, dtype=np.int64), n, len(trait_names))

    aggregates = sorted(fleet.aggregates, key=lambda agg: agg.id)
    member_rows, member_bits = [], []
    for bit, aggregate in enumerate(aggregates):
        rows = [row_by_name[name] for name in aggregate.hosts if name in row_by_name]
        member_rows.extend(rows)
        member_bits.extend([bit] * len(rows))
    arrays["aggregates"] = _bitset(np.array(member_rows, dtype=np.int64),
                                   np.array(member_bits, dtype=np.int64), n, len(aggregates))
    aggregate_sets, arrays["aggregate_set_id"] = _distinct_rows(arrays["aggregates"])

    arrays["host_profile_id"], host_profiles = _host_profiles(hosts)
    arrays["hypervisor_version"] = np.fromiter((h.hypervisor_version or 0 for h in hosts),
                                               dtype=np.int64, count=n)
    arrays["failed_builds"] = np.clip(np.fromiter((h.failed_builds for h in hosts), dtype=np.int64,
                                                  count=n), 0, INT32_MAX).astype(np.int32)
    arrays["host_ip_id"], host_ips, arrays["host_ipv4"], ipv4_rows = _host_ips(hosts)
    flags[ipv4_rows] |= FLAG_HOST_IPV4
    arrays["metric_set_id"], metric_sets, metric_names, arrays["metric_values"] = _metrics(hosts)

    arrays["flags"] = flags
    arrays["num_instances"] = np.clip(num_instances, 0, INT32_MAX).astype(np.int32)
    arrays["num_io_ops"] = np.clip(num_io_ops, 0, INT32_MAX).astype(np.int32)
    arrays.update(_weigher_inputs(arrays, rc_index))

    arrays["host_name_offsets"], arrays["host_name_bytes"] = _heap(names)
    arrays["host_name_order"] = _sorted_order(names)

    arrays.update(_instance_arrays(hosts))
    arrays.update(_numa_arrays(hosts, arrays, rc_index))
    pci_arrays, pci_pool_kinds = _pci_arrays(hosts)
    arrays.update(pci_arrays)

    dicts = {
        "resource_classes": resource_classes,
        "traits": trait_names,
        "aggregates": [agg.id for agg in aggregates],
        "aggregate_names": [agg.name for agg in aggregates],
        "aggregate_metadata": [dict(agg.metadata) for agg in aggregates],
        "aggregate_sets": aggregate_sets,
        "host_profiles": host_profiles,
        "host_ips": host_ips,
        "metric_sets": metric_sets,
        "metric_names": metric_names,
        "pci_pool_kinds": pci_pool_kinds,
    }
    return Columns(arrays, dicts)


def _numa_arrays(hosts, arrays: dict, rc_index: dict) -> dict:
    """The numa_* columns; sets the flags of the hosts that give their own ratios."""
    n = len(hosts)
    topology_ids = {}  # hosts share a few topologies: each is tabulated and encoded once
    rows, row_topologies = [], []
    for row, host in enumerate(hosts):
        if host.numa_cells:
            rows.append(row)
            row_topologies.append(topology_ids.setdefault(host.numa_cells, len(topology_ids)))
    topologies = list(topology_ids)
    tables, topology_first = _cell_tables(topologies)
    rows, row_topologies = np.array(rows, dtype=np.int64), np.array(row_topologies, dtype=np.int64)
    # Per topology: cells, and their free dedicated CPUs summed and at most, and shared CPUs at most.
    starts = topology_first[:-1]
    free, cpus = tables["numa_cell_free_pcpus"].astype(np.int64), tables["numa_cell_cpus"]
    summary = (np.diff(topology_first), *((reduce.reduceat(values, starts) if len(starts) else values[:0])
                                          for reduce, values in ((np.add, free), (np.maximum, free),
                                                                 (np.maximum, cpus))))
    columns = {}
    for name, values in zip(("numa_cell_count", "numa_free_pcpus", "numa_max_free_pcpus", "numa_max_cpus"), summary):
        per_host = np.zeros(n, dtype=np.int64)
        per_host[rows] = values[row_topologies]
        columns[name] = np.clip(per_host, 0, INT32_MAX).astype(np.int32)
    flags = arrays["flags"]
    for name, resource_class, given_flag in (("cpu", "VCPU", FLAG_CPU_RATIO_GIVEN),
                                             ("ram", "MEMORY_MB", FLAG_RAM_RATIO_GIVEN)):
        ratios = np.full(n, np.nan)
        index = rc_index.get(resource_class)
        if index is not None:
            present = arrays["rc_present"][index].astype(bool)
            ratios[present] = arrays["rc_ratio"][index][present]
        attribute = f"{name}_allocation_ratio"
        given = [(row, getattr(host, attribute)) for row, host in enumerate(hosts)
                 if getattr(host, attribute) is not None]
        if given:
            given_rows, given_ratios = zip(*given)
            ratios[list(given_rows)] = given_ratios
            flags[list(given_rows)] |= given_flag
        columns[f"numa_{name}_ratio"] = ratios
    encoded = [_encoded_cells(topology) for topology in topologies]
    lengths = np.zeros(n, dtype=np.int64)
    lengths[rows] = np.array([len(item) for item in encoded], dtype=np.int64)[row_topologies]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    columns["numa_cells_offsets"] = offsets
    columns["numa_cells_bytes"] = np.frombuffer(b"".join(encoded[topology] for topology in row_topologies.tolist()),
                                                dtype=np.uint8).copy()
    columns.update(_host_cells(tables, topology_first, rows, row_topologies, n))
    return columns


# numa_cell_sets_with_free's columns: sibling sets with at least 1, 2, .. this many free CPUs.
SIBLING_THREADS_COUNTED = 8
NUMA_CELL_ARRAYS = ("numa_cell_id", "numa_cell_socket", "numa_cell_memory", "numa_cell_memory_usage",
                    "numa_cell_cpu_usage", "numa_cell_cpus", "numa_cell_pcpus", "numa_cell_free_pcpus",
                    "numa_cell_same_sets", "numa_cell_threads_per_core", "numa_cell_free_in_sets",
                    "numa_cell_sets_with_free")
NUMA_PAGE_ARRAYS = ("numa_page_size_kb", "numa_page_total", "numa_page_free")


def _cell_tables(topologies: list[tuple[NumaCell, ...]]) -> tuple[dict, np.ndarray]:
    """The numa_cell_* and numa_page_* arrays of these topologies' cells one after another, with
    numa_cell_page_first, and where each topology's cells start [len+1]."""
    cells = list(chain.from_iterable(topologies))
    frees = [cell.pcpuset - cell.pinned_cpus for cell in cells]

    def column(values, dtype) -> np.ndarray:
        return np.fromiter(values, dtype=dtype, count=len(cells))

    columns = {
        "numa_cell_id": column((cell.id for cell in cells), np.int32),
        "numa_cell_socket": column((-1 if cell.socket is None else cell.socket for cell in cells), np.int32),
        "numa_cell_memory": column((cell.memory for cell in cells), np.int64),
        "numa_cell_memory_usage": column((cell.memory_usage for cell in cells), np.int64),
        "numa_cell_cpu_usage": column((cell.cpu_usage for cell in cells), np.int64),
        "numa_cell_cpus": column((len(cell.cpuset) for cell in cells), np.int32),
        "numa_cell_pcpus": column((len(cell.pcpuset) for cell in cells), np.int32),
        "numa_cell_free_pcpus": column(map(len, frees), np.int32),
        "numa_cell_same_sets": column((cell.cpuset == cell.pcpuset for cell in cells), np.uint8),
    }
    columns.update(_sibling_columns(cells, frees))
    columns["numa_cell_page_first"] = _first_entries(column((len(cell.mempages) for cell in cells), np.int64))
    pages = [pages for cell in cells for pages in cell.mempages]
    for name, values in (("numa_page_size_kb", (pages.size_kb for pages in pages)),
                         ("numa_page_total", (pages.total for pages in pages)),
                         ("numa_page_free", (pages.total - pages.used - pages.reserved for pages in pages))):
        columns[name] = np.fromiter(values, dtype=np.int64, count=len(pages))
    return columns, _first_entries([len(topology) for topology in topologies])


def _sibling_columns(cells: list[NumaCell], frees: list[frozenset[int]]) -> dict[str, np.ndarray]:
    """numa_cell_threads_per_core, _free_in_sets and _sets_with_free of these cells (`frees`: their
    unpinned dedicated CPUs). Cells share a few sibling layouts (one per hardware model): each
    layout is tabulated once, as sorted (layout, CPU) keys and the set of each, and every free CPU
    is looked up in it with numpy; a CPU may be in several sets of a layout (a run of equal keys)."""
    cell_count = len(cells)
    layout_ids, layouts = _dictionary_encode(cell.siblings for cell in cells)
    sibling_cpus = np.array(sorted({cpu for layout in layouts for threads in layout for cpu in threads}),
                            dtype=np.int64)
    rank = {cpu: index for index, cpu in enumerate(sibling_cpus.tolist())}
    keys, sets = [], []  # per (layout, CPU of one of its sets): layout * len(sibling_cpus) + the CPU's rank
    for layout_id, layout in enumerate(layouts):
        for set_index, threads in enumerate(layout):
            keys += [layout_id * len(rank) + rank[cpu] for cpu in threads]
            sets += [set_index] * len(threads)
    order = np.argsort(np.array(keys, dtype=np.int64), kind="stable")
    keys, sets = np.array(keys, dtype=np.int64)[order], np.array(sets, dtype=np.int64)[order]

    free_counts = np.fromiter(map(len, frees), dtype=np.int64, count=cell_count)
    free_cpus = np.fromiter(chain.from_iterable(frees), dtype=np.int64, count=int(free_counts.sum()))
    cell_of_free = np.repeat(np.arange(cell_count), free_counts)
    position = np.minimum(np.searchsorted(sibling_cpus, free_cpus), max(len(sibling_cpus) - 1, 0))
    in_some_layout = sibling_cpus[position] == free_cpus if len(sibling_cpus) else np.zeros(len(free_cpus), bool)
    free_keys = layout_ids[cell_of_free].astype(np.int64) * len(rank) + position
    first, last = np.searchsorted(keys, free_keys), np.searchsorted(keys, free_keys, side="right")
    matches = np.where(in_some_layout, last - first, 0)  # the sets of its cell's layout that hold the CPU

    sets_per_cell = np.array([len(layout) for layout in layouts], dtype=np.int64)[layout_ids]
    set_first = _first_entries(sets_per_cell)
    free_set = set_first[np.repeat(cell_of_free, matches)] + sets[_ranges(first[matches > 0], matches[matches > 0])]
    free_per_set = np.minimum(np.bincount(free_set, minlength=set_first[-1]), SIBLING_THREADS_COUNTED)
    sets_by_free = np.bincount(np.repeat(np.arange(cell_count), sets_per_cell) * (SIBLING_THREADS_COUNTED + 1)
                               + free_per_set, minlength=cell_count * (SIBLING_THREADS_COUNTED + 1))
    at_least = sets_by_free.reshape(cell_count, SIBLING_THREADS_COUNTED + 1)[:, ::-1].cumsum(axis=1)[:, ::-1]
    threads_per_core = np.array([max(map(len, layout), default=0) for layout in layouts], dtype=np.int32)
    return {
        "numa_cell_threads_per_core": threads_per_core[layout_ids],
        "numa_cell_free_in_sets": np.bincount(cell_of_free, weights=matches > 0, minlength=cell_count).astype(np.int32),
        "numa_cell_sets_with_free": np.ascontiguousarray(at_least[:, 1:], dtype=np.int32),
    }


def _first_entries(counts: list[int]) -> np.ndarray:
    """Offsets [len+1] of entries numbered one group after another, `counts[i]` in group i."""
    first = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    return first


def _host_cells(tables: dict, topology_first: np.ndarray, rows: np.ndarray, row_topologies: np.ndarray,
                n: int) -> dict:
    """Each host's cells (the rows with a topology: `rows`, theirs `row_topologies`) taken from the
    topologies' tables, in row order, with their pages."""
    counts = np.zeros(n, dtype=np.int64)
    counts[rows] = np.diff(topology_first)[row_topologies]
    cell_first = _first_entries(counts)
    cells = _ranges(topology_first[row_topologies], counts[rows])
    columns = {"numa_cell_first": cell_first}
    columns.update((name, tables[name][cells]) for name in NUMA_CELL_ARRAYS)
    page_first = tables["numa_cell_page_first"]
    page_counts = np.diff(page_first)[cells]
    columns["numa_cell_page_first"] = _first_entries(page_counts)
    pages = _ranges(page_first[cells], page_counts)
    columns.update((name, tables[name][pages]) for name in NUMA_PAGE_ARRAYS)
    return columns


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """starts[0] .. starts[0]+lengths[0]-1, then starts[1] .. , one after another."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def _encoded_cells(cells: tuple[NumaCell, ...]) -> bytes:
    """Compact canonical JSON: per cell [id, cpuset, pcpuset, memory, cpu_usage, memory_usage,
    pinned_cpus, siblings, [[size_kb, total, used, reserved], ...], socket], sets sorted."""
    return json.dumps([[cell.id, sorted(cell.cpuset), sorted(cell.pcpuset), cell.memory, cell.cpu_usage,
                        cell.memory_usage, sorted(cell.pinned_cpus), [sorted(siblings) for siblings in cell.siblings],
                        [[pages.size_kb, pages.total, pages.used, pages.reserved] for pages in cell.mempages],
                        cell.socket] for cell in cells], separators=(",", ":")).encode()


def _decoded_cells(encoded: bytes) -> tuple[NumaCell, ...]:
    return tuple(NumaCell(id=cell_id, cpuset=frozenset(cpuset), pcpuset=frozenset(pcpuset), memory=memory,
                          cpu_usage=cpu_usage, memory_usage=memory_usage, pinned_cpus=frozenset(pinned),
                          siblings=tuple(map(frozenset, siblings)),
                          mempages=tuple(MemPages(*pages) for pages in mempages), socket=socket_id)
                 for (cell_id, cpuset, pcpuset, memory, cpu_usage, memory_usage, pinned, siblings, mempages,
                      socket_id) in json.loads(encoded))


def pci_pool_kind_key(kind: list) -> tuple:
    """What pools of one kind share: a `dicts["pci_pool_kinds"]` entry as a hashable key."""
    vendor_id, product_id, dev_type, tags = kind
    return vendor_id, product_id, dev_type, tuple(sorted(tags.items()))


def _pci_arrays(hosts) -> tuple[dict, list]:
    """The pci_* columns and the distinct pool kinds (first-seen order over the pool entries)."""
    pools = [pool for host in hosts for pool in host.pci_pools]
    offsets = np.zeros(len(hosts) + 1, dtype=np.int64)
    np.cumsum([len(host.pci_pools) for host in hosts], out=offsets[1:])
    kind_ids, kinds = _dictionary_encode(pci_pool_kind_key([pool.vendor_id, pool.product_id, pool.dev_type, pool.tags])
                                         for pool in pools)
    counts = np.array([pool.count for pool in pools], dtype=np.int64)
    running = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return {
        "pci_pool_offsets": offsets,
        "pci_free_devices": running[offsets[1:]] - running[offsets[:-1]],
        "pci_pool_kind": kind_ids,
        "pci_pool_numa_node": np.array([-1 if pool.numa_node is None else pool.numa_node for pool in pools],
                                       dtype=np.int32),
        "pci_pool_count": np.clip(counts, 0, INT32_MAX).astype(np.int32),
    }, [[vendor_id, product_id, dev_type, dict(tags)] for vendor_id, product_id, dev_type, tags in kinds]


_INVENTORY_ARRAYS = ("rc_total", "rc_reserved", "rc_ratio", "rc_min_unit", "rc_max_unit", "rc_step", "rc_used")


def host_at(columns: Columns, row: int, with_instances: bool = True) -> Host:
    """The host at `row`, as build_columns was given it (its inverse, for validated hosts): the
    state owner keeps no Host per host, so a host is read back from the columns when a write needs
    it. Without with_instances, its instance list is left empty (decoding it is half the cost)."""
    arrays, dicts = columns.arrays, columns.dicts
    # Inventory's fields in its order, each class's value at this row (one slice per array, not per cell)
    fields = [arrays[name][:, row].tolist() for name in _INVENTORY_ARRAYS]
    resources = {dicts["resource_classes"][rc]: Inventory(*(values[rc] for values in fields))
                 for rc in np.flatnonzero(arrays["rc_present"][:, row]).tolist()}
    profile = dicts["host_profiles"][arrays["host_profile_id"][row]]
    metric_index = {name: index for index, name in enumerate(dicts["metric_names"])}
    flags = int(arrays["flags"][row])
    return Host(
        name=columns.host_name(row),
        enabled=bool(flags & FLAG_ENABLED),
        up=bool(flags & FLAG_UP),
        resources=resources,
        traits=frozenset(columns.traits_of(row)),
        host_ip=dicts["host_ips"][arrays["host_ip_id"][row]],
        hypervisor_type=profile["hypervisor_type"],
        hypervisor_version=profile["hypervisor_version"],
        supported_instances=tuple(map(tuple, profile["supported_instances"])),
        stats=dict(profile["stats"]),
        num_instances=int(arrays["num_instances"][row]),
        num_io_ops=int(arrays["num_io_ops"][row]),
        instances=tuple(columns.instances_of(row)) if with_instances else (),
        metrics={name: float(arrays["metric_values"][metric_index[name], row])
                 for name in dicts["metric_sets"][arrays["metric_set_id"][row]]},
        failed_builds=int(arrays["failed_builds"][row]),
        numa_cells=columns.numa_cells_at(row),
        pci_pools=columns.pci_pools_at(row),
        cpu_allocation_ratio=float(arrays["numa_cpu_ratio"][row]) if flags & FLAG_CPU_RATIO_GIVEN else None,
        ram_allocation_ratio=float(arrays["numa_ram_ratio"][row]) if flags & FLAG_RAM_RATIO_GIVEN else None,
    )


# Canonical uuids (lowercase, hyphenated: what str(uuid.UUID(...)) gives) are stored as their 16 raw
# bytes, fixed-width; any other instance id goes to a small fallback heap.
UUID_TEXT_LENGTH = 36
_UUID_HYPHENS = [8, 13, 18, 23]
_UUID_HEX_DIGITS = [i for i in range(UUID_TEXT_LENGTH) if i not in _UUID_HYPHENS]
_NOT_HEX = 255
_HEX_VALUE = np.full(256, _NOT_HEX, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_PARSE_CHUNK = 1 << 16  # uuids parsed per numpy pass, to bound the temporaries


def _uuid_hash(words: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix of each uuid's two little-endian words (every process reads the same table)."""
    with np.errstate(over="ignore"):
        mixed = words[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ words[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
        mixed ^= mixed >> np.uint64(31)
        mixed *= np.uint64(0xFF51AFD7ED558CCD)
        mixed ^= mixed >> np.uint64(33)
    return mixed


def _slot_count(entries: int) -> int:
    """A power of two for a load of at most 3/4."""
    return 1 << (entries * 4 // 3 + 1).bit_length()


def _uuid_index(words: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Open-addressing slots (linear probing, -1 empty) over the uuids `words[entries]`."""
    slots = np.full(_slot_count(len(entries)), -1, dtype=np.int32)
    _place_uuids(slots, words, entries)
    return slots


def _place_uuids(slots: np.ndarray, words: np.ndarray, entries: np.ndarray) -> None:
    """Put the uuids `words[entries]` (ascending entries) in the empty slots of `slots`, a probe
    step at a time for every pending entry at once: in each round an entry takes its slot if it is
    empty and no other entry claimed it in the same round, else moves on to the next slot (so an
    entry not yet placed is at its hash's slot plus the round)."""
    mask = np.int64(len(slots) - 1)
    pending = entries.astype(np.int32)
    position = _uuid_hash(words[entries]).astype(np.int64) & mask
    while len(pending):
        free = slots[position] == -1
        slots[position[free]] = pending[free]  # of several claims on one slot, the last one stays
        placed = np.zeros(len(pending), dtype=bool)
        placed[free] = slots[position[free]] == pending[free]
        pending, position = pending[~placed], (position[~placed] + 1) & mask


def _parse_canonical_uuids(offsets: np.ndarray, heap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every heap entry: whether it is a canonical uuid, and its 16 raw bytes (zeros if not)."""
    lengths = np.diff(offsets)
    raw = np.zeros((len(lengths), 16), dtype=np.uint8)
    canonical = np.zeros(len(lengths), dtype=bool)
    every_entry_uuid_long = bool((lengths == UUID_TEXT_LENGTH).all())
    candidates = np.flatnonzero(lengths == UUID_TEXT_LENGTH)
    for start in range(0, len(candidates), _PARSE_CHUNK):
        chunk = candidates[start:start + _PARSE_CHUNK]
        if every_entry_uuid_long:  # the common case: the heap is a [M, 36] block
            text = heap.reshape(-1, UUID_TEXT_LENGTH)[chunk[0]:chunk[-1] + 1]
        else:
            text = heap[offsets[chunk][:, None] + np.arange(UUID_TEXT_LENGTH)]
        nibbles = _HEX_VALUE[text[:, _UUID_HEX_DIGITS]]
        canonical[chunk] = ((text[:, _UUID_HYPHENS] == ord("-")).all(axis=1)
                            & (nibbles != _NOT_HEX).all(axis=1))
        raw[chunk] = nibbles[:, 0::2] << 4 | nibbles[:, 1::2]
    raw[~canonical] = 0
    return canonical, raw


def _instance_arrays(hosts) -> dict[str, np.ndarray]:
    """Every host's instance ids in row order: canonical uuids as raw bytes with a hash index,
    the others in a fallback heap with its own; see docs/architecture.md."""
    instance_offsets, heap_offsets, heap = _fastfilters.pack_string_groups([h.instances for h in hosts])
    canonical, raw = _parse_canonical_uuids(heap_offsets, heap)
    words = raw.view("<u8")
    other_entries = np.flatnonzero(~canonical).astype(np.int32)
    other_lengths = np.diff(heap_offsets)[other_entries]
    other_offsets = np.zeros(len(other_entries) + 1, dtype=np.int64)
    np.cumsum(other_lengths, out=other_offsets[1:])
    other_bytes = heap[np.repeat(heap_offsets[other_entries] - other_offsets[:-1], other_lengths)
                       + np.arange(other_offsets[-1])]
    return {
        "instance_offsets": instance_offsets,
        "instance_uuids": raw,
        "instance_slots": _uuid_index(words, np.flatnonzero(canonical)),
        "instance_other_entries": other_entries,
        "instance_other_offsets": other_offsets,
        "instance_other_bytes": other_bytes,
        "instance_other_slots": _hash_index(other_offsets, other_bytes),
    }


# The arrays a usage update (used, num_instances, num_io_ops) changes; hosts are their last axis.
# A generation that differs from its base only in usage is published as a delta of these at the
# changed rows (usage_delta), which every reader overlays on its base (overlay).
USAGE_ARRAYS = ("rc_used", "rc_free", "num_instances", "num_io_ops",
                "w_free_ram_mb", "w_free_disk_mb", "w_free_vcpus")
_USAGE_ARRAY_SET = frozenset(USAGE_ARRAYS)


def usage_delta(base: Columns, previous: Columns | None, generation: int, changed: dict[int, Host],
                instance_lists: dict[int, Sequence[str]]) -> Columns:
    """The delta that makes `base` the fleet whose hosts at these rows are `changed` (the new Host
    of each, differing from base's in usage only) as of `generation`, on top of `previous` (the
    last delta on the same base, or None): every usage array at every row changed since the base
    ("rows", sorted; "changed_at", the generation that last changed each), and `instance_lists`,
    each row's list where it differs from the base's."""
    rc_index = {rc: index for index, rc in enumerate(base.dicts["resource_classes"])}
    rows = np.array(sorted(changed), dtype=np.int64)
    used = base.arrays["rc_used"][:, rows].copy()
    for column, row in enumerate(rows.tolist()):
        for rc, inventory in changed[row].resources.items():
            used[rc_index[rc], column] = inventory.used
    total, ratio = base.arrays["rc_total"][:, rows], base.arrays["rc_ratio"][:, rows]
    values = {
        "rc_used": used,
        "rc_free": _free(total, base.arrays["rc_reserved"][:, rows], ratio, used),
        "num_instances": _counts([changed[row].num_instances for row in rows.tolist()]),
        "num_io_ops": _counts([changed[row].num_io_ops for row in rows.tolist()]),
    }
    values.update(_weigher_inputs({"rc_free": values["rc_free"], "rc_total": total, "rc_used": used,
                                   "rc_ratio": ratio}, rc_index))
    values["changed_at"] = np.full(len(rows), generation, dtype=np.int64)
    if previous is not None:  # keep the previous delta's rows that this change leaves alone
        kept = ~np.isin(previous.arrays["rows"], rows)
        rows = np.concatenate([previous.arrays["rows"][kept], rows])
        values = {name: np.concatenate([previous.arrays[name][..., kept], value], axis=-1)
                  for name, value in values.items()}
    order = np.argsort(rows, kind="stable")
    arrays = {name: np.ascontiguousarray(value[..., order]) for name, value in values.items()}
    arrays["rows"] = rows[order].astype(np.int32)
    instance_rows = sorted(instance_lists)
    arrays["instance_rows"] = np.array(instance_rows, dtype=np.int32)
    (arrays["instance_groups"], arrays["instance_offsets"],
     arrays["instance_bytes"]) = _fastfilters.pack_string_groups([instance_lists[row] for row in instance_rows])
    return Columns(arrays, {})


def _counts(values: list[int]) -> np.ndarray:
    return np.clip(np.array(values, dtype=np.int64), 0, INT32_MAX).astype(np.int32)


def overlay(base: Columns, delta: Columns) -> Columns:
    """The generation `delta` (usage_delta) makes of `base`: private copies of the usage arrays
    patched at the delta's rows, every other array and the dicts the base's own. What rules derive
    (Columns.derived) is derived afresh for it: it is another Columns."""
    arrays = dict(base.arrays)
    arrays.update(base.derived("usage_buffers", _UsageBuffers).patched(delta.arrays))
    instances = _InstanceOverlay(delta.arrays) if len(delta.arrays["instance_rows"]) else None
    return Columns(arrays, base.dicts, instances, base._shared)


class _UsageBuffers:
    """A base's private copies of its usage arrays, which its overlaid generations take in turn.

    A copy is taken again only once nothing refers to any array of the generation that held it
    (its owner arrays' reference counts are back to what the pool alone holds: every view, and
    every Cython memoryview of one, holds its owner), so a generation in use never changes. It is
    then reset to the base at the rows that generation changed and patched at the next one's: the
    cost of a generation is what changed since the copy's, once the pool has a free copy: a delta
    holds every row changed since the base, with the generation that last changed it, so only the
    rows changed after the copy's generation are written (deltas on one base only grow)."""

    KEPT = 4  # copies remembered; a copy still in use beyond them is left to its users

    def __init__(self, base: Columns):
        self._base = base
        self._lock = threading.Lock()
        self._copies: list[_UsageCopy] = []

    def patched(self, delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        base, rows, changed_at = self._base.arrays, delta["rows"], delta["changed_at"]
        newest = int(changed_at.max()) if len(changed_at) else 0
        with self._lock:
            copy = next((copy for copy in self._copies if copy.unused()), None)
            if copy is None:
                copy = _UsageCopy({name: np.array(base[name]) for name in USAGE_ARRAYS})
                self._copies = [*self._copies[-(self.KEPT - 1):], copy]
            elif newest < copy.newest or not _sorted_subset(copy.rows, rows):
                for name, owner in copy.owners.items():  # not a later delta of the copy's: reset it
                    owner[..., copy.rows] = base[name][..., copy.rows]
                copy.newest = 0
            later = changed_at > copy.newest
            for name, owner in copy.owners.items():
                owner[..., rows[later]] = delta[name][..., later]
            copy.rows, copy.newest = rows, newest
            return copy.views()


def _sorted_subset(some: np.ndarray, rows: np.ndarray) -> bool:
    """Whether every one of `some` is in `rows` (both ascending)."""
    if not len(some):
        return True
    positions = np.searchsorted(rows, some)
    return bool(positions[-1] < len(rows) and (rows[positions] == some).all())


class _UsageCopy:
    def __init__(self, owners: dict[str, np.ndarray]):
        self.owners = owners
        self.rows = np.zeros(0, dtype=np.int32)  # where the copy differs from the base
        self.newest = 0  # the generation of the newest change it holds
        self._unreferenced = self._references()

    def _references(self) -> list[int]:
        return [sys.getrefcount(owner) for owner in self.owners.values()]

    def unused(self) -> bool:
        return self._references() == self._unreferenced

    def views(self) -> dict[str, np.ndarray]:
        views = {}
        for name, owner in self.owners.items():
            views[name] = owner.view()
            views[name].flags.writeable = False
        return views


class _InstanceOverlay:
    """The instance lists of the rows a delta changed; the base's index answers for the others."""

    def __init__(self, delta: dict[str, np.ndarray]):
        self._delta = delta
        self._rows = delta["instance_rows"]
        self._lists: dict[int, list[str]] | None = None
        self._rows_by_instance: dict[str, list[int]] | None = None

    def changed(self, row: int) -> bool:
        index = np.searchsorted(self._rows, row)
        return index < len(self._rows) and self._rows[index] == row

    def without_changed_rows(self, rows: np.ndarray) -> np.ndarray:
        return rows[~np.isin(rows, self._rows)]

    def lists(self) -> dict[int, list[str]]:
        if self._lists is None:  # decoded on first use: most requests look no instance up
            groups, offsets, heap = (self._delta[name] for name in
                                     ("instance_groups", "instance_offsets", "instance_bytes"))
            strings = [heap[offsets[index]:offsets[index + 1]].tobytes().decode()
                       for index in range(len(offsets) - 1)]
            self._lists = {int(row): strings[groups[index]:groups[index + 1]]
                           for index, row in enumerate(self._rows)}
        return self._lists

    def rows_running(self, instance: str) -> list[int]:
        if self._rows_by_instance is None:
            by_instance = defaultdict(list)
            for row, instances in self.lists().items():
                for uuid_ in dict.fromkeys(instances):
                    by_instance[uuid_].append(row)
            self._rows_by_instance = dict(by_instance)
        return self._rows_by_instance.get(instance, [])


def _distinct_rows(bitset: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """The distinct rows of a bitset, each as its list of set bits, and each row's index among them."""
    distinct, inverse = np.unique(bitset, axis=0, return_inverse=True)
    return [_set_bits(words) for words in distinct], inverse.reshape(-1).astype(np.int32)


def _dictionary_encode(keys) -> tuple[np.ndarray, list]:
    """Each key's id (int32, first-seen order) and the distinct keys."""
    keys = list(keys)
    ids = dict.fromkeys(keys)  # C loops (fromkeys, map) rather than a Python one per key
    for index, key in enumerate(ids):
        ids[key] = index
    return np.fromiter(map(ids.__getitem__, keys), dtype=np.int32, count=len(keys)), list(ids)


def _host_profiles(hosts) -> tuple[np.ndarray, list[dict]]:
    profile_ids, distinct = _dictionary_encode(
        (h.hypervisor_type, h.hypervisor_version, h.supported_instances, tuple(h.stats.items()))
        for h in hosts)
    return profile_ids, [{"hypervisor_type": hv_type, "hypervisor_version": version,
                          "supported_instances": [list(entry) for entry in supported],
                          "stats": dict(stats)}
                         for hv_type, version, supported, stats in distinct]


def _host_ips(hosts) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """host_ip_id (into the sorted distinct host_ip strings), host_ipv4 and the rows that have one."""
    first_seen_ids, distinct = _dictionary_encode(h.host_ip for h in hosts)
    order = sorted(range(len(distinct)), key=distinct.__getitem__)
    sorted_ips = [distinct[index] for index in order]
    rank = np.empty(len(distinct), dtype=np.int32)
    rank[order] = np.arange(len(distinct), dtype=np.int32)
    host_ip_ids = rank[first_seen_ids]
    packed = [_packed_ipv4(ip) for ip in sorted_ips]
    is_ipv4_by_id = np.fromiter((address is not None for address in packed), dtype=bool, count=len(packed))
    ipv4_by_id = np.zeros(len(packed), dtype=np.uint32)
    ipv4_by_id[is_ipv4_by_id] = np.frombuffer(b"".join(address for address in packed if address),
                                              dtype=">u4")
    return host_ip_ids, sorted_ips, ipv4_by_id[host_ip_ids], np.flatnonzero(is_ipv4_by_id[host_ip_ids])


def _packed_ipv4(ip: str) -> bytes | None:
    try:
        # inet_pton, unlike inet_aton, takes only the dotted quad that ipaddress accepts.
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return None


def _metrics(hosts) -> tuple[np.ndarray, list[list[str]], list[str], np.ndarray]:
    """metric_set_id, the distinct sorted name lists, every metric name, metric_values [M, n]."""
    n = len(hosts)
    # Hosts are grouped by their metrics' names in dict order; each group is sorted once.
    key_ids, keys = _dictionary_encode(tuple(h.metrics) for h in hosts)
    names = sorted({name for key in keys for name in key})
    name_index = {name: index for index, name in enumerate(names)}
    set_ids, metric_sets = _dictionary_encode(tuple(sorted(key)) for key in keys)
    values = np.full((len(names), n), np.nan)
    lengths = np.array([len(key) for key in keys], dtype=np.int64)
    width = int(lengths.max()) if len(keys) else 0
    if width:
        name_of_position = np.zeros((len(keys), width), dtype=np.int64)
        for key_id, key in enumerate(keys):
            name_of_position[key_id, :len(key)] = [name_index[name] for name in key]
        per_host = lengths[key_ids]
        rows = np.repeat(np.arange(n), per_host)
        positions = np.arange(len(rows)) - np.repeat(np.cumsum(per_host) - per_host, per_host)
        flat = np.fromiter(chain.from_iterable(h.metrics.values() for h in hosts),
                           dtype=np.float64, count=len(rows))
        values[name_of_position[key_ids[rows], positions], rows] = flat
    host_set_ids = set_ids[key_ids] if n else np.zeros(0, dtype=np.int32)
    return host_set_ids, [list(names_) for names_ in metric_sets], names, values


def _resource_arrays(class_count: int, n: int, rows: list, classes: list, ints: list,
                     ratios: list) -> dict:
    """rc_* arrays from flat lists: one row, class and ratio per inventory, and its
    total, reserved, min_unit, max_unit, step_size, used in `ints`."""
    shape = (class_count, n)
    total = np.zeros(shape, dtype=np.int64)
    reserved = np.zeros(shape, dtype=np.int64)
    ratio = np.zeros(shape, dtype=np.float64)
    used = np.zeros(shape, dtype=np.int64)
    min_unit = np.zeros(shape, dtype=np.int32)
    max_unit = np.zeros(shape, dtype=np.int32)  # 0: no inventory, so any amount > 0 fails
    step = np.ones(shape, dtype=np.int32)
    present = np.zeros(shape, dtype=np.uint8)
    free = np.zeros(shape, dtype=np.int64)
    if rows:
        where = (np.array(classes, dtype=np.int64), np.array(rows, dtype=np.int64))
        values = np.array(ints, dtype=np.int64).reshape(-1, 6)
        total[where], reserved[where], used[where] = values[:, 0], values[:, 1], values[:, 5]
        units = np.clip(values[:, 2:5], -INT32_MAX, INT32_MAX)
        min_unit[where], max_unit[where], step[where] = units[:, 0], units[:, 1], units[:, 2]
        ratio[where] = ratios
        present[where] = 1
        free[where] = _free(values[:, 0], values[:, 1], ratio[where], values[:, 5])
    return {"rc_free": free, "rc_min_unit": min_unit, "rc_max_unit": max_unit, "rc_step": step,
            "rc_total": total, "rc_reserved": reserved, "rc_used": used, "rc_ratio": ratio,
            "rc_present": present, "rc_unit_bounds": _unit_bounds(present, min_unit, max_unit, step)}


# Capacities beyond +-this are held as +-this, so free space stays an exact int64: above any
# usage (<= MAX_USED) it leaves room for 2**31 instances of the largest amount (PLACEMENT_MAX_INT);
# below (reserved > total, overcommitted) nothing fits either way.
CAPACITY_CEILING = 2.0**62


def _free(total: np.ndarray, reserved: np.ndarray, ratio: np.ndarray, used: np.ndarray) -> np.ndarray:
    # used + amount <= capacity with integer used and amount is amount <= floor(capacity) - used.
    return np.clip(np.floor((total - reserved) * ratio), -CAPACITY_CEILING, CAPACITY_CEILING).astype(np.int64) - used


def _unit_bounds(present, min_unit, max_unit, step) -> np.ndarray:
    """Per class over the hosts with inventory: largest min_unit, smallest max_unit, smallest and
    largest step_size. An amount inside them passes every host's unit rules, so the kernel
    need not read the unit columns."""
    bounds = np.zeros((present.shape[0], UNIT_BOUND_COUNT), dtype=np.int64)
    has = present.astype(bool)
    for index in range(present.shape[0]):
        if has[index].any():
            steps = step[index][has[index]]
            bounds[index] = (min_unit[index][has[index]].max(), max_unit[index][has[index]].min(),
                             steps.min(), steps.max())
    return bounds


def _weigher_inputs(arrays: dict, rc_index: dict) -> dict:
    """Nova HostState's free_ram_mb, free_disk_mb and free vCPUs; 0 without the inventory."""
    n = arrays["rc_free"].shape[1]

    def cold(name: str, rc: str) -> np.ndarray:
        index = rc_index.get(rc)
        return arrays[name][index].astype(np.float64) if index is not None else np.zeros(n)

    return {
        "w_free_ram_mb": cold("rc_total", "MEMORY_MB") - cold("rc_used", "MEMORY_MB"),
        "w_free_disk_mb": (cold("rc_total", "DISK_GB") - cold("rc_used", "DISK_GB")) * 1024.0,
        "w_free_vcpus": cold("rc_total", "VCPU") * cold("rc_ratio", "VCPU") - cold("rc_used", "VCPU"),
    }
