# ForbiddenTraits (engine/rules/forbidden_traits.py): the host has no bit of the mask.

cdef inline bint has_no_bits(const uint64_t* host_words, const uint64_t* mask,
                             Py_ssize_t words) noexcept nogil:
    cdef uint64_t present = 0
    cdef Py_ssize_t word
    for word in range(words):
        present |= mask[word] & host_words[word]
    return present == 0


cdef class ForbiddenTraitsKernel(Kernel):
    """Also isolate_aggregates' (over the aggregate bitsets)."""
    cdef const uint64_t[:, ::1] traits
    cdef const uint64_t[::1] forbidden

    def __init__(self, const uint64_t[:, ::1] traits, const uint64_t[::1] forbidden):
        if forbidden.shape[0] != traits.shape[1]:
            raise ValueError("the mask needs one word per bitset word")
        self.traits, self.forbidden, self.rows = traits, forbidden, traits.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not has_no_bits(&self.traits[row, 0], &self.forbidden[0], self.traits.shape[1])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0, fails, one_word
        cdef Py_ssize_t row, words = self.traits.shape[1]
        cdef const uint64_t* traits = &self.traits[0, 0]
        if words == 1:  # up to 64 traits: a loop the compiler vectorises
            one_word = self.forbidden[0]
            for row in range(start, stop):
                fails = (one_word & traits[row]) != 0
                fail_bits[row] |= mask * fails
                refused += fails
        else:
            for row in range(start, stop):
                fails = not has_no_bits(traits + row * words, &self.forbidden[0], words)
                fail_bits[row] |= mask * fails
                refused += fails
        return refused
