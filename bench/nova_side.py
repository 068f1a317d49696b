"""Runs inside bench/.venv-nova: one request through Nova's own filter and weigher classes.

Reads a JSON payload (argv[1]) shaped like a conformance case (../shared/conformance):
`hosts`, `aggregates`, `request`, `config` (Nova option names), plus `filters` and
`weighers` (Nova class names; filters Nova does not have are left out and the ones
run reported) and `repeats`. Builds one nova.scheduler.host_manager.HostState
per host and a RequestSpec, then times HostFilterHandler.get_filtered_objects followed by
HostWeightHandler.get_weighed_objects, nothing else. Prints JSON: the seconds of each
repeat, the passing hosts in fleet order and the ranking.

Imports nothing from placecheck: Nova's venv has only Nova.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
import time

import nova.conf
from nova import objects

objects.register_all()
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[])
# No log output: Nova's per-host warnings (hosts down...) would time stderr writes, not filtering.
logging.disable(logging.CRITICAL)

from nova.pci import request as pci_request  # noqa: E402  (needs CONF parsed)
from nova.scheduler import filters as nova_filters  # noqa: E402
from nova.scheduler import host_manager  # noqa: E402
from nova.scheduler import weights as nova_weights  # noqa: E402
from nova.virt import hardware  # noqa: E402

# A host the fleet says is down was last heard from long before Nova's service_down_time (60 s).
DOWN_FOR = datetime.timedelta(days=1)


def apply_config(config: dict) -> None:
    """Set Nova options from the payload; keys Nova has no option for are placecheck's own."""
    for key, value in config.items():
        if value is None or value == "":
            continue  # placecheck's "unset": Nova's default (None) stays
        if key == "metrics_weight_setting":
            CONF.set_override("weight_setting", value, group="metrics")
        elif key in CONF.filter_scheduler:
            CONF.set_override(key, value, group="filter_scheduler")
    # A missing metric weighs [metrics] weight_of_unavailable instead of raising, as the
    # conformance data's weigher cases do.
    CONF.set_override("required", False, group="metrics")


def host_state(host: dict, aggregates: list, now: datetime.datetime) -> host_manager.HostState:
    """A HostState with what Nova's host manager would have loaded for this host."""
    state = host_manager.HostState(host["name"], host["name"], None)
    resources = host.get("resources", {})
    memory = resources.get("MEMORY_MB")
    if memory:
        state.total_usable_ram_mb = memory["total"]
        state.free_ram_mb = memory["total"] - memory.get("used", 0)
        state.ram_allocation_ratio = memory.get("allocation_ratio", 1.0)
    disk = resources.get("DISK_GB")
    if disk:
        state.total_usable_disk_gb = disk["total"]
        state.disk_mb_used = disk.get("used", 0) * 1024
        state.free_disk_mb = (disk["total"] - disk.get("used", 0)) * 1024
        state.disk_allocation_ratio = disk.get("allocation_ratio", 1.0)
    vcpu = resources.get("VCPU")
    if vcpu:
        state.vcpus_total = vcpu["total"]
        state.vcpus_used = vcpu.get("used", 0)
        state.cpu_allocation_ratio = vcpu.get("allocation_ratio", 1.0)
    for ratio in ("ram_allocation_ratio", "disk_allocation_ratio", "cpu_allocation_ratio"):
        if getattr(state, ratio) is None:
            setattr(state, ratio, 1.0)
    state.host_ip = host.get("host_ip") or None
    state.hypervisor_type = host.get("hypervisor_type") or None
    state.hypervisor_version = host.get("hypervisor_version")
    state.supported_instances = [list(entry) for entry in host.get("supported_instances", [])]
    state.stats = dict(host.get("stats", {}))
    state.num_instances = host.get("num_instances", 0)
    state.num_io_ops = host.get("num_io_ops", 0)
    state.failed_builds = host.get("failed_builds", 0)
    state.metrics = objects.MonitorMetricList(objects=[
        objects.MonitorMetric(name=name, value=value, source="bench", timestamp=now)
        for name, value in host.get("metrics", {}).items()])
    state.aggregates = aggregates
    # Filters and weighers read only the keys; Nova's values are Instance objects.
    state.instances = dict.fromkeys(host.get("instances", ()))
    last_heard = now if host.get("up", True) else now - DOWN_FOR
    state.service = host_manager.ReadOnlyDict({
        "host": host["name"], "binary": "nova-compute", "disabled": not host.get("enabled", True),
        "disabled_reason": None, "forced_down": False, "last_seen_up": last_heard,
        "created_at": last_heard, "updated_at": last_heard})
    return state


def host_states(payload: dict) -> list[host_manager.HostState]:
    now = datetime.datetime.utcnow()
    aggregates_of: dict[str, list] = {}
    for aggregate in payload.get("aggregates", []):
        nova_aggregate = objects.Aggregate(id=aggregate["id"], name=aggregate.get("name", ""),
                                           hosts=list(aggregate.get("hosts", [])),
                                           metadata=dict(aggregate.get("metadata", {})))
        for name in aggregate.get("hosts", []):
            aggregates_of.setdefault(name, []).append(nova_aggregate)
    return [host_state(host, aggregates_of.get(host["name"], []), now) for host in payload["hosts"]]


def request_spec(request: dict) -> objects.RequestSpec:
    resources = request.get("resources", {})
    flavor = request.get("flavor", {})
    spec = objects.RequestSpec(
        flavor=objects.Flavor(name=flavor.get("name", ""), memory_mb=resources.get("MEMORY_MB", 0),
                              vcpus=resources.get("VCPU", 0), root_gb=resources.get("DISK_GB", 0),
                              ephemeral_gb=0, swap=0, extra_specs=dict(flavor.get("extra_specs", {}))),
        num_instances=request.get("num_instances") or 1,
        scheduler_hints={key: value if isinstance(value, list) else [value]
                         for key, value in request.get("scheduler_hints", {}).items() if value},
        instance_group=None, image=None, requested_destination=None,
        ignore_hosts=None, force_hosts=None, force_nodes=None)
    # Unset rather than empty, as Nova leaves them when the request has none.
    for field in ("project_id", "instance_uuid", "availability_zone"):
        if request.get(field):
            setattr(spec, field, request[field])
    image = request.get("image")
    if image is not None:
        spec.image = objects.ImageMeta.from_dict({"id": image.get("id", ""),
                                                  "properties": image.get("properties", {})})
    # What Nova's API puts in every boot's spec (NUMATopologyFilter and PciPassthroughFilter read
    # them): the guest NUMA topology and the flavor's PCI requests, none for this section's boot.
    spec.numa_topology = hardware.numa_get_constraints(spec.flavor, spec.image or objects.ImageMeta.from_dict({}))
    spec.pci_requests = pci_request.get_pci_requests_from_flavor(spec.flavor)
    group = request.get("server_group")
    if group and group.get("policy"):
        spec.instance_group = objects.InstanceGroup(
            policy=group["policy"], policies=[group["policy"]], members=list(group.get("members", [])),
            hosts=list(group.get("hosts", [])), rules=dict(group.get("rules", {})))
    return spec


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as source:
        payload = json.load(source)
    apply_config(payload.get("config", {}))
    filter_classes = {cls.__name__: cls for cls in nova_filters.HostFilterHandler().get_all_classes()}
    weigher_classes = {cls.__name__: cls for cls in nova_weights.HostWeightHandler().get_all_classes()}
    # Rules Nova has no filter class for (Placement's, placecheck's own) are left out and reported.
    filters_run = [name for name in payload["filters"] if name in filter_classes]
    filters = [filter_classes[name]() for name in filters_run]
    weighers = [weigher_classes[name]() for name in payload["weighers"]]
    hosts = host_states(payload)
    spec = request_spec(payload["request"])
    filter_handler = nova_filters.HostFilterHandler()
    weight_handler = nova_weights.HostWeightHandler()

    seconds = []
    for _ in range(payload.get("repeats", 1)):
        started = time.perf_counter()
        passed = filter_handler.get_filtered_objects(filters, hosts, spec, index=0)
        ranked = weight_handler.get_weighed_objects(weighers, passed, spec)
        seconds.append(time.perf_counter() - started)

    json.dump({
        "seconds": seconds,
        "passed": [state.host for state in passed],
        "ranked": [[weighed.obj.host, weighed.weight] for weighed in ranked[:payload.get("ranked", 10)]],
        "filters_run": filters_run,
        "nova_version": nova_version(),
    }, sys.stdout)


def nova_version() -> str:
    from importlib.metadata import version
    return version("nova")


if __name__ == "__main__":
    main()
