# Placement's capacity rule for one resource class (engine/rules/resource.py).

cdef inline bint resource_fits(int64_t free, int32_t min_unit, int32_t max_unit, int32_t step,
                               int64_t amount, int64_t needed) noexcept nogil:
    # `needed` is the amount times the instances this request puts here; step 1 skips the division.
    return ((min_unit <= amount) & (amount <= max_unit) & (needed <= free)
            & (step == 1 or (step > 0 and amount % step == 0)))


def scan_resource(const int64_t[::1] free, const int32_t[::1] min_unit,
                  const int32_t[::1] max_unit, const int32_t[::1] step, int64_t amount,
                  uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop,
                  int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef int64_t needed = (placed + 1) * amount
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    with nogil:
        for row in range(start, stop):
            fails = not resource_fits(free[row], min_unit[row], max_unit[row], step[row],
                                      amount, needed)
            fail_bits[row] |= mask * fails
            refused += fails
    return refused
