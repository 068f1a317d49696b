# SimpleCIDRAffinityFilter (engine/rules/simple_cidr_affinity.py): an IPv4 network as a mask
# compare over host_ipv4; a host without an IPv4 host_ip is outside every IPv4 network.
from libc.stdint cimport uint32_t

cdef inline bint in_ipv4_network(uint8_t flags, uint32_t address, uint32_t network,
                                 uint32_t netmask) noexcept nogil:
    return (flags & FLAG_HOST_IPV4) != 0 and (address & netmask) == network


def scan_ipv4_network(const uint8_t[::1] flags, const uint32_t[::1] host_ipv4, uint32_t network,
                      uint32_t netmask, uint64_t[::1] fail_bits, int bit, Py_ssize_t start, Py_ssize_t stop):
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row
    cdef PyThreadState* released = release_gil_for(stop - start)
    for row in range(start, stop):
        fails = not in_ipv4_network(flags[row], host_ipv4[row], network, netmask)
        fail_bits[row] |= mask * fails
        refused += fails
    restore_gil(released)
    return refused
