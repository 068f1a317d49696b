# SimpleCIDRAffinityFilter (engine/rules/simple_cidr_affinity.py): an IPv4 network as a mask
# compare over host_ipv4; a host without an IPv4 host_ip is outside every IPv4 network.
from libc.stdint cimport uint32_t

cdef inline bint in_ipv4_network(uint8_t flags, uint32_t address, uint32_t network,
                                 uint32_t netmask) noexcept nogil:
    return ((flags & FLAG_HOST_IPV4) != 0) & ((address & netmask) == network)


cdef class Ipv4NetworkKernel(Kernel):
    cdef const uint8_t[::1] flags
    cdef const uint32_t[::1] host_ipv4
    cdef uint32_t network, netmask

    def __init__(self, const uint8_t[::1] flags, const uint32_t[::1] host_ipv4, uint32_t network,
                 uint32_t netmask):
        self.flags, self.host_ipv4, self.network, self.netmask = flags, host_ipv4, network, netmask
        self.rows = min(flags.shape[0], host_ipv4.shape[0])

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        return not in_ipv4_network(self.flags[row], self.host_ipv4[row], self.network, self.netmask)

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        cdef const uint8_t* flags = &self.flags[0]
        cdef const uint32_t* host_ipv4 = &self.host_ipv4[0]
        cdef uint32_t network = self.network, netmask = self.netmask
        cdef uint64_t refused = 0, fails
        cdef Py_ssize_t row
        for row in range(start, stop):
            fails = not in_ipv4_network(flags[row], host_ipv4[row], network, netmask)
            fail_bits[row] |= mask * fails
            refused += fails
        return refused
