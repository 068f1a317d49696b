"""The fleet and the request every section measures.

The fleet is the seeded demo fleet, the same one `placecheck serve --demo-hosts N`
loads. The request is a boot derived from that fleet (its commonest trait, zone,
hypervisor and architecture, its aggregates, some of its instances, a JSON query,
an address to build near), so that it engages every rule a boot can engage and
still leaves hosts to pick from.
"""
from __future__ import annotations

import functools
import json
import random
import uuid
from collections import Counter

from placecheck_engine.columns import Columns, build_columns
from placecheck_engine.config import Profile, default_config
from placecheck_engine.demo import demo_fleet
from placecheck_engine.model import Fleet, Flavor, GroupPolicy, Image, Request, SchedulerHints, ServerGroup
from placecheck_server.supervisor import ServeOptions

DEMO_SEED = ServeOptions().demo_seed  # the fleet the sidecar serves with --demo-hosts
THREADS_PER_WORKER = ServeOptions().threads_per_worker  # every sidecar and the echo server run with it
REQUEST_SEED = 4
FLAVOR_NAME = "m1.medium"
NEAR_CIDR = "/10"  # build_near_host_ip: a wide neighbourhood of one host of the requested zone
FLAVOR_RESOURCES = {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 40}
GROUP_MEMBERS = 10  # Nova's default [quota] server_group_members
DIFFERENT_HOST_INSTANCES = 5


@functools.cache
def fleet(hosts: int) -> Fleet:
    return demo_fleet(hosts, DEMO_SEED)


@functools.cache
def columns(hosts: int) -> Columns:
    return build_columns(fleet(hosts))


def profile() -> Profile:
    """The sidecar's default profile: every implemented rule, Nova's defaults."""
    return default_config().profile("")


def _host_count_by_zone(fleet_: Fleet) -> Counter:
    zones = Counter()
    for aggregate in fleet_.aggregates:
        zone = aggregate.metadata.get("availability_zone")
        if zone:
            zones[zone] += len(aggregate.hosts)
    return zones


@functools.cache
def request(hosts: int, num_instances: int = 1) -> Request:
    fleet_ = fleet(hosts)
    rng = random.Random(REQUEST_SEED)
    traits = Counter(trait for host in fleet_.hosts for trait in host.traits)
    ranked_traits = [trait for trait, _ in traits.most_common()]
    zones = _host_count_by_zone(fleet_)
    zone = zones.most_common(1)[0][0] if zones else ""
    zone_hosts = next((a.hosts for a in fleet_.aggregates if a.metadata.get("availability_zone") == zone),
                      frozenset(host.name for host in fleet_.hosts))
    near_ip = next((host.host_ip for host in fleet_.hosts if host.name in zone_hosts and host.host_ip), "")
    # Every aggregate without a zone, so member_of narrows the fleet without emptying it.
    plain_aggregates = frozenset(a.id for a in fleet_.aggregates if "availability_zone" not in a.metadata)
    instances = [uuid for host in fleet_.hosts for uuid in host.instances]
    members = rng.sample(instances, min(len(instances), GROUP_MEMBERS))
    architectures = Counter(entry[0] for host in fleet_.hosts for entry in host.supported_instances)
    hypervisors = Counter(host.hypervisor_type for host in fleet_.hosts if host.hypervisor_type)
    resources = {rc: amount for rc, amount in FLAVOR_RESOURCES.items()
                 if any(rc in host.resources for host in fleet_.hosts[:100])}
    return Request(
        resources=resources,
        required_traits=frozenset(ranked_traits[:1]),
        forbidden_traits=frozenset(ranked_traits[-1:]) if len(ranked_traits) > 1 else frozenset(),
        member_of=(plain_aggregates,) if plain_aggregates else (),
        availability_zone=zone,
        flavor=Flavor(name=FLAVOR_NAME, extra_specs={"capabilities:hypervisor_type": f"s== {name}"
                                                     for name, _ in hypervisors.most_common(1)}),
        image=Image(id="bench-image", properties={"hw_architecture": name
                                                  for name, _ in architectures.most_common(1)}),
        project_id="bench-project",
        instance_uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),  # Nova gives every boot one
        scheduler_hints=SchedulerHints(
            different_host=tuple(rng.sample(instances, min(len(instances), DIFFERENT_HOST_INSTANCES))),
            build_near_host_ip=near_ip, cidr=NEAR_CIDR,
            query=json.dumps([">=", "$free_ram_mb", resources.get("MEMORY_MB", 0)])),
        server_group=ServerGroup(policy=GroupPolicy.ANTI_AFFINITY, members=tuple(members)),
        num_instances=num_instances,
    )
