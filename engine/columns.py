"""Fleet -> Columns: the columnar encoding every rule reads.

A `Columns` is only numpy arrays plus JSON-serialisable dicts, so the snapshot
layer can put it in shared memory and hand it back as read-only views. Every
lookup below only reads those arrays and dicts (binary search over the sorted
host names, a hash index over instance uuids, bisection of sorted lists): nothing
is rebuilt per generation.
"""
from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np

from engine import _fastfilters
from engine.model import Fleet

INT32_MAX = np.iinfo(np.int32).max

FLAG_ENABLED = 1
FLAG_UP = 2
FLAG_IN_AZ_AGGREGATE = 4  # in an aggregate whose metadata has an availability_zone key

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
    """

    __slots__ = ("arrays", "dicts")

    def __init__(self, arrays: dict[str, np.ndarray], dicts: dict):
        self.arrays = arrays
        self.dicts = dicts

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], dicts: dict) -> "Columns":
        return cls(dict(arrays), dicts)

    @property
    def host_count(self) -> int:
        return len(self.arrays["num_instances"])

    def host_name(self, row: int) -> str:
        offsets = self.arrays["host_name_offsets"]
        return self.arrays["host_name_bytes"][offsets[row]:offsets[row + 1]].tobytes().decode()

    def row_of(self, host_name: str) -> int | None:
        return _search_sorted_heap(self.arrays["host_name_offsets"], self.arrays["host_name_bytes"],
                                   self.arrays["host_name_order"], host_name.encode())

    def rows_of_instances(self, uuids) -> np.ndarray:
        """Sorted unique rows of the hosts running any of these instance uuids."""
        offsets = self.arrays["instance_uuid_offsets"]
        heap = self.arrays["instance_uuid_bytes"]
        slots = self.arrays["instance_slots"]
        instance_indices = [index for uuid in set(uuids)
                            for index in _fastfilters.find_in_heap_index(offsets, heap, slots, uuid.encode())]
        rows = self.arrays["instance_row"][np.array(instance_indices, dtype=np.int64)]
        return np.unique(rows).astype(np.int32)

    def instances_of(self, row: int) -> list[str]:
        offsets = self.arrays["instance_uuid_offsets"]
        heap = self.arrays["instance_uuid_bytes"]
        first, last = self.arrays["instance_offsets"][row:row + 2]
        return [heap[offsets[i]:offsets[i + 1]].tobytes().decode() for i in range(first, last)]

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


def _index_in_sorted(items: list, key) -> int | None:
    index = bisect_left(items, key)
    return index if index < len(items) and items[index] == key else None


def _set_bits(words: np.ndarray) -> list[int]:
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).tolist()


def _search_sorted_heap(offsets: np.ndarray, heap: np.ndarray, order: np.ndarray,
                        key: bytes) -> int | None:
    """Binary search: the index of a heap entry equal to key; `order` sorts the entries."""

    def entry(position: int) -> bytes:
        index = order[position]
        return heap[offsets[index]:offsets[index + 1]].tobytes()

    low, high = 0, len(order)
    while low < high:
        middle = (low + high) // 2
        if entry(middle) < key:
            low = middle + 1
        else:
            high = middle
    return int(order[low]) if low < len(order) and entry(low) == key else None


def _heap(strings) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 heap of strings: offsets [len+1] and the bytes."""
    _, offsets, heap_bytes = _fastfilters.pack_string_groups((strings,))
    return offsets, heap_bytes


def _sorted_order(strings: list[str]) -> np.ndarray:
    # UTF-8 byte order is code point order, so sorting the str sorts the heap's bytes.
    return np.array(sorted(range(len(strings)), key=strings.__getitem__), dtype=np.int32)


def _hash_index(offsets: np.ndarray, heap: np.ndarray) -> np.ndarray:
    """Open-addressing slots over the heap's entries (load <= 3/4); -1 is empty."""
    entries = len(offsets) - 1
    slots = np.full(1 << (entries * 4 // 3 + 1).bit_length(), -1, dtype=np.int32)
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
        if AVAILABILITY_ZONE_KEY in aggregate.metadata and rows:
            flags[rows] |= FLAG_IN_AZ_AGGREGATE
    arrays["aggregates"] = _bitset(np.array(member_rows, dtype=np.int64),
                                   np.array(member_bits, dtype=np.int64), n, len(aggregates))

    arrays["flags"] = flags
    arrays["num_instances"] = np.clip(num_instances, 0, INT32_MAX).astype(np.int32)
    arrays["num_io_ops"] = np.clip(num_io_ops, 0, INT32_MAX).astype(np.int32)
    arrays.update(_weigher_inputs(arrays, rc_index))

    arrays["host_name_offsets"], arrays["host_name_bytes"] = _heap(names)
    arrays["host_name_order"] = _sorted_order(names)

    # One heap of every host's instance uuids, in row order.
    instance_offsets, uuid_offsets, uuid_bytes = _fastfilters.pack_string_groups(
        [h.instances for h in hosts])
    arrays["instance_offsets"] = instance_offsets
    arrays["instance_uuid_offsets"], arrays["instance_uuid_bytes"] = uuid_offsets, uuid_bytes
    # Millions of uuids: a hash index builds in O(M) where sorting them would take seconds.
    arrays["instance_slots"] = _hash_index(uuid_offsets, uuid_bytes)
    arrays["instance_row"] = np.repeat(np.arange(n, dtype=np.int32), np.diff(instance_offsets))

    dicts = {
        "resource_classes": resource_classes,
        "traits": trait_names,
        "aggregates": [agg.id for agg in aggregates],
        "aggregate_names": [agg.name for agg in aggregates],
        "aggregate_metadata": [dict(agg.metadata) for agg in aggregates],
    }
    return Columns(arrays, dicts)


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
        # used + amount <= capacity with integer used and amount is amount <= floor(capacity) - used.
        capacity = np.floor((values[:, 0] - values[:, 1]) * ratio[where])
        free[where] = capacity.astype(np.int64) - values[:, 5]
    return {"rc_free": free, "rc_min_unit": min_unit, "rc_max_unit": max_unit, "rc_step": step,
            "rc_total": total, "rc_reserved": reserved, "rc_used": used, "rc_ratio": ratio,
            "rc_present": present, "rc_unit_bounds": _unit_bounds(present, min_unit, max_unit, step)}


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
