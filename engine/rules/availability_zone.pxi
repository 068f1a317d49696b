# AvailabilityZone (engine/rules/availability_zone.py). Uses shares_a_bit from member_of.pxi.

cdef inline bint in_zone(uint8_t flags, const uint64_t* host_words, const uint64_t* zone_mask,
                         Py_ssize_t words, bint default_zone_requested) noexcept nogil:
    # A host in no zoned aggregate is in the default zone.
    if flags & FLAG_IN_AZ_AGGREGATE:
        return shares_a_bit(host_words, zone_mask, words)
    return default_zone_requested


def scan_availability_zone(const uint8_t[::1] flags, const uint64_t[:, ::1] aggregates,
                           const uint64_t[::1] zone_mask, bint default_zone_requested,
                           uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, words = aggregates.shape[1]
    if stop <= start:
        return 0
    cdef uint64_t one_word = zone_mask[0], zoned, default_zone_refused = not default_zone_requested
    cdef PyThreadState* released = release_gil_for(stop - start)
    if words == 1:  # up to 64 aggregates: a loop the compiler vectorises
        for row in range(start, stop):
            zoned = (flags[row] & FLAG_IN_AZ_AGGREGATE) != 0
            fails = ((zoned & ((aggregates[row, 0] & one_word) == 0))
                     | ((zoned ^ 1) & default_zone_refused))
            fail_bits[row] |= mask * fails
            refused += fails
    else:
        for row in range(start, stop):
            fails = not in_zone(flags[row], &aggregates[row, 0], &zone_mask[0], words,
                                default_zone_requested)
            fail_bits[row] |= mask * fails
            refused += fails
    restore_gil(released)
    return refused
