# MemberOf (engine/rules/member_of.py): for every set, the host is in one of its aggregates.

cdef inline bint shares_a_bit(const uint64_t* host_words, const uint64_t* mask,
                              Py_ssize_t words) noexcept nogil:
    cdef uint64_t common = 0
    cdef Py_ssize_t word
    for word in range(words):
        common |= mask[word] & host_words[word]
    return common != 0


cdef inline bint in_every_set(const uint64_t* host_words, const uint64_t* set_masks,
                              Py_ssize_t sets, Py_ssize_t words) noexcept nogil:
    cdef Py_ssize_t index
    cdef bint all_hold = True
    for index in range(sets):
        all_hold &= shares_a_bit(host_words, set_masks + index * words, words)
    return all_hold


cdef class MemberOfKernel(Kernel):
    """Also AvailabilityZone's and require_tenant_aggregate's. No set: every row passes."""
    cdef const uint64_t[:, ::1] aggregates
    cdef const uint64_t[:, ::1] set_masks

    def __init__(self, const uint64_t[:, ::1] aggregates, const uint64_t[:, ::1] set_masks):
        if set_masks.shape[0] and set_masks.shape[1] != aggregates.shape[1]:
            raise ValueError("each set mask needs one word per aggregate word")
        self.aggregates, self.set_masks, self.rows = aggregates, set_masks, aggregates.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        if self.set_masks.shape[0] == 0:
            return False
        return not in_every_set(&self.aggregates[row, 0], &self.set_masks[0, 0], self.set_masks.shape[0],
                                self.aggregates.shape[1])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0, fails, one_set
        cdef Py_ssize_t row, words = self.aggregates.shape[1], sets = self.set_masks.shape[0]
        cdef const uint64_t* aggregates = &self.aggregates[0, 0]
        if sets == 0:
            return 0
        if words == 1 and sets == 1:  # one set of up to 64 aggregates: a vectorisable loop
            one_set = self.set_masks[0, 0]
            for row in range(start, stop):
                fails = (aggregates[row] & one_set) == 0
                fail_bits[row] |= mask * fails
                refused += fails
        else:
            for row in range(start, stop):
                fails = not in_every_set(aggregates + row * words, &self.set_masks[0, 0], sets, words)
                fail_bits[row] |= mask * fails
                refused += fails
        return refused
