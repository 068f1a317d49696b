# NUMATopologyFilter (engine/rules/numa_topology_filter.py), in two steps.
#
# scan_numa_bound: what no fit can do without, from per-host columns. The guest's cells need
# distinct host cells; a guest cell's dedicated CPUs come from one host cell's free dedicated CPUs,
# its shared CPUs need a host cell with at least as many shared CPUs. The rows that pass are
# listed in `candidates`.
#
# numa_fit_rows: engine.numa.fit's answer for those rows, compiled, over the per-cell columns. It
# is that function's search step for step (Nova's order of host cells, its permutations, its cache
# keyed by the guest cell's changing id, the page size a guest cell settles on), reduced to what
# decides pass or fail: _pack_onto_cores only counts sibling sets by free threads. A row is
# NUMA_FITS, NUMA_MISFITS or NUMA_UNDECIDED: the guest's cells fit but PCI requests must then be
# met near them (engine.pci, in Python), or the row is outside what this port covers (more than
# NUMA_MAX_CELLS cells, wider cores than NUMA_MAX_THREADS, a CPU in two sibling sets).

def scan_numa_bound(const int32_t[::1] cell_count, const int32_t[::1] free_pcpus,
                    const int32_t[::1] max_free_pcpus, const int32_t[::1] max_cpus,
                    int32_t guest_cells, int64_t dedicated_total, int32_t dedicated_cell_max,
                    int32_t shared_cell_max, uint64_t[::1] fail_bits, int bit,
                    Py_ssize_t start, Py_ssize_t stop, int64_t placed, int32_t[::1] candidates):
    """Refuses the rows of [start, stop) that fail the bound; lists the others in `candidates`
    and returns their count."""
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


from libc.math cimport isnan

cdef enum:
    NUMA_MISFITS = 0
    NUMA_FITS = 1
    NUMA_UNDECIDED = 2
    NUMA_MAX_CELLS = 8
    NUMA_MAX_THREADS = 8  # numa_cell_sets_with_free's width
    NUMA_MAX_PAIRS = 2 * NUMA_MAX_CELLS * NUMA_MAX_CELLS  # (host cell id, guest id or host cell id)
    MEMPAGES_SMALL = -1
    MEMPAGES_LARGE = -2
    MEMPAGES_ANY = -3
    THREADS_PREFER = 0  # none or prefer
    THREADS_ISOLATE = 1
    THREADS_REQUIRE = 2


cdef inline bint offsets_within(const int64_t[::1] offsets, Py_ssize_t index, Py_ssize_t length) noexcept nogil:
    # Entries offsets[index] .. offsets[index + 1] - 1 lie inside an array of `length` (offsets
    # come from the segment, which is checked only every --snapshot-verify-interval).
    return 0 <= offsets[index] <= offsets[index + 1] <= length


cdef struct GuestCellC:
    int64_t cpus  # shared vCPUs
    int64_t pcpus  # dedicated vCPUs
    int64_t memory  # MB
    int64_t pagesize  # KiB; 0: none asked for; MEMPAGES_*: a class
    bint pinned  # cpu policy dedicated or mixed
    bint shared  # cpu policy shared, mixed or none
    int thread_policy
    int64_t id


cdef struct HostCells:
    # One row's cells, as the columns hold them.
    Py_ssize_t first, count
    const int32_t* id
    const int64_t* memory
    const int64_t* memory_usage
    const int64_t* cpu_usage
    const int32_t* cpus
    const int32_t* pcpus
    const int32_t* free_pcpus
    const uint8_t* same_sets
    const int32_t* threads_per_core
    const int32_t* free_in_sets
    const int32_t* sets_with_free  # [C, NUMA_MAX_THREADS]
    const int64_t* page_first
    const int64_t* page_size
    const int64_t* page_total
    const int64_t* page_free


cdef struct GuestState:
    int64_t id  # the host cell id it last fitted (Nova's cache key), first its own id
    int64_t pagesize


cdef inline bint pages_hold(int64_t available_pages, int64_t size_kb, int64_t memory_kb) noexcept nogil:
    return memory_kb <= available_pages * size_kb and memory_kb % size_kb == 0


cdef int64_t page_size_for(const HostCells* h, Py_ssize_t c, int64_t memory_mb, int64_t pagesize) noexcept nogil:
    # engine.numa.page_size_for: the largest fitting size of the class (or the size asked for); 0: none.
    cdef int64_t first = h.page_first[c], last = h.page_first[c + 1], best, size, smallest = -1
    cdef int64_t memory_kb = memory_mb * 1024, ceiling = 0x7FFFFFFFFFFFFFFF
    cdef Py_ssize_t p
    if last == first:
        return 0
    for p in range(first, last):
        if smallest < 0 or h.page_size[p] < smallest:
            smallest = h.page_size[p]
    if pagesize > 0:
        for p in range(first, last):
            if h.page_size[p] == pagesize:
                return pagesize if pages_hold(h.page_free[p], pagesize, memory_kb) else 0
        return 0
    if pagesize == MEMPAGES_SMALL:
        for p in range(first, last):
            if h.page_size[p] == smallest:
                return smallest if pages_hold(h.page_free[p], smallest, memory_kb) else 0
        return 0
    # large (every size but the smallest) or any: largest first
    while True:
        best = -1
        for p in range(first, last):
            size = h.page_size[p]
            if size < ceiling and size > best and (pagesize == MEMPAGES_ANY or size != smallest):
                best = size
        if best < 0:
            return 0
        for p in range(first, last):
            if h.page_size[p] == best:
                if pages_hold(h.page_free[p], best, memory_kb):
                    return best
                break
        ceiling = best


cdef inline int64_t sets_with(const HostCells* h, Py_ssize_t c, int64_t threads) noexcept nogil:
    return h.sets_with_free[c * NUMA_MAX_THREADS + threads - 1] if threads <= NUMA_MAX_THREADS else 0


cdef inline bint sibling_sets_disjoint(const HostCells* h, Py_ssize_t c) noexcept nogil:
    # Summed over t, the sets with at least t free CPUs count each set's free CPUs once per CPU:
    # that equals the free CPUs in some set only when no CPU is in two sets (pack_onto_cores
    # counts on it; engine.numa lists a CPU once per set).
    cdef int64_t total = 0
    cdef Py_ssize_t t
    for t in range(1, NUMA_MAX_THREADS + 1):
        total += sets_with(h, c, t)
    return total == h.free_in_sets[c]


cdef bint pack_onto_cores(const HostCells* h, Py_ssize_t c, const GuestCellC* cell, int64_t reserved) noexcept nogil:
    # engine.numa._pack_onto_cores, pass or fail. The pinned CPUs are distinct free CPUs of sibling
    # sets, so what is left for the emulator threads is a count.
    cdef int64_t cores = h.threads_per_core[c], needed = cell.pcpus
    cdef int64_t free_in_sets = h.free_in_sets[c], whole, threads, most_free = 0, last_threads = 1
    cdef bint pinned_some, have_pinning = False, reserved_ok = False
    if cores == 0:
        cores = 1
    if cell.thread_policy == THREADS_ISOLATE:
        whole = sets_with(h, c, cores)
        if whole == 0:
            return False
        if cores != 1 and not h.same_sets[c]:
            return False  # Nova bug 1889633
        if whole < needed or needed == 0:
            return False
        # whole cores go with the pinning; the emulator thread needs a free CPU outside them
        return reserved == 0 or free_in_sets - needed * cores >= 1
    if cell.thread_policy == THREADS_REQUIRE and cores <= 1:
        return False
    for threads in range(NUMA_MAX_THREADS, 0, -1):
        if sets_with(h, c, threads) > 0:
            most_free = threads
            break
    for threads in range(most_free, 0, -1):  # the thread counts some set has free, most first
        if cell.thread_policy == THREADS_REQUIRE and threads <= 1:
            continue
        last_threads = threads
        have_pinning = threads * sets_with(h, c, threads) >= needed
        reserved_ok = have_pinning and needed > 0 and free_in_sets - needed >= 1
        if not have_pinning or (reserved and not reserved_ok):
            continue
        break
    pinned_some = have_pinning and needed > 0
    if cell.thread_policy != THREADS_REQUIRE and not pinned_some:
        # every free CPU of a sibling set as a core of its own
        have_pinning = last_threads * free_in_sets >= needed
        reserved_ok = have_pinning and needed > 0 and free_in_sets - needed >= 1
    return have_pinning and not (reserved and not reserved_ok)


cdef bint fit_cell(const HostCells* h, Py_ssize_t c, const GuestCellC* cell, GuestState* state,
                   double cpu_ratio, double ram_ratio, int64_t reserved) noexcept nogil:
    # engine.numa._fit_cell: the guest cell on host cell c; `state` changes as it does there.
    cdef int64_t size, smallest_size = -1, smallest_pages = 0
    cdef Py_ssize_t p
    if state.pagesize != 0:
        size = page_size_for(h, c, cell.memory, state.pagesize)
        if size == 0:
            return False
        state.pagesize = size
    elif h.page_first[c + 1] > h.page_first[c]:
        for p in range(h.page_first[c], h.page_first[c + 1]):
            if smallest_size < 0 or h.page_size[p] < smallest_size:
                smallest_size = h.page_size[p]
                smallest_pages = h.page_free[p] if cell.pinned else h.page_total[p]
        if not pages_hold(smallest_pages, smallest_size, cell.memory * 1024):
            return False
    elif cell.pinned and h.memory[c] - h.memory_usage[c] < cell.memory:
        return False
    elif not cell.pinned and h.memory[c] < cell.memory:
        return False
    if cell.pinned and cell.pcpus + reserved > h.pcpus[c]:
        return False
    if cell.shared and cell.cpus > h.cpus[c]:
        return False
    if cell.pinned:
        if cell.pcpus + reserved > h.free_pcpus[c]:
            return False
        if not pack_onto_cores(h, c, cell, reserved):
            return False
        state.id = h.id[c]
    if cell.shared:
        if h.cpu_usage[c] + cell.cpus > h.cpus[c] * cpu_ratio:
            return False
        if h.memory_usage[c] + cell.memory > h.memory[c] * ram_ratio:
            return False
    state.id = h.id[c]
    return True


cdef void search_order(const HostCells* h, const int64_t* devices, bint shared_order, bint packing,
                       bint has_pci, Py_ssize_t* order) noexcept nogil:
    # engine.numa._host_cells_in_search_order: three stable sorts, the last one deciding first.
    cdef Py_ssize_t n = h.count, i, j, pass_, moving, c
    cdef double key[NUMA_MAX_CELLS]
    cdef double k
    cdef bint descending
    for i in range(n):
        order[i] = i
    for pass_ in range(3):
        for i in range(n):
            c = h.first + order[i]
            if pass_ == 0:
                key[i] = h.memory[c] - h.memory_usage[c]
            elif pass_ == 1:
                key[i] = h.cpu_usage[c] if shared_order else h.free_pcpus[c]
            else:
                key[i] = devices[order[i]]
        if pass_ == 0:
            descending = not packing
        elif pass_ == 1:
            descending = packing if shared_order else not packing
        else:
            descending = has_pci
        for i in range(1, n):  # insertion sort: stable both ways, as Python's sort(reverse=...)
            moving = order[i]
            k = key[i]
            j = i - 1
            while j >= 0 and ((key[j] < k) if descending else (key[j] > k)):
                order[j + 1] = order[j]
                key[j + 1] = key[j]
                j -= 1
            order[j + 1] = moving
            key[j + 1] = k


cdef struct PciNear:
    # The row's PCI pools and the request's PCI requests, for pci_near_ok.
    Py_ssize_t first, last  # the row's pool entries
    const int32_t* pool_kind
    const int32_t* pool_numa_node
    const int32_t* pool_count
    const uint8_t* spec_matches  # [requests, kinds]: the kind matches one of the request's specs
    const uint8_t* serves  # [requests, kinds]: ... and is not withheld from it
    const int64_t* counts  # [requests]
    const int32_t* policies  # [requests]: PCI_REQUIRED, ...
    Py_ssize_t requests, kinds
    const int32_t* cell_socket  # the row's cells' sockets (-1 unknown), by local index


cdef enum:
    PCI_REQUIRED = 0
    PCI_LEGACY = 1
    PCI_PREFERRED = 2
    PCI_SOCKET = 3


cdef bint pci_near_ok(const PciNear* pci, const HostCells* h, const Py_ssize_t* order, const Py_ssize_t* chosen,
                      Py_ssize_t guests) noexcept nogil:
    # engine.pci.supports(numa_cells=the chosen host cells) for requests that share no pool kind
    # (each then takes only from its own pools): per request, _numa_affine picks the strictest
    # affinity whose spec-matching devices suffice, down to its policy, and the devices served
    # there must suffice.
    cdef Py_ssize_t r, pool, g, c
    cdef int32_t kind, node
    cdef int64_t on_cells_spec, on_cells_served, socket_served, near_spec, near_served, any_served, need, served
    cdef bint on_cell, on_socket, socket_known = True
    cdef int64_t chosen_sockets[NUMA_MAX_CELLS]
    for c in range(h.count):
        socket_known = socket_known and pci.cell_socket[c] >= 0
    for g in range(guests):
        chosen_sockets[g] = pci.cell_socket[order[chosen[g]]]
    for r in range(pci.requests):
        on_cells_spec = on_cells_served = socket_served = near_spec = near_served = any_served = 0
        for pool in range(pci.first, pci.last):
            kind = pci.pool_kind[pool]
            if kind < 0 or kind >= pci.kinds or not pci.spec_matches[r * pci.kinds + kind]:
                continue
            node = pci.pool_numa_node[pool]
            on_cell = on_socket = False
            for g in range(guests):
                on_cell = on_cell or node == h.id[h.first + order[chosen[g]]]
            if node >= 0:
                for c in range(h.count):
                    if h.id[h.first + c] == node:
                        for g in range(guests):
                            on_socket = on_socket or pci.cell_socket[c] == chosen_sockets[g]
            served = pci.serves[r * pci.kinds + kind]
            if on_cell:
                on_cells_spec += pci.pool_count[pool]
                on_cells_served += served * pci.pool_count[pool]
            if on_socket:
                socket_served += served * pci.pool_count[pool]
            if on_cell or node < 0:
                near_spec += pci.pool_count[pool]
                near_served += served * pci.pool_count[pool]
            any_served += served * pci.pool_count[pool]
        need = pci.counts[r]
        if pci.policies[r] == PCI_REQUIRED or on_cells_spec >= need:
            served = on_cells_served
        elif pci.policies[r] == PCI_SOCKET:
            served = socket_served if socket_known else 0
        elif pci.policies[r] == PCI_LEGACY or near_spec >= need:
            served = near_served
        else:
            served = any_served
        if served < need or served == 0:  # an empty list fails even a request for no device
            return False
    return True


cdef int fit_row(const HostCells* h, const int64_t* devices, const GuestCellC* guest, Py_ssize_t guests,
                 bint emulator_isolated, bint shared_order, bint packing, bint has_pci, const PciNear* pci,
                 double cpu_ratio, double ram_ratio) noexcept nogil:
    # engine.numa.fit's search: the first permutation of distinct host cells, in Nova's order,
    # that every guest cell fits, with its cache of decided (host cell id, guest state id) pairs.
    cdef Py_ssize_t order[NUMA_MAX_CELLS]
    cdef Py_ssize_t chosen[NUMA_MAX_CELLS]  # per guest cell, the position in `order` it tries
    cdef bint used[NUMA_MAX_CELLS]
    cdef GuestState states[NUMA_MAX_CELLS]
    cdef int64_t pair_host[NUMA_MAX_PAIRS]
    cdef int64_t pair_guest[NUMA_MAX_PAIRS]
    cdef bint pair_fits[NUMA_MAX_PAIRS]
    cdef Py_ssize_t pairs = 0, n = h.count, g, i, p, depth, c
    cdef int cached
    cdef bint all_fit
    if n > NUMA_MAX_CELLS or guests > NUMA_MAX_CELLS:
        return NUMA_UNDECIDED
    if n == 0 or n < guests:
        return NUMA_MISFITS
    if n == guests:
        for i in range(n):
            order[i] = i
    else:
        search_order(h, devices, shared_order, packing, has_pci, order)
    for g in range(guests):
        states[g].id = guest[g].id
        states[g].pagesize = guest[g].pagesize
    # itertools.permutations(order, guests), lexicographic in positions
    for i in range(n):
        used[i] = False
    depth = 0
    chosen[0] = -1
    while depth >= 0:
        # advance the guest cell at `depth` to its next unused position
        i = chosen[depth] + 1
        if chosen[depth] >= 0:
            used[chosen[depth]] = False
        while i < n and used[i]:
            i += 1
        if i >= n:
            depth -= 1
            continue
        chosen[depth] = i
        used[i] = True
        if depth + 1 < guests:
            depth += 1
            chosen[depth] = -1
            continue
        # a whole permutation: try it as Nova does, guest cell by guest cell
        all_fit = True
        for g in range(guests):
            c = h.first + order[chosen[g]]
            cached = -1
            for p in range(pairs):
                if pair_host[p] == h.id[c] and pair_guest[p] == states[g].id:
                    cached = pair_fits[p]
                    break
            if cached == 0:
                all_fit = False
                break
            if cached == 1:
                states[g].id = h.id[c]
                continue
            if pairs == NUMA_MAX_PAIRS:
                return NUMA_UNDECIDED  # cannot happen with these bounds; never decide without the cache
            pair_host[pairs] = h.id[c]
            pair_guest[pairs] = states[g].id
            pair_fits[pairs] = fit_cell(h, c, &guest[g], &states[g], cpu_ratio, ram_ratio,
                                        1 if emulator_isolated and g == 0 else 0)
            pairs += 1
            if not pair_fits[pairs - 1]:
                all_fit = False
                break
        if all_fit:
            if not has_pci:
                return NUMA_FITS
            if pci == NULL:
                return NUMA_UNDECIDED
            if pci_near_ok(pci, h, order, chosen, guests):
                return NUMA_FITS
    return NUMA_MISFITS


def numa_fit_rows(const int32_t[::1] rows, Py_ssize_t count, uint8_t[::1] outcome,
                  const int64_t[::1] cell_first, const int32_t[::1] cell_id, const int64_t[::1] memory,
                  const int64_t[::1] memory_usage, const int64_t[::1] cpu_usage, const int32_t[::1] cpus,
                  const int32_t[::1] pcpus, const int32_t[::1] free_pcpus, const uint8_t[::1] same_sets,
                  const int32_t[::1] threads_per_core, const int32_t[::1] free_in_sets,
                  const int32_t[:, ::1] sets_with_free, const int64_t[::1] page_first,
                  const int64_t[::1] page_size, const int64_t[::1] page_total, const int64_t[::1] page_free,
                  const int64_t[::1] pool_offsets, const int32_t[::1] pool_numa_node,
                  const int32_t[::1] pool_count, const double[::1] cpu_ratios, const double[::1] ram_ratios,
                  const int32_t[::1] cell_socket, const int32_t[::1] pool_kind,
                  double default_cpu_ratio, double default_ram_ratio,
                  const int64_t[:, ::1] guest_cells, bint emulator_isolated, bint shared_order, bint packing,
                  bint has_pci, bint requires_smt, pci_requests):
    """outcome[j] for rows[j], j < count: NUMA_MISFITS, NUMA_FITS or NUMA_UNDECIDED. guest_cells:
    one row per guest cell: cpus, pcpus, memory, pagesize, pinned, shared, thread policy, id.
    pci_requests: None (the PCI step is left undecided), or (spec_matches, serves) uint8
    [requests, pool kinds], counts int64 and NUMA policies int32 [requests], for requests that
    share no pool kind."""
    cdef GuestCellC guest[NUMA_MAX_CELLS]
    cdef int64_t devices[NUMA_MAX_CELLS]
    cdef Py_ssize_t guests = guest_cells.shape[0], g, j, row, c, pool, cells
    cdef HostCells h
    cdef double cpu_ratio, ram_ratio
    cdef bint smt
    cdef PciNear near
    cdef PciNear* pci = NULL
    cdef const uint8_t[:, ::1] spec_matches
    cdef const uint8_t[:, ::1] serves
    cdef const int64_t[::1] counts
    cdef const int32_t[::1] policies
    cdef int32_t sockets[NUMA_MAX_CELLS]
    if guests > NUMA_MAX_CELLS:
        outcome[:count] = NUMA_UNDECIDED
        return
    if cell_id.shape[0] == 0:  # no host reports a topology: every row misfits
        outcome[:count] = NUMA_MISFITS
        return
    for g in range(guests):
        guest[g].cpus, guest[g].pcpus, guest[g].memory = guest_cells[g, 0], guest_cells[g, 1], guest_cells[g, 2]
        guest[g].pagesize, guest[g].pinned, guest[g].shared = guest_cells[g, 3], guest_cells[g, 4], guest_cells[g, 5]
        guest[g].thread_policy, guest[g].id = <int>guest_cells[g, 6], guest_cells[g, 7]
    h.id, h.memory, h.memory_usage, h.cpu_usage = &cell_id[0], &memory[0], &memory_usage[0], &cpu_usage[0]
    h.cpus, h.pcpus, h.free_pcpus, h.same_sets = &cpus[0], &pcpus[0], &free_pcpus[0], &same_sets[0]
    h.threads_per_core, h.free_in_sets, h.sets_with_free = &threads_per_core[0], &free_in_sets[0], &sets_with_free[0, 0]
    h.page_first, h.page_size = &page_first[0], &page_size[0] if page_size.shape[0] else NULL
    h.page_total = &page_total[0] if page_total.shape[0] else NULL
    h.page_free = &page_free[0] if page_free.shape[0] else NULL
    if pci_requests is not None:
        spec_matches, serves, counts, policies = pci_requests
        near.requests, near.kinds = counts.shape[0], spec_matches.shape[1]
        near.spec_matches = &spec_matches[0, 0] if near.requests and near.kinds else NULL
        near.serves = &serves[0, 0] if near.requests and near.kinds else NULL
        near.counts, near.policies = &counts[0], &policies[0]
        near.pool_kind = &pool_kind[0] if pool_kind.shape[0] else NULL
        near.pool_numa_node = &pool_numa_node[0] if pool_numa_node.shape[0] else NULL
        near.pool_count = &pool_count[0] if pool_count.shape[0] else NULL
        near.cell_socket = sockets
        pci = &near
    with nogil:
        for j in range(count):
            row = rows[j]
            h.first, cells = cell_first[row], cell_first[row + 1] - cell_first[row]
            h.count = cells
            if not offsets_within(cell_first, row, cell_id.shape[0]) \
                    or not offsets_within(pool_offsets, row, pool_count.shape[0]):
                outcome[j] = NUMA_MISFITS  # a damaged segment: never read past the arrays
                continue
            if cells > NUMA_MAX_CELLS:
                outcome[j] = NUMA_UNDECIDED
                continue
            for c in range(h.first, h.first + cells):
                if not offsets_within(page_first, c, page_size.shape[0]):
                    cells = -2
            if cells == -2:
                outcome[j] = NUMA_MISFITS
                continue
            for c in range(h.first, h.first + cells):
                if threads_per_core[c] > NUMA_MAX_THREADS or not sibling_sets_disjoint(&h, c):
                    cells = -1
                    break
            if cells < 0:
                outcome[j] = NUMA_UNDECIDED
                continue
            if requires_smt:  # dedicated CPUs with thread policy require need a cell with siblings
                smt = False
                for c in range(h.first, h.first + h.count):
                    smt = smt or threads_per_core[c] > 1
                if h.count and not smt:
                    outcome[j] = NUMA_MISFITS
                    continue
            for c in range(h.count):
                devices[c] = 0
                for pool in range(pool_offsets[row], pool_offsets[row + 1]):
                    if pool_numa_node[pool] == cell_id[h.first + c]:
                        devices[c] += pool_count[pool]
            for c in range(h.count):
                sockets[c] = cell_socket[h.first + c]
            near.first, near.last = pool_offsets[row], pool_offsets[row + 1]
            cpu_ratio = default_cpu_ratio if isnan(cpu_ratios[row]) else cpu_ratios[row]
            ram_ratio = default_ram_ratio if isnan(ram_ratios[row]) else ram_ratios[row]
            outcome[j] = fit_row(&h, devices, guest, guests, emulator_isolated, shared_order, packing, has_pci,
                                 pci, cpu_ratio, ram_ratio)
