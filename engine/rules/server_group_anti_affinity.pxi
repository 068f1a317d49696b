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


cdef class AntiAffinityKernel(Kernel):
    cdef const int32_t[::1] member_rows, member_counts, exempt_rows
    cdef int64_t max_per_host

    def __init__(self, const int32_t[::1] member_rows, const int32_t[::1] member_counts,
                 const int32_t[::1] exempt_rows, int64_t max_per_host, Py_ssize_t rows):
        if member_counts.shape[0] != member_rows.shape[0]:
            raise ValueError("one member count per member row")
        self.member_rows, self.member_counts, self.exempt_rows = member_rows, member_counts, exempt_rows
        self.max_per_host, self.rows = max_per_host, rows

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        cdef Py_ssize_t member = first_at_or_after(self.member_rows, row)
        cdef int64_t members_on_host = (self.member_counts[member]
                                        if member < self.member_rows.shape[0] and self.member_rows[member] == row
                                        else 0)
        return not group_has_room(members_on_host, placed, self.max_per_host, is_listed(self.exempt_rows, row))

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row, member, exempt, position
        cdef int64_t members_on_host, max_per_host = self.max_per_host
        cdef const int32_t[::1] member_rows = self.member_rows
        cdef const int32_t[::1] exempt_rows = self.exempt_rows
        member = first_at_or_after(member_rows, start)
        exempt = first_at_or_after(exempt_rows, start)
        if group_has_room(0, placed, max_per_host, False):
            # Rows without members pass: visit only the member rows.
            while member < member_rows.shape[0] and member_rows[member] < stop:
                row = member_rows[member]
                position = first_at_or_after(exempt_rows, row)
                fails = not group_has_room(self.member_counts[member], placed, max_per_host,
                                           listed_at(exempt_rows, &position, row))
                fail_bits[row] |= mask * fails
                refused += fails
                member += 1
        else:
            for row in range(start, stop):
                members_on_host = self.member_counts[member - 1] if listed_at(member_rows, &member, row) else 0
                fails = not group_has_room(members_on_host, placed, max_per_host,
                                           listed_at(exempt_rows, &exempt, row))
                fail_bits[row] |= mask * fails
                refused += fails
        return refused
