# RequiredTraits (engine/rules/required_traits.py): the host has every bit of the mask.

cdef inline bint has_all_bits(const uint64_t* host_words, const uint64_t* mask,
                              Py_ssize_t words) noexcept nogil:
    cdef uint64_t missing = 0
    cdef Py_ssize_t word
    for word in range(words):
        missing |= mask[word] & ~host_words[word]
    return missing == 0


def scan_required_traits(const uint64_t[:, ::1] traits, const uint64_t[::1] required,
                         uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, words = traits.shape[1]
    if stop <= start:
        return 0
    cdef uint64_t one_word = required[0]
    cdef PyThreadState* released = release_gil_for(stop - start)
    if words == 1:  # up to 64 traits: a loop the compiler vectorises
        for row in range(start, stop):
            fails = (one_word & ~traits[row, 0]) != 0
            fail_bits[row] |= mask * fails
            refused += fails
    else:
        for row in range(start, stop):
            fails = not has_all_bits(&traits[row, 0], &required[0], words)
            fail_bits[row] |= mask * fails
            refused += fails
    restore_gil(released)
    return refused
