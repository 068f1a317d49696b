# ComputeFilter (engine/rules/compute_filter.py): service enabled and up.

cdef inline bint enabled_and_up(uint8_t flags) noexcept nogil:
    return (flags & (FLAG_ENABLED | FLAG_UP)) == (FLAG_ENABLED | FLAG_UP)


cdef class ComputeFilterKernel(Kernel):
    cdef const uint8_t[::1] flags

    def __init__(self, const uint8_t[::1] flags):
        self.flags, self.rows = flags, flags.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not enabled_and_up(self.flags[row])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const uint8_t* flags = &self.flags[0]
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = not enabled_and_up(flags[row])
            fail_bits[row] |= mask * fails
            refused += fails
        return refused
