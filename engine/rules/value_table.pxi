# Value-table rules (engine/rules/value_table.py): a verdict or a limit per distinct value,
# looked up through each host's value id. An id outside the table can only come from a damaged
# segment: the host is refused rather than a read made past the table.

from libc.stdint cimport uint32_t

def scan_refused_values(const int32_t[::1] value_ids, const uint8_t[::1] refused_by_value,
                        uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails, refused_bits
    cdef Py_ssize_t row
    cdef size_t table_size = refused_by_value.shape[0], value
    cdef uint32_t shift
    cdef int32_t value_id
    cdef PyThreadState* released = release_gil_for(stop - start)
    if table_size < 64:
        # The verdicts fit one register: a shift instead of a table load, so the loop vectorises.
        # Bits table_size..63 are set, and any id outside the table (a negative one too, as
        # unsigned) is shifted by 63: refused.
        refused_bits = ~(<uint64_t>0) << table_size
        for value in range(table_size):
            refused_bits |= (<uint64_t>(refused_by_value[value] != 0)) << value
        for row in range(start, stop):
            shift = <uint32_t>value_ids[row]
            shift = shift if shift < 63 else 63
            fails = (refused_bits >> shift) & 1
            fail_bits[row] |= mask * fails
            refused += fails
    else:
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


def scan_count_below_row_limit(const int32_t[::1] values, const int64_t[::1] limit_of_row,
                               uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop,
                               int64_t placed):
    """scan_count_below_value_limit with each row's limit looked up beforehand (ValueLimitRule)."""
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not below_limit(values[row], placed, limit_of_row[row])
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
