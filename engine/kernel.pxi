# What every rule's kernel shares (included first by engine/_fastfilters.pyx).
#
# A rule compiled for a request (engine/rules/base.py: Active) binds its columns and parameters
# into a Kernel once per request and generation. A Kernel holds one predicate and two ways to run
# it, which must agree: `refuses`, one row (CheckDestination, a pick's rescan), and `scan_rows`,
# a row range in a loop the compiler can vectorise (SelectDestinations). `refused_bits` runs a
# request's kernels on one row in one C call, without a Python call or buffer acquisition per rule.

# A scan of fewer than NOGIL_MIN_ROWS rows keeps the GIL: releasing it lets a waiting thread in,
# and taking it back can cost a thread switch, far more than scanning a few rows (CheckDestination's
# one-row scans, a pick's rescan). Cython's `with nogil(condition)` takes only compile-time
# conditions, hence this pair; the code between them must not touch a Python object.
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


cdef class Kernel:
    """One active rule's predicate over one generation's columns. `rows`: how many rows its
    columns hold; a row at or past it is never read (each caller checks)."""

    cdef readonly Py_ssize_t rows

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        """Whether the row is refused when `placed` instances of the request are already on it."""
        return False

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        """OR `mask` into fail_bits[row] for every refused row of [start, stop); how many."""
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = self.refuses(row, placed)
            fail_bits[row] |= mask * fails
            refused += fails
        return refused

    def scan(self, uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop, int64_t placed=0):
        """scan_rows over [start, stop) for Python callers (Rule.scan); how many rows it refused."""
        if stop <= start:
            return 0
        if start < 0 or stop > self.rows or stop > fail_bits.shape[0] or not 0 <= bit < 64:
            raise IndexError(f"rows [{start}, {stop}) or bit {bit} outside the kernel's {self.rows} rows")
        cdef PyThreadState* released = release_gil_for(stop - start)
        cdef uint64_t refused = self.scan_rows(&fail_bits[0], (<uint64_t>1) << bit, start, stop, placed)
        restore_gil(released)
        return refused

    def refuses_row(self, Py_ssize_t row, int64_t placed=0):
        """refuses() for Python callers (tests: a row's verdict equals its one-row scan)."""
        if not 0 <= row < self.rows:
            raise IndexError(f"row {row} outside the kernel's {self.rows} rows")
        return self.refuses(row, placed)


def refused_bits(list kernels, Py_ssize_t row, int64_t placed):
    """Bit i set when kernels[i] refuses the row; a None entry (a rule scanned in Python, or one
    the request does not engage) sets none. At most 64 kernels."""
    cdef uint64_t bits = 0
    cdef Py_ssize_t index
    cdef object kernel
    if len(kernels) > 64:
        raise ValueError("at most 64 kernels")
    for index in range(len(kernels)):
        kernel = kernels[index]
        if kernel is None:
            continue
        if not 0 <= row < (<Kernel>kernel).rows:
            raise IndexError(f"row {row} outside the kernel's {(<Kernel>kernel).rows} rows")
        bits |= (<uint64_t>(<Kernel>kernel).refuses(row, placed)) << index
    return bits


cdef class RefuseEveryRow(Kernel):
    """A request no host can meet (a resource class no host has, a trait no host knows)."""

    def __init__(self, Py_ssize_t rows):
        self.rows = rows

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return True

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef Py_ssize_t row
        for row in range(start, stop):
            fail_bits[row] |= mask
        return stop - start
