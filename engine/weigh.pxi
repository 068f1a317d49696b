# Nova's weighing (nova/weights.py get_weighed_objects) over the rows that pass
# every rule, with a top-k selection instead of a full sort.
# Included by engine/_fastfilters.pyx; engine/weighers.py is the Python side.
#
# Three passes, weigher by weigher, so that the hot loops are branch-free and the
# compiler can vectorise them (a fused single pass with branches measured ~5x slower):
#   bounds   each weigher's normalisation bounds over the passing rows
#   weights  weights[row] += multiplier * normalised, for every row (failing rows too)
#   top k    a threshold scan: insertion is rare once k rows are held

from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

ctypedef fused weigher_value:
    double
    int32_t


cdef enum:
    WEIGH_MAX_WEIGHERS = 16


cdef inline double _raw_value(const weigher_value* column, const int32_t* placed, double change,
                              double floor, Py_ssize_t row) noexcept nogil:
    # The column plus this request's earlier picks on the row, clamped at `floor`.
    cdef double value = <double>column[row]
    if placed != NULL:
        value = value + placed[row] * change
    return value if value > floor else floor


cdef inline double _pushed(const weigher_value* column, const uint64_t* fail_bits,
                           const int32_t* placed, double change, double floor, Py_ssize_t row,
                           double direction) noexcept nogil:
    # A failing row's value moves 1e300 in `direction`, out of the bound's reach: arithmetic
    # rather than a branch, as the pass/fail pattern is random and would mispredict.
    return _raw_value(column, placed, change, floor, row) + direction * ((fail_bits[row] != 0) * 1e300)


cdef void _weigher_bounds(const weigher_value* column, const uint64_t* fail_bits,
                          const int32_t* placed, double change, double floor, Py_ssize_t n,
                          double* low, double* high) noexcept nogil:
    # Four independent min/max chains, in registers: one chain is bound by minsd latency.
    cdef double low0 = INFINITY, low1 = INFINITY, low2 = INFINITY, low3 = INFINITY
    cdef double high0 = -INFINITY, high1 = -INFINITY, high2 = -INFINITY, high3 = -INFINITY
    cdef double a, b, c, d
    cdef Py_ssize_t row = 0
    while row + 4 <= n:
        a = _pushed(column, fail_bits, placed, change, floor, row, 1.0)
        b = _pushed(column, fail_bits, placed, change, floor, row + 1, 1.0)
        c = _pushed(column, fail_bits, placed, change, floor, row + 2, 1.0)
        d = _pushed(column, fail_bits, placed, change, floor, row + 3, 1.0)
        low0 = a if a < low0 else low0
        low1 = b if b < low1 else low1
        low2 = c if c < low2 else low2
        low3 = d if d < low3 else low3
        a = _pushed(column, fail_bits, placed, change, floor, row, -1.0)
        b = _pushed(column, fail_bits, placed, change, floor, row + 1, -1.0)
        c = _pushed(column, fail_bits, placed, change, floor, row + 2, -1.0)
        d = _pushed(column, fail_bits, placed, change, floor, row + 3, -1.0)
        high0 = a if a > high0 else high0
        high1 = b if b > high1 else high1
        high2 = c if c > high2 else high2
        high3 = d if d > high3 else high3
        row += 4
    while row < n:
        a = _pushed(column, fail_bits, placed, change, floor, row, 1.0)
        low0 = a if a < low0 else low0
        a = _pushed(column, fail_bits, placed, change, floor, row, -1.0)
        high0 = a if a > high0 else high0
        row += 1
    low0 = low0 if low0 < low1 else low1
    low2 = low2 if low2 < low3 else low3
    high0 = high0 if high0 > high1 else high1
    high2 = high2 if high2 > high3 else high3
    low[0] = low0 if low0 < low2 else low2
    high[0] = high0 if high0 > high2 else high2


cdef void _add_weigher(const weigher_value* column, const int32_t* placed, double change,
                       double floor, double low, double span, double multiplier, bint first,
                       Py_ssize_t n, double* weights) noexcept nogil:
    # Nova: weight starts at 0.0 and adds multiplier * (value - low) / span per weigher.
    cdef Py_ssize_t row
    if first:
        for row in range(n):
            weights[row] = 0.0
    for row in range(n):
        weights[row] = weights[row] + multiplier * (
            (_raw_value(column, placed, change, floor, row) - low) / span)


cdef Py_ssize_t _top_k(const double* weights, const uint64_t* fail_bits, Py_ssize_t n,
                       int64_t* top_rows, double* top_weights, Py_ssize_t k) noexcept nogil:
    # Ties keep row order: a row only moves ahead of strictly smaller weights.
    cdef Py_ssize_t row, slot, found = 0
    cdef double weight, threshold = -INFINITY
    if k == 0:
        return 0
    for row in range(n):
        weight = weights[row]
        if found == k and weight <= threshold:
            continue
        if fail_bits[row] != 0:
            continue
        slot = found if found < k else k - 1
        while slot > 0 and top_weights[slot - 1] < weight:
            top_weights[slot] = top_weights[slot - 1]
            top_rows[slot] = top_rows[slot - 1]
            slot -= 1
        top_weights[slot] = weight
        top_rows[slot] = row
        if found < k:
            found += 1
        threshold = top_weights[k - 1]
    return found


def weigh_top_k(const uint64_t[::1] fail_bits, list columns, const int32_t[::1] placed,
                const double[::1] changes, const double[::1] multipliers,
                const uint8_t[::1] clamp_at_zero, double[:, ::1] bounds, double[::1] scratch,
                int64_t[::1] top_rows, double[::1] top_weights):
    """Weigh every row with fail_bits == 0 and keep the best len(top_rows) of them.

    columns[w] (float64 or int32, one value per row) is weigher w's raw value;
    placed[row] * changes[w] is added to it (placed None: nothing placed yet). As Nova:
    raw values of weighers with clamp_at_zero are clamped to >= 0 and normalised
    over [0, max], the others over [min, max]; all-equal values normalise to 0;
    weight = sum over weighers, in order, of multiplier * normalised; with at most
    one passing row every weight is 0. Ties keep row order (stable). `scratch` is
    a float64 buffer of one value per row, overwritten.

    Writes bounds[w] = (low, high) of the normalisation and the best rows with their
    weights, best first; returns (passing rows, rows written to top_rows)."""
    cdef Py_ssize_t n = fail_bits.shape[0]
    cdef Py_ssize_t weigher_count = len(columns)
    cdef Py_ssize_t k = top_rows.shape[0]
    if weigher_count > WEIGH_MAX_WEIGHERS:
        raise ValueError(f"at most {WEIGH_MAX_WEIGHERS} weighers")
    if changes.shape[0] != weigher_count or multipliers.shape[0] != weigher_count \
            or clamp_at_zero.shape[0] != weigher_count or bounds.shape[0] != weigher_count \
            or bounds.shape[1] != 2 or top_weights.shape[0] != k:
        raise ValueError("one change, multiplier, clamp flag and bounds row per weigher; "
                         "top_rows and top_weights of one length")
    if scratch.shape[0] != n or (placed is not None and placed.shape[0] != n):
        raise ValueError("scratch and placed must have one entry per row")
    if n == 0:
        return 0, 0

    cdef const double* float_columns[WEIGH_MAX_WEIGHERS]
    cdef const int32_t* int_columns[WEIGH_MAX_WEIGHERS]
    cdef const double[::1] float_view
    cdef const int32_t[::1] int_view
    cdef Py_ssize_t w
    for w in range(weigher_count):
        column = columns[w]
        if column.shape[0] != n:
            raise ValueError("every weigher column must have one value per row")
        float_columns[w] = NULL
        int_columns[w] = NULL
        if column.dtype.kind == "i" and column.dtype.itemsize == 4:
            int_view = column
            int_columns[w] = &int_view[0]
        else:
            float_view = column
            float_columns[w] = &float_view[0]

    cdef const uint64_t* fail = &fail_bits[0]
    cdef const int32_t* placed_rows = &placed[0] if placed is not None else NULL
    cdef double* weights = &scratch[0]
    cdef double floor[WEIGH_MAX_WEIGHERS]
    cdef double low[WEIGH_MAX_WEIGHERS]
    cdef double high[WEIGH_MAX_WEIGHERS]
    cdef Py_ssize_t row, passing = 0, found
    cdef bint first = True

    with nogil:
        for row in range(n):
            passing += fail[row] == 0
        for w in range(weigher_count):
            floor[w] = 0.0 if clamp_at_zero[w] else -INFINITY
            if float_columns[w] != NULL:
                _weigher_bounds(float_columns[w], fail, placed_rows, changes[w], floor[w], n,
                                &low[w], &high[w])
            else:
                _weigher_bounds(int_columns[w], fail, placed_rows, changes[w], floor[w], n,
                                &low[w], &high[w])
            if clamp_at_zero[w]:
                low[w] = 0.0  # minval = 0: the low bound is 0 itself, not the smallest value
            if passing == 0:
                low[w] = 0.0
                high[w] = 0.0
        for w in range(weigher_count):
            # A zero multiplier adds exactly 0.0, equal bounds normalise to 0, and Nova
            # leaves a lone host unweighed.
            if passing <= 1 or multipliers[w] == 0.0 or low[w] == high[w]:
                continue
            if float_columns[w] != NULL:
                _add_weigher(float_columns[w], placed_rows, changes[w], floor[w], low[w],
                             high[w] - low[w], multipliers[w], first, n, weights)
            else:
                _add_weigher(int_columns[w], placed_rows, changes[w], floor[w], low[w],
                             high[w] - low[w], multipliers[w], first, n, weights)
            first = False
        if first:
            for row in range(n):
                weights[row] = 0.0
        found = _top_k(weights, fail, n, &top_rows[0], &top_weights[0], k)
        for w in range(weigher_count):
            bounds[w, 0] = low[w]
            bounds[w, 1] = high[w]
    return passing, found
