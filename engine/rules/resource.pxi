# Placement's capacity rule for one resource class (engine/rules/resource.py).

cdef inline bint units_allow(int32_t min_unit, int32_t max_unit, int32_t step,
                             int64_t amount) noexcept nogil:
    # Step 1 skips the division.
    return ((min_unit <= amount) & (amount <= max_unit)
            & (step == 1 or (step > 0 and amount % step == 0)))


cdef inline bint has_room(int64_t free, int64_t needed) noexcept nogil:
    # `needed` is the amount times the instances this request puts here.
    return needed <= free


cdef class ResourceKernel(Kernel):
    """The amount fits the host's unit rules and free capacity; with `units_fit_everywhere` (every
    host's unit rules are known to allow the amount) the range scan tests capacity alone."""
    cdef const int64_t[::1] free
    cdef const int32_t[::1] min_unit, max_unit, step
    cdef int64_t amount
    cdef bint units_fit_everywhere

    def __init__(self, const int64_t[::1] free, const int32_t[::1] min_unit, const int32_t[::1] max_unit,
                 const int32_t[::1] step, int64_t amount, bint units_fit_everywhere):
        self.free, self.min_unit, self.max_unit, self.step = free, min_unit, max_unit, step
        self.amount, self.units_fit_everywhere = amount, units_fit_everywhere
        self.rows = min(free.shape[0], min_unit.shape[0], max_unit.shape[0], step.shape[0])

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not (units_allow(self.min_unit[row], self.max_unit[row], self.step[row], self.amount)
                    & has_room(self.free[row], (placed + 1) * self.amount))

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const int64_t* free = &self.free[0]
        cdef const int32_t* min_unit = &self.min_unit[0]
        cdef const int32_t* max_unit = &self.max_unit[0]
        cdef const int32_t* step = &self.step[0]
        cdef int64_t amount = self.amount, needed = (placed + 1) * self.amount
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        if self.units_fit_everywhere:
            # Hosts without inventory have free 0, so the capacity test alone refuses them.
            for row in range(start, stop):
                fails = not has_room(free[row], needed)
                fail_bits[row] |= mask * fails
                refused += fails
        else:
            for row in range(start, stop):
                fails = not (units_allow(min_unit[row], max_unit[row], step[row], amount)
                             & has_room(free[row], needed))
                fail_bits[row] |= mask * fails
                refused += fails
        return refused
