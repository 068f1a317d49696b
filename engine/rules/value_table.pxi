# Value-table rules (engine/rules/value_table.py): a verdict or a limit per distinct value,
# looked up through each host's value id. An id outside the table can only come from a damaged
# segment: the host is refused rather than a read made past the table.

def scan_refused_values(const int32_t[::1] value_ids, const uint8_t[::1] refused_by_value,
                        uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef size_t table_size = refused_by_value.shape[0]
    cdef int32_t value_id
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        value_id = value_ids[row]
        fails = (<size_t>value_id >= table_size) or refused_by_value[value_id] != 0
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
    cdef size_t table_size = limit_by_value.shape[0]
    cdef int32_t value_id
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        value_id = value_ids[row]
        fails = (<size_t>value_id >= table_size) or not below_limit(values[row], placed, limit_by_value[value_id])
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
