# Placement's capacity rule for one resource class (engine/rules/resource.py).

# Included first, so every kernel after it shares these. A scan of fewer than NOGIL_MIN_ROWS
# rows keeps the GIL: releasing it lets a waiting thread in, and taking it back can cost a
# thread switch, far more than scanning a few rows (CheckDestination's one-row scans, a
# pick's rescan). Cython's `with nogil(condition)` takes only compile-time conditions, hence
# this pair; the code between them must not touch a Python object.
cdef enum:
    NOGIL_MIN_ROWS = 4096

cdef extern from "Python.h":
    ctypedef struct PyThreadState
    PyThreadState* PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState* state)


cdef inline PyThreadState* release_gil_for(Py_ssize_t rows) noexcept:
    """Releases the GIL when `rows` is worth it; pass the result to restore_gil."""
    return PyEval_SaveThread() if rows >= NOGIL_MIN_ROWS else NULL


cdef inline void restore_gil(PyThreadState* released) noexcept:
    if released != NULL:
        PyEval_RestoreThread(released)

cdef inline bint units_allow(int32_t min_unit, int32_t max_unit, int32_t step,
                             int64_t amount) noexcept nogil:
    # Step 1 skips the division.
    return ((min_unit <= amount) & (amount <= max_unit)
            & (step == 1 or (step > 0 and amount % step == 0)))


cdef inline bint has_room(int64_t free, int64_t needed) noexcept nogil:
    # `needed` is the amount times the instances this request puts here.
    return needed <= free


def scan_resource(const int64_t[::1] free, const int32_t[::1] min_unit,
                  const int32_t[::1] max_unit, const int32_t[::1] step, int64_t amount,
                  uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop,
                  int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef int64_t needed = (placed + 1) * amount
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not (units_allow(min_unit[row], max_unit[row], step[row], amount)
                     & has_room(free[row], needed))
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused


def scan_resource_capacity(const int64_t[::1] free, int64_t amount, uint64_t[::1] fail_bits,
                           int bit, Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    """scan_resource when every host's unit rules are known to allow the amount."""
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef int64_t needed = (placed + 1) * amount
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not has_room(free[row], needed)
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
