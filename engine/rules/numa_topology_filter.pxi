# NUMATopologyFilter's bound (engine/rules/numa_topology_filter.py): what no exact fit can do
# without. The guest's cells need distinct host cells; a guest cell's dedicated CPUs come from one
# host cell's free dedicated CPUs, its shared CPUs need a host cell with at least as many shared
# CPUs. The rows that pass are listed in `candidates` for the exact fit; returns their count.

def scan_numa_bound(const int32_t[::1] cell_count, const int32_t[::1] free_pcpus,
                    const int32_t[::1] max_free_pcpus, const int32_t[::1] max_cpus,
                    int32_t guest_cells, int64_t dedicated_total, int32_t dedicated_cell_max,
                    int32_t shared_cell_max, uint64_t[::1] fail_bits, int bit,
                    Py_ssize_t start, Py_ssize_t stop, int64_t placed, int32_t[::1] candidates):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef Py_ssize_t row, passing = 0
    cdef bint fails
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = (cell_count[row] < guest_cells
                 or free_pcpus[row] < dedicated_total * (placed + 1)
                 or max_free_pcpus[row] < dedicated_cell_max
                 or max_cpus[row] < shared_cell_max)
        fail_bits[row] |= mask * fails
        if not fails:
            candidates[passing] = <int32_t>row
            passing += 1
    restore_gil(released)
    return passing
