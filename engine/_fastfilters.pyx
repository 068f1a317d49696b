"""The compiled kernel: every rule's predicate and scan (engine/rules/*.pxi) and the weighers.

Each scan takes const memoryviews (snapshot arrays are read-only views of shared
memory), ORs its bit into fail_bits for every refused row of [start, stop) and
returns how many rows it refused. The loops run without the GIL.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

# Bits of the `flags` column; engine/columns.py writes them.
cdef enum:
    FLAG_ENABLED = 1
    FLAG_UP = 2
    FLAG_HOST_IPV4 = 8

include "kernel.pxi"
include "rules/resource.pxi"
include "rules/required_traits.pxi"
include "rules/forbidden_traits.pxi"
include "rules/member_of.pxi"
include "rules/compute_filter.pxi"
include "rules/count_limit.pxi"
include "rules/value_table.pxi"
include "rules/host_rows.pxi"
include "rules/server_group_anti_affinity.pxi"
include "rules/simple_cidr_affinity.pxi"
include "rules/json_filter.pxi"
include "rules/numa_topology_filter.pxi"
include "rules/pci_passthrough_filter.pxi"
include "scan.pxi"
include "weigh.pxi"


# --- Hash index over a string heap (engine/columns.py: instance uuids) -----------------
# Open addressing with linear probing; a slot holds an entry index or -1. The hash is
# fixed (not Python's per-process hash) because every process reads the same table.

from libc.string cimport memcmp, memcpy

cdef inline uint64_t heap_hash(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>length, word
    cdef Py_ssize_t i = 0
    while i + 8 <= length:
        memcpy(&word, data + i, 8)
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 32
        i += 8
    while i < length:
        h = (h ^ data[i]) * 0x100000001B3ULL
        i += 1
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


def build_heap_index(const int64_t[::1] offsets, const uint8_t[::1] heap, int32_t[::1] slots):
    """Fill `slots` (a power-of-two length, all -1, more slots than entries) with every entry."""
    cdef uint64_t mask = slots.shape[0] - 1
    cdef uint64_t slot
    cdef Py_ssize_t entry, entries = offsets.shape[0] - 1
    cdef const uint8_t* base = &heap[0] if heap.shape[0] else NULL
    with nogil:
        for entry in range(entries):
            slot = heap_hash(base + offsets[entry], offsets[entry + 1] - offsets[entry]) & mask
            while slots[slot] != -1:
                slot = (slot + 1) & mask
            slots[slot] = <int32_t>entry


# --- Binary search over a sorted string heap (engine/columns.py: Columns.row_of) ------------
# A host name is found in a microsecond instead of seventeen Python-level comparisons. The
# arrays come from a segment, so an order entry or offset out of range ends the search as
# "not found" rather than reading past an array.

cdef inline int compare_entry(const int64_t[::1] offsets, const uint8_t* heap, Py_ssize_t heap_length,
                              Py_ssize_t entry, const uint8_t* key, Py_ssize_t key_length,
                              bint* valid) noexcept nogil:
    cdef int64_t begin = offsets[entry], end = offsets[entry + 1]
    cdef Py_ssize_t length, common
    cdef int order
    if begin < 0 or end < begin or end > heap_length:
        valid[0] = False
        return 0
    length = end - begin
    common = length if length < key_length else key_length
    order = memcmp(heap + begin, key, common) if common else 0
    if order != 0:
        return order
    return (length > key_length) - (length < key_length)


def find_in_sorted_heap(const int64_t[::1] offsets, const uint8_t[::1] heap, const int32_t[::1] order,
                        const uint8_t[::1] key):
    """The entry equal to `key` (bytes), or -1: `order` lists the heap's entries (offsets
    [entries+1]) in ascending byte order."""
    cdef Py_ssize_t entries = offsets.shape[0] - 1, low = 0, high = order.shape[0], middle, entry
    cdef const uint8_t* heap_bytes = &heap[0] if heap.shape[0] else NULL
    cdef const uint8_t* key_bytes = &key[0] if key.shape[0] else NULL
    cdef bint valid = True
    if high > entries:
        return -1
    while low < high:
        middle = (low + high) >> 1
        entry = order[middle]
        if entry < 0 or entry >= entries:
            return -1
        if compare_entry(offsets, heap_bytes, heap.shape[0], entry, key_bytes, key.shape[0], &valid) < 0:
            low = middle + 1
        else:
            high = middle
        if not valid:
            return -1
    if low == order.shape[0]:
        return -1
    entry = order[low]
    if entry < 0 or entry >= entries:
        return -1
    if compare_entry(offsets, heap_bytes, heap.shape[0], entry, key_bytes, key.shape[0], &valid) != 0 or not valid:
        return -1
    return entry


# --- String heaps (engine/columns.py) ---------------------------------------------------

cimport numpy as cnp
import numpy as np

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


def pack_string_groups(groups):
    """Groups of str (e.g. each host's instance uuids) as one UTF-8 heap, without building an
    intermediate list or joined string: (group_offsets [groups+1], offsets [strings+1], bytes).
    Group g holds strings group_offsets[g] .. group_offsets[g+1] - 1."""
    cdef Py_ssize_t size, strings = 0, total = 0, group_index = 0, string_index = 0
    cdef const char* text
    for group in groups:
        for item in group:
            PyUnicode_AsUTF8AndSize(item, &size)
            strings += 1
            total += size
    group_offsets_array = np.zeros(len(groups) + 1, dtype=np.int64)
    offsets_array = np.zeros(strings + 1, dtype=np.int64)
    heap_array = np.empty(total, dtype=np.uint8)
    cdef int64_t[::1] group_offsets = group_offsets_array
    cdef int64_t[::1] offsets = offsets_array
    cdef char* heap = <char*>cnp.PyArray_DATA(heap_array)
    for group in groups:
        for item in group:
            text = PyUnicode_AsUTF8AndSize(item, &size)
            if string_index >= strings or offsets[string_index] + size > total:
                raise RuntimeError("the groups changed while packing")
            memcpy(heap + offsets[string_index], text, size)
            offsets[string_index + 1] = offsets[string_index] + size
            string_index += 1
        group_index += 1
        group_offsets[group_index] = string_index
    return group_offsets_array, offsets_array, heap_array


include "instance_index.pxi"
