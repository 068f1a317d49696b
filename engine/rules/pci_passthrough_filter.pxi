# PciPassthroughFilter's bound (engine/rules/pci_passthrough_filter.py): for each PCI request, the
# free devices of the row's pools whose kind can serve it, against the devices asked for every
# instance placed on the row so far and this one.

def scan_pci_bound(const int64_t[::1] pool_offsets, const int32_t[::1] pool_kind,
                   const int32_t[::1] pool_count, const uint8_t[:, ::1] kind_matches,
                   const int64_t[::1] counts, uint64_t[::1] fail_bits, int bit,
                   Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, pool, request, requests = counts.shape[0], kinds = kind_matches.shape[1]
    cdef int64_t free
    cdef int32_t kind
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = 0
        if not offsets_within(pool_offsets, row, pool_kind.shape[0]):
            fail_bits[row] |= mask  # a damaged segment: never read past the arrays
            refused += 1
            continue
        for request in range(requests):
            free = 0
            for pool in range(pool_offsets[row], pool_offsets[row + 1]):
                kind = pool_kind[pool]
                if 0 <= kind < kinds and kind_matches[request, kind]:  # a kind id from the segment: checked
                    free += pool_count[pool]
            if free < counts[request] * (placed + 1):
                fails = 1
                break
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
