# Nova's weighing (nova/weights.py get_weighed_objects) over the rows that pass every
# rule, with a top-k selection instead of a full sort.
# Included by engine/_fastfilters.pyx; engine/weighers.py is the Python side.
#
# A `Weighing` lives for one request:
#   refresh   the passing rows (fail_bits == 0) compacted, in row order, into an index list
#             (branch-free); then every weigher's normalisation bounds over them, then each
#             passing row's weight: only passing rows are read, and typically few pass
#   consume   one instance placed on a row whose fail bits the caller has rescanned: only
#             that row changes, so a weigher's bounds are recomputed only when the row held
#             them, and the other rows' weights only when some bound moved
#   top       a threshold scan over the weights: insertion is rare once k rows are held
# Weights are summed in Nova's order and with Nova's arithmetic,
# multiplier * ((value - low) / (high - low)), so equal weights tie exactly as in Nova.

from libc.math cimport INFINITY, NAN, trunc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memmove

import numpy as np


cdef enum:
    WEIGH_MAX_WEIGHERS = 16

# How a weigher's raw values are stored; ZEROS is 0 for every row (before any pick).
cdef enum:
    COLUMN_ZEROS = 0
    COLUMN_DOUBLE = 1
    COLUMN_INT32 = 2
    COLUMN_INT64 = 3


cdef struct WeigherColumn:
    int kind
    const void* values
    double change  # added to the raw value per instance of the request placed on the row
    double floor  # 0: Nova's minval = 0; -inf: none; else a bound that normalises as none (PCIWeigher's 1)


cdef inline double _stored(const WeigherColumn* column, Py_ssize_t row) noexcept nogil:
    # The row's value before any pick.
    if column.kind == COLUMN_DOUBLE:
        return (<const double*>column.values)[row]
    elif column.kind == COLUMN_INT32:
        return (<const int32_t*>column.values)[row]
    elif column.kind == COLUMN_INT64:
        return <double>(<const int64_t*>column.values)[row]
    return 0.0


cdef inline double _raw(const WeigherColumn* column, const int32_t* placed, Py_ssize_t row) noexcept nogil:
    # The row's value after this request's picks on it, clamped as Python's max(value, floor)
    # (a NaN stays NaN: it marks a missing metric that must be reported).
    cdef double value = _stored(column, row)
    if placed != NULL:
        value = value + placed[row] * column.change
    return column.floor if value < column.floor else value


cdef Py_ssize_t _compact_passing(const uint64_t* fail, Py_ssize_t n, int32_t* rows) noexcept nogil:
    # Branch-free: always write the row, advance only when it passes.
    cdef Py_ssize_t row, count = 0
    for row in range(n):
        rows[count] = <int32_t>row
        count += fail[row] == 0
    return count


cdef void _fill_sink(const uint64_t* fail, Py_ssize_t n, double* sink) noexcept nogil:
    # sink[row] is 1e300 for a failing row, else 0 (the dense bounds' push); only dense
    # weighing reads it, so a sparse one skips writing it.
    cdef Py_ssize_t row
    for row in range(n):
        sink[row] = (fail[row] != 0) * 1e300


# Dense bounds of a column with nothing placed yet, two doubles at a time (SSE2 is always there
# on x86-64; gcc does not vectorise a floating-point min/max reduction without -ffast-math).
# Each value is clamped as max(value, floor) (a NaN stays NaN and is then skipped), pushed
# sink[row] out of reach, and folded into the bounds.
cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #define PLACECHECK_BOUNDS_STEP(load) \
        a = _mm_max_pd(floor2, load); \
        s = _mm_loadu_pd(sink + j); \
        low2 = _mm_min_pd(_mm_add_pd(a, s), low2); \
        high2 = _mm_max_pd(_mm_sub_pd(a, s), high2);
    #define PLACECHECK_BOUNDS_FUNCTION(name, type, load) \
    static int name(const type* values, const double* sink, Py_ssize_t n, double floor, \
                    double* low, double* high) { \
        __m128d floor2 = _mm_set1_pd(floor), low2 = _mm_set1_pd(*low), high2 = _mm_set1_pd(*high), a, s; \
        double lows[2], highs[2]; \
        Py_ssize_t j = 0; \
        for (; j + 2 <= n; j += 2) { PLACECHECK_BOUNDS_STEP(load) } \
        _mm_storeu_pd(lows, low2); _mm_storeu_pd(highs, high2); \
        *low = lows[0] < lows[1] ? lows[0] : lows[1]; \
        *high = highs[0] > highs[1] ? highs[0] : highs[1]; \
        return (int)j; \
    }
    PLACECHECK_BOUNDS_FUNCTION(placecheck_dense_bounds_double, double, _mm_loadu_pd(values + j))
    PLACECHECK_BOUNDS_FUNCTION(placecheck_dense_bounds_int32, int32_t,
                               _mm_cvtepi32_pd(_mm_loadl_epi64((const __m128i*)(values + j))))
    #else
    static int placecheck_dense_bounds_double(const double* values, const double* sink, Py_ssize_t n,
                                              double floor, double* low, double* high) { return 0; }
    static int placecheck_dense_bounds_int32(const int32_t* values, const double* sink, Py_ssize_t n,
                                             double floor, double* low, double* high) { return 0; }
    #endif
    """
    # Rows [0, returned) are folded into *low and *high; the caller does the rest.
    Py_ssize_t placecheck_dense_bounds_double(const double* values, const double* sink, Py_ssize_t n,
                                              double floor, double* low, double* high) nogil
    Py_ssize_t placecheck_dense_bounds_int32(const int32_t* values, const double* sink, Py_ssize_t n,
                                             double floor, double* low, double* high) nogil


ctypedef fused column_t:
    double
    int32_t
    int64_t


cdef inline double _typed_raw(const column_t* values, double scale, const int32_t* placed, double change,
                              double floor, Py_ssize_t row) noexcept nogil:
    cdef double value = <double>values[row] * scale
    if placed != NULL:
        value = value + placed[row] * change
    return floor if value < floor else value


cdef void _typed_gather_bounds(const column_t* values, double scale, const int32_t* placed, double change,
                               double floor, const int32_t* rows, Py_ssize_t count, double* gathered,
                               double* low, double* high) noexcept nogil:
    # gathered[j] = the raw value of rows[j], the `count` passing rows, folded into the bounds
    # as it is read: the weights are then summed from `gathered`, in cache, rather than from
    # the columns again. rows NULL: row j, and gathered NULL: nothing stored (the bounds of
    # values already gathered). Two min/max chains: one is bound by the compare latency. NaN
    # values are skipped (a NaN compares false).
    cdef double low0 = INFINITY, low1 = INFINITY, high0 = -INFINITY, high1 = -INFINITY, a, b
    cdef Py_ssize_t j = 0
    while j + 2 <= count:
        a = _typed_raw(values, scale, placed, change, floor, rows[j] if rows != NULL else j)
        b = _typed_raw(values, scale, placed, change, floor, rows[j + 1] if rows != NULL else j + 1)
        if gathered != NULL:
            gathered[j] = a
            gathered[j + 1] = b
        low0 = a if a < low0 else low0
        low1 = b if b < low1 else low1
        high0 = a if a > high0 else high0
        high1 = b if b > high1 else high1
        j += 2
    if j < count:
        a = _typed_raw(values, scale, placed, change, floor, rows[j] if rows != NULL else j)
        if gathered != NULL:
            gathered[j] = a
        low0 = a if a < low0 else low0
        high0 = a if a > high0 else high0
    low[0] = low0 if low0 < low1 else low1
    high[0] = high0 if high0 > high1 else high1


cdef void _typed_dense_bounds(const column_t* values, double scale, const int32_t* placed, double change,
                              double floor, const double* sink, Py_ssize_t count,
                              double* low, double* high) noexcept nogil:
    # Every row of `count`, each value pushed sink[row] (1e300 for a failing row, else 0) out
    # of the bounds' reach: arithmetic, not a branch, so the loop vectorises. NaN values are
    # skipped (a NaN compares false).
    cdef double low0 = INFINITY, high0 = -INFINITY, a, b
    cdef Py_ssize_t j = 0
    if placed == NULL and scale == 1.0:
        if column_t is double:
            j = placecheck_dense_bounds_double(values, sink, count, floor, &low0, &high0)
        elif column_t is int32_t:
            j = placecheck_dense_bounds_int32(values, sink, count, floor, &low0, &high0)
    for j in range(j, count):
        a = _typed_raw(values, scale, placed, change, floor, j)
        b = a + sink[j]
        low0 = b if b < low0 else low0
        b = a - sink[j]
        high0 = b if b > high0 else high0
    low[0] = low0
    high[0] = high0


cdef void _typed_add_weights(const column_t* values, double scale, const int32_t* placed, double change,
                             double floor, Py_ssize_t count, double low, double span,
                             double multiplier, const double* multipliers, const int32_t* set_ids,
                             Py_ssize_t stride, double* weights) noexcept nogil:
    # Nova: weight += multiplier * ((value - low) / span), weights[row] of every row of `count`.
    # set_ids: the row's multiplier is multipliers[set * stride].
    cdef Py_ssize_t row
    if set_ids != NULL:
        for row in range(count):
            weights[row] = weights[row] + multipliers[set_ids[row] * stride] * (
                (_typed_raw(values, scale, placed, change, floor, row) - low) / span)
    else:
        for row in range(count):
            weights[row] = weights[row] + multiplier * (
                (_typed_raw(values, scale, placed, change, floor, row) - low) / span)


cdef void _add_gathered_weights(const double* gathered, const int32_t* rows, Py_ssize_t count, double low,
                                double span, double multiplier, const double* multipliers,
                                const int32_t* set_ids, Py_ssize_t stride, double* weights) noexcept nogil:
    # As _typed_add_weights over the passing rows: weights[j] of rows[j], whose raw value is gathered[j].
    cdef Py_ssize_t j
    if set_ids != NULL:
        for j in range(count):
            weights[j] = weights[j] + multipliers[set_ids[rows[j]] * stride] * ((gathered[j] - low) / span)
    else:
        for j in range(count):
            weights[j] = weights[j] + multiplier * ((gathered[j] - low) / span)


cdef class Weighing:
    """One request's weighing of one snapshot's rows.

    Weigher w's raw value of a row is columns[w][row] (float64, int32 or int64; None: 0)
    plus placed[row] * changes[w], clamped below at floors[w]: 0 is Nova's minval = 0 (those
    normalise over [0, max]), the others (-inf, or PCIWeigher's 1) normalise over [min, max]. Its multiplier
    for a row is multipliers[set_ids[row], w] (set_ids None: multipliers[0, w] for every
    row). A row's weight is the sum over weighers, in order, of multiplier * normalised;
    all-equal values normalise to 0, and with at most one passing row every weight is 0.
    A NaN raw value on a passing row of a weigher with may_be_nan is reported by
    `missing_row` (a required metric the host lacks), never weighed."""

    cdef object _keep  # the arrays the pointers below point into
    cdef const uint64_t* _fail
    cdef Py_ssize_t _n, _weighers, _passing
    cdef WeigherColumn _columns[WEIGH_MAX_WEIGHERS]
    cdef const double* _multipliers
    cdef Py_ssize_t _multiplier_sets
    cdef const int32_t* _set_ids
    cdef bint _contributes[WEIGH_MAX_WEIGHERS]
    cdef double _low[WEIGH_MAX_WEIGHERS]
    cdef double _high[WEIGH_MAX_WEIGHERS]
    cdef Py_ssize_t _missing_row
    cdef bint _dense  # most rows pass: weigh every row in place, vectorised, rather than gather
    cdef double[::1] _sink  # dense: 1e300 for a failing row, else 0, for the bounds
    # Sparse: weigher w's raw value of the j-th passing row at [w * _gathered_stride + j],
    # gathered once by the bounds and read by the weights.
    cdef double[::1] _gathered
    cdef Py_ssize_t _gathered_stride
    cdef bint _may_be_nan[WEIGH_MAX_WEIGHERS]
    # A weigher whose multiplier is 0 on every host (Nova's default num_instances_weight_multiplier)
    # adds nothing: its bounds are only reported (`bounds`), so they are found when asked for,
    # not by every refresh. Stale: to be found again before they are reported.
    cdef bint _reported_only[WEIGH_MAX_WEIGHERS]
    cdef bint _bounds_stale[WEIGH_MAX_WEIGHERS]
    cdef int32_t[::1] _rows  # the passing rows, ascending; the first _passing are valid
    cdef double[::1] _weights  # parallel to _rows; when _dense, indexed by row
    cdef readonly object placed  # int32 per row: instances of this request placed there; None before any

    def __init__(self, const uint64_t[::1] fail_bits, list columns, const double[::1] changes,
                 const double[::1] floors, const uint8_t[::1] may_be_nan,
                 const double[:, ::1] multipliers, set_ids):
        cdef Py_ssize_t n = fail_bits.shape[0], w
        cdef Py_ssize_t count = len(columns)
        if count > WEIGH_MAX_WEIGHERS:
            raise ValueError(f"at most {WEIGH_MAX_WEIGHERS} weighers")
        if changes.shape[0] != count or floors.shape[0] != count or may_be_nan.shape[0] != count \
                or multipliers.shape[1] != count \
                or multipliers.shape[0] < 1:
            raise ValueError("one change, floor, NaN flag and multiplier column per weigher, "
                             "at least one multiplier row")
        keep = [fail_bits.base, multipliers.base]
        cdef const int32_t[::1] set_view
        self._set_ids = NULL
        if set_ids is not None:
            set_view = set_ids
            if set_view.shape[0] != n:
                raise ValueError("set_ids must have one entry per row")
            if n and (np.min(set_ids) < 0 or np.max(set_ids) >= multipliers.shape[0]):
                raise ValueError("every set id must index a multiplier row")
            keep.append(set_ids)
            self._set_ids = &set_view[0] if n else NULL
        elif multipliers.shape[0] != 1:
            raise ValueError("one multiplier row unless set_ids says which row each host takes")
        cdef const double[::1] double_view
        cdef const int32_t[::1] int32_view
        cdef const int64_t[::1] int64_view
        for w in range(count):
            column = columns[w]
            self._columns[w].kind = COLUMN_ZEROS
            self._columns[w].values = NULL
            self._columns[w].change = changes[w]
            self._columns[w].floor = floors[w]
            self._may_be_nan[w] = may_be_nan[w]
            if column is None:
                continue
            if column.shape[0] != n:
                raise ValueError("every weigher column must have one value per row")
            keep.append(column)
            if n == 0:
                continue
            if column.dtype == np.float64:
                double_view = column
                self._columns[w].kind, self._columns[w].values = COLUMN_DOUBLE, &double_view[0]
            elif column.dtype == np.int32:
                int32_view = column
                self._columns[w].kind, self._columns[w].values = COLUMN_INT32, &int32_view[0]
            elif column.dtype == np.int64:
                int64_view = column
                self._columns[w].kind, self._columns[w].values = COLUMN_INT64, &int64_view[0]
            else:
                raise ValueError(f"weigher column of dtype {column.dtype}: float64, int32 or int64 only")
        self._keep = keep
        self._fail = &fail_bits[0] if n else NULL
        self._multipliers = &multipliers[0, 0]
        self._multiplier_sets = multipliers.shape[0]
        self._n = n
        self._weighers = count
        cdef Py_ssize_t s
        for w in range(count):
            # A NaN (a missing metric) must be found by refresh, whatever the multiplier.
            self._reported_only[w] = not self._may_be_nan[w]
            for s in range(multipliers.shape[0]):
                self._reported_only[w] = self._reported_only[w] and multipliers[s, w] == 0.0
        self._rows = np.empty(n + 1, dtype=np.int32)  # _compact_passing writes one past the last passing row
        self.placed = None
        self.refresh()

    @property
    def passing(self) -> int:
        return self._passing

    @property
    def missing_row(self) -> int:
        """The first passing row with a NaN raw value when at least two rows pass (and are
        therefore weighed), else -1."""
        return self._missing_row

    @property
    def bounds(self):
        """Each weigher's normalisation (low, high) over the passing rows."""
        cdef const int32_t* placed = self._placed_rows()
        cdef Py_ssize_t w
        for w in range(self._weighers):
            if self._bounds_stale[w]:
                self._bound(w, placed)
                self._bounds_stale[w] = False
        return [(self._low[w], self._high[w]) for w in range(self._weighers)]

    cdef inline const int32_t* _placed_rows(self):
        cdef int32_t[::1] view
        if self.placed is None:
            return NULL
        view = self.placed
        return &view[0]

    cdef inline double _multiplier(self, Py_ssize_t row, Py_ssize_t w) noexcept nogil:
        if self._set_ids == NULL:
            return self._multipliers[w]
        return self._multipliers[self._set_ids[row] * self._weighers + w]

    def refresh(self):
        """Every row's fail bits may have changed: compact, bound and weigh afresh."""
        cdef const int32_t* placed = self._placed_rows()
        cdef Py_ssize_t w
        cdef PyThreadState* released = release_gil_for(self._n)
        self._passing = _compact_passing(self._fail, self._n, &self._rows[0])
        restore_gil(released)
        # Sized now that the passing count is known: typically few of the rows pass.
        self._dense = self._passing * 2 > self._n
        if self._dense:
            self._sink = np.empty(self._n, dtype=np.float64)
            self._weights = np.empty(self._n, dtype=np.float64)
        else:
            self._gathered_stride = self._passing
            self._gathered = np.empty(max(self._weighers * self._passing, 1), dtype=np.float64)
            self._weights = np.empty(max(self._passing, 1), dtype=np.float64)
        released = release_gil_for(self._n)
        if self._dense:
            _fill_sink(self._fail, self._n, &self._sink[0])
        self._missing_row = -1
        for w in range(self._weighers):
            self._bounds_stale[w] = self._reported_only[w]
            if not self._reported_only[w]:
                self._bound(w, placed)
        self._weigh_all(placed)
        restore_gil(released)

    cdef inline double* _gathered_of(self, Py_ssize_t w) noexcept nogil:
        return &self._gathered[w * self._gathered_stride]

    cdef void _bound(self, Py_ssize_t w, const int32_t* placed, bint gathered=False) noexcept nogil:
        # Sparse: also gathers the weigher's values of the passing rows (_gathered_of(w)), or,
        # when `gathered` says they are current, reads them there rather than in the column.
        cdef WeigherColumn column = self._columns[w]
        cdef Py_ssize_t j
        cdef double low = INFINITY, high = -INFINITY, scale = 1.0, value
        if column.kind == COLUMN_ZEROS and placed != NULL and column.change != 0.0:
            # 0 + placed * change: the placed counts are the column, scaled by the change.
            column.kind, column.values, scale, placed = COLUMN_INT32, placed, column.change, NULL
        if gathered and not self._dense:
            _typed_gather_bounds(<const double*>self._gathered_of(w), 1.0, <const int32_t*>NULL, 0.0, -INFINITY,
                                 <const int32_t*>NULL, self._passing, <double*>NULL, &low, &high)
        elif column.kind == COLUMN_ZEROS:
            if self._passing:
                low = high = column.floor if column.floor > 0.0 else 0.0
            if not self._dense:
                for j in range(self._passing):
                    self._gathered_of(w)[j] = low
        elif self._dense:
            if column.kind == COLUMN_DOUBLE:
                _typed_dense_bounds(<const double*>column.values, scale, placed, column.change, column.floor,
                                    &self._sink[0], self._n, &low, &high)
            elif column.kind == COLUMN_INT32:
                _typed_dense_bounds(<const int32_t*>column.values, scale, placed, column.change, column.floor,
                                    &self._sink[0], self._n, &low, &high)
            else:
                _typed_dense_bounds(<const int64_t*>column.values, scale, placed, column.change, column.floor,
                                    &self._sink[0], self._n, &low, &high)
        elif column.kind == COLUMN_DOUBLE:
            _typed_gather_bounds(<const double*>column.values, scale, placed, column.change, column.floor,
                                 &self._rows[0], self._passing, self._gathered_of(w), &low, &high)
        elif column.kind == COLUMN_INT32:
            _typed_gather_bounds(<const int32_t*>column.values, scale, placed, column.change, column.floor,
                                 &self._rows[0], self._passing, self._gathered_of(w), &low, &high)
        else:
            _typed_gather_bounds(<const int64_t*>column.values, scale, placed, column.change, column.floor,
                                 &self._rows[0], self._passing, self._gathered_of(w), &low, &high)
        if low > high:
            low = high = 0.0  # no passing row, or only NaN values
        if column.floor == 0.0:
            low = 0.0  # minval = 0: the low bound is 0 itself, not the smallest value
        self._low[w] = low
        self._high[w] = high
        if self._may_be_nan[w] and self._passing > 1 and self._missing_row < 0:
            for j in range(self._passing):
                value = _raw(&self._columns[w], placed, self._rows[j]) if self._dense else self._gathered_of(w)[j]
                if value != value:
                    self._missing_row = self._rows[j]
                    break

    cdef void _decide_contributions(self) noexcept nogil:
        # A weigher adds exactly +-0.0 when its values are all equal (normalised to 0) or its
        # multiplier is 0 on every host, so it is left out; Nova leaves a lone host unweighed.
        cdef Py_ssize_t w, s
        cdef Py_ssize_t sets = self._multiplier_sets
        cdef bint any_multiplier
        for w in range(self._weighers):
            any_multiplier = False
            for s in range(sets):
                if self._multipliers[s * self._weighers + w] != 0.0:
                    any_multiplier = True
                    break
            self._contributes[w] = self._passing > 1 and any_multiplier and self._low[w] != self._high[w]

    cdef void _weigh_all(self, const int32_t* placed) noexcept nogil:
        cdef Py_ssize_t j, w, count = self._n if self._dense else self._passing
        cdef double* weights = &self._weights[0]
        cdef WeigherColumn column
        cdef const int32_t* placed_here
        cdef double low, span, scale
        self._decide_contributions()
        for j in range(count):
            weights[j] = 0.0
        for w in range(self._weighers):
            if not self._contributes[w]:
                continue
            low = self._low[w]
            span = self._high[w] - low
            if not self._dense:
                _add_gathered_weights(self._gathered_of(w), &self._rows[0], count, low, span, self._multipliers[w],
                                      self._multipliers + w, self._set_ids, self._weighers, weights)
                continue
            column = self._columns[w]
            scale = 1.0
            placed_here = placed
            if column.kind == COLUMN_ZEROS:  # contributes, so placed * change is the column
                column.kind, column.values, scale, placed_here = COLUMN_INT32, placed, column.change, NULL
            if column.kind == COLUMN_DOUBLE:
                _typed_add_weights(<const double*>column.values, scale, placed_here, column.change, column.floor,
                                   count, low, span, self._multipliers[w], self._multipliers + w,
                                   self._set_ids, self._weighers, weights)
            elif column.kind == COLUMN_INT32:
                _typed_add_weights(<const int32_t*>column.values, scale, placed_here, column.change, column.floor,
                                   count, low, span, self._multipliers[w], self._multipliers + w,
                                   self._set_ids, self._weighers, weights)
            else:
                _typed_add_weights(<const int64_t*>column.values, scale, placed_here, column.change, column.floor,
                                   count, low, span, self._multipliers[w], self._multipliers + w,
                                   self._set_ids, self._weighers, weights)

    cdef double _weigh_one(self, Py_ssize_t row, const int32_t* placed) noexcept nogil:
        cdef double weight = 0.0
        cdef Py_ssize_t w
        for w in range(self._weighers):
            if self._contributes[w]:
                weight = weight + self._multiplier(row, w) * (
                    (_raw(&self._columns[w], placed, row) - self._low[w]) / (self._high[w] - self._low[w]))
        return weight

    cdef Py_ssize_t _position(self, Py_ssize_t row) noexcept nogil:
        # Binary search in the ascending passing rows; -1 when the row does not pass.
        cdef Py_ssize_t low = 0, high = self._passing, middle
        while low < high:
            middle = (low + high) // 2
            if self._rows[middle] < row:
                low = middle + 1
            else:
                high = middle
        return low if low < self._passing and self._rows[low] == row else -1

    def consume(self, Py_ssize_t row):
        """One more instance of the request on `row`, whose fail bits the caller has already
        rescanned; no other row changed."""
        if row < 0 or row >= self._n:
            raise IndexError(f"row {row} out of range")
        if self.placed is None:
            self.placed = np.zeros(self._n, dtype=np.int32)
        cdef int32_t[::1] placed_view = self.placed
        cdef int32_t* placed = &placed_view[0]
        cdef double before[WEIGH_MAX_WEIGHERS]
        cdef double after, low, high
        cdef Py_ssize_t w, position = self._position(row)
        cdef Py_ssize_t passing_before = self._passing
        cdef bint passes = self._fail[row] == 0, moved = False
        if position < 0:
            raise ValueError(f"row {row} did not pass: only a ranked row can be consumed")
        cdef PyThreadState* released = release_gil_for(self._passing)  # may weigh every passing row again
        for w in range(self._weighers):
            before[w] = _raw(&self._columns[w], placed, row)
        placed[row] += 1
        if not passes:
            memmove(&self._rows[position], &self._rows[position + 1],
                    (self._passing - position - 1) * sizeof(int32_t))
            if self._dense:
                self._sink[row] = 1e300
            else:
                memmove(&self._weights[position], &self._weights[position + 1],
                        (self._passing - position - 1) * sizeof(double))
                for w in range(self._weighers):
                    memmove(self._gathered_of(w) + position, self._gathered_of(w) + position + 1,
                            (self._passing - position - 1) * sizeof(double))
            self._passing -= 1
        elif not self._dense:
            for w in range(self._weighers):
                self._gathered_of(w)[position] = _raw(&self._columns[w], placed, row)
        for w in range(self._weighers):
            after = _raw(&self._columns[w], placed, row)
            low, high = self._low[w], self._high[w]
            if passes and after == before[w]:
                continue
            if self._bounds_stale[w]:
                continue
            if before[w] == high or (before[w] == low and self._columns[w].floor != 0.0):
                if self._reported_only[w]:
                    self._bounds_stale[w] = True  # found again only if reported
                    continue
                self._bound(w, placed, True)  # the row may have held the bound alone
            elif passes:
                self._low[w] = after if after < low and self._columns[w].floor != 0.0 else low
                self._high[w] = after if after > high else high
            # The weights move with the bounds of a weigher that adds to them.
            moved = moved or (not self._reported_only[w] and (self._low[w] != low or self._high[w] != high))
        if moved or (passing_before > 1) != (self._passing > 1):
            self._weigh_all(placed)
        elif passes:
            self._weights[row if self._dense else position] = self._weigh_one(row, placed)
        restore_gil(released)

    def raw_and_multipliers(self, Py_ssize_t row, int64_t placed_here):
        """Each weigher's (raw value, multiplier) of `row` with `placed_here` instances of the
        request on it: the value as stored plus placed_here * change, not clamped (as reported,
        engine/weighers.py score())."""
        if row < 0 or row >= self._n:
            raise IndexError(f"row {row} out of range")
        cdef Py_ssize_t w
        return [(_stored(&self._columns[w], row) + <double>placed_here * self._columns[w].change,
                 self._multiplier(row, w))
                for w in range(self._weighers)]

    def top(self, int64_t[::1] top_rows, double[::1] top_weights):
        """The best len(top_rows) passing rows, best first, ties in row order, with their
        weights; returns how many were written."""
        cdef Py_ssize_t k = top_rows.shape[0], j, slot, found = 0
        cdef double weight, threshold = -INFINITY
        cdef const double* weights = &self._weights[0]
        cdef const int32_t* rows = &self._rows[0]
        cdef bint dense = self._dense
        if top_weights.shape[0] != k:
            raise ValueError("top_rows and top_weights of one length")
        if k == 0:
            return 0
        cdef PyThreadState* released = release_gil_for(self._passing)
        for j in range(self._passing):
            weight = weights[rows[j] if dense else j]
            if found == k and weight <= threshold:
                continue
            # Ties keep row order: a row only moves ahead of strictly smaller weights.
            slot = found if found < k else k - 1
            while slot > 0 and top_weights[slot - 1] < weight:
                top_weights[slot] = top_weights[slot - 1]
                top_rows[slot] = top_rows[slot - 1]
                slot -= 1
            top_weights[slot] = weight
            top_rows[slot] = rows[j]
            if found < k:
                found += 1
            threshold = top_weights[k - 1]
        restore_gil(released)
        return found

    def tied_at_top(self):
        """Every passing row whose weight equals the best weight, in row order (int32)."""
        cdef Py_ssize_t j, count = 0
        cdef double best = -INFINITY, weight
        tied = np.empty(self._passing, dtype=np.int32)
        cdef int32_t[::1] out = tied
        cdef PyThreadState* released = release_gil_for(self._passing)
        for j in range(self._passing):
            weight = self._weights[self._rows[j] if self._dense else j]
            best = weight if weight > best else best
        for j in range(self._passing):
            out[count] = self._rows[j]
            count += self._weights[self._rows[j] if self._dense else j] == best
        restore_gil(released)
        return tied[:count]


def metrics_raw(const double[:, ::1] metric_values, const int64_t[::1] metric_indices,
                const double[::1] ratios, const double[::1] multiplier_of_row_set, set_ids,
                double unavailable, bint required, double[::1] out):
    """MetricsWeigher's raw value of every row (nova/scheduler/weights/metrics.py): the sum,
    in setting order, of metric value * ratio, the value truncated to an integer as Nova's
    MonitorMetric.value (an IntegerField) holds it. metric_indices[i] is setting i's row of
    metric_values (NaN: the host lacks it; -1: no host has it). A lacking metric makes the
    value NaN when `required` (Nova raises ComputeHostMetricNotFound), else `unavailable`
    if its ratio times the host's multiplier is non-zero, else it is skipped.
    multiplier_of_row_set[set_ids[row]] is the row's multiplier (set_ids None: index 0)."""
    cdef Py_ssize_t n = out.shape[0], settings = metric_indices.shape[0], row, i
    cdef const int32_t[::1] set_view
    cdef const int32_t* sets = NULL
    cdef double value, metric, multiplier
    if ratios.shape[0] != settings:
        raise ValueError("one ratio per metric setting")
    if set_ids is not None:
        set_view = set_ids
        sets = &set_view[0] if n else NULL
    cdef PyThreadState* released = release_gil_for(n)
    for row in range(n):
        value = 0.0
        multiplier = multiplier_of_row_set[sets[row] if sets != NULL else 0]
        for i in range(settings):
            metric = metric_values[metric_indices[i], row] if metric_indices[i] >= 0 else NAN
            if metric == metric:
                value = value + trunc(metric) * ratios[i]
            elif required:
                value = NAN
                break
            elif ratios[i] * multiplier != 0.0:
                value = unavailable
                break
        out[row] = value
    restore_gil(released)
