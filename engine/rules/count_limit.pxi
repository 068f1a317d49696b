# IoOpsFilter and NumInstancesFilter (engine/rules/count_limit.py): value + placed < limit.

cdef inline bint below_limit(int64_t value, int64_t placed, int64_t limit) noexcept nogil:
    return value + placed < limit


cdef class CountBelowKernel(Kernel):
    cdef const int32_t[::1] values
    cdef int64_t limit

    def __init__(self, const int32_t[::1] values, int64_t limit):
        self.values, self.limit, self.rows = values, limit, values.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not below_limit(self.values[row], placed, self.limit)

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const int32_t* values = &self.values[0]
        cdef int64_t limit = self.limit
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = not below_limit(values[row], placed, limit)
            fail_bits[row] |= mask * fails
            refused += fails
        return refused

