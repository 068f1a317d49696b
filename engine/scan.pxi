# A request's scan of a row range (engine/decide.py, SelectDestinations): every rule's kernel
# in one call. Included by engine/_fastfilters.pyx after kernel.pxi.

def scan_kernels(list kernels, uint64_t[::1] fail_bits, Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    """kernels[i].scan_rows over [start, stop), ORing bit i into fail_bits, without a Python
    call per rule; a None entry (a rule scanned in Python, or not engaged) scans nothing. How
    many rows each refused (0 for None). At most 64 kernels."""
    cdef Py_ssize_t index, count = len(kernels)
    cdef Kernel kernel
    cdef uint64_t refused
    cdef PyThreadState* released
    if count > 64:
        raise ValueError("at most 64 kernels")
    if start < 0 or stop > fail_bits.shape[0]:
        raise IndexError(f"rows [{start}, {stop}) outside the {fail_bits.shape[0]} fail bits")
    counts = [0] * count
    if stop <= start:
        return counts
    for index in range(count):
        if kernels[index] is None:
            continue
        kernel = kernels[index]
        if stop > kernel.rows:
            raise IndexError(f"rows [{start}, {stop}) outside the kernel's {kernel.rows} rows")
        released = release_gil_for(stop - start)
        refused = kernel.scan_rows(&fail_bits[0], (<uint64_t>1) << index, start, stop, placed)
        restore_gil(released)
        counts[index] = refused
    return counts

