"""Nova's SimpleCIDRAffinityFilter: with a build_near_host_ip hint, the host's host_ip is in the
network build_near_host_ip + cidr (cidr defaults to "/24").

An IPv4 network is a mask compare over the host_ipv4 column in the kernel. An IPv6 network is
decided once per distinct host_ip string among the scanned hosts that are not IPv4 (an IPv4
host is never in an IPv6 network, as netaddr compares versions first).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.columns import FLAG_HOST_IPV4
from placecheck_engine.model import InvalidField
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

HOST_IP_OUTSIDE_NETWORK = "HOST_IP_OUTSIDE_NETWORK"
HOST_IP_INVALID = "HOST_IP_INVALID"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def affinity_network(request) -> Network | None:
    """netaddr.IPNetwork(build_near_host_ip + cidr), host bits ignored; None without the hint."""
    hints = request.scheduler_hints
    if not hints.build_near_host_ip:
        return None
    try:
        return ipaddress.ip_network(hints.build_near_host_ip + hints.cidr, strict=False)
    except ValueError as error:
        raise InvalidField("request.scheduler_hints.cidr", f"not a network with build_near_host_ip: {error}") \
            from None


def host_address(host_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host_ip as an address; None when it is not one (Nova would raise AddrFormatError)."""
    try:
        return ipaddress.ip_address(host_ip)
    except ValueError:
        return None


def in_network(host_ip: str, network: Network) -> bool:
    address = host_address(host_ip)
    return address is not None and address.version == network.version and address in network


@dataclass(frozen=True, eq=False)
class NetworkParams:
    network: Network
    hint: str  # build_near_host_ip + cidr as requested


class SimpleCIDRAffinityFilter(Rule):
    name = "SimpleCIDRAffinityFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        hints = request.scheduler_hints
        if not hints.build_near_host_ip:
            return [Active(self, self.name, None)]
        # Parsing the network costs more than the rest of the rule: once per hint and generation.
        hint = hints.build_near_host_ip + hints.cidr
        return [Active(self, self.name, columns.memo(self.name, hint,
                                                     lambda: NetworkParams(affinity_network(request), hint)))]

    def kernel(self, active, columns):
        network = active.params.network
        if network.version != 4:
            return None
        return _fastfilters.Ipv4NetworkKernel(columns.arrays["flags"], columns.arrays["host_ipv4"],
                                              int(network.network_address), int(network.netmask))

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        if active.params is None:
            return 0
        kernel = self.kernel(active, columns)
        if kernel is not None:
            return kernel.scan(fail_bits, bit, start, stop, placed)
        network = active.params.network
        # IPv6: every IPv4 host fails; the others are decided per distinct host_ip string.
        host_ips = columns.dicts["host_ips"]
        refused_by_ip = np.ones(len(host_ips), dtype=np.uint8)
        ip_ids = columns.arrays["host_ip_id"]
        not_ipv4 = (columns.arrays["flags"][start:stop] & FLAG_HOST_IPV4) == 0
        for ip_id in np.unique(ip_ids[start:stop][not_ipv4]).tolist():
            refused_by_ip[ip_id] = not in_network(host_ips[ip_id], network)
        return _fastfilters.RefusedValuesKernel(ip_ids, refused_by_ip).scan(fail_bits, bit, start, stop)

    def explain(self, active, columns, row, placed) -> Rejection:
        host_ip = columns.dicts["host_ips"][int(columns.arrays["host_ip_id"][row])]
        network = active.params.network
        # The flag says a dotted quad without parsing it again (parsing costs more than the rest).
        if not columns.arrays["flags"][row] & FLAG_HOST_IPV4 and host_address(host_ip) is None:
            return Rejection(active.name, HOST_IP_INVALID,
                             f"host_ip {host_ip!r} is not an IP address, so it is not in {network} "
                             f"(build_near_host_ip + cidr {active.params.hint})")
        return Rejection(active.name, HOST_IP_OUTSIDE_NETWORK,
                         f"host_ip {host_ip} is not in {network} "
                         f"(build_near_host_ip + cidr {active.params.hint})")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        network = affinity_network(request)
        return network is None or in_network(host.host_ip, network)
