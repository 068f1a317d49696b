# Nova's weighing (nova/weights.py get_weighed_objects) over the rows that pass
# every rule, with a top-k selection instead of a full sort.
# Included by engine/_fastfilters.pyx; engine/weighers.py is the Python side.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef enum:
    WEIGH_MAX_WEIGHERS = 16


cdef inline double _weigh_raw(const void* column, bint column_is_int32, Py_ssize_t row,
                              double consumed) noexcept nogil:
    # `consumed` is what this request's earlier picks changed on the row (placed * delta).
    if column_is_int32:
        return (<const int32_t*>column)[row] + consumed
    return (<const double*>column)[row] + consumed


def weigh_top_k(const uint64_t[::1] fail_bits, list columns, const int32_t[::1] placed,
                const double[::1] deltas, const double[::1] multipliers,
                const uint8_t[::1] clamp_at_zero, double[:, ::1] bounds,
                int64_t[::1] top_rows, double[::1] top_weights):
    """Weigh every row with fail_bits == 0 and keep the best len(top_rows) of them.

    columns[w] (float64 or int32, one value per row) is weigher w's raw value;
    placed[row] * deltas[w] is added to it (None: nothing placed yet). As Nova:
    raw values of weighers with clamp_at_zero are clamped to >= 0 and normalised
    over [0, max], the others over [min, max]; all-equal values normalise to 0;
    weight = sum over weighers, in order, of multiplier * normalised; with at most
    one passing row every weight is 0. Ties keep row order (stable).

    Writes bounds[w] = (low, high) of the normalisation and the best rows with their
    weights, best first; returns (passing rows, rows written to top_rows)."""
    cdef Py_ssize_t n = fail_bits.shape[0]
    cdef Py_ssize_t weigher_count = len(columns)
    cdef Py_ssize_t k = top_rows.shape[0]
    if weigher_count > WEIGH_MAX_WEIGHERS:
        raise ValueError(f"at most {WEIGH_MAX_WEIGHERS} weighers")
    if deltas.shape[0] != weigher_count or multipliers.shape[0] != weigher_count \
            or clamp_at_zero.shape[0] != weigher_count or bounds.shape[0] != weigher_count \
            or bounds.shape[1] != 2 or top_weights.shape[0] != k:
        raise ValueError("one delta, multiplier, clamp flag and bounds row per weigher; "
                         "top_rows and top_weights of one length")
    if placed is not None and placed.shape[0] != n:
        raise ValueError("placed must have one entry per row")

    cdef const void* column_data[WEIGH_MAX_WEIGHERS]
    cdef bint column_is_int32[WEIGH_MAX_WEIGHERS]
    cdef const double[::1] float_view
    cdef const int32_t[::1] int_view
    cdef Py_ssize_t w
    for w in range(weigher_count):
        column = columns[w]
        if column.shape[0] != n:
            raise ValueError("every weigher column must have one value per row")
        column_is_int32[w] = column.dtype.kind == "i" and column.dtype.itemsize == 4
        column_data[w] = NULL
        if n == 0:
            continue
        if column_is_int32[w]:
            int_view = column
            column_data[w] = &int_view[0]
        else:
            float_view = column
            column_data[w] = &float_view[0]

    cdef bint has_placed = placed is not None
    cdef double low[WEIGH_MAX_WEIGHERS]
    cdef double high[WEIGH_MAX_WEIGHERS]
    cdef double span[WEIGH_MAX_WEIGHERS]
    cdef bint contributes[WEIGH_MAX_WEIGHERS]
    cdef Py_ssize_t row, passing = 0, found = 0, slot
    cdef double value, placed_here, weight
    cdef bint first = True

    with nogil:
        for w in range(weigher_count):
            low[w] = 0.0
            high[w] = 0.0
        # Pass 1: normalisation bounds over the passing rows.
        for row in range(n):
            if fail_bits[row] != 0:
                continue
            passing += 1
            placed_here = placed[row] if has_placed else 0.0
            for w in range(weigher_count):
                value = _weigh_raw(column_data[w], column_is_int32[w], row, placed_here * deltas[w])
                if clamp_at_zero[w]:
                    # minval = 0: the low bound is 0 itself, not the smallest value.
                    if value < 0.0:
                        value = 0.0
                    if first or value > high[w]:
                        high[w] = value
                else:
                    if first or value < low[w]:
                        low[w] = value
                    if first or value > high[w]:
                        high[w] = value
            first = False
        for w in range(weigher_count):
            span[w] = high[w] - low[w]
            # A zero multiplier adds exactly 0.0, and equal values normalise to 0.
            contributes[w] = passing > 1 and multipliers[w] != 0.0 and low[w] != high[w]

        # Pass 2: weights and the top k (a sorted insertion buffer: k is small).
        for row in range(n):
            if fail_bits[row] != 0:
                continue
            weight = 0.0
            placed_here = placed[row] if has_placed else 0.0
            for w in range(weigher_count):
                if not contributes[w]:
                    continue
                value = _weigh_raw(column_data[w], column_is_int32[w], row, placed_here * deltas[w])
                if clamp_at_zero[w] and value < 0.0:
                    value = 0.0
                weight += multipliers[w] * ((value - low[w]) / span[w])
            if found == k and (k == 0 or weight <= top_weights[k - 1]):
                continue
            slot = found if found < k else k - 1
            # Strictly greater moves up: an equal weight stays behind earlier rows.
            while slot > 0 and top_weights[slot - 1] < weight:
                top_weights[slot] = top_weights[slot - 1]
                top_rows[slot] = top_rows[slot - 1]
                slot -= 1
            top_weights[slot] = weight
            top_rows[slot] = row
            if found < k:
                found += 1
        for w in range(weigher_count):
            bounds[w, 0] = low[w]
            bounds[w, 1] = high[w]
    return passing, found
