"""`placecheck sync openstack` against a real Placement service and a real sidecar.

The fleet is made through Placement's REST API (providers, inventories, traits, aggregates,
allocations); after the feeder syncs it, placecheck's CheckDestination must allow exactly the
hosts Placement's own GET /allocation_candidates returns for the same request (resources,
required and forbidden traits, member_of), before and after allocations and providers change.
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest

from openstack_services import NOAUTH_TOKEN, nova, placement  # noqa: F401 (the fixtures)
from placecheck import PlacementClient, StateClient, wait_until_serving
from placecheck.openstack import aggregate_id
from placecheck.v1 import placement_pb2
from placecheck_server.openstack_check import NovaServers, server_request
from placecheck_server.openstack_feed import NovaReader, OpenStackFeed, PlacementReader, connect
from sidecar import REPO, free_port, start_sidecar

AGGREGATES = [str(uuid.UUID(int=random.Random(f"aggregate{n}").getrandbits(128), version=4)) for n in range(3)]
TRAITS = ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "CUSTOM_FAST_NET"]
RESOURCE_REQUESTS = [
    {"VCPU": 1, "MEMORY_MB": 512},
    {"VCPU": 4, "MEMORY_MB": 4096, "DISK_GB": 50},
    {"VCPU": 8, "MEMORY_MB": 16384},
    {"VCPU": 2, "MEMORY_MB": 1024, "CUSTOM_GPU": 1},
    {"VCPU": 1, "MEMORY_MB": 300},  # not a multiple of a 256 MB step
    {"VCPU": 5, "MEMORY_MB": 512},  # above a max_unit of 4
    {"VCPU": 30, "MEMORY_MB": 512},
]
TRAIT_REQUESTS = [((), ()), (("HW_CPU_X86_AVX2",), ()), ((), ("CUSTOM_FAST_NET",)),
                  (("HW_CPU_X86_SSE42",), ("HW_CPU_X86_AVX2",))]
MEMBER_OF_REQUESTS = [[], [[AGGREGATES[0]]], [[AGGREGATES[0], AGGREGATES[1]]], [[AGGREGATES[0]], [AGGREGATES[2]]]]
REQUESTS = list(itertools.product(RESOURCE_REQUESTS, TRAIT_REQUESTS, MEMBER_OF_REQUESTS))


class Cloud:
    """The test's view of the fleet it built in Placement: provider UUIDs by name."""

    def __init__(self, placement):
        self.placement = placement
        self.providers: dict[str, str] = {}

    def generation(self, name: str) -> int:
        return self.placement.get(f"/resource_providers/{self.providers[name]}")["generation"]

    def _put_with_generation(self, name: str, part: str, key: str, value) -> None:
        self.placement.put(f"/resource_providers/{self.providers[name]}/{part}",
                           {key: value, "resource_provider_generation": self.generation(name)})

    def add_provider(self, name: str, inventories: dict, traits=(), aggregates=()) -> None:
        self.providers[name] = self.placement.post("/resource_providers", {"name": name})["uuid"]
        self._put_with_generation(name, "inventories", "inventories", inventories)
        if traits:
            self._put_with_generation(name, "traits", "traits", list(traits))
        if aggregates:
            self._put_with_generation(name, "aggregates", "aggregates", list(aggregates))

    def set_traits(self, name: str, traits) -> None:
        self._put_with_generation(name, "traits", "traits", list(traits))

    def set_aggregates(self, name: str, aggregates) -> None:
        self._put_with_generation(name, "aggregates", "aggregates", list(aggregates))

    def set_inventories(self, name: str, inventories: dict) -> None:
        self._put_with_generation(name, "inventories", "inventories", inventories)

    def allocate(self, consumer: str, name: str, resources: dict) -> None:
        self.placement.put(f"/allocations/{consumer}", {
            "allocations": {self.providers[name]: {"resources": resources}},
            "project_id": "project", "user_id": "user", "consumer_generation": None, "consumer_type": "INSTANCE"})

    def fill_memory(self, consumer: str, name: str) -> None:
        """Allocate the provider's free MEMORY_MB, so that no request of REQUESTS fits it any more."""
        path = f"/resource_providers/{self.providers[name]}"
        memory = self.placement.get(f"{path}/inventories")["inventories"]["MEMORY_MB"]
        used = self.placement.get(f"{path}/usages")["usages"]["MEMORY_MB"]
        free = int((memory["total"] - memory["reserved"]) * memory["allocation_ratio"]) - used
        amount = min(free, memory["max_unit"]) // memory["step_size"] * memory["step_size"]
        self.allocate(consumer, name, {"MEMORY_MB": amount})

    def free(self, consumer: str) -> None:
        self.placement.delete(f"/allocations/{consumer}")

    def remove_provider(self, name: str) -> None:
        self.placement.delete(f"/resource_providers/{self.providers.pop(name)}")

    def candidates(self, resources: dict, required, forbidden, member_of) -> set[str]:
        """The hosts Placement's GET /allocation_candidates offers for the request."""
        query = [("resources", ",".join(f"{rc}:{amount}" for rc, amount in resources.items()))]
        if required or forbidden:
            query.append(("required", ",".join([*required, *(f"!{trait}" for trait in forbidden)])))
        query += [("member_of", "in:" + ",".join(aggregates)) for aggregates in member_of]
        answer = self.placement.get("/allocation_candidates?" + urllib.parse.urlencode(query))
        names = {provider_uuid: name for name, provider_uuid in self.providers.items()}
        return {names[provider_uuid] for request in answer["allocation_requests"]
                for provider_uuid in request["allocations"]}


def inventory(total, *, reserved=0, ratio=1.0, min_unit=1, max_unit=None, step_size=1) -> dict:
    return {"total": total, "reserved": reserved, "allocation_ratio": ratio, "min_unit": min_unit,
            "max_unit": max_unit or total, "step_size": step_size}


def random_inventories(rng: random.Random) -> dict:
    vcpus = rng.choice([4, 8, 16])
    memory = rng.choice([8192, 16384, 65536])
    inventories = {
        "VCPU": inventory(vcpus, reserved=rng.choice([0, 1, 2]), ratio=rng.choice([1.0, 4.0, 16.0]),
                          max_unit=rng.choice([vcpus, 4])),
        "MEMORY_MB": inventory(memory, reserved=rng.choice([0, 512]), ratio=rng.choice([1.0, 1.5]),
                               step_size=rng.choice([1, 256]), min_unit=rng.choice([1, 256])),
    }
    if rng.random() < 0.7:
        inventories["DISK_GB"] = inventory(rng.choice([40, 100, 1000]))
    if rng.random() < 0.3:
        inventories["CUSTOM_GPU"] = inventory(2, max_unit=1)
    return inventories


def build_cloud(placement, hosts: int = 16, seed: int = 9) -> Cloud:
    rng = random.Random(seed)
    cloud = Cloud(placement)
    placement.put("/traits/CUSTOM_FAST_NET", None)
    placement.put("/resource_classes/CUSTOM_GPU", None)
    for number in range(hosts):
        cloud.add_provider(f"compute-{number:02d}", random_inventories(rng),
                           traits=rng.sample(TRAITS, rng.randint(0, len(TRAITS))),
                           aggregates=rng.sample(AGGREGATES, rng.randint(0, 2)))
    for number, name in enumerate(rng.sample(sorted(cloud.providers), hosts // 2)):
        cloud.allocate(f"00000000-0000-4000-8000-{number:012d}", name, {"VCPU": 2, "MEMORY_MB": 4096})
    return cloud


def placecheck_allowed(client: PlacementClient, hosts: list[str], resources: dict, required, forbidden,
                       member_of, min_generation: int) -> set[str]:
    request = placement_pb2.PlacementRequest(
        resources=resources, required_traits=required, forbidden_traits=forbidden,
        member_of=[placement_pb2.AggregateSet(aggregate_ids=[aggregate_id(a) for a in aggregates])
                   for aggregates in member_of])
    response = client.check_destination(request, hosts, min_generation=min_generation, timeout=10)
    return {verdict.host for verdict in response.verdicts if verdict.allowed}


def assert_verdicts_equal_candidates(cloud: Cloud, client: PlacementClient, min_generation: int) -> int:
    """Every request of REQUESTS: placecheck's allowed hosts == Placement's candidates; returns how
    many requests some host could take (so a test can tell it tried more than refusals)."""
    hosts = sorted(cloud.providers)
    satisfiable = 0
    for resources, (required, forbidden), member_of in REQUESTS:
        expected = cloud.candidates(resources, required, forbidden, member_of)
        allowed = placecheck_allowed(client, hosts, resources, required, forbidden, member_of, min_generation)
        assert allowed == expected, (resources, required, forbidden, member_of)
        satisfiable += bool(expected)
    return satisfiable


class CountingAdapter:
    """Counts the HTTP requests the feeder makes through openstacksdk's placement proxy."""

    def __init__(self, adapter):
        self._adapter = adapter
        self.requests = 0

    def get(self, *args, **kwargs):
        self.requests += 1
        return self._adapter.get(*args, **kwargs)


@pytest.fixture(scope="module")
def clouds_yaml(placement, tmp_path_factory):  # noqa: F811 (the fixture)
    """A clouds.yaml naming the test Placement as cloud `test` (noauth2: a fixed admin token),
    in OS_CLIENT_CONFIG_FILE for openstacksdk."""
    path = tmp_path_factory.mktemp("clouds") / "clouds.yaml"
    path.write_text(f"clouds:\n  test:\n    auth_type: admin_token\n    auth:\n"
                    f"      endpoint: {placement.endpoint}\n      token: {NOAUTH_TOKEN}\n"
                    f"  unreachable:\n    auth_type: admin_token\n    auth:\n"
                    f"      endpoint: http://127.0.0.1:{free_port()}\n      token: {NOAUTH_TOKEN}\n")
    before = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(path)
    yield path
    if before is None:
        del os.environ["OS_CLIENT_CONFIG_FILE"]
    else:
        os.environ["OS_CLIENT_CONFIG_FILE"] = before


def test_verdicts_equal_allocation_candidates_through_full_sync_and_polls(placement, clouds_yaml):  # noqa: F811
    cloud = build_cloud(placement)
    counting = CountingAdapter(connect("test", "placement", concurrency=4))
    reader = PlacementReader(counting, concurrency=4)
    with start_sidecar(wait_serving=False) as sidecar, StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=1) as client:
        feed = OpenStackFeed(reader, state)
        report = feed.sync()
        assert (report.sync, report.hosts) == ("full", 16)
        assert counting.requests == 1 + 4 * 16
        generation = state.status().generation
        assert assert_verdicts_equal_candidates(cloud, client, generation) > len(REQUESTS) // 4

        # Nothing changed: one call, and an empty write that keeps the sidecar's fleet current.
        counting.requests = 0
        report = feed.sync()
        assert (report.sync, report.providers_read, counting.requests) == ("incremental", 0, 1)
        assert state.status().generation == generation + 1

        # Allocations come and go, a trait, an aggregate and an inventory change, a provider
        # leaves and one arrives: the poll reads exactly the providers whose generation moved.
        names = sorted(cloud.providers)
        before = {name: cloud.generation(name) for name in names}
        cloud.free("00000000-0000-4000-8000-000000000000")
        for name in names[:3]:
            cloud.fill_memory(str(uuid.uuid4()), name)
        cloud.set_traits(names[4], ["HW_CPU_X86_AVX2", "CUSTOM_FAST_NET"])
        cloud.set_aggregates(names[5], [AGGREGATES[2]])
        cloud.set_inventories(names[6], {"VCPU": inventory(64, ratio=2.0), "MEMORY_MB": inventory(131072)})
        allocated_on_removed = [c for c, a in placement.get(
            f"/resource_providers/{cloud.providers[names[7]]}/allocations")["allocations"].items()]
        for consumer in allocated_on_removed:
            cloud.free(consumer)
        cloud.remove_provider(names[7])
        cloud.add_provider("compute-new", {"VCPU": inventory(8), "MEMORY_MB": inventory(32768)},
                           traits=["HW_CPU_X86_SSE42"], aggregates=[AGGREGATES[0], AGGREGATES[2]])
        moved = [name for name in cloud.providers if name not in before or cloud.generation(name) != before[name]]
        assert 6 <= len(moved) < 12

        counting.requests = 0
        report = feed.sync()
        assert (report.sync, report.providers_read, report.removed, report.hosts) == (
            "incremental", len(moved), 1, 16)
        assert counting.requests == 1 + 4 * len(moved)
        generation = state.status().generation
        assert assert_verdicts_equal_candidates(cloud, client, generation) > len(REQUESTS) // 4
        with pytest.raises(grpc.RpcError) as removed:
            client.check_destination(placement_pb2.PlacementRequest(resources={"VCPU": 1}), [names[7]], timeout=10)
        assert removed.value.code() == grpc.StatusCode.NOT_FOUND
    reader.close()


def _feeder(clouds_yaml: Path, cloud: str, state_target: str, metrics_port: int, log_path: Path,
            *extra: str) -> subprocess.Popen:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "placecheck_server.cli", "sync", "openstack", "--os-cloud", cloud, "--state", state_target,
             "--metrics-port", str(metrics_port), "--without-nova", *extra],
            cwd=REPO, env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)},
            stdout=log_file, stderr=subprocess.STDOUT)


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {url}:\n{text}")


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(20)


def test_feeder_process_makes_the_sidecar_ready_and_follows_allocations(placement, clouds_yaml, tmp_path):  # noqa: F811
    cloud = Cloud(placement)
    cloud.add_provider("lag-probe", {"VCPU": inventory(4), "MEMORY_MB": inventory(8192)})
    metrics_port = free_port()
    with start_sidecar(wait_serving=False) as sidecar, \
            PlacementClient(sidecar.decision_target, channels=1) as client:
        feeder = _feeder(clouds_yaml, "test", sidecar.state_target, metrics_port, tmp_path / "feeder.log",
                         "--interval", "0.2")
        try:
            wait_until_serving(sidecar.decision_target, timeout=30)
            request = placement_pb2.PlacementRequest(resources={"VCPU": 3})
            assert client.check_destination(request, ["lag-probe"], timeout=10).verdicts[0].allowed

            allocated_at = time.monotonic()
            cloud.allocate(str(uuid.uuid4()), "lag-probe", {"VCPU": 2})
            while client.check_destination(request, ["lag-probe"], timeout=10).verdicts[0].allowed:
                assert time.monotonic() - allocated_at < 10, (tmp_path / "feeder.log").read_text()
                time.sleep(0.02)
            # A poll interval of 0.2 s: the decision sees the allocation well within a second.
            assert time.monotonic() - allocated_at < 1.5

            url = f"http://127.0.0.1:{metrics_port}/metrics"
            assert _metric(url, "placecheck_feed_up") == 1
            assert _metric(url, "placecheck_feed_sync_lag_seconds") < 5
            assert time.time() - _metric(url, "placecheck_feed_last_success_timestamp_seconds") < 5
            assert _metric(url, "placecheck_feed_hosts") >= 1
            assert _metric(url, 'placecheck_feed_api_requests_total{service="placement"}') >= 5
        finally:
            assert _stop(feeder) == 0, (tmp_path / "feeder.log").read_text()


def test_feeder_that_cannot_reach_placement_keeps_trying_and_says_so(clouds_yaml, tmp_path):
    metrics_port = free_port()
    log_path = tmp_path / "feeder.log"
    with start_sidecar(wait_serving=False) as sidecar:
        feeder = _feeder(clouds_yaml, "unreachable", sidecar.state_target, metrics_port, log_path,
                         "--interval", "0.1", "--max-backoff", "0.4")
        try:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if _metric(url, 'placecheck_feed_errors_total{kind="placement_unreachable"}') >= 3:
                        break
                except OSError:
                    pass  # the endpoint is not up yet
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            assert _metric(url, "placecheck_feed_up") == 0
            assert _metric(url, "placecheck_feed_sync_lag_seconds") == float("inf")
            log = log_path.read_text()
            assert "cannot reach Placement" in log and "retrying in" in log
            # Nothing was written, so the sidecar still has no fleet to decide on.
            with pytest.raises(TimeoutError):
                wait_until_serving(sidecar.decision_target, timeout=0.5)
        finally:
            assert _stop(feeder) == 0, log_path.read_text()


NOVA_HOSTS = ["nova-a", "nova-b", "nova-c", "nova-d"]
# The task states Nova 34's compute/stats.py io_workload counts (besides vm_state building).
NOVA_IO_TASK_STATES = {"resize_migrating", "rebuilding", "resize_prep", "image_snapshot", "image_backup", "rescuing",
                       "unshelving"}


class NovaCloud:
    """Nova's side of the test fleet: compute hosts (with their Placement providers), aggregates."""

    def __init__(self, nova, cloud: Cloud):
        self.nova = nova
        self.cloud = cloud

    def aggregate(self, name: str, availability_zone: str | None = None) -> dict:
        body = {"name": name, **({"availability_zone": availability_zone} if availability_zone else {})}
        return self.nova.post("/v2.1/os-aggregates", {"aggregate": body})["aggregate"]

    def action(self, aggregate: dict, action: str, body: dict) -> None:
        self.nova.post(f"/v2.1/os-aggregates/{aggregate['id']}/action", {action: body})

    def service(self, host: str) -> dict:
        return next(service for service in self.nova.get("/v2.1/os-services?binary=nova-compute")["services"]
                    if service["host"] == host)

    def expected_refusals(self, project: str, zone: str, same_host: str) -> dict[str, set[str]]:
        """For each host, the rules Nova's own answers say refuse a boot into `zone` for `project`
        next to server `same_host`: ComputeFilter when os-services has the service disabled or
        down; AvailabilityZone when some aggregate has the zone as its availability_zone and the
        host's provider is in none of them in Placement (Nova 34's map_az_to_placement_aggregate:
        a zone no aggregate names constrains nothing); AggregateMultiTenancyIsolation when an
        os-aggregates aggregate of the host names tenants that exclude the project; SameHostFilter
        when /servers/detail places `same_host` elsewhere; AggregateIoOpsFilter when the host's
        servers building or in an I/O-heavy task (Nova's io_workload) reach the smallest
        max_io_ops_per_host of its aggregates."""
        services = {s["host"]: s for s in self.nova.get("/v2.1/os-services?binary=nova-compute")["services"]}
        aggregates = self.nova.get("/v2.1/os-aggregates")["aggregates"]
        servers = self.nova.get("/v2.1/servers/detail?all_tenants=1", microversion="2.53")["servers"]
        io_ops = {host: sum(server["OS-EXT-SRV-ATTR:hypervisor_hostname"] == host and (
            server["OS-EXT-STS:vm_state"] == "building" or server["OS-EXT-STS:task_state"] in NOVA_IO_TASK_STATES)
            for server in servers) for host in NOVA_HOSTS}
        zone_aggregates = {a["uuid"] for a in aggregates if a["metadata"].get("availability_zone") == zone}
        refusals = {}
        for host in NOVA_HOSTS:
            rules = set()
            if services[host]["status"] != "enabled" or services[host]["state"] != "up":
                rules.add("ComputeFilter")
            placement_aggregates = self.cloud.placement.get(
                f"/resource_providers/{self.cloud.providers[host]}/aggregates")["aggregates"]
            if zone_aggregates and not zone_aggregates & set(placement_aggregates):
                rules.add("AvailabilityZone")
            tenants = [value for aggregate in aggregates if host in aggregate["hosts"]
                       for key, value in aggregate["metadata"].items() if key.startswith("filter_tenant_id")]
            if tenants and project not in {t.strip() for value in tenants for t in value.split(",")}:
                rules.add("AggregateMultiTenancyIsolation")
            if not any(server["id"] == same_host and server["OS-EXT-SRV-ATTR:hypervisor_hostname"] == host
                       for server in servers):
                rules.add("SameHostFilter")
            limits = [int(aggregate["metadata"]["max_io_ops_per_host"]) for aggregate in aggregates
                      if host in aggregate["hosts"] and "max_io_ops_per_host" in aggregate["metadata"]]
            if limits and io_ops[host] >= min(limits):
                rules.add("AggregateIoOpsFilter")
            refusals[host] = rules
        return refusals


def placecheck_refusals(client: PlacementClient, project: str, zone: str, same_host: str,
                        min_generation: int) -> dict[str, set[str]]:
    request = placement_pb2.PlacementRequest(
        resources={"VCPU": 1, "MEMORY_MB": 512}, availability_zone=zone, project_id=project,
        scheduler_hints=placement_pb2.SchedulerHints(same_host=[same_host]))
    response = client.check_destination(request, NOVA_HOSTS, min_generation=min_generation, timeout=10)
    return {verdict.host: {rejection.rule for rejection in verdict.rejections} for verdict in response.verdicts}


def test_nova_services_and_aggregates_reach_placecheck(placement, nova, tmp_path, monkeypatch):  # noqa: F811
    cloud = Cloud(placement)
    for name in NOVA_HOSTS:
        cloud.add_provider(name, {"VCPU": inventory(8), "MEMORY_MB": inventory(16384)})
    nova.register_computes([{"host": name, "uuid": cloud.providers[name], "host_ip": f"192.0.2.{number + 1}",
                             "disabled": name == "nova-b"} for number, name in enumerate(NOVA_HOSTS)])
    compute = NovaCloud(nova, cloud)
    east = compute.aggregate("east", availability_zone="east")
    for host in ("nova-a", "nova-b", "nova-c"):
        compute.action(east, "add_host", {"host": host})
    tenant = compute.aggregate("tenant-p1")
    compute.action(tenant, "add_host", {"host": "nova-c"})
    compute.action(tenant, "set_metadata", {"metadata": {"filter_tenant_id": "p1"}})
    busy = compute.aggregate("busy")
    for host in ("nova-a", "nova-d"):
        compute.action(busy, "add_host", {"host": host})
    compute.action(busy, "set_metadata", {"metadata": {"max_io_ops_per_host": "1"}})
    servers = [str(uuid.UUID(int=number + 1, version=4)) for number in range(4)]
    image = "00000000-0000-4000-8000-00000000beef"
    nova.record_instances([
        {"uuid": servers[0], "host": "nova-a", "project_id": "p1", "vm_state": "active", "task_state": None,
         "image": image},
        {"uuid": servers[1], "host": "nova-a", "project_id": "p1", "vm_state": "active", "task_state": None},
        {"uuid": servers[2], "host": "nova-d", "project_id": "p2", "vm_state": "active",
         "task_state": "image_snapshot"}])
    # Nova mirrors its aggregates into Placement under the same UUID.
    assert east["uuid"] in placement.get(f"/resource_providers/{cloud.providers['nova-a']}/aggregates")["aggregates"]

    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  test-nova:\n    auth_type: admin_token\n    auth:\n"
                      f"      endpoint: {placement.endpoint}\n      token: {NOAUTH_TOKEN}\n"
                      f"    compute_endpoint_override: {nova.endpoint}/v2.1\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    placement_adapter = CountingAdapter(connect("test-nova", "placement", concurrency=4))
    nova_adapter = CountingAdapter(connect("test-nova", "compute"))
    reader = PlacementReader(placement_adapter, concurrency=4)
    with start_sidecar(wait_serving=False) as sidecar, StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=1) as client:
        feed = OpenStackFeed(reader, state, NovaReader(nova_adapter))
        feed.sync()
        generation = state.status().generation
        cases = [("p1", "east", servers[0]), ("p2", "east", servers[2]), ("p1", "nova", servers[0]),
                 ("p2", "nova", servers[1])]
        for project, zone, same_host in cases:
            expected = compute.expected_refusals(project, zone, same_host)
            assert placecheck_refusals(client, project, zone, same_host, generation) == expected, (project, zone)
        assert compute.expected_refusals("p2", "east", servers[2]) == {
            "nova-a": {"SameHostFilter"}, "nova-b": {"ComputeFilter", "SameHostFilter"},
            "nova-c": {"AggregateMultiTenancyIsolation", "SameHostFilter"},
            "nova-d": {"AvailabilityZone", "AggregateIoOpsFilter"}}
        # Host addresses from os-hypervisors: SimpleCIDRAffinityFilter keeps the hosts near one.
        addresses = {hypervisor["hypervisor_hostname"]: hypervisor["host_ip"]
                     for hypervisor in nova.get("/v2.1/os-hypervisors/detail", microversion="2.53")["hypervisors"]}
        near = placement_pb2.PlacementRequest(resources={"VCPU": 1}, scheduler_hints=placement_pb2.SchedulerHints(
            build_near_host_ip=addresses["nova-c"], cidr="/32"))
        verdicts = client.check_destination(near, NOVA_HOSTS, min_generation=generation, timeout=10).verdicts
        assert {v.host for v in verdicts if "SimpleCIDRAffinityFilter" not in {r.rule for r in v.rejections}} == {
            host for host in NOVA_HOSTS if addresses[host] == addresses["nova-c"]} == {"nova-c"}
        # member_of with a Nova aggregate's UUID: the hosts Placement offers for it.
        expected = cloud.candidates({"VCPU": 1}, (), (), [[east["uuid"]]]) & set(NOVA_HOSTS)
        assert placecheck_allowed(client, NOVA_HOSTS, {"VCPU": 1}, (), (), [[east["uuid"]]], generation) == {
            host for host in expected if host not in ("nova-b", "nova-c")}  # disabled; tenants only

        # Nova changes: a service forced down, a host leaves the zone (and, mirrored, its
        # Placement aggregate), the tenant list changes, a snapshot ends, a server moves and one
        # starts building. One provider's generation moved.
        before = {name: cloud.generation(name) for name in NOVA_HOSTS}
        nova.put(f"/v2.1/os-services/{compute.service('nova-a')['id']}", {"forced_down": True})
        nova.record_instances([
            {"uuid": servers[2], "host": "nova-d", "project_id": "p2", "vm_state": "active", "task_state": None},
            {"uuid": servers[0], "host": "nova-c", "project_id": "p1", "vm_state": "active", "task_state": None},
            {"uuid": servers[3], "host": "nova-a", "project_id": "p1", "vm_state": "building",
             "task_state": "spawning"}])
        compute.action(east, "remove_host", {"host": "nova-b"})
        compute.action(tenant, "set_metadata", {"metadata": {"filter_tenant_id": "p2"}})
        moved = [name for name in NOVA_HOSTS if cloud.generation(name) != before[name]]
        assert moved == ["nova-b"]
        placement_adapter.requests = nova_adapter.requests = 0
        report = feed.sync()
        assert (report.sync, report.providers_read) == ("incremental", 1)
        assert (placement_adapter.requests, nova_adapter.requests) == (1 + 4, 4)
        generation = state.status().generation
        for project, zone, same_host in cases:
            expected = compute.expected_refusals(project, zone, same_host)
            assert placecheck_refusals(client, project, zone, same_host, generation) == expected, (project, zone)
        assert compute.expected_refusals("p2", "east", servers[0]) == {
            "nova-a": {"ComputeFilter", "SameHostFilter", "AggregateIoOpsFilter"},
            "nova-b": {"ComputeFilter", "AvailabilityZone", "SameHostFilter"}, "nova-c": set(),
            "nova-d": {"AvailabilityZone", "SameHostFilter"}}

        # `placecheck check --server`: a live migration of a real server, its request read from Nova.
        request = server_request(NovaServers(connect("test-nova", "compute")), servers[0])
        assert (dict(request.resources), request.project_id, request.source_host, request.instance_uuid,
                request.image.id, request.flavor.name) == (
            {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}, "p1", "nova-c", servers[0], image, "small")
        # Booted from a volume (no image): no root disk asked of the host, as Nova asks none.
        assert dict(server_request(NovaServers(connect("test-nova", "compute")), servers[1]).resources) == {
            "VCPU": 1, "MEMORY_MB": 512}
        finished = subprocess.run(
            [sys.executable, "-m", "placecheck_server.cli", "check", "--target", sidecar.decision_target, "--server", servers[1],
             "--os-cloud", "test-nova", "--operation", "live_migrate", "--host", "nova-a", "--host", "nova-c",
             "--host", "nova-d"],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert finished.returncode == 1, finished.stdout + finished.stderr
        # From nova-a (its source), to nova-c (tenant p2 only) or nova-d (nothing against it).
        verdicts = [line.split(" [")[0].split(" (")[0].strip() for line in finished.stdout.splitlines()[:-1]]
        assert verdicts == ["nova-a: refused by 3 rules", "MoveSource", "ComputeFilter", "AggregateIoOpsFilter",
                            "nova-c: refused by 1 rule", "AggregateMultiTenancyIsolation", "nova-d: allowed"], \
            finished.stdout
    reader.close()
