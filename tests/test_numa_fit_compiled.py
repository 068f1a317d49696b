"""NUMATopologyFilter's compiled fit against engine.numa, on a fleet shaped like a real one.

The property tests' random fleets are small and mostly full, so few guests fit there. Here
bench/numa_pci.py's seeded fleet (general, NFV and GPU hosts with 1 to 4 cells, SMT, huge pages,
VFs, PFs and GPUs, from empty to full) meets seeded random requests (every CPU, thread, page size,
emulator-thread and PCI affinity policy, aliases and SR-IOV ports), under spreading and packing:
the rule's scan (bound, compiled fit, engine.numa for what it leaves undecided) must refuse
exactly the hosts engine.numa.decide refuses, and the compiled fit must decide nearly all of them.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from bench import numa_pci
from placecheck_engine import numa
from placecheck_engine.columns import build_columns
from placecheck_engine.model import Flavor, InvalidField, Port, Request
from placecheck_engine.rules import RULES
from placecheck_engine.rules.numa_topology_filter import NUMA_UNDECIDED, compiled_outcomes, guest_demands

HOSTS = 1_500
REQUESTS = 200
EXTRA_SPECS = {
    "hw:numa_nodes": ("1", "2", "4"),
    "hw:cpu_policy": ("dedicated", "shared", "mixed"),
    "hw:cpu_thread_policy": ("prefer", "isolate", "require"),
    "hw:mem_page_size": ("small", "large", "any", "2048", "1048576"),
    "hw:emulator_threads_policy": ("isolate", "share"),
    "hw:cpu_dedicated_mask": ("^0", "^0-1"),
    "hw:pci_numa_affinity_policy": ("required", "preferred", "legacy", "socket"),
}


def random_requests(seed: int) -> list[Request]:
    rng = random.Random(seed)
    aliases = [f"{alias['name']}:{count}" for alias in numa_pci.ALIASES for count in (1, 2)]
    requests = list(numa_pci.requests().values())
    for _ in range(REQUESTS):
        extra_specs = {key: rng.choice(values) for key, values in EXTRA_SPECS.items() if rng.random() < 0.5}
        if rng.random() < 0.4:
            extra_specs["pci_passthrough:alias"] = rng.choice(aliases)
        ports = tuple(Port(vnic_type=rng.choice(("direct", "direct-physical", "macvtap")),
                           physical_network=rng.choice(numa_pci.PHYSNETS),
                           numa_affinity_policy=rng.choice(("", "required", "preferred", "legacy", "socket")))
                      for _ in range(rng.choice((0, 0, 1, 2))))
        vcpus, memory = rng.choice((1, 2, 4, 8, 16)), rng.choice((512, 2048, 8192, 32768))
        requests.append(Request(resources={"VCPU": vcpus, "MEMORY_MB": memory}, ports=ports,
                                flavor=Flavor("f", extra_specs, vcpus=vcpus, memory_mb=memory)))
    return requests


@pytest.fixture(scope="module")
def fleet_and_columns():
    fleet = numa_pci.fleet(HOSTS)
    return fleet, build_columns(fleet)


@pytest.mark.parametrize("packing", [False, True], ids=["spread", "pack"])
def test_the_scan_refuses_what_engine_numa_refuses(fleet_and_columns, packing):
    fleet, columns = fleet_and_columns
    profile = dataclasses.replace(numa_pci.profile(), packing_host_numa_cells_allocation_strategy=packing)
    rule = RULES["NUMATopologyFilter"]
    engaged = undecided = fitting = 0
    for request in random_requests(seed=7 + packing):
        try:
            topology, pci_requests = guest_demands(request, profile)
        except InvalidField:
            continue  # Nova's API refuses it: nothing is scheduled
        if topology is None:
            continue
        engaged += 1
        (active,) = rule.compile(request, columns, profile)
        fail_bits = np.zeros(columns.host_count, dtype=np.uint64)
        rule.scan(active, columns, fail_bits, 0, 0, columns.host_count, 0)
        expected = [not isinstance(numa.decide(host, request, topology, pci_requests, profile), numa.Fit)
                    for host in fleet.hosts]
        assert (fail_bits != 0).tolist() == expected, request.flavor.extra_specs
        fitting += expected.count(False)
        if active.params.guest_cells is not None:
            rows = np.arange(columns.host_count, dtype=np.int32)
            undecided += int((compiled_outcomes(active.params, columns, rows) == NUMA_UNDECIDED).sum())
        else:
            undecided += columns.host_count
    assert engaged >= REQUESTS // 5 and fitting > engaged * HOSTS // 20, (engaged, fitting)
    assert undecided < engaged * HOSTS // 10, "the compiled fit should decide nearly every row"
