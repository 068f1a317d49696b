# Value-table rules (engine/rules/value_table.py): a verdict or a limit per distinct value,
# looked up through each host's value id. An id outside the table can only come from a damaged
# segment: the host is refused rather than a read made past the table.

from libc.stdint cimport uint32_t

cdef inline bint value_id_outside(int32_t value_id, size_t table_size) noexcept nogil:
    # A negative id too, as unsigned: only a damaged segment holds one.
    return <size_t>value_id >= table_size


cdef inline bint value_refused(const uint8_t[::1] refused_by_value, int32_t value_id) noexcept nogil:
    return value_id_outside(value_id, refused_by_value.shape[0]) or refused_by_value[value_id] != 0


cdef class RefusedValuesKernel(Kernel):
    """A verdict per distinct value (1: refused), looked up through each row's value id."""
    cdef const int32_t[::1] value_ids
    cdef const uint8_t[::1] refused_by_value

    def __init__(self, const int32_t[::1] value_ids, const uint8_t[::1] refused_by_value):
        self.value_ids, self.refused_by_value, self.rows = value_ids, refused_by_value, value_ids.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return value_refused(self.refused_by_value, self.value_ids[row])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const int32_t* value_ids = &self.value_ids[0]
        cdef uint64_t refused = 0, fails, refused_bits
        cdef Py_ssize_t row
        cdef size_t table_size = self.refused_by_value.shape[0], value
        cdef uint32_t shift
        if table_size < 64:
            # The verdicts fit one register: a shift instead of a table load, so the loop vectorises.
            # Bits table_size..63 are set, and any id outside the table (a negative one too, as
            # unsigned) is shifted by 63: refused.
            refused_bits = ~(<uint64_t>0) << table_size
            for value in range(table_size):
                refused_bits |= (<uint64_t>(self.refused_by_value[value] != 0)) << value
            for row in range(start, stop):
                shift = <uint32_t>value_ids[row]
                shift = shift if shift < 63 else 63
                fails = (refused_bits >> shift) & 1
                fail_bits[row] |= mask * fails
                refused += fails
        else:
            for row in range(start, stop):
                fails = value_refused(self.refused_by_value, value_ids[row])
                fail_bits[row] |= mask * fails
                refused += fails
        return refused


cdef inline bint over_value_limit(int32_t count, int32_t value_id, const int64_t[::1] limit_by_value,
                                  int64_t placed) noexcept nogil:
    return (value_id_outside(value_id, limit_by_value.shape[0])
            or not below_limit(count, placed, limit_by_value[value_id]))


cdef class CountBelowValueLimitKernel(Kernel):
    """count + placed < the limit of the row's value, looked up through its value id."""
    cdef const int32_t[::1] values, value_ids
    cdef const int64_t[::1] limit_by_value

    def __init__(self, const int32_t[::1] values, const int32_t[::1] value_ids, const int64_t[::1] limit_by_value):
        self.values, self.value_ids, self.limit_by_value = values, value_ids, limit_by_value
        self.rows = min(values.shape[0], value_ids.shape[0])

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return over_value_limit(self.values[row], self.value_ids[row], self.limit_by_value, placed)

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        # The predicate inlined: no virtual call per row.
        cdef const int32_t* values = &self.values[0]
        cdef const int32_t* value_ids = &self.value_ids[0]
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = over_value_limit(values[row], value_ids[row], self.limit_by_value, placed)
            fail_bits[row] |= mask * fails
            refused += fails
        return refused


cdef class CountBelowRowLimitKernel(Kernel):
    """CountBelowValueLimitKernel with each row's limit looked up beforehand (ValueLimitRule)."""
    cdef const int32_t[::1] values
    cdef const int64_t[::1] limit_of_row

    def __init__(self, const int32_t[::1] values, const int64_t[::1] limit_of_row):
        self.values, self.limit_of_row, self.rows = values, limit_of_row, min(values.shape[0], limit_of_row.shape[0])

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not below_limit(self.values[row], placed, self.limit_of_row[row])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const int32_t* values = &self.values[0]
        cdef const int64_t* limit_of_row = &self.limit_of_row[0]
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = not below_limit(values[row], placed, limit_of_row[row])
            fail_bits[row] |= mask * fails
            refused += fails
        return refused
