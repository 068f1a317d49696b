"""A new base generation's columns from the previous base's and the hosts that changed.

`splice` returns exactly what build_columns returns for the new fleet (every array of the same
dtype, shape and bytes, every dict equal and in the same order: readers and the checksum cannot
tell them apart) at a cost in proportion to the change rather than the fleet: only the upserted
hosts are encoded (build_columns of a fleet of just them), every other row is copied from the
base's arrays with numpy, and the numberings (classes, traits, aggregates, IPs, host profiles,
metric sets, instance entries) are merged and renumbered as a full build numbers them.
"""
from __future__ import annotations

from bisect import bisect_left
from functools import partial
from itertools import compress
from typing import Collection, Sequence

import numpy as np

from placecheck_engine.columns import (Columns, _bitset, _distinct_rows, _hash_index, _place_uuids, _set_bits, _slot_count,
                            _unit_bounds, _uuid_hash, _uuid_index, build_columns, pci_pool_kind_key,
                            _first_entries, NUMA_CELL_ARRAYS, NUMA_PAGE_ARRAYS)
from placecheck_engine.model import Aggregate, Fleet, Host

BASE, UPSERTED = 0, 1  # where a run of new rows comes from

# What build_columns holds in an rc_* cell of a host without an inventory of the class.
_NO_INVENTORY = {"rc_free": 0, "rc_min_unit": 0, "rc_max_unit": 0, "rc_step": 1, "rc_total": 0,
                 "rc_reserved": 0, "rc_used": 0, "rc_ratio": 0.0, "rc_present": 0}
_INSTANCE_ARRAYS = ("instance_offsets", "instance_uuids", "instance_slots", "instance_other_entries",
                    "instance_other_offsets", "instance_other_bytes", "instance_other_slots")
_CHUNK = 1 << 16  # slots renumbered per numpy pass
_PER_HOST = ("flags", "num_instances", "num_io_ops", "hypervisor_version", "failed_builds", "host_ipv4",
             "w_free_ram_mb", "w_free_disk_mb", "w_free_vcpus", "numa_cell_count", "numa_free_pcpus",
             "numa_max_free_pcpus", "numa_max_cpus", "numa_cpu_ratio", "numa_ram_ratio", "pci_free_devices")


def splice(base: Columns | None, upserted: Sequence[Host], removed: Collection[str], aggregates: Sequence[Aggregate],
           *, members_changed: Collection[int] | None) -> Columns:
    """build_columns(Fleet(new_hosts, aggregates)), where new_hosts is base's hosts in row order
    (none when base is None) without the hosts named in `removed` (a name base does not have is
    ignored), then with each of `upserted` replacing the host of its name in place, or appended in
    the given order when there is none (a removed name too): a dict of base's hosts by name, popped
    and updated. A name upserted twice is the last host, at the first one's place. `aggregates` is
    the complete new aggregate list.

    `members_changed`: the ids of the aggregates whose members among the hosts base keeps may
    differ from what base's columns say (the aggregates an UpsertAggregates brings; none for a
    change of hosts, even when removed hosts' names leave the aggregates); every other aggregate is
    taken to have the same members among them, so only its bits are renumbered. None: any may
    differ, so every aggregate's hosts are looked up, in proportion to all their members. An
    aggregate base does not have is looked up either way.
    """
    upserted = list({host.name: host for host in upserted}.values())
    if base is None:
        return build_columns(Fleet(hosts=tuple(upserted), aggregates=tuple(aggregates)))
    names = _HostNames(base)
    rows = _Rows(base, upserted, removed, names)
    aggregates = sorted(aggregates, key=lambda aggregate: aggregate.id)
    upserted_names = {host.name for host in upserted}
    # Only the upserted hosts' memberships matter to the small build: intersecting (which walks the
    # smaller set) keeps it in proportion to them rather than to every aggregate's members.
    upserted_only = build_columns(Fleet(hosts=tuple(upserted), aggregates=tuple(
        Aggregate(aggregate.id, aggregate.name, frozenset(upserted_names.intersection(aggregate.hosts)),
                  aggregate.metadata) for aggregate in aggregates)))
    if rows.kept_count == 0:  # nothing of base stays: the new fleet is the upserted hosts
        return upserted_only
    parts = _Parts(base, upserted_only, rows)
    arrays, dicts = {}, {}
    _resources(parts, arrays, dicts)
    _traits(parts, arrays, dicts)
    _aggregates(parts, arrays, dicts, aggregates, names, members_changed)
    _host_profiles(parts, arrays, dicts)
    _host_ips(parts, arrays, dicts)
    _metrics(parts, arrays, dicts)
    for name in _PER_HOST:
        arrays[name] = parts.gather(name)
    arrays.update(_host_names(parts, names))
    arrays.update(_instances(parts))
    arrays["numa_cells_offsets"], arrays["numa_cells_bytes"] = _concatenated_heap(
        parts, "numa_cells_offsets", "numa_cells_bytes")
    _numa_cells(parts, arrays)
    _pci_pools(parts, arrays, dicts)
    # In build_columns' order, so that whatever walks them sees the same sequence.
    return Columns({name: arrays[name] for name in dict.keys(upserted_only.arrays)},
                   {name: dicts[name] for name in upserted_only.dicts})


class _HostNames:
    """Lookups by name in a Columns' sorted host name heap, as plain Python values (bisect)."""

    def __init__(self, columns: Columns):
        self._heap = columns.arrays["host_name_bytes"].tobytes()
        self._offsets = columns.arrays["host_name_offsets"].tolist()
        self.order = columns.arrays["host_name_order"].tolist()

    def name(self, row: int) -> bytes:
        return self._heap[self._offsets[row]:self._offsets[row + 1]]

    def position(self, name: bytes) -> int:
        """Where `name` is, or would be, in the sorted order."""
        return bisect_left(self.order, name, key=self.name)

    def row(self, name: str) -> int | None:
        key = name.encode()
        position = self.position(key)
        if position < len(self.order) and self.name(self.order[position]) == key:
            return self.order[position]
        return None

    def rows(self, name_sets: list[Collection[str]]) -> list[list[int]]:
        """For each set of names, the rows of those the heap has: a binary search each, or one
        dict of every name when they are many."""
        if sum(map(len, name_sets)) * 16 <= len(self.order):
            return [[row for row in map(self.row, names) if row is not None] for names in name_sets]
        offsets = self._offsets
        if self._heap.isascii():  # one decode, then str slices at the byte offsets
            text = self._heap.decode()
            every_name = [text[start:stop] for start, stop in zip(offsets, offsets[1:])]
        else:
            every_name = [self._heap[start:stop].decode() for start, stop in zip(offsets, offsets[1:])]
        row_by_name = dict(zip(every_name, range(len(every_name))))
        return [[row for row in map(row_by_name.get, names) if row is not None] for names in name_sets]


class _Rows:
    """Where each new row comes from: base's rows in order without the removed ones, the upserted
    hosts' rows in place of the ones they replace, then the upserted hosts base does not have."""

    def __init__(self, base: Columns, upserted: Sequence[Host], removed: Collection[str], names: _HostNames):
        removed = set(removed)
        removed_rows = [row for row in map(names.row, removed) if row is not None]
        replaced = {}  # base row -> upserted row
        self.appended = []  # upserted rows of hosts base has not (or no longer)
        for upserted_row, host in enumerate(upserted):
            row = None if host.name in removed else names.row(host.name)
            if row is None:
                self.appended.append(upserted_row)
            else:
                replaced[row] = upserted_row
        self.base_count = base.host_count
        self.keep = np.ones(self.base_count, dtype=bool)
        self.keep[removed_rows] = False
        self.removes = bool(removed_rows)
        self.kept_rows = np.flatnonzero(self.keep)
        self.kept_count = len(self.kept_rows)
        self.count = self.kept_count + len(self.appended)
        self.new_row_of_base = np.cumsum(self.keep) - 1
        replaced_rows = np.array(sorted(replaced), dtype=np.int64)
        # Base rows whose base values stay: kept and not replaced.
        self.survivors = self.keep.copy()
        self.survivors[replaced_rows] = False
        # The new rows that take an upserted host's values, and which.
        self.upserted_positions = np.concatenate([self.new_row_of_base[replaced_rows],
                                                  np.arange(self.kept_count, self.count)]).astype(np.int64)
        self.upserted_rows = np.array([replaced[row] for row in replaced_rows.tolist()] + self.appended,
                                      dtype=np.int64)
        self.segments = _segments(self.base_count, removed_rows, replaced, self.appended)
        # No host changed: the new rows are base's (an aggregates change), arrays and all.
        self.unchanged = self.segments == [(BASE, 0, self.base_count)]


def _segments(base_count: int, removed_rows: list[int], replaced: dict[int, int],
              appended: list[int]) -> list[tuple[int, int, int]]:
    """The new rows as runs (source, start, stop) of consecutive rows of base or of the upserted hosts."""
    runs = []

    def add(source: int, start: int, stop: int) -> None:
        if start == stop:
            return
        if runs and runs[-1][0] == source and runs[-1][2] == start:
            runs[-1] = (source, runs[-1][1], stop)
        else:
            runs.append((source, start, stop))

    previous = 0
    for row in sorted([*removed_rows, *replaced]):
        add(BASE, previous, row)
        if row in replaced:
            add(UPSERTED, replaced[row], replaced[row] + 1)
        previous = row + 1
    add(BASE, previous, base_count)
    for row in appended:
        add(UPSERTED, row, row + 1)
    return runs


class _Parts:
    """The base's Columns and the upserted hosts' own (build_columns of just them), and how to
    put their rows together."""

    def __init__(self, base: Columns, upserted: Columns, rows: _Rows):
        self.base, self.upserted, self.rows = base, upserted, rows

    def gather(self, name: str | None = None, base_array: np.ndarray | None = None,
               upserted_array: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
        """The new rows of an array whose `axis` is the host axis: base's at the rows it keeps,
        the upserted hosts' where they go (base's and upserted's `name`, unless given)."""
        if base_array is None:
            base_array, upserted_array = self.base.arrays[name], self.upserted.arrays[name]
        rows = self.rows
        if rows.unchanged:  # a Columns' arrays never change, so the new one may hold base's
            return base_array
        shape = list(base_array.shape)
        shape[axis] = rows.count
        out = np.empty(shape, dtype=base_array.dtype)
        target = np.moveaxis(out, axis, -1)
        base_array, upserted_array = np.moveaxis(base_array, axis, -1), np.moveaxis(upserted_array, axis, -1)
        if len(rows.segments) <= 16:  # a few block copies
            new_start = 0
            for source, start, stop in rows.segments:
                target[..., new_start:new_start + stop - start] = (base_array if source == BASE
                                                                   else upserted_array)[..., start:stop]
                new_start += stop - start
        else:
            target[..., :rows.kept_count] = np.take(base_array, rows.kept_rows, axis=-1) if rows.removes else base_array
            target[..., rows.upserted_positions] = np.take(upserted_array, rows.upserted_rows, axis=-1)
        return out

    def survivors_of(self, name: str, axis: int = -1) -> np.ndarray:
        """Base's `name` at the rows whose base values the new columns keep."""
        return np.compress(self.rows.survivors, self.base.arrays[name], axis=axis)


def _resources(parts: _Parts, arrays: dict, dicts: dict) -> None:
    used = parts.survivors_of("rc_present").any(axis=1)
    classes, base_to_new, upserted_to_new = _merge_sorted(
        parts.base.dicts["resource_classes"], used, parts.upserted.dicts["resource_classes"])
    dicts["resource_classes"] = classes
    for name, fill in _NO_INVENTORY.items():
        arrays[name] = parts.gather(
            base_array=_reindex(parts.base.arrays[name], base_to_new, len(classes), fill),
            upserted_array=_reindex(parts.upserted.arrays[name], upserted_to_new, len(classes), fill))
    arrays["rc_unit_bounds"] = _unit_bounds(arrays["rc_present"], arrays["rc_min_unit"], arrays["rc_max_unit"],
                                            arrays["rc_step"])


def _traits(parts: _Parts, arrays: dict, dicts: dict) -> None:
    base_traits = parts.base.dicts["traits"]
    used = _bits_present(np.bitwise_or.reduce(parts.survivors_of("traits", axis=0), axis=0), len(base_traits))
    traits, base_to_new, upserted_to_new = _merge_sorted(base_traits, used, parts.upserted.dicts["traits"])
    dicts["traits"] = traits
    arrays["traits"] = parts.gather(
        base_array=_remap_bits(parts.base.arrays["traits"], base_to_new, len(traits)),
        upserted_array=_remap_bits(parts.upserted.arrays["traits"], upserted_to_new, len(traits)), axis=0)


def _aggregates(parts: _Parts, arrays: dict, dicts: dict, aggregates: list[Aggregate], names: _HostNames,
                members_changed: Collection[int] | None) -> None:
    """The upserted build numbers the aggregates as the new columns do; base's bits are renumbered,
    and the members among base's hosts of the aggregates that may have changed are looked up."""
    for name in ("aggregates", "aggregate_names", "aggregate_metadata"):
        dicts[name] = parts.upserted.dicts[name]
    new_ids = dicts["aggregates"]
    base_bit = {aggregate_id: bit for bit, aggregate_id in enumerate(parts.base.dicts["aggregates"])}
    base_to_new = np.full(len(base_bit), -1, dtype=np.int64)
    looked_up = []  # (new bit, aggregate)
    for bit, aggregate in enumerate(aggregates):
        old = base_bit.get(aggregate.id)
        if old is None or members_changed is None or aggregate.id in members_changed:
            looked_up.append((bit, aggregate))
        else:
            base_to_new[old] = bit
    base_bits = _remap_bits(parts.base.arrays["aggregates"], base_to_new, len(new_ids))
    if looked_up:
        member_rows, member_bits = [], []
        for (bit, _), rows in zip(looked_up, names.rows([aggregate.hosts for _, aggregate in looked_up])):
            member_rows += rows
            member_bits += [bit] * len(rows)
        base_bits = base_bits | _bitset(np.array(member_rows, dtype=np.int64), np.array(member_bits, dtype=np.int64),
                                        parts.rows.base_count, len(new_ids))
    arrays["aggregates"] = parts.gather(base_array=base_bits, upserted_array=parts.upserted.arrays["aggregates"],
                                        axis=0)
    if looked_up:  # base's distinct memberships no longer tell the new ones
        dicts["aggregate_sets"], arrays["aggregate_set_id"] = _distinct_memberships(arrays["aggregates"])
        return
    # Each membership is one of base's (renumbered) or one of the upserted hosts': sort the few
    # candidates as _distinct_rows sorts distinct rows, and keep those some row has.
    candidates = [[int(base_to_new[bit]) for bit in bits if base_to_new[bit] >= 0]
                  for bits in parts.base.dicts["aggregate_sets"]] + parts.upserted.dicts["aggregate_sets"]
    candidate_rows = np.repeat(np.arange(len(candidates)), [len(bits) for bits in candidates])
    candidate_bits = np.array([bit for bits in candidates for bit in bits], dtype=np.int64)
    distinct, candidate_to_distinct = np.unique(_bitset(candidate_rows, candidate_bits, len(candidates),
                                                        len(new_ids)), axis=0, return_inverse=True)
    candidate_to_distinct = candidate_to_distinct.reshape(-1)
    base_set_count = len(parts.base.dicts["aggregate_sets"])
    set_ids = parts.gather(
        base_array=candidate_to_distinct[parts.base.arrays["aggregate_set_id"]],
        upserted_array=candidate_to_distinct[base_set_count + parts.upserted.arrays["aggregate_set_id"]])
    used = np.bincount(set_ids, minlength=len(distinct)) > 0
    arrays["aggregate_set_id"] = (np.cumsum(used) - 1).astype(np.int32)[set_ids]
    dicts["aggregate_sets"] = [_set_bits(words) for words in distinct[used]]


def _distinct_memberships(bitset: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """_distinct_rows(bitset); of one word, a sort of plain numbers (the same order: np.unique
    along rows compares the words as numbers, first word first) rather than of rows."""
    if bitset.shape[1] > 1:
        return _distinct_rows(bitset)
    distinct, inverse = np.unique(bitset[:, 0], return_inverse=True)
    return [_set_bits(words) for words in distinct[:, None]], inverse.astype(np.int32)


def _host_profiles(parts: _Parts, arrays: dict, dicts: dict) -> None:
    arrays["host_profile_id"], dicts["host_profiles"] = _first_seen_merge(
        parts, "host_profile_id", parts.base.dicts["host_profiles"], parts.upserted.dicts["host_profiles"],
        _profile_key)


def _profile_key(profile: dict) -> tuple:
    """What build_columns tells host profiles apart by (stats in their order)."""
    return (profile["hypervisor_type"], profile["hypervisor_version"],
            tuple(map(tuple, profile["supported_instances"])), tuple(profile["stats"].items()))


def _host_ips(parts: _Parts, arrays: dict, dicts: dict) -> None:
    base_ips = parts.base.dicts["host_ips"]
    used = np.bincount(parts.survivors_of("host_ip_id"), minlength=len(base_ips)) > 0
    dicts["host_ips"], base_to_new, upserted_to_new = _merge_sorted(base_ips, used, parts.upserted.dicts["host_ips"])
    arrays["host_ip_id"] = parts.gather(
        base_array=base_to_new.astype(np.int32)[parts.base.arrays["host_ip_id"]],
        upserted_array=upserted_to_new.astype(np.int32)[parts.upserted.arrays["host_ip_id"]])


def _metrics(parts: _Parts, arrays: dict, dicts: dict) -> None:
    arrays["metric_set_id"], metric_sets = _first_seen_merge(
        parts, "metric_set_id", parts.base.dicts["metric_sets"], parts.upserted.dicts["metric_sets"], tuple)
    dicts["metric_sets"] = metric_sets
    metric_names = sorted({name for names in metric_sets for name in names})
    dicts["metric_names"] = metric_names
    index = {name: position for position, name in enumerate(metric_names)}

    def to_new(names: list[str]) -> np.ndarray:
        return np.array([index.get(name, -1) for name in names], dtype=np.int64)

    arrays["metric_values"] = parts.gather(
        base_array=_reindex(parts.base.arrays["metric_values"], to_new(parts.base.dicts["metric_names"]),
                            len(metric_names), np.nan),
        upserted_array=_reindex(parts.upserted.arrays["metric_values"], to_new(parts.upserted.dicts["metric_names"]),
                                len(metric_names), np.nan))


def _first_seen_merge(parts: _Parts, id_name: str, base_values: list, upserted_values: list,
                      key, gather=None) -> tuple[np.ndarray, list]:
    """A dictionary numbered in order of first appearance over the rows (as build_columns'
    _dictionary_encode numbers it): the new ids per row and the values they index. `gather`
    puts base's ids and the upserted hosts' together (default: per row, `_Parts.gather`)."""
    candidates = list(base_values)
    candidate_of = {key(value): index for index, value in enumerate(base_values)}
    upserted_to_candidate = np.zeros(len(upserted_values), dtype=np.int32)
    for index, value in enumerate(upserted_values):
        upserted_to_candidate[index] = candidate_of.setdefault(key(value), len(candidates))
        if upserted_to_candidate[index] == len(candidates):
            candidates.append(value)
    gather = gather or (lambda base_ids, upserted_ids: parts.gather(base_array=base_ids, upserted_array=upserted_ids))
    ids = gather(parts.base.arrays[id_name], upserted_to_candidate[parts.upserted.arrays[id_name]])
    first_row = np.full(len(candidates), len(ids), dtype=np.int64)
    np.minimum.at(first_row, ids, np.arange(len(ids)))
    present = np.flatnonzero(first_row < len(ids))
    order = present[np.argsort(first_row[present])]
    rank = np.zeros(len(candidates), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank[ids], [candidates[index] for index in order.tolist()]


def _entry_runs(parts: _Parts, first_name: str, runs: list[tuple[int, int, int]] | None = None
                ) -> list[tuple[int, int, int]]:
    """The entries (numbered per source by `first_name`, offsets [count+1] over its rows or other
    entries) of these runs (source, start, stop) of rows or entries (default: the new rows'), as runs."""
    firsts = (parts.base.arrays[first_name], parts.upserted.arrays[first_name])
    return [(source, int(firsts[source][start]), int(firsts[source][stop]))
            for source, start, stop in (parts.rows.segments if runs is None else runs)]


def _runs_joined(runs: list[tuple[int, int, int]], base_array: np.ndarray, upserted_array: np.ndarray) -> np.ndarray:
    sources = (base_array, upserted_array)
    return np.concatenate([sources[source][start:stop] for source, start, stop in runs])


def _numa_cells(parts: _Parts, arrays: dict) -> None:
    """The cell entries run by run of rows, and their page entries run by run of cells."""
    if parts.rows.unchanged:
        arrays.update({name: parts.base.arrays[name] for name in _NUMA_CELL_ENTRY_ARRAYS})
        return
    arrays["numa_cell_first"] = _offsets(parts, "numa_cell_first")
    cell_runs = _entry_runs(parts, "numa_cell_first")
    for name in NUMA_CELL_ARRAYS:
        arrays[name] = _runs_joined(cell_runs, parts.base.arrays[name], parts.upserted.arrays[name])
    arrays["numa_cell_page_first"] = _first_entries(_runs_joined(
        cell_runs, *(np.diff(source.arrays["numa_cell_page_first"]) for source in (parts.base, parts.upserted))))
    page_runs = _entry_runs(parts, "numa_cell_page_first", cell_runs)
    for name in NUMA_PAGE_ARRAYS:
        arrays[name] = _runs_joined(page_runs, parts.base.arrays[name], parts.upserted.arrays[name])


_NUMA_CELL_ENTRY_ARRAYS = ("numa_cell_first", *NUMA_CELL_ARRAYS, "numa_cell_page_first", *NUMA_PAGE_ARRAYS)


def _pci_pools(parts: _Parts, arrays: dict, dicts: dict) -> None:
    """The pool entries run by run of rows; the kinds numbered again in first-seen order."""
    if parts.rows.unchanged:
        arrays.update({name: parts.base.arrays[name] for name in _PCI_POOL_ARRAYS})
        dicts["pci_pool_kinds"] = parts.base.dicts["pci_pool_kinds"]
        return
    arrays["pci_pool_offsets"] = _offsets(parts, "pci_pool_offsets")
    entries = partial(_runs_joined, _entry_runs(parts, "pci_pool_offsets"))
    for name in ("pci_pool_numa_node", "pci_pool_count"):
        arrays[name] = entries(parts.base.arrays[name], parts.upserted.arrays[name])
    arrays["pci_pool_kind"], dicts["pci_pool_kinds"] = _first_seen_merge(
        parts, "pci_pool_kind", parts.base.dicts["pci_pool_kinds"], parts.upserted.dicts["pci_pool_kinds"],
        pci_pool_kind_key, entries)


_PCI_POOL_ARRAYS = ("pci_pool_offsets", "pci_pool_kind", "pci_pool_numa_node", "pci_pool_count")


def _merge_sorted(base: list, used: np.ndarray, additions: list) -> tuple[list, np.ndarray, np.ndarray]:
    """The sorted list of base's `used` items and the (sorted, distinct) `additions`, and where each
    of base's (-1: not used) and each addition is in it."""
    used = used.copy()
    for item in additions:  # an addition base has keeps its place, so nothing moves
        position = bisect_left(base, item)
        if position < len(base) and base[position] == item:
            used[position] = True
    unused = np.flatnonzero(~used)
    if len(unused) * 16 <= len(base):  # deleting a few from a copy beats selecting all the others
        kept = base if not len(unused) else list(base)
        for position in reversed(unused.tolist()):
            del kept[position]
    else:
        kept = list(compress(base, used.tolist()))
    inserts = []  # (where in kept, item) of the additions not in kept, in order
    for item in additions:
        position = bisect_left(kept, item)
        if position == len(kept) or kept[position] != item:
            inserts.append((position, item))
    kept_to_new = np.arange(len(kept))
    merged = kept
    if inserts:
        kept_to_new += np.searchsorted(np.array([position for position, _ in inserts]), kept_to_new, side="right")
        merged, previous = [], 0
        for position, item in inserts:
            merged += kept[previous:position]
            merged.append(item)
            previous = position
        merged += kept[previous:]
    if len(unused):
        base_to_new = np.full(len(base), -1, dtype=np.int64)
        base_to_new[used] = kept_to_new
    else:
        base_to_new = kept_to_new
    return merged, base_to_new, np.array([bisect_left(merged, item) for item in additions], dtype=np.int64)


def _is_identity(old_to_new: np.ndarray, new_count: int) -> bool:
    return len(old_to_new) == new_count and bool((old_to_new == np.arange(new_count)).all())


def _reindex(array: np.ndarray, old_to_new: np.ndarray, new_count: int, fill) -> np.ndarray:
    """`array` with its first axis renumbered (old_to_new[i] < 0: dropped; new ones filled)."""
    if _is_identity(old_to_new, new_count):
        return array
    out = np.full((new_count, *array.shape[1:]), fill, dtype=array.dtype)
    kept = old_to_new >= 0
    out[old_to_new[kept]] = array[kept]
    return out


def _bits_present(words: np.ndarray, bit_count: int) -> np.ndarray:
    return np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")[:bit_count].astype(bool)


def _remap_bits(bitset: np.ndarray, old_to_new: np.ndarray, new_count: int) -> np.ndarray:
    """A bitset [rows, words] with bit i moved to old_to_new[i] (< 0: dropped), new_count bits wide."""
    if _is_identity(old_to_new, new_count):
        return bitset
    words = max(1, -(-new_count // 64))
    bits = np.unpackbits(np.ascontiguousarray(bitset, dtype="<u8").view(np.uint8), axis=1, bitorder="little")
    moved = np.zeros((len(bitset), words * 64), dtype=np.uint8)
    kept = np.flatnonzero(old_to_new >= 0)
    moved[:, old_to_new[kept]] = bits[:, kept]
    return np.packbits(moved, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def _host_names(parts: _Parts, names: _HostNames) -> dict[str, np.ndarray]:
    """The name heap by runs of rows, and the sorted order: base's, less the removed rows, with
    the appended hosts' names inserted where they sort."""
    rows = parts.rows
    if rows.unchanged:
        return {name: parts.base.arrays[name] for name in ("host_name_offsets", "host_name_bytes", "host_name_order")}
    offsets, heap = _concatenated_heap(parts, "host_name_offsets", "host_name_bytes")
    order = np.array(names.order, dtype=np.int64)
    if rows.removes:
        kept = rows.keep[order]
        removed_before = np.concatenate([[0], np.cumsum(~kept)])
        order = rows.new_row_of_base[order[kept]]
    else:
        removed_before = None
    appended_names = [parts.upserted.host_name(row).encode() for row in rows.appended]
    by_name = sorted(range(len(appended_names)), key=appended_names.__getitem__)
    positions = [names.position(appended_names[index]) for index in by_name]
    if removed_before is not None:
        positions = [position - int(removed_before[position]) for position in positions]
    appended_new_rows = [rows.kept_count + index for index in by_name]
    order = np.insert(order, positions, appended_new_rows).astype(np.int32)
    return {"host_name_offsets": offsets, "host_name_bytes": heap, "host_name_order": order}


def _concatenated_heap(parts: _Parts, offsets_name: str, heap_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A per-row heap (offsets [n+1], bytes) of the new rows, copied run by run."""
    if parts.rows.unchanged:
        return parts.base.arrays[offsets_name], parts.base.arrays[heap_name]
    return _offsets(parts, offsets_name), _runs_joined(_entry_runs(parts, offsets_name), parts.base.arrays[heap_name],
                                                       parts.upserted.arrays[heap_name])


def _offsets(parts: _Parts, name: str) -> np.ndarray:
    """Per-row offsets [n+1] of the new rows from base's and the upserted hosts' lengths."""
    lengths = parts.gather(base_array=np.diff(parts.base.arrays[name]),
                           upserted_array=np.diff(parts.upserted.arrays[name]))
    offsets = np.zeros(parts.rows.count + 1, dtype=parts.base.arrays[name].dtype)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _instances(parts: _Parts) -> dict[str, np.ndarray]:
    """The instance entries run by run of rows; the uuid slots laid out again where entries left or came."""
    sources = [parts.base.arrays, parts.upserted.arrays]
    if parts.rows.unchanged:
        return {name: sources[BASE][name] for name in _INSTANCE_ARRAYS}
    runs = _EntryRuns(parts.rows.segments, [source["instance_offsets"] for source in sources])
    uuids = np.concatenate([sources[source]["instance_uuids"][first:last] for source, first, last
                            in zip(runs.source.tolist(), runs.first.tolist(), runs.last.tolist())])
    # The fallback heap: each source's ids that are not canonical uuids, at their new entries.
    other_entries = [np.asarray(source["instance_other_entries"]) for source in sources]
    new_entries = np.concatenate([runs.new_numbers(other_entries[source], source) for source in (BASE, UPSERTED)])
    base_other_offsets, upserted_other_offsets = (source["instance_other_offsets"] for source in sources)
    starts = np.concatenate([base_other_offsets[:-1], upserted_other_offsets[:-1] + base_other_offsets[-1]])
    lengths = np.concatenate([np.diff(base_other_offsets), np.diff(upserted_other_offsets)])
    kept = np.flatnonzero(new_entries >= 0)
    kept = kept[np.argsort(new_entries[kept])]
    other_offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lengths[kept], out=other_offsets[1:])
    other_bytes = np.concatenate([source["instance_other_bytes"] for source in sources])[
        np.repeat(starts[kept] - other_offsets[:-1], lengths[kept]) + np.arange(other_offsets[-1])]
    other_entries_new = new_entries[kept].astype(np.int32)

    words = uuids.view("<u8")
    old_slots = sources[BASE]["instance_slots"]
    if len(old_slots) == _slot_count(len(uuids) - len(other_entries_new)):
        base_entry_count = len(sources[BASE]["instance_uuids"])
        base_runs = runs.of(BASE)
        gone = _without(_joined([np.arange(first, last) for first, last in _gaps(base_runs, base_entry_count)]),
                        other_entries[BASE])
        upserted_count = len(sources[UPSERTED]["instance_uuids"])
        added = runs.new_numbers(_without(np.arange(upserted_count), other_entries[UPSERTED]), UPSERTED)
        slots = _spliced_uuid_slots(old_slots, _renumbered(old_slots, base_runs, base_entry_count),
                                    sources[BASE]["instance_uuids"].view("<u8"), gone, words, added)
    else:  # another table size: every uuid moves
        canonical = np.ones(len(uuids), dtype=bool)
        canonical[other_entries_new] = False
        slots = _uuid_index(words, np.flatnonzero(canonical))
    return {
        "instance_offsets": _offsets(parts, "instance_offsets"),
        "instance_uuids": uuids,
        "instance_slots": slots,
        "instance_other_entries": other_entries_new,
        "instance_other_offsets": other_offsets,
        "instance_other_bytes": other_bytes,
        "instance_other_slots": _hash_index(other_offsets, other_bytes),
    }


class _EntryRuns:
    """The instance entries of the runs of new rows: where each run's entries are in its source
    and where they start among the new entries."""

    def __init__(self, segments: list[tuple[int, int, int]], offsets: list[np.ndarray]):
        source, start, stop = np.array(segments, dtype=np.int64).reshape(-1, 3).T
        self.source = source
        self.first, self.last = np.zeros(len(source), dtype=np.int64), np.zeros(len(source), dtype=np.int64)
        for index in (BASE, UPSERTED):
            mine = source == index
            self.first[mine], self.last[mine] = offsets[index][start[mine]], offsets[index][stop[mine]]
        self.new_first = np.concatenate([[0], np.cumsum(self.last - self.first)[:-1]]).astype(np.int64)

    def of(self, source: int) -> list[tuple[int, int, int]]:
        """(first entry, last entry + 1, new number of the first) of each run of `source`, in order."""
        mine = self.source == source
        return list(zip(self.first[mine].tolist(), self.last[mine].tolist(), self.new_first[mine].tolist()))

    def new_numbers(self, entries: np.ndarray, source: int) -> np.ndarray:
        """The new numbers of these entries of `source`; -1 for one no run holds (its row is gone)."""
        mine = np.flatnonzero(self.source == source)
        if not len(mine):
            return np.full(len(entries), -1, dtype=np.int64)
        mine = mine[np.lexsort((self.last[mine], self.first[mine]))]  # of equal firsts, an empty run first
        run = np.searchsorted(self.first[mine], entries, side="right") - 1
        holder = mine[np.maximum(run, 0)]
        inside = (run >= 0) & (entries < self.last[holder])
        return np.where(inside, entries - self.first[holder] + self.new_first[holder], -1)


def _without(entries: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The entries (ascending) that are not among the others (ascending)."""
    position = np.searchsorted(entries, others)
    found = position < len(entries)
    found[found] = entries[position[found]] == others[found]
    kept = np.ones(len(entries), dtype=bool)
    kept[position[found]] = False
    return entries[kept]


def _joined(entry_lists: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(entry_lists).astype(np.int64) if entry_lists else np.zeros(0, dtype=np.int64)


def _gaps(runs: list[tuple[int, int, int]], entry_count: int) -> list[tuple[int, int]]:
    """The ranges of base's entries between its kept runs: the entries gone."""
    gaps, previous_last = [], 0
    for first, last, _ in [*runs, (entry_count, entry_count, 0)]:
        if previous_last < first:
            gaps.append((previous_last, first))
        previous_last = last
    return gaps


def _renumbered(slots: np.ndarray, runs: list[tuple[int, int, int]], entry_count: int) -> np.ndarray:
    """Base's uuid slots with each kept entry's new number (-1 empty; an entry gone: any value)."""
    shifts = [(first, new_first - first) for first, _, new_first in runs]
    steps = [(first, shift - previous) for (first, shift), (_, previous) in zip(shifts, [(0, 0), *shifts])
             if shift != previous]
    if len(steps) > 4:  # one pass through a lookup table, but a random read per slot
        entry_map = np.full(entry_count + 1, -2, dtype=np.int32)
        entry_map[0] = -1
        for first, last, new_first in runs:
            entry_map[first + 1:last + 1] = np.arange(new_first, new_first + last - first, dtype=np.int32)
        return entry_map[slots + 1]
    renumbered = np.empty_like(slots)  # the shift is a step function of the entry: sequential passes
    for start in range(0, len(slots), _CHUNK):  # over a chunk at a time, which the cache holds
        chunk, target = slots[start:start + _CHUNK], renumbered[start:start + _CHUNK]
        target[:] = chunk
        for first, step in steps:
            target += (chunk >= first) * np.int32(step)
    return renumbered


def _spliced_uuid_slots(old_slots: np.ndarray, slots: np.ndarray, old_words: np.ndarray, gone: np.ndarray,
                        words: np.ndarray, added: np.ndarray) -> np.ndarray:
    """_uuid_index over the new entries, from base's table (`old_slots` over `old_words`), that
    table renumbered to the new entries (`slots`, written in place), base's entries `gone` and
    the new entries `added`.

    _uuid_index moves every entry not yet placed one slot on per round, so it reaches a slot at the
    round of its distance from its hash's slot: an entry coming from before a run of occupied
    slots (between two empty ones) reaches each slot of the run after the run's own entry took it.
    So each run is laid out by the entries whose hash falls in it alone, whatever passes through:
    only the runs that lose or gain an entry are laid out again, the same way, among the others."""
    gone_slots = _slots_holding(old_slots, old_words, gone)
    slots[gone_slots] = -1
    homes = _uuid_hash(words[added]).astype(np.int64) & (len(slots) - 1)
    region = np.sort(_runs_holding(np.concatenate([gone_slots, homes]), old_slots >= 0))
    first_of_its_value = np.ones(len(region), dtype=bool)  # np.unique: slower (it hashes)
    first_of_its_value[1:] = region[1:] != region[:-1]
    region = region[first_of_its_value]
    moved = slots[region]
    slots[region] = -1
    _place_uuids(slots, words, np.sort(np.concatenate([moved[moved >= 0].astype(np.int64), added])))
    return slots


def _slots_holding(slots: np.ndarray, words: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Where a uuid table holds each of these entries: probing from its hash's slot."""
    mask = len(slots) - 1
    position = _uuid_hash(words[entries]).astype(np.int64) & mask
    found = []
    while len(entries):
        hit = slots[position] == entries
        found.append(position[hit])
        entries, position = entries[~hit], (position[~hit] + 1) & mask
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _runs_holding(positions: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Every slot of the runs of occupied slots (they wrap around the table's end) that hold these
    positions, some more than once; an empty slot's position stands for itself."""
    mask = len(occupied) - 1
    bounds = []
    for step in (-1, 1):  # walk each run's occupied slots back to its first, then on to its last
        bound = positions.copy()
        walking = np.flatnonzero(occupied[positions])
        while len(walking):
            following = (bound[walking] + step) & mask
            walking = walking[occupied[following]]
            bound[walking] = (bound[walking] + step) & mask
        bounds.append(bound)
    first, last = bounds
    lengths = ((last - first) & mask) + 1
    starts = np.repeat(first - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return (starts + np.arange(lengths.sum())) & mask
