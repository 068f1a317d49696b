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
    FLAG_IN_AZ_AGGREGATE = 4

include "rules/resource.pxi"
include "rules/required_traits.pxi"
include "rules/forbidden_traits.pxi"
include "rules/member_of.pxi"
include "rules/availability_zone.pxi"
include "rules/compute_filter.pxi"
include "rules/count_limit.pxi"
include "rules/host_rows.pxi"
include "rules/server_group_anti_affinity.pxi"
include "weigh.pxi"
