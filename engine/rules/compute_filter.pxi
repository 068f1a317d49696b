# ComputeFilter (engine/rules/compute_filter.py): service enabled and up.

cdef inline bint enabled_and_up(uint8_t flags) noexcept nogil:
    return (flags & (FLAG_ENABLED | FLAG_UP)) == (FLAG_ENABLED | FLAG_UP)


def scan_compute_filter(const uint8_t[::1] flags, uint64_t[::1] fail_bits, int bit,
                        Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not enabled_and_up(flags[row])
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
