"""Random fleets and requests (hypothesis strategies), and conformance cases as engine values.

`scenarios()` draws (fleet, request, profile) triples small enough to check host by host but
varied enough to engage every rule: missing inventories, more than 64 traits (two bitset
words), zoned and unzoned aggregates, shared instance uuids, moves, server groups, aggregate
metadata (tenants, flavors, limits, extra specs), host profiles, IPv4/IPv6 addresses, metrics,
NUMA cells and PCI pools with the requests' NUMA topologies, PCI aliases and SR-IOV ports.
`fleet_from_case`, `request_from_case` and `profile_from_case` translate one case of
/work/shared/conformance/*.jsonl.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import assume
from hypothesis import strategies as st

from placecheck_engine.config import Profile
from placecheck_engine.model import (MAX_UNIT_DEFAULT, Aggregate, Fleet, Flavor, GroupPolicy, Host, Image,
                                    InvalidField, Inventory, MemPages, NumaCell, Operation, PciPool, Port, Request,
                                    SchedulerHints, ServerGroup)
from placecheck_engine.rules.numa_topology_filter import guest_demands

CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance"

RESOURCE_CLASSES = ("VCPU", "MEMORY_MB", "DISK_GB", "CUSTOM_GPU")
NAMED_TRAITS = ("HW_CPU_X86_AVX2", "COMPUTE_SAME_HOST_COLD_MIGRATE", "CUSTOM_SSD", "COMPUTE_STATUS_DISABLED")
# Enough traits that a fleet can need two 64-bit words per host.
TRAITS = NAMED_TRAITS + tuple(f"CUSTOM_T{i}" for i in range(70))
UNKNOWN_TRAIT = "CUSTOM_NO_HOST_HAS_THIS"
# Mostly uuids; two odd ids keep the heap honest about lengths and UTF-8.
INSTANCE_UUIDS = tuple(f"{i:08x}-0000-4000-8000-000000000000" for i in range(8)) + ("i", "inst-é")
ZONES = ("nova", "az1", "az2")
ZONE_METADATA = ("az1", "az2", "nova", "az1, az2", " az2 ,nova", "")
HOST_IPS = ("", "10.0.0.1", "10.0.0.77", "10.0.1.5", "192.168.1.1", "fe80::1", "::ffff:10.0.0.1")
HYPERVISORS = (("QEMU", 6002000), ("QEMU", None), ("xen", 4011000), ("", None))
# The last is how a compute node may spell ("x86_64", "qemu", "hvm"): Host canonicalises it.
SUPPORTED_INSTANCES = (("x86_64", "qemu", "hvm"), ("aarch64", "qemu", "hvm"), ("i686", "xen", "xen"),
                       ("AMD64", "QEMU", "hv"))
STATS = {"cpu_vendor": ("Intel", "AMD"), "hardware_profile": ("dense", "gpu", "")}
METRICS = ("cpu.percent", "cpu.frequency", "mem.free")
PROJECTS = ("p1", "p2", "p3", "")
FLAVOR_NAMES = ("m1.small", "m1.large", "gpu.xl")
# Image properties the aggregate metadata also names ("ssd" is no property Nova knows).
IMAGE_PROPERTIES = {"os_distro": ("ubuntu", "rhel", ""), "hw_architecture": ("x86_64", "aarch64"),
                    "ssd": ("true", "false"), "trait:CUSTOM_SSD": ("required", "forbidden")}
# Aggregate metadata for the aggregate rules: tenants, flavors, limits (some not integers),
# extra-spec and image-property keys, comma lists with spaces.
AGGREGATE_METADATA = {
    "filter_tenant_id": ("p1", "p1, p2", "p3"),
    "filter_tenant_id_2": ("p2", ""),
    # isolate_aggregates: only `trait:NAME` valued exactly "required" isolates.
    "trait:HW_CPU_X86_AVX2": ("required", "Required", "forbidden"),
    "trait:CUSTOM_SSD": ("required",),
    "instance_type": ("m1.small", "m1.large, gpu.xl", "m1.small,gpu.xl"),
    "max_io_ops_per_host": ("0", "2", "8", " 3 ", "nan", "2,3"),
    "max_instances_per_host": ("1", "4", "50", "x"),
    "ssd": ("true", "false"),
    "cpus": ("4", "16", "8,32", "abc"),
    "os_distro": ("ubuntu", "rhel, ubuntu"),
    "hw_architecture": ("x86_64", "aarch64"),
}

# PCI pool kinds and tags; the last tags are the second's in another order (one kind).
PCI_DEVICES = (("8086", "154d", "type-VF"), ("8086", "154d", "type-PF"), ("10de", "1eb8", "type-PCI"))
PCI_TAGS = ({}, {"physical_network": "physnet1", "trusted": "true"}, {"physical_network": "physnet2"},
            {"trusted": "true", "physical_network": "physnet1"})
PAGE_SIZES_KB = (4, 2048, 1048576)
PCI_ALIASES = tuple(json.dumps(alias) for alias in (
    {"name": "gpu", "vendor_id": "10de", "product_id": "1eb8", "device_type": "type-PCI", "numa_policy": "required"},
    {"name": "nic", "vendor_id": "8086", "product_id": "154d", "device_type": "type-VF"},
    {"name": "anyvf", "vendor_id": "8086", "product_id": "154d", "device_type": "type-VF",
     "numa_policy": "preferred"}))

host_names = st.text(alphabet="abhé-0123", min_size=1, max_size=5)


@st.composite
def inventories(draw) -> Inventory:
    total = draw(st.integers(0, 64))
    return Inventory(
        total=total,
        reserved=draw(st.integers(0, 8)),
        allocation_ratio=draw(st.sampled_from((0.5, 1.0, 1.5, 4.0, 16.0))),
        min_unit=draw(st.integers(1, 3)),
        max_unit=draw(st.one_of(st.just(MAX_UNIT_DEFAULT), st.integers(1, 64))),
        step_size=draw(st.sampled_from((1, 1, 2, 3))),
        used=draw(st.integers(0, 80)),
    )


@st.composite
def hosts(draw, name: str) -> Host:
    hypervisor = draw(st.sampled_from(HYPERVISORS))
    return Host(
        name=name,
        enabled=draw(st.booleans()),
        up=draw(st.booleans()),
        resources=draw(st.dictionaries(st.sampled_from(RESOURCE_CLASSES), inventories(), max_size=4)),
        traits=frozenset(draw(st.lists(st.sampled_from(TRAITS), max_size=6))),
        num_instances=draw(st.integers(0, 12)),
        num_io_ops=draw(st.integers(0, 10)),
        instances=tuple(draw(st.lists(st.sampled_from(INSTANCE_UUIDS), max_size=4))),
        host_ip=draw(st.sampled_from(HOST_IPS)),
        hypervisor_type=hypervisor[0],
        hypervisor_version=hypervisor[1],
        supported_instances=tuple(draw(st.lists(st.sampled_from(SUPPORTED_INSTANCES), max_size=2,
                                                unique=True))),
        stats=draw(st.dictionaries(st.sampled_from(tuple(STATS)),
                                   st.sampled_from(sum(STATS.values(), ())), max_size=2)),
        metrics=draw(st.dictionaries(st.sampled_from(METRICS), st.floats(0, 100, allow_nan=False),
                                     max_size=3)),
        failed_builds=draw(st.integers(0, 3)),
        numa_cells=draw(st.one_of(st.just(()), numa_cells())),
        pci_pools=draw(st.one_of(st.just(()), pci_pools())),
        cpu_allocation_ratio=draw(st.sampled_from((None, None, 1.0, 16.0))),
        ram_allocation_ratio=draw(st.sampled_from((None, None, 1.5))),
    )


@st.composite
def numa_cells(draw) -> tuple[NumaCell, ...]:
    """A host's cells: split or legacy (the same CPUs in both sets) CPU sets, some pinned, sibling
    pairs, page sizes, sockets."""
    cells = []
    for cell_id in draw(st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True)):
        cpus = sorted(draw(st.lists(st.integers(0, 31), max_size=8, unique=True)))
        split = draw(st.integers(0, len(cpus)))
        legacy = draw(st.booleans())
        cpuset, pcpuset = (frozenset(cpus), frozenset(cpus)) if legacy else (frozenset(cpus[:split]),
                                                                              frozenset(cpus[split:]))
        pinned = draw(st.lists(st.sampled_from(sorted(pcpuset)), unique=True)) if pcpuset else []
        siblings = tuple(frozenset(pair) for pair in zip(cpus[::2], cpus[1::2])) if draw(st.booleans()) else ()
        mempages = tuple(MemPages(size_kb, draw(st.integers(0, 4096)), draw(st.integers(0, 512)),
                                  draw(st.integers(0, 64)))
                         for size_kb in draw(st.lists(st.sampled_from(PAGE_SIZES_KB), max_size=3, unique=True)))
        cells.append(NumaCell(cell_id, cpuset, pcpuset, memory=draw(st.integers(0, 65536)),
                              cpu_usage=draw(st.integers(0, 16)), memory_usage=draw(st.integers(0, 70000)),
                              pinned_cpus=frozenset(pinned), siblings=siblings, mempages=mempages,
                              socket=draw(st.sampled_from((None, 0, 1)))))
    return tuple(cells)


@st.composite
def pci_pools(draw) -> tuple[PciPool, ...]:
    return tuple(PciPool(*draw(st.sampled_from(PCI_DEVICES)), numa_node=draw(st.sampled_from((None, 0, 1))),
                         count=draw(st.integers(0, 8)), tags=dict(draw(st.sampled_from(PCI_TAGS))))
                 for _ in range(draw(st.integers(1, 3))))


@st.composite
def fleets(draw, max_hosts: int = 12) -> Fleet:
    names = draw(st.lists(host_names, min_size=1, max_size=max_hosts, unique=True))
    fleet_hosts = tuple(draw(hosts(name)) for name in names)
    ids = draw(st.lists(st.integers(1, 200), max_size=5, unique=True))
    aggregates = []
    for aggregate_id in ids:
        members = draw(st.lists(st.sampled_from(names + ["not-a-host"]), max_size=len(names) + 1))
        metadata = draw(st.one_of(st.just({}),
                                  st.builds(lambda zone: {"availability_zone": zone},
                                            st.sampled_from(ZONE_METADATA))))
        for key in draw(st.lists(st.sampled_from(tuple(AGGREGATE_METADATA)), max_size=3, unique=True)):
            metadata = metadata | {key: draw(st.sampled_from(AGGREGATE_METADATA[key]))}
        aggregates.append(Aggregate(aggregate_id, f"agg{aggregate_id}", frozenset(members), metadata))
    return Fleet(fleet_hosts, tuple(aggregates))


@st.composite
def requests(draw, fleet: Fleet) -> Request:
    names = [host.name for host in fleet.hosts]
    aggregate_ids = [agg.id for agg in fleet.aggregates] + [999]
    uuids = st.lists(st.sampled_from(INSTANCE_UUIDS + ("ffffffff-not-on-any-host",)), max_size=3)
    traits = st.sampled_from(TRAITS[:6] + (UNKNOWN_TRAIT,))
    trait_specs = draw(st.dictionaries(traits.map(lambda t: f"trait:{t}"),
                                       st.sampled_from(("required", "forbidden", "other")),
                                       max_size=2))
    group = draw(st.one_of(st.none(), st.builds(
        ServerGroup,
        policy=st.sampled_from(list(GroupPolicy)),
        members=uuids.map(tuple),
        hosts=st.lists(st.sampled_from(names + ["not-a-host"]), max_size=3).map(tuple),
        max_server_per_host=st.integers(1, 3))))
    operation = draw(st.sampled_from(list(Operation)))
    aggregate_specs = draw(st.dictionaries(
        st.sampled_from(("ssd", "cpus", "aggregate_instance_extra_specs:ssd", "aggregate_instance_extra_specs:cpus",
                         "hw:cpu_policy", "absent_key")),
        st.sampled_from(("true", "false", "s== true", "<or> false <or> true", ">= 8", "<in> 1", "= 16",
                         "dedicated")), max_size=2))
    # NUMA and PCI demands, over the devices of PCI_DEVICES (PCI_ALIASES names them).
    numa_pci_specs = draw(st.fixed_dictionaries({}, optional={
        "hw:numa_nodes": st.sampled_from(("1", "2")),
        "hw:cpu_policy": st.sampled_from(("dedicated", "shared", "mixed")),
        "hw:cpu_thread_policy": st.sampled_from(("prefer", "isolate", "require")),
        "hw:mem_page_size": st.sampled_from(("small", "large", "any", "2048")),
        "pci_passthrough:alias": st.sampled_from(("gpu:1", "nic:2", "gpu:1,nic:1", "anyvf:3")),
        "hw:pci_numa_affinity_policy": st.sampled_from(("required", "preferred", "legacy", "socket")),
    }))
    ports = draw(st.lists(st.builds(Port, vnic_type=st.sampled_from(("normal", "direct", "direct-physical")),
                                    physical_network=st.sampled_from(("", "physnet1", "physnet2")),
                                    trusted=st.sampled_from((None, True, False))), max_size=2))
    image = draw(st.one_of(st.none(), st.builds(Image, id=st.just("img"), properties=st.fixed_dictionaries(
        {}, optional={key: st.sampled_from(values) for key, values in IMAGE_PROPERTIES.items()}))))
    return Request(
        operation=operation,
        resources=draw(st.dictionaries(st.sampled_from(RESOURCE_CLASSES + ("CUSTOM_NONE",)),
                                       st.integers(0, 40), max_size=4)),
        required_traits=frozenset(draw(st.lists(traits, max_size=2))),
        forbidden_traits=frozenset(draw(st.lists(traits, max_size=2))),
        member_of=tuple(frozenset(s) for s in draw(st.lists(
            st.lists(st.sampled_from(aggregate_ids), min_size=1, max_size=3), max_size=2))),
        availability_zone=draw(st.sampled_from(("",) + ZONES + ("az3",))),
        flavor=Flavor(draw(st.sampled_from(FLAVOR_NAMES)), trait_specs | aggregate_specs | numa_pci_specs,
                      vcpus=draw(st.sampled_from((0, 1, 2, 4))), memory_mb=draw(st.sampled_from((0, 512, 4096)))),
        ports=tuple(ports),
        image=image,
        project_id=draw(st.sampled_from(PROJECTS)),
        instance_uuid=draw(st.sampled_from(("",) + INSTANCE_UUIDS[:4])),
        scheduler_hints=SchedulerHints(same_host=tuple(draw(uuids)),
                                       different_host=tuple(draw(uuids))),
        server_group=group,
        # Upper-cased too: Nova matches the source case-insensitively; boots and unshelves ignore it.
        source_host=draw(st.sampled_from(names + [name.upper() for name in names] + [""])),
    )


profiles = st.builds(Profile, max_io_ops_per_host=st.integers(0, 10),
                     max_instances_per_host=st.integers(0, 12),
                     allow_resize_to_same_host=st.booleans(),
                     aggregate_image_properties_isolation_namespace=st.sampled_from(("", "hw", "os")),
                     aggregate_image_properties_isolation_separator=st.sampled_from((".", "_")),
                     limit_tenants_to_placement_aggregate=st.booleans(),
                     placement_aggregate_required_for_tenants=st.booleans(),
                     enable_isolated_aggregate_filtering=st.booleans(),
                     pci_alias=st.just(PCI_ALIASES),
                     cpu_allocation_ratio=st.sampled_from((1.0, 4.0)),
                     packing_host_numa_cells_allocation_strategy=st.booleans())


@st.composite
def scenarios(draw, max_hosts: int = 12) -> tuple[Fleet, Request, Profile]:
    fleet = draw(fleets(max_hosts))
    request, profile = draw(requests(fleet)), draw(profiles)
    # Nova's require_tenant_aggregate has no answer without a project (InvalidField), and its
    # API refuses a NUMA topology or PCI request it cannot build.
    assume(request.project_id or not profile.limit_tenants_to_placement_aggregate)
    try:
        guest_demands(request, profile)
    except InvalidField:
        assume(False)
    return fleet, request, profile


# --- conformance cases -----------------------------------------------------------------

def fleet_from_case(case: dict) -> Fleet:
    hosts_ = tuple(Host(
        name=h["name"],
        enabled=h.get("enabled", True),
        up=h.get("up", True),
        resources={rc: Inventory(**inv) for rc, inv in h.get("resources", {}).items()},
        traits=frozenset(h.get("traits", ())),
        host_ip=h.get("host_ip", ""),
        hypervisor_type=h.get("hypervisor_type", ""),
        hypervisor_version=h.get("hypervisor_version"),
        supported_instances=tuple(tuple(s) for s in h.get("supported_instances", ())),
        stats=dict(h.get("stats", {})),
        num_instances=h.get("num_instances", 0),
        num_io_ops=h.get("num_io_ops", 0),
        instances=tuple(h.get("instances", ())),
        metrics=dict(h.get("metrics", {})),
        failed_builds=h.get("failed_builds", 0),
    ) for h in case["hosts"])
    aggregates = tuple(Aggregate(a["id"], a.get("name", ""), frozenset(a.get("hosts", ())),
                                 dict(a.get("metadata", {}))) for a in case.get("aggregates", ()))
    return Fleet(hosts_, aggregates)


def _hint_list(value) -> tuple[str, ...]:
    """Nova hints are a uuid or a list of them."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def request_from_case(case: dict) -> Request:
    r = case["request"]
    hints = r.get("scheduler_hints", {})
    group = r.get("server_group")
    image = r.get("image")
    return Request(
        operation=Operation(r.get("operation", "boot")),
        resources=dict(r.get("resources", {})),
        required_traits=frozenset(r.get("required_traits", ())),
        forbidden_traits=frozenset(r.get("forbidden_traits", ())),
        member_of=tuple(frozenset(ids) for ids in r.get("member_of", ())),
        availability_zone=r.get("availability_zone") or "",
        flavor=Flavor(r.get("flavor", {}).get("name", ""), dict(r.get("flavor", {}).get("extra_specs", {}))),
        image=Image(image.get("id", ""), dict(image.get("properties", {}))) if image else None,
        project_id=r.get("project_id", ""),
        instance_uuid=r.get("instance_uuid") or "",
        scheduler_hints=SchedulerHints(
            same_host=_hint_list(hints.get("same_host")),
            different_host=_hint_list(hints.get("different_host")),
            build_near_host_ip=hints.get("build_near_host_ip", ""),
            cidr=hints.get("cidr") or "/24",
            query=hints.get("query", "")),
        server_group=ServerGroup(
            policy=GroupPolicy(group.get("policy") or ""),
            members=tuple(group.get("members", ())),
            hosts=tuple(group.get("hosts", ())),
            max_server_per_host=(group.get("rules") or {}).get("max_server_per_host", 1),
        ) if group else None,
        source_host=r.get("source_host", ""),
    )


def profile_from_case(case: dict) -> Profile:
    fields = {f.name for f in dataclasses.fields(Profile)}
    config = case.get("config", {})
    known = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    return Profile(**known, extra={k: v for k, v in config.items() if k not in fields})
