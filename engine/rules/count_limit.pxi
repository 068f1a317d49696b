# IoOpsFilter and NumInstancesFilter (engine/rules/count_limit.py): value + placed < limit.

cdef inline bint below_limit(int64_t value, int64_t placed, int64_t limit) noexcept nogil:
    return value + placed < limit


def scan_count_below(const int32_t[::1] values, int64_t limit, uint64_t[::1] fail_bits, int bit,
                     Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not below_limit(values[row], placed, limit)
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
