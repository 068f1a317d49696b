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


def scan_only_rows(const int32_t[::1] rows, uint64_t[::1] fail_bits, int bit,
                   Py_ssize_t start, Py_ssize_t stop):
    """Refuse every row of [start, stop) that is not listed."""
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0
    cdef Py_ssize_t row, listed
    cdef PyThreadState* released = release_gil_for(stop - start)
    listed = first_at_or_after(rows, start)
    for row in range(start, stop):
        if listed < rows.shape[0] and rows[listed] == row:
            listed += 1
        else:
            fail_bits[row] |= mask
            refused += 1
    restore_gil(released)
    return refused


def scan_listed_rows(const int32_t[::1] rows, uint64_t[::1] fail_bits, int bit,
                     Py_ssize_t start, Py_ssize_t stop):
    """Refuse the listed rows that fall in [start, stop): O(listed), not O(range)."""
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0
    cdef Py_ssize_t listed
    cdef PyThreadState* released = release_gil_for(rows.shape[0])
    listed = first_at_or_after(rows, start)
    while listed < rows.shape[0] and rows[listed] < stop:
        fail_bits[rows[listed]] |= mask
        refused += 1
        listed += 1
    restore_gil(released)
    return refused
