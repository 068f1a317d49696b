# Rules decided by a few listed rows (engine/rules/host_rows.py): SameHostFilter,
# DifferentHostFilter, ServerGroupAffinityFilter, MoveSource. `rows` is sorted and unique.

cdef inline Py_ssize_t first_at_or_after(const int32_t[::1] rows, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t low = 0, high = rows.shape[0], middle
    while low < high:
        middle = (low + high) // 2
        if rows[middle] < row:
            low = middle + 1
        else:
            high = middle
    return low


cdef inline bint is_listed(const int32_t[::1] rows, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t position = first_at_or_after(rows, row)
    return position < rows.shape[0] and rows[position] == row


cdef class OnlyRowsKernel(Kernel):
    """Refuse every row that is not listed."""
    cdef const int32_t[::1] listed

    def __init__(self, const int32_t[::1] listed, Py_ssize_t rows):
        self.listed, self.rows = listed, rows

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not is_listed(self.listed, row)

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0
        cdef Py_ssize_t row, listed = first_at_or_after(self.listed, start)
        for row in range(start, stop):
            if listed < self.listed.shape[0] and self.listed[listed] == row:
                listed += 1
            else:
                fail_bits[row] |= mask
                refused += 1
        return refused


cdef class ListedRowsKernel(Kernel):
    """Refuse the listed rows: a range scan costs O(listed), not O(range)."""
    cdef const int32_t[::1] listed

    def __init__(self, const int32_t[::1] listed, Py_ssize_t rows):
        self.listed, self.rows = listed, rows

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return is_listed(self.listed, row)

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0
        cdef Py_ssize_t listed = first_at_or_after(self.listed, start)
        while listed < self.listed.shape[0] and self.listed[listed] < stop:
            fail_bits[self.listed[listed]] |= mask
            refused += 1
            listed += 1
        return refused
