"""Section 10: NUMATopologyFilter and PciPassthroughFilter at scale, against Nova's own.

A seeded fleet of hosts with NUMA topologies and PCI device pools, drawn as a cloud mixes
them: general-purpose hosts (shared CPUs only, most without devices), NFV hosts (dedicated
CPUs, hugepages, SR-IOV VFs on two physical networks) and GPU hosts (dedicated CPUs, 1 GB
pages, GPUs per cell); 1, 2 or 4 cells, SMT siblings, some pinned CPUs, memory and pages
in use, from empty hosts to full ones. Four boots: (a) dedicated CPUs on 2 guest cells with a
GPU that must share a cell (`numa_policy: required`), (b) shared CPUs on 2 MB pages, (c) one
SR-IOV port and no NUMA topology, (d) a plain boot that asks neither.

placecheck scans the two rules over every row of the columns; Nova's NUMATopologyFilter and
PciPassthroughFilter (bench/nova_numa_pci_side.py in bench/.venv-nova) run host_passes on
every host of the fleet's first hosts (the hosts are drawn independently, so the prefix is a
sample of the fleet), and their per-host time is compared to placecheck's. Both give every
host's verdict per rule; they must agree. Then the plain boot's SelectDestinations, which
must cost no more than before: the sidecar's default profile (both rules on) against it without
the two, on this fleet and on the same hosts without NUMA or PCI state.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import random

import numpy as np

from bench import workload
from bench.nova_compare import run_nova
from bench.timing import Figure, best_of, format_ratio, format_seconds
from placecheck_engine import numa
from placecheck_engine.columns import Columns, build_columns
from placecheck_engine.config import Profile
from placecheck_engine.decide import compile_rules, select_destinations
from placecheck_engine.model import Fleet, Flavor, Host, Inventory, MemPages, NumaCell, PciPool, Port, Request

SEED = 13
NOVA_SIDE = "nova_numa_pci_side.py"
SECTION = "10 NUMA/PCI"
SPEEDUP_TARGET = 1_000
PLAIN_COST_TARGET = 1.05  # a plain boot's SelectDestinations, against before: within the noise
NUMA_PCI_RULES = ("NUMATopologyFilter", "PciPassthroughFilter")
TIMING_RUNS = 3

GPU = ("10de", "20b5")  # NVIDIA A100: type-PCI passthrough
VF = ("8086", "154c")  # Intel X710 virtual function
PF = ("8086", "1572")  # Intel X710 physical function
PHYSNETS = ("physnet1", "physnet2")
ALIASES = ({"name": "gpu", "vendor_id": GPU[0], "product_id": GPU[1], "device_type": "type-PCI",
            "numa_policy": "required"},)

PAGE_4K, PAGE_2M, PAGE_1G = 4, 2048, 1048576
ROLES = ("general", "nfv", "gpu")
ROLE_WEIGHTS = (0.55, 0.30, 0.15)
NO_TOPOLOGY_SHARE = 0.05  # general hosts whose hypervisor reports no NUMA topology
CELL_COUNTS = (1, 2, 4)
CELL_COUNT_WEIGHTS = (0.15, 0.70, 0.15)
CORES_PER_CELL = {1: (16, 24, 32), 2: (12, 16, 24, 32), 4: (8, 12, 16)}
SMT_SHARE = 0.9
SHARED_CORES_PER_CELL = 2  # on NFV and GPU hosts, the cores left to the host and shared guests


def profile() -> Profile:
    return Profile(name="bench-numa-pci", enabled_filters=NUMA_PCI_RULES,
                   pci_alias=tuple(json.dumps(alias) for alias in ALIASES))


def requests() -> dict[str, Request]:
    """The four boots by name, each with the resources Nova's flavor would ask Placement for."""
    medium = {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 40}
    return {
        "(a) dedicated, 2 cells, 1 GPU required": Request(
            resources={"PCPU": 8, "MEMORY_MB": 16384, "DISK_GB": 40},
            flavor=Flavor("g1.pinned", {"hw:cpu_policy": "dedicated", "hw:numa_nodes": "2",
                                        "pci_passthrough:alias": "gpu:1"}, vcpus=8, memory_mb=16384)),
        "(b) shared, 2 MB pages": Request(
            resources={"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 40},
            flavor=Flavor("m1.hugepages", {"hw:mem_page_size": "2MB"}, vcpus=4, memory_mb=8192)),
        "(c) SR-IOV port": Request(resources=medium, flavor=Flavor("m1.medium", {}, vcpus=2, memory_mb=4096),
                                   ports=(Port(vnic_type="direct", physical_network=PHYSNETS[0]),)),
        "(d) plain": Request(resources=medium, flavor=Flavor("m1.medium", {}, vcpus=2, memory_mb=4096)),
    }


PLAIN = "(d) plain"


# ---------------------------------------------------------------------------------------------
# The fleet


def _fullness(rng: random.Random) -> float:
    """How much of a host its guests use: a quarter empty, a quarter nearly full, the rest between."""
    draw = rng.random()
    if draw < 0.25:
        return 0.0
    if draw < 0.75:
        return rng.uniform(0.2, 0.85)
    return rng.uniform(0.9, 1.0)


def _hugepage_layout(rng: random.Random, role: str) -> tuple[tuple[int, float], ...]:
    """(page size in KiB, share of the memory) per hugepage size: NFV hosts reserve 2 MB pages (some
    also 1 GB ones), GPU hosts 1 GB pages, a few general hosts 2 MB pages."""
    if role == "nfv":
        return ((PAGE_2M, 0.25), (PAGE_1G, 0.25)) if rng.random() < 0.3 else ((PAGE_2M, 0.5),)
    if role == "gpu":
        return ((PAGE_1G, 0.5),)
    return ((PAGE_2M, 0.125),) if rng.random() < 0.2 else ()


def _pages(rng: random.Random, layout: tuple[tuple[int, float], ...], memory: int,
           fullness: float) -> tuple[MemPages, ...]:
    """4K pages for what the hugepages leave, then the hugepages; used as much as the host is full."""
    huge = [(size_kb, int(memory * share) * 1024 // size_kb) for size_kb, share in layout]
    small = (memory * 1024 - sum(size_kb * total for size_kb, total in huge)) // PAGE_4K
    pages = [MemPages(PAGE_4K, small, used=round(small * fullness * rng.uniform(0.5, 0.9)))]
    for size_kb, total in huge:
        pages.append(MemPages(size_kb, total, used=min(total, round(total * fullness * rng.uniform(0.8, 1.05)))))
    return tuple(pages)


def _pinned(rng: random.Random, cores: list[tuple[int, ...]], fullness: float) -> frozenset[int]:
    """Guests pin whole cores first (the default `prefer` thread policy packs siblings)."""
    wanted = round(fullness * sum(len(core) for core in cores) * rng.uniform(0.85, 1.0))
    pinned: list[int] = []
    for core in rng.sample(cores, len(cores)):
        pinned += core[:wanted - len(pinned)]
    return frozenset(pinned)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What a host's cells have alike."""
    role: str
    cores: int  # per cell
    smt: bool
    memory_per_core: int  # MB
    hugepages: tuple[tuple[int, float], ...]
    fullness: float
    cpu_ratio: float


def _cell(rng: random.Random, shape: _Shape, cell_id: int, socket: int) -> NumaCell:
    role, cores, fullness = shape.role, shape.cores, shape.fullness
    threads = 2 if shape.smt else 1
    first_cpu = cell_id * cores * threads
    all_cores = [tuple(range(first_cpu + core * threads, first_cpu + (core + 1) * threads)) for core in range(cores)]
    shared_cores = all_cores if role == "general" else all_cores[:SHARED_CORES_PER_CELL]
    dedicated_cores = [] if role == "general" else all_cores[SHARED_CORES_PER_CELL:]
    cpuset = frozenset(cpu for core in shared_cores for cpu in core)
    memory = cores * shape.memory_per_core
    shared_use = fullness if role == "general" else fullness * 0.3
    return NumaCell(
        id=cell_id, cpuset=cpuset, pcpuset=frozenset(cpu for core in dedicated_cores for cpu in core),
        memory=memory, cpu_usage=round(len(cpuset) * shape.cpu_ratio * shared_use * rng.uniform(0.7, 1.0)),
        memory_usage=round(memory * fullness * rng.uniform(0.6, 0.95)),
        pinned_cpus=_pinned(rng, dedicated_cores, fullness),
        siblings=tuple(frozenset(core) for core in all_cores),
        mempages=_pages(rng, shape.hugepages, memory, fullness), socket=socket)


def _vf_pool(rng: random.Random, cell_id: int, physnet: str, fullness: float, trusted_share: float) -> PciPool:
    total = rng.choice((8, 16, 32, 64))
    tags = {"physical_network": physnet, "remote_managed": "false"}
    if rng.random() < trusted_share:
        tags["trusted"] = "true"
    return PciPool(VF[0], VF[1], "type-VF", None if rng.random() < 0.1 else cell_id,
                   round(total * (1 - fullness) * rng.uniform(0.8, 1.0)), tags)


def _pools(rng: random.Random, role: str, cells: int, fullness: float) -> tuple[PciPool, ...]:
    pools = []
    if role == "general":
        if rng.random() < 0.4:
            pools += [_vf_pool(rng, cell, PHYSNETS[0], fullness, 0.0) for cell in range(cells)]
    elif role == "nfv":
        pools += [_vf_pool(rng, cell, PHYSNETS[cell % 2], fullness, 0.3) for cell in range(cells)]
        if rng.random() < 0.3:
            pools.append(PciPool(PF[0], PF[1], "type-PF", rng.randrange(cells), rng.choice((0, 1, 2)),
                                 {"physical_network": PHYSNETS[1], "remote_managed": "false"}))
    else:
        per_cell = rng.choice((1, 2, 4))
        for cell in range(cells):
            free = sum(rng.random() >= fullness for _ in range(per_cell))
            pools.append(PciPool(GPU[0], GPU[1], "type-PCI", None if rng.random() < 0.1 else cell, free))
        pools.append(_vf_pool(rng, 0, PHYSNETS[0], fullness, 0.0))
    return tuple(pools)


def _inventories(cells: tuple[NumaCell, ...], fullness: float) -> dict[str, Inventory]:
    vcpus, pcpus = sum(len(cell.cpuset) for cell in cells), sum(len(cell.pcpuset) for cell in cells)
    memory = sum(cell.memory for cell in cells)
    inventories = {
        "MEMORY_MB": Inventory(memory, reserved=4096, used=min(memory - 4096, sum(c.memory_usage for c in cells))),
        "DISK_GB": Inventory(2000, used=round(1600 * fullness)),
    }
    if vcpus:
        inventories["VCPU"] = Inventory(vcpus, allocation_ratio=4.0,
                                        used=min(vcpus * 4, sum(cell.cpu_usage for cell in cells)))
    if pcpus:
        inventories["PCPU"] = Inventory(pcpus, used=sum(len(cell.pinned_cpus) for cell in cells))
    return inventories


def _host(rng: random.Random, index: int) -> Host:
    name = f"numa{index:06d}"
    role = rng.choices(ROLES, ROLE_WEIGHTS)[0]
    fullness = _fullness(rng)
    if role == "general" and rng.random() < NO_TOPOLOGY_SHARE:
        return Host(name, resources={"VCPU": Inventory(64, allocation_ratio=4.0, used=round(256 * fullness)),
                                     "MEMORY_MB": Inventory(262144, reserved=4096, used=round(250000 * fullness)),
                                     "DISK_GB": Inventory(2000, used=round(1600 * fullness))})
    cell_count = rng.choices(CELL_COUNTS, CELL_COUNT_WEIGHTS)[0]
    # Older general-purpose computes still set cpu_allocation_ratio = 16.0 in nova.conf.
    explicit_cpu_ratio = 16.0 if role == "general" and rng.random() < 0.3 else None
    shape = _Shape(role, rng.choice(CORES_PER_CELL[cell_count]), rng.random() < SMT_SHARE,
                   8192 if role == "gpu" else rng.choice((4096, 8192)), _hugepage_layout(rng, role), fullness,
                   explicit_cpu_ratio or 4.0)
    cells_per_socket = 1 if cell_count <= 2 else 2
    cells = tuple(_cell(rng, shape, cell, cell // cells_per_socket) for cell in range(cell_count))
    return Host(name, resources=_inventories(cells, fullness), numa_cells=cells,
                pci_pools=_pools(rng, role, cell_count, fullness), cpu_allocation_ratio=explicit_cpu_ratio)


@functools.cache
def fleet(hosts: int) -> Fleet:
    """`hosts` hosts drawn one after another from one seed: fleet(n) is a prefix of fleet(m > n)."""
    rng = random.Random(SEED)
    return Fleet(tuple(_host(rng, index) for index in range(hosts)))


@functools.cache
def columns(hosts: int) -> Columns:
    return build_columns(fleet(hosts))


@functools.cache
def columns_without_numa_pci(hosts: int) -> Columns:
    """The same hosts as they were before NUMA and PCI state: no cells, no pools."""
    return build_columns(Fleet(tuple(dataclasses.replace(host, numa_cells=(), pci_pools=(), cpu_allocation_ratio=None)
                                     for host in fleet(hosts).hosts)))


# ---------------------------------------------------------------------------------------------
# Nova's side


def nova_host(host: Host, profile_: Profile) -> dict:
    """The host as the NUMA/PCI conformance cases spell it, with the NUMA limits Nova's filter reads."""
    cpu_ratio, ram_ratio = numa.host_limits(host, profile_)
    described = {"name": host.name, "cpu_allocation_ratio": cpu_ratio, "ram_allocation_ratio": ram_ratio,
                 "pci_device_pools": [{"vendor_id": pool.vendor_id, "product_id": pool.product_id,
                                       "dev_type": pool.dev_type, "numa_node": pool.numa_node, "count": pool.count,
                                       "tags": pool.tags} for pool in host.pci_pools]}
    if host.numa_cells:
        described["numa_topology"] = {"cells": [{
            "id": cell.id, "cpuset": sorted(cell.cpuset), "pcpuset": sorted(cell.pcpuset), "memory": cell.memory,
            "cpu_usage": cell.cpu_usage, "memory_usage": cell.memory_usage, "pinned_cpus": sorted(cell.pinned_cpus),
            "siblings": [sorted(siblings) for siblings in cell.siblings],
            "mempages": [dataclasses.asdict(pages) for pages in cell.mempages], "socket": cell.socket}
            for cell in host.numa_cells]}
    return described


def nova_request(request: Request) -> dict:
    return {"flavor": {"name": request.flavor.name, "vcpus": request.flavor.vcpus,
                       "memory_mb": request.flavor.memory_mb, "extra_specs": request.flavor.extra_specs},
            "image_properties": request.image.properties if request.image else {},
            "ports": [dataclasses.asdict(port) for port in request.ports]}


# ---------------------------------------------------------------------------------------------
# The measurement


@dataclasses.dataclass(frozen=True)
class RequestRun:
    scan_seconds: float  # both rules' scan over every row
    rule_seconds: dict[str, float]  # each rule's scan alone, for the rules the boot engages
    passing: int  # hosts both rules pass
    nova_seconds: list[float] | None  # both filters' host_passes over the Nova hosts, per repeat
    agreeing: int  # (host, rule) verdicts of the Nova hosts both sides give alike
    verdicts: int


@dataclasses.dataclass(frozen=True)
class NumaPciRun:
    hosts: int
    nova_hosts: int
    nova_version: str | None
    requests: dict[str, RequestRun]
    plain_with_rules: float  # SelectDestinations of the plain boot, the default profile (both rules on)
    plain_usual_rules: float  # the same, the profile without the two
    plain_before: float  # the same, the profile without the two, the hosts without NUMA or PCI state


def scan_both(actives, columns_: Columns, fail_bits: np.ndarray) -> None:
    fail_bits.fill(0)
    for bit, active in enumerate(actives):
        if active.params is not None:
            active.rule.scan(active, columns_, fail_bits, bit, 0, len(fail_bits), 0)


def _placecheck_verdicts(actives, fail_bits: np.ndarray, rows: int) -> dict[str, set[int]]:
    """Rows each rule passes among the first `rows`."""
    return {active.name: set(np.flatnonzero((fail_bits[:rows] >> np.uint64(bit) & np.uint64(1)) == 0).tolist())
            for bit, active in enumerate(actives)}


def _plain_select_seconds(hosts: int, min_seconds: float) -> tuple[float, float, float]:
    """The plain boot's SelectDestinations: (the default profile, the profile without the two, that on
    the hosts without NUMA/PCI state), timed in turn, round after round, each its best round."""
    plain = requests()[PLAIN]
    default = workload.profile()
    # The sidecar's default profile, which enables both rules where Nova's order has them, with
    # this fleet's [pci] alias; and the same without the two.
    with_rules = dataclasses.replace(default, pci_alias=profile().pci_alias, enabled_filters=default.enabled_filters
                                     + tuple(name for name in NUMA_PCI_RULES if name not in default.enabled_filters))
    usual = dataclasses.replace(with_rules, enabled_filters=tuple(name for name in with_rules.enabled_filters
                                                                  if name not in NUMA_PCI_RULES))
    variants = ((columns(hosts), with_rules), (columns(hosts), usual), (columns_without_numa_pci(hosts), usual))
    for columns_, profile_ in variants:
        if not select_destinations(columns_, plain, profile_, "bench", None).placements:
            raise RuntimeError("the plain boot placed nothing on the NUMA/PCI bench fleet")
    best = [float("inf")] * len(variants)
    for _ in range(TIMING_RUNS):
        for index, (columns_, profile_) in enumerate(variants):
            seconds = best_of(lambda: select_destinations(columns_, plain, profile_, "bench", None),
                              runs=TIMING_RUNS, min_seconds=min_seconds)
            best[index] = min(best[index], seconds)
    return best[0], best[1], best[2]


def measure(python, hosts: int, nova_hosts: int, repeats: int, min_seconds: float) -> NumaPciRun:
    """`python`: bench/.venv-nova's interpreter, or None to leave Nova out."""
    nova_hosts = min(nova_hosts, hosts)
    profile_ = profile()
    columns_ = columns(hosts)
    boots = requests()
    nova = None
    if python is not None:
        nova = run_nova(python, {
            "hosts": [nova_host(host, profile_) for host in fleet(hosts).hosts[:nova_hosts]],
            "pci_alias": list(ALIASES),
            "requests": {name: nova_request(request) for name, request in boots.items() if name != PLAIN},
            "repeats": repeats}, script=NOVA_SIDE)
    runs = {}
    fail_bits = np.zeros(hosts, dtype=np.uint64)
    for name, request in boots.items():
        actives = compile_rules(columns_, request, profile_)
        scan_seconds = best_of(lambda: scan_both(actives, columns_, fail_bits), runs=TIMING_RUNS,
                               min_seconds=min_seconds)
        scanning = [active for active in actives if active.params is not None]
        if len(scanning) == 1:  # alone is what was just timed
            rule_seconds = {scanning[0].name: scan_seconds}
        else:
            rule_seconds = {active.name: best_of(lambda: scan_both([active], columns_, fail_bits),
                                                 runs=TIMING_RUNS, min_seconds=min_seconds)
                            for active in scanning}
        scan_both(actives, columns_, fail_bits)
        passing = hosts - int(np.count_nonzero(fail_bits))
        nova_seconds, agreeing, verdicts = None, 0, 0
        if nova is not None and name in nova["requests"]:
            answer = nova["requests"][name]
            ours = _placecheck_verdicts(actives, fail_bits, nova_hosts)
            names = [host.name for host in fleet(hosts).hosts[:nova_hosts]]
            for rule in NUMA_PCI_RULES:
                nova_passed = set(answer[rule])
                agreeing += sum((row in ours[rule]) == (host in nova_passed) for row, host in enumerate(names))
                verdicts += nova_hosts
            nova_seconds = answer["seconds"]
        runs[name] = RequestRun(scan_seconds, rule_seconds, passing, nova_seconds, agreeing, verdicts)
    with_rules, usual_rules, before = _plain_select_seconds(hosts, min_seconds)
    return NumaPciRun(hosts, nova_hosts, nova["nova_version"] if nova else None, runs, with_rules, usual_rules, before)


def figures(run: NumaPciRun) -> list[Figure]:
    result = []
    for name, request_run in run.requests.items():
        scan_ns = request_run.scan_seconds / run.hosts * 1e9
        by_rule = ", ".join(f"{rule} {seconds / run.hosts * 1e9:,.2f}"
                            for rule, seconds in request_run.rule_seconds.items())
        notes = [f"passes {request_run.passing:,} of {run.hosts:,}",
                 f"ns/host alone: {by_rule or 'neither rule scans'}"]
        figure = f"{name}: NUMATopologyFilter + PciPassthroughFilter scan, {run.hosts:,} hosts"
        if request_run.nova_seconds is None:
            result.append(Figure(SECTION, figure, f"{scan_ns:.2f} ns/host", "-", "-", "-", "-", None,
                                 "; ".join(notes + ([] if name == PLAIN else ["Nova not run"]))))
            continue
        nova_ns = min(request_run.nova_seconds) / run.nova_hosts * 1e9
        speedup = nova_ns / scan_ns
        notes.append(f"{request_run.verdicts - request_run.agreeing} disagreements in {request_run.verdicts} "
                     f"verdicts with Nova")
        result.append(Figure(
            SECTION, figure, f"{scan_ns:.2f} ns/host",
            f"Nova {run.nova_version} host_passes of both (timed on the first {run.nova_hosts:,} hosts), per host",
            f"{nova_ns:,.0f} ns/host", f"{format_ratio(speedup)} faster", f">= {SPEEDUP_TARGET:,}x",
            speedup >= SPEEDUP_TARGET, "; ".join(notes)))
    for name, baseline_name, baseline in (
            ("default profile (both rules on)", "the profile without the two, same fleet", run.plain_usual_rules),
            ("default profile, NUMA/PCI fleet", "the profile without the two, the hosts without NUMA/PCI state "
                                                "(before)", run.plain_before)):
        ratio = run.plain_with_rules / baseline
        result.append(Figure(
            SECTION, f"{PLAIN} SelectDestinations in process, {run.hosts:,} hosts: {name}",
            format_seconds(run.plain_with_rules), baseline_name, format_seconds(baseline), f"{ratio:.3g}x",
            f"<= {PLAIN_COST_TARGET}x", ratio <= PLAIN_COST_TARGET, "best of rounds taken in turn"))
    return result
