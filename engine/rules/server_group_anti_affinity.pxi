# ServerGroupAntiAffinityFilter (engine/rules/server_group_anti_affinity.py).
# Uses first_at_or_after from host_rows.pxi.

cdef inline bint group_has_room(int64_t members_on_host, int64_t placed, int64_t max_per_host,
                                bint instance_already_here) noexcept nogil:
    # Nova exempts the host already running the instance (a resize to the same host).
    return instance_already_here or members_on_host + placed < max_per_host


cdef inline bint listed_at(const int32_t[::1] rows, Py_ssize_t* position,
                           Py_ssize_t row) noexcept nogil:
    """Whether `row` is rows[*position], advancing past it; rows are visited in order."""
    if position[0] < rows.shape[0] and rows[position[0]] == row:
        position[0] += 1
        return True
    return False


def scan_anti_affinity(const int32_t[::1] member_rows, const int32_t[::1] member_counts,
                       const int32_t[::1] exempt_rows, int64_t max_per_host,
                       uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop,
                       int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, member, exempt, position
    cdef int64_t members_on_host
    cdef PyThreadState* released = release_gil_for(stop - start)
    member = first_at_or_after(member_rows, start)
    exempt = first_at_or_after(exempt_rows, start)
    if group_has_room(0, placed, max_per_host, False):
        # Rows without members pass: visit only the member rows.
        while member < member_rows.shape[0] and member_rows[member] < stop:
            row = member_rows[member]
            position = first_at_or_after(exempt_rows, row)
            fails = not group_has_room(member_counts[member], placed, max_per_host,
                                       listed_at(exempt_rows, &position, row))
            fail_bits[row] |= mask * fails
            refused += fails
            member += 1
    else:
        for row in range(start, stop):
            members_on_host = member_counts[member - 1] if listed_at(member_rows, &member, row) else 0
            fails = not group_has_room(members_on_host, placed, max_per_host,
                                       listed_at(exempt_rows, &exempt, row))
            fail_bits[row] |= mask * fails
            refused += fails
    restore_gil(released)
    return refused
