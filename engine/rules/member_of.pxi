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


def scan_member_of(const uint64_t[:, ::1] aggregates, const uint64_t[:, ::1] set_masks,
                   uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, words = aggregates.shape[1], sets = set_masks.shape[0]
    if stop <= start or sets == 0:
        return 0
    cdef PyThreadState* released = release_gil_for(stop - start)
    if words == 1 and sets == 1:  # one set of up to 64 aggregates: a vectorisable loop
        for row in range(start, stop):
            fails = (aggregates[row, 0] & set_masks[0, 0]) == 0
            fail_bits[row] |= mask * fails
            refused += fails
    else:
        for row in range(start, stop):
            fails = not in_every_set(&aggregates[row, 0], &set_masks[0, 0], sets, words)
            fail_bits[row] |= mask * fails
            refused += fails
    restore_gil(released)
    return refused
