# RequiredTraits (engine/rules/required_traits.py): the host has every bit of the mask.

cdef inline bint has_all_bits(const uint64_t* host_words, const uint64_t* mask,
                              Py_ssize_t words) noexcept nogil:
    cdef uint64_t missing = 0
    cdef Py_ssize_t word
    for word in range(words):
        missing |= mask[word] & ~host_words[word]
    return missing == 0


cdef class RequiredTraitsKernel(Kernel):
    cdef const uint64_t[:, ::1] traits
    cdef const uint64_t[::1] required

    def __init__(self, const uint64_t[:, ::1] traits, const uint64_t[::1] required):
        if required.shape[0] != traits.shape[1]:
            raise ValueError("the mask needs one word per trait word")
        self.traits, self.required, self.rows = traits, required, traits.shape[0]

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not has_all_bits(&self.traits[row, 0], &self.required[0], self.traits.shape[1])

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0, fails, one_word
        cdef Py_ssize_t row, words = self.traits.shape[1]
        cdef const uint64_t* traits = &self.traits[0, 0]
        if words == 1:  # up to 64 traits: a loop the compiler vectorises
            one_word = self.required[0]
            for row in range(start, stop):
                fails = (one_word & ~traits[row]) != 0
                fail_bits[row] |= mask * fails
                refused += fails
        else:
            for row in range(start, stop):
                fails = not has_all_bits(traits + row * words, &self.required[0], words)
                fail_bits[row] |= mask * fails
                refused += fails
        return refused
