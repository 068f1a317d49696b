# ServerGroupAntiAffinityFilter (engine/rules/server_group_anti_affinity.py).
# Uses first_at_or_after from host_rows.pxi.

cdef inline bint group_has_room(int64_t members_on_host, int64_t placed, int64_t max_per_host,
                                bint instance_already_here) noexcept nogil:
    # Nova exempts the host already running the instance (a resize to the same host).
    return instance_already_here or members_on_host + placed < max_per_host


def scan_anti_affinity(const int32_t[::1] member_rows, const int32_t[::1] member_counts,
                       const int32_t[::1] exempt_rows, int64_t max_per_host,
                       uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop,
                       int64_t placed):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, member, exempt
    cdef int64_t members_on_host
    cdef bint instance_already_here
    with nogil:
        member = first_at_or_after(member_rows, start)
        exempt = first_at_or_after(exempt_rows, start)
        for row in range(start, stop):
            members_on_host = 0
            if member < member_rows.shape[0] and member_rows[member] == row:
                members_on_host = member_counts[member]
                member += 1
            instance_already_here = exempt < exempt_rows.shape[0] and exempt_rows[exempt] == row
            exempt += instance_already_here
            fails = not group_has_room(members_on_host, placed, max_per_host, instance_already_here)
            fail_bits[row] |= mask * fails
            refused += fails
    return refused
