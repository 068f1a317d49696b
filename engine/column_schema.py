"""The column layout, declared once: every array of a generation's Columns (and of a usage delta),
its dtype, its shape in named dimensions, and what it means.

The snapshot writer checks every array it publishes against it (`check`), docs/architecture.md's
table is generated from it (`markdown_table`, held equal by tests/test_columns_encodings.py), and
its hash is in every segment's header (`SCHEMA_HASH`), so a reader refuses the segments of a
writer that lays the columns out otherwise.

Dimensions: n hosts (rows, fleet order), R resource classes, T = ceil(traits/64) and
A = ceil(aggregates/64) (each at least 1), M instance entries over all hosts, O of them not
canonical uuids, K metric names, P PCI pool entries over all hosts, C NUMA cells over all hosts, G page-size
entries over all cells; k rows and E instance ids of a delta. A dimension named `*` is
free (a heap's byte count, a hash table's power-of-two size); `n+1` is one more than n.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str  # numpy's name for it
    shape: tuple[str, ...]  # named dimensions or fixed sizes, as text
    meaning: str


def _specs(*rows: tuple[str, str, str, str]) -> tuple[ColumnSpec, ...]:
    return tuple(ColumnSpec(name, dtype, tuple(part.strip() for part in shape.split(",")), meaning)
                 for name, dtype, shape, meaning in rows)


SCHEMA = _specs(
    ("rc_free", "int64", "R, n", "floor((total - reserved) * allocation_ratio) - used; 0 where the host has no "
                                 "inventory of the class"),
    ("rc_min_unit", "int32", "R, n", "Placement's min_unit (clipped to int32)"),
    ("rc_max_unit", "int32", "R, n", "Placement's max_unit (clipped to int32); 0 where the host has no inventory "
                                     "of the class"),
    ("rc_step", "int32", "R, n", "Placement's step_size (clipped to int32)"),
    ("rc_unit_bounds", "int64", "R, 4", "per class over hosts with inventory: largest min_unit, smallest max_unit, "
                                        "smallest and largest step_size (an amount inside them lets the kernel "
                                        "skip the unit columns)"),
    ("rc_total", "int64", "R, n", "cold: for explanations and weighers"),
    ("rc_reserved", "int64", "R, n", "cold: for explanations and weighers"),
    ("rc_used", "int64", "R, n", "cold: for explanations and weighers"),
    ("rc_ratio", "float64", "R, n", "cold: allocation ratio"),
    ("rc_present", "uint8", "R, n", "cold: 1 where the host has an inventory of the class (NO_INVENTORY "
                                    "explanations)"),
    ("flags", "uint8", "n", "bit 0 enabled, bit 1 up, bit 3 host_ip is IPv4, bit 4 the host gives its own "
                            "cpu_allocation_ratio, bit 5 its own ram_allocation_ratio (bit 2 unused)"),
    ("traits", "uint64", "n, T", "trait bitset (bit i = `dicts[\"traits\"][i]`)"),
    ("aggregates", "uint64", "n, A", "aggregate membership bitset (bit i = `dicts[\"aggregates\"][i]`)"),
    ("num_instances", "int32", "n", "instance count"),
    ("num_io_ops", "int32", "n", "I/O-heavy operations in progress"),
    ("aggregate_set_id", "int32", "n", "index of the host's distinct aggregate membership (a distinct row of "
                                       "`aggregates`) into `dicts[\"aggregate_sets\"]`"),
    ("host_profile_id", "int32", "n", "index of the host's distinct {hypervisor_type, hypervisor_version, "
                                      "supported_instances, stats} into `dicts[\"host_profiles\"]`"),
    ("hypervisor_version", "int64", "n", "0 where unknown (Nova's weigher reads `hypervisor_version or 0`)"),
    ("failed_builds", "int32", "n", "recent failed builds (BuildFailureWeigher)"),
    ("host_ipv4", "uint32", "n", "host_ip as an integer where it is IPv4 (flag bit 3 `FLAG_HOST_IPV4`), else 0"),
    ("host_ip_id", "int32", "n", "index of the host_ip string into `dicts[\"host_ips\"]` (IPv6 and string "
                                 "comparisons)"),
    ("metric_set_id", "int32", "n", "index of the host's sorted metric names into `dicts[\"metric_sets\"]`"),
    ("metric_values", "float64", "K, n", "metric `dicts[\"metric_names\"][k]` of each host; NaN where the host "
                                         "lacks it"),
    ("w_free_ram_mb", "float64", "n", "weigher input: MEMORY_MB total - used"),
    ("w_free_disk_mb", "float64", "n", "weigher input: DISK_GB (total - used) * 1024"),
    ("w_free_vcpus", "float64", "n", "weigher input: VCPU total * ratio - used"),
    ("host_name_offsets", "int64", "n+1", "host names: row r's UTF-8 name is `host_name_bytes[offsets[r]:"
                                          "offsets[r+1]]`"),
    ("host_name_bytes", "uint8", "*", "host names' UTF-8 heap"),
    ("host_name_order", "int32", "n", "the rows sorted by name bytes, for lookups"),
    ("instance_offsets", "int64", "n+1", "host row r runs instance entries `instance_offsets[r]` .. "
                                         "`instance_offsets[r+1]` - 1 (entries numbered in row order, in each "
                                         "host's order)"),
    ("instance_uuids", "uint8", "M, 16", "the 16 raw bytes of each entry that is a canonical uuid (lowercase, "
                                         "hyphenated: what `str(uuid.UUID(...))` gives); zeros for any other id"),
    ("instance_slots", "int32", "*", "hash index over the canonical entries' raw bytes (a power of two > 4M/3 "
                                     "slots): open addressing, linear probing, -1 empty, fixed hash of the two "
                                     "little-endian words (`_uuid_hash` in engine/columns.py, `uuid_hash` in "
                                     "engine/instance_index.pxi); built a probe step at a time in numpy because "
                                     "sorting millions of uuids takes seconds"),
    ("instance_other_entries", "int32", "O", "fallback heap: the entries that are not canonical uuids "
                                             "(ascending entry numbers)"),
    ("instance_other_offsets", "int64", "O+1", "fallback heap: offsets of their ids in `instance_other_bytes`"),
    ("instance_other_bytes", "uint8", "*", "fallback heap: their ids as UTF-8"),
    ("instance_other_slots", "int32", "*", "hash index over the fallback heap (a power of two > 4O/3 slots; "
                                           "indices into `instance_other_entries`), `heap_hash` in "
                                           "engine/_fastfilters.pyx"),
    ("numa_cell_count", "int32", "n", "NUMA cells of the host; 0: it reports no NUMA topology"),
    ("numa_free_pcpus", "int32", "n", "sum over the cells of their unpinned dedicated CPUs (len(pcpuset - "
                                      "pinned_cpus))"),
    ("numa_max_free_pcpus", "int32", "n", "the most unpinned dedicated CPUs of one cell"),
    ("numa_max_cpus", "int32", "n", "the most shared CPUs (len(cpuset)) of one cell"),
    ("numa_cpu_ratio", "float64", "n", "the host's cpu_allocation_ratio (flag bit 4), else its VCPU inventory's "
                                       "allocation_ratio, else NaN: the profile's default"),
    ("numa_ram_ratio", "float64", "n", "the host's ram_allocation_ratio (flag bit 5), else its MEMORY_MB "
                                       "inventory's allocation_ratio, else NaN: the profile's default"),
    ("numa_cells_offsets", "int64", "n+1", "row r's cells are `numa_cells_bytes[offsets[r]:offsets[r+1]]` "
                                           "(none: empty)"),
    ("numa_cells_bytes", "uint8", "*", "the cells as compact canonical JSON, per cell [id, cpuset, pcpuset, "
                                       "memory, cpu_usage, memory_usage, pinned_cpus, siblings, [[size_kb, total, "
                                       "used, reserved], ...], socket] (`Columns.numa_cells_at`)"),
    ("numa_cell_first", "int64", "n+1", "host row r's cells are cell entries `numa_cell_first[r]` .. "
                                        "`numa_cell_first[r+1]` - 1 (entries numbered in row order, each host's in "
                                        "the order of its cells)"),
    ("numa_cell_id", "int32", "C", "the cell's id"),
    ("numa_cell_socket", "int32", "C", "the cell's socket; -1: unknown"),
    ("numa_cell_memory", "int64", "C", "memory (MB)"),
    ("numa_cell_memory_usage", "int64", "C", "memory used by the guests on the cell (MB)"),
    ("numa_cell_cpu_usage", "int64", "C", "shared vCPUs of the guests on the cell"),
    ("numa_cell_cpus", "int32", "C", "shared CPUs (len(cpuset))"),
    ("numa_cell_pcpus", "int32", "C", "dedicated CPUs (len(pcpuset))"),
    ("numa_cell_free_pcpus", "int32", "C", "unpinned dedicated CPUs (len(pcpuset - pinned_cpus))"),
    ("numa_cell_same_sets", "uint8", "C", "1 where cpuset == pcpuset (a legacy cell: either kind of guest uses "
                                          "the same CPUs)"),
    ("numa_cell_threads_per_core", "int32", "C", "the most CPUs of one sibling set; 0: the cell reports no "
                                                 "siblings"),
    ("numa_cell_free_in_sets", "int32", "C", "unpinned dedicated CPUs that are in some sibling set "
                                             "(len(union of s & (pcpuset - pinned_cpus) over the sets s))"),
    ("numa_cell_sets_with_free", "int32", "C, 8", "column t-1 (t = 1..8): the sibling sets with at least t "
                                                  "unpinned dedicated CPUs (a set with 8 or more counts in "
                                                  "all 8 columns: sibling sizes are not bounded)"),
    ("numa_cell_page_first", "int64", "C+1", "cell entry c's page sizes are page entries "
                                             "`numa_cell_page_first[c]` .. `numa_cell_page_first[c+1]` - 1, in the "
                                             "cell's mempages order"),
    ("numa_page_size_kb", "int64", "G", "the page size (KiB)"),
    ("numa_page_total", "int64", "G", "pages of that size"),
    ("numa_page_free", "int64", "G", "total - used - reserved (negative where over-used: kept as given)"),
    ("pci_pool_offsets", "int64", "n+1", "row r's PCI pools are pool entries `pci_pool_offsets[r]` .. "
                                         "`pci_pool_offsets[r+1]` - 1, in the host's order"),
    ("pci_free_devices", "int64", "n", "sum of the host's pools' counts"),
    ("pci_pool_kind", "int32", "P", "index of the pool's [vendor_id, product_id, dev_type, {tags}] into "
                                    "`dicts[\"pci_pool_kinds\"]` (first-seen order over the entries)"),
    ("pci_pool_numa_node", "int32", "P", "the pool's NUMA node; -1: none"),
    ("pci_pool_count", "int32", "P", "free devices in the pool"),
)

# A delta generation (engine.columns.usage_delta): the usage arrays at the rows changed since its
# base, and the changed instance lists.
DELTA_SCHEMA = _specs(
    ("rows", "int32", "k", "the rows changed since the base, ascending"),
    ("changed_at", "int64", "k", "the generation that last changed each of those rows"),
    ("rc_used", "int64", "R, k", "`rc_used` at those rows"),
    ("rc_free", "int64", "R, k", "`rc_free` at those rows"),
    ("num_instances", "int32", "k", "`num_instances` at those rows"),
    ("num_io_ops", "int32", "k", "`num_io_ops` at those rows"),
    ("w_free_ram_mb", "float64", "k", "`w_free_ram_mb` at those rows"),
    ("w_free_disk_mb", "float64", "k", "`w_free_disk_mb` at those rows"),
    ("w_free_vcpus", "float64", "k", "`w_free_vcpus` at those rows"),
    ("instance_rows", "int32", "J", "the rows whose instance list differs from the base's, ascending"),
    ("instance_groups", "int64", "J+1", "row `instance_rows[j]` runs ids `instance_groups[j]` .. "
                                        "`instance_groups[j+1]` - 1"),
    ("instance_offsets", "int64", "E+1", "id e is `instance_bytes[instance_offsets[e]:instance_offsets[e+1]]`"),
    ("instance_bytes", "uint8", "*", "the ids as UTF-8"),
)

SCHEMA_HASH = hashlib.sha256(json.dumps(
    [[[spec.name, spec.dtype, list(spec.shape)] for spec in schema] for schema in (SCHEMA, DELTA_SCHEMA)]
).encode()).digest()[:16]


class SchemaError(ValueError):
    """Arrays that are not laid out as the schema declares."""


def check(arrays: dict[str, np.ndarray], schema: tuple[ColumnSpec, ...] = SCHEMA) -> None:
    """Every declared array present, of its dtype and shape (named dimensions agreeing across
    arrays), and none undeclared."""
    declared = {spec.name: spec for spec in schema}
    if declared.keys() != arrays.keys():
        raise SchemaError(f"arrays missing {sorted(declared.keys() - arrays.keys())}, "
                          f"undeclared {sorted(arrays.keys() - declared.keys())}")
    sizes: dict[str, int] = {}
    for name, spec in declared.items():
        array = arrays[name]
        if array.dtype != np.dtype(spec.dtype) or array.ndim != len(spec.shape):
            raise SchemaError(f"{name} is {array.dtype} {list(array.shape)}, declared {spec.dtype} "
                              f"[{', '.join(spec.shape)}]")
        for dimension, size in zip(spec.shape, array.shape):
            if dimension == "*":
                continue
            if dimension.isdigit():
                expected = int(dimension)
            else:
                symbol, plus = dimension.split("+") if "+" in dimension else (dimension, "0")
                expected = sizes.setdefault(symbol, size - int(plus)) + int(plus)
            if size != expected:
                raise SchemaError(f"{name} has {size} along {dimension}, other arrays say {expected}")


def markdown_table(schema: tuple[ColumnSpec, ...] = SCHEMA) -> str:
    rows = ["| name | dtype, shape | meaning |", "|---|---|---|"]
    rows += [f"| `{spec.name}` | {spec.dtype} [{', '.join(spec.shape)}] | {spec.meaning} |" for spec in schema]
    return "\n".join(rows)
