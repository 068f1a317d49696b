# Value-table rules (engine/rules/value_table.py): a verdict or a limit per distinct value,
# looked up through each host's value id.

def scan_refused_values(const int32_t[::1] value_ids, const uint8_t[::1] refused_by_value,
                        uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = refused_by_value[value_ids[row]] != 0
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused


def scan_count_below_value_limit(const int32_t[::1] values, const int32_t[::1] value_ids,
                                 const int64_t[::1] limit_by_value, uint64_t[::1] fail_bits, int bit,
                                 Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not below_limit(values[row], placed, limit_by_value[value_ids[row]])
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
