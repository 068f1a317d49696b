"""A seeded, realistic demo fleet: availability zones, special aggregates, mixed hardware and load.

Data only: the host_ip addresses are never connected to.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from placecheck_engine.model import Aggregate, Fleet, Host, Inventory

GIB_MB = 1024
HOST_RESERVED_MEMORY_MB = 512
HOSTS_PER_RACK = 40
AVAILABILITY_ZONES = ("az1", "az2", "az3")
QEMU_VERSIONS = (6002000, 7002000, 8002000)  # 6.2.0, 7.2.0, 8.2.0 as Nova encodes them
ISOLATED_TENANT = "3f1c9a6e0b6d4c51a0d2e5b7c8f90a12"

AGGREGATE_AZ_FIRST_ID = 1
AGGREGATE_SSD_ID = 10
AGGREGATE_GPU_ID = 11
AGGREGATE_TENANT_ID = 12
AGGREGATE_IO_LIMITED_ID = 13


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    share: float  # fraction of the fleet
    vcpus: int
    cpu_ratio: float
    memory_gib: int
    memory_ratio: float
    disk_gb: int
    typical_instances: int  # instances on the host when fully used
    traits: frozenset[str]
    gpus: int = 0


PROFILES = (
    HardwareProfile("general", 0.45, 64, 4.0, 256, 1.0, 1800, 40,
                    frozenset({"HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "COMPUTE_NET_VIF_MODEL_VIRTIO"})),
    HardwareProfile("dense", 0.25, 128, 16.0, 512, 1.5, 3600, 60,
                    frozenset({"HW_CPU_X86_AVX2", "HW_CPU_X86_AVX512F", "HW_CPU_X86_SSE42",
                               "STORAGE_DISK_SSD", "COMPUTE_NET_VIF_MODEL_VIRTIO"})),
    HardwareProfile("legacy", 0.15, 32, 16.0, 128, 1.5, 900, 30,
                    frozenset({"HW_CPU_X86_SSE42", "COMPUTE_NET_VIF_MODEL_VIRTIO"})),
    HardwareProfile("memory", 0.10, 96, 4.0, 1024, 1.0, 1800, 24,
                    frozenset({"HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "STORAGE_DISK_SSD",
                               "CUSTOM_HIGH_MEMORY", "COMPUTE_NET_VIF_MODEL_VIRTIO"})),
    HardwareProfile("gpu", 0.05, 64, 4.0, 512, 1.0, 1800, 8,
                    frozenset({"HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "STORAGE_DISK_SSD",
                               "CUSTOM_GPU_A100", "COMPUTE_NET_VIF_MODEL_VIRTIO"}), gpus=4),
)
SUPPORTED_INSTANCES = (("x86_64", "kvm", "hvm"), ("x86_64", "qemu", "hvm"))


def _inventory(total: int, reserved: int, ratio: float, load: float) -> Inventory:
    capacity = int((total - reserved) * ratio)
    return Inventory(total=total, reserved=reserved, allocation_ratio=ratio, max_unit=total,
                     used=min(capacity, int(capacity * load)))


def _uuid(rng: random.Random) -> str:
    digits = f"{rng.getrandbits(128):032x}"
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"


def demo_fleet(hosts: int = 10_000, seed: int = 0) -> Fleet:
    """`hosts` hosts named compute-00000..., in racks of 40 spread over three availability zones."""
    rng = random.Random(seed)
    width = max(5, len(str(hosts - 1)))
    profiles = rng.choices(PROFILES, weights=[profile.share for profile in PROFILES], k=hosts)
    fleet_hosts = []
    zone_members: dict[str, list[str]] = {zone: [] for zone in AVAILABILITY_ZONES}
    ssd, gpu, tenant_isolated, io_limited = [], [], [], []
    for index, profile in enumerate(profiles):
        name = f"compute-{index:0{width}d}"
        rack = index // HOSTS_PER_RACK
        zone_index = rack % len(AVAILABILITY_ZONES)
        zone_members[AVAILABILITY_ZONES[zone_index]].append(name)
        # A fleet is mostly busy: 20-95 % used, and about one host in twelve full.
        load = 1.0 if rng.random() < 0.08 else rng.uniform(0.20, 0.95)
        resources = {
            "VCPU": _inventory(profile.vcpus, 0, profile.cpu_ratio, load),
            "MEMORY_MB": _inventory(profile.memory_gib * GIB_MB, HOST_RESERVED_MEMORY_MB, profile.memory_ratio,
                                    min(1.0, load * rng.uniform(0.85, 1.1))),
            "DISK_GB": _inventory(profile.disk_gb, 0, 1.0, load * rng.uniform(0.3, 0.9)),
        }
        if profile.gpus:
            resources["VGPU"] = _inventory(profile.gpus, 0, 1.0, load)
            gpu.append(name)
        traits = set(profile.traits)
        if rng.random() < 0.1:
            traits.add("CUSTOM_DPDK")
        if "STORAGE_DISK_SSD" in traits:
            ssd.append(name)
        if rack % 50 == 7:
            tenant_isolated.append(name)
        if rack % 25 == 3:
            io_limited.append(name)
        instance_count = round(profile.typical_instances * load * rng.uniform(0.8, 1.2))
        fleet_hosts.append(Host(
            name=name,
            enabled=rng.random() >= 0.01,
            up=rng.random() >= 0.005,
            resources=resources,
            traits=frozenset(traits),
            host_ip=f"10.{zone_index * 64 + rack // 256 % 64}.{rack % 256}.{index % HOSTS_PER_RACK + 10}",
            hypervisor_type="QEMU",
            hypervisor_version=rng.choice(QEMU_VERSIONS),
            supported_instances=SUPPORTED_INSTANCES,
            stats={"cpu_vendor": "AMD" if profile.name == "dense" else "Intel", "hardware_profile": profile.name},
            num_instances=instance_count,
            num_io_ops=min(instance_count, int(rng.expovariate(0.7))),
            instances=tuple(_uuid(rng) for _ in range(instance_count)),
            metrics={"cpu.percent": round(min(1.0, load * rng.uniform(0.5, 1.1)), 3)},
            failed_builds=1 if rng.random() < 0.01 else 0,
        ))
    aggregates = [
        Aggregate(id=AGGREGATE_AZ_FIRST_ID + offset, name=zone, hosts=frozenset(zone_members[zone]),
                  metadata={"availability_zone": zone})
        for offset, zone in enumerate(AVAILABILITY_ZONES)
    ]
    aggregates += [
        Aggregate(id=AGGREGATE_SSD_ID, name="ssd", hosts=frozenset(ssd), metadata={"ssd": "true"}),
        Aggregate(id=AGGREGATE_GPU_ID, name="gpu", hosts=frozenset(gpu), metadata={"gpu": "a100"}),
        Aggregate(id=AGGREGATE_TENANT_ID, name="tenant-isolated", hosts=frozenset(tenant_isolated),
                  metadata={"filter_tenant_id": ISOLATED_TENANT}),
        Aggregate(id=AGGREGATE_IO_LIMITED_ID, name="io-limited", hosts=frozenset(io_limited),
                  metadata={"max_io_ops_per_host": "4", "max_instances_per_host": "30"}),
    ]
    return Fleet(hosts=tuple(fleet_hosts), aggregates=tuple(aggregates))
