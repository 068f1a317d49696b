"""The JSON fleet file and request: round trips, the conformance shapes, and refusals naming the field."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from placecheck_engine.demo import demo_fleet
from placecheck_engine.fleetfile import (
    fleet_from_json, fleet_to_json, load_fleet, request_from_json, request_to_json, validate_fleet,
)
from placecheck_engine.model import (
    MAX_UNIT_DEFAULT, GroupPolicy, InvalidField, Inventory, Operation, SchedulerHints,
)

CONFORMANCE = Path("/work/shared/conformance")
CASES = [json.loads(line) for name in ("nova-filters.jsonl", "nova-weighers.jsonl")
         for line in (CONFORMANCE / name).read_text().splitlines() if line.strip()]

SMALL_FLEET = {
    "hosts": [
        {"name": "compute-1", "host_ip": "10.0.0.1",
         "resources": {"VCPU": {"total": 16, "allocation_ratio": 4.0, "used": 3},
                       "MEMORY_MB": {"total": 65536, "reserved": 512, "used": 2048}},
         "traits": ["HW_CPU_X86_AVX2"], "hypervisor_type": "QEMU", "hypervisor_version": 6002000},
        {"name": "compute-2", "enabled": False},
    ],
    "aggregates": [{"id": 1, "name": "az1", "hosts": ["compute-1"], "metadata": {"availability_zone": "az1"}}],
}


def refusal(document_change, build=lambda: copy.deepcopy(SMALL_FLEET), parse=fleet_from_json) -> InvalidField:
    document = build()
    document_change(document)
    with pytest.raises(InvalidField) as raised:
        parse(document)
    return raised.value


def test_defaults_are_nova_and_placement_defaults():
    fleet = fleet_from_json(SMALL_FLEET)
    vcpu = fleet.hosts[0].resources["VCPU"]
    assert vcpu == Inventory(total=16, reserved=0, allocation_ratio=4.0, min_unit=1,
                             max_unit=MAX_UNIT_DEFAULT, step_size=1, used=3)
    bare = fleet.hosts[1]
    assert (bare.enabled, bare.up, bare.resources, bare.hypervisor_version) == (False, True, {}, None)
    assert fleet.aggregates[0].hosts == frozenset({"compute-1"})


def test_fleet_round_trips_through_json_and_a_file(tmp_path):
    fleet = demo_fleet(hosts=300, seed=3)
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleet_to_json(fleet)))
    assert load_fleet(str(path)) == fleet


def test_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text("{hosts: ")
    with pytest.raises(InvalidField, match="not valid JSON"):
        load_fleet(str(path))


def _has_min_unit_above_max_unit(case) -> bool:
    return any(inventory["min_unit"] > inventory["max_unit"]
               for host in case["hosts"] for inventory in host["resources"].values())


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_every_conformance_case_parses(case):
    fleet_json = {"hosts": case["hosts"], "aggregates": case["aggregates"]}
    request = request_from_json(case["request"])
    assert request_from_json(request_to_json(request)) == request
    if _has_min_unit_above_max_unit(case):
        # Two generated cases carry units that admit no amount: the gRPC API takes them, the file does not.
        with pytest.raises(InvalidField, match=r"\.min_unit: must not exceed max_unit"):
            fleet_from_json(fleet_json)
        return
    fleet = fleet_from_json(fleet_json)
    assert [host.name for host in fleet.hosts] == [host["name"] for host in case["hosts"]]
    assert fleet_from_json(fleet_to_json(fleet)) == fleet


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(total=-1), "hosts[0].resources.VCPU.total", "non-negative integer"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(total=2.5), "hosts[0].resources.VCPU.total", "non-negative integer"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(total=True), "hosts[0].resources.VCPU.total", "non-negative integer"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].pop("total"), "hosts[0].resources.VCPU.total", "required"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(used=-3), "hosts[0].resources.VCPU.used", "non-negative"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(allocation_ratio=0), "hosts[0].resources.VCPU.allocation_ratio", "> 0"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(allocation_ratio="4"), "hosts[0].resources.VCPU.allocation_ratio", "number"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(min_unit=8, max_unit=4), "hosts[0].resources.VCPU.min_unit", "max_unit (4)"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(step_size=0), "hosts[0].resources.VCPU.step_size",
     "from 1 to 2147483647"),
    # Placement's limits, and usage up to where capacity comparisons stay exact.
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(total=2**31), "hosts[0].resources.VCPU.total",
     "from 0 to 2147483647"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(max_unit=2**40), "hosts[0].resources.VCPU.max_unit",
     "from 1 to 2147483647"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(used=2**53 + 1), "hosts[0].resources.VCPU.used",
     "from 0 to 9007199254740992"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(used=2**63 - 1), "hosts[0].resources.VCPU.used",
     "from 0 to 9007199254740992"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(allocation_ratio=1e39),
     "hosts[0].resources.VCPU.allocation_ratio", "<= 3.40282e+38"),
    (lambda d: d["hosts"][0]["resources"]["VCPU"].update(spare=1), "hosts[0].resources.VCPU.spare", "unknown field"),
    (lambda d: d["hosts"][0]["resources"].update(vcpu={"total": 1}), "hosts[0].resources.vcpu", "resource class"),
    (lambda d: d["hosts"][1].pop("name"), "hosts[1].name", "required"),
    (lambda d: d["hosts"][1].update(name=""), "hosts[1].name", "empty"),
    (lambda d: d["hosts"][1].update(name="compute-1"), "hosts[1].name", "duplicate host name 'compute-1'"),
    (lambda d: d["hosts"][1].update(enabled="yes"), "hosts[1].enabled", "true or false"),
    (lambda d: d["hosts"][1].update(num_io_ops=-1), "hosts[1].num_io_ops", "non-negative"),
    (lambda d: d["hosts"][1].update(host_ip="10.0.0.300"), "hosts[1].host_ip", "IPv4 or IPv6"),
    (lambda d: d["hosts"][1].update(traits=["A", 3]), "hosts[1].traits[1]", "string"),
    (lambda d: d["hosts"][1].update(stats={"cpu": 4}), "hosts[1].stats.cpu", "string"),
    (lambda d: d["hosts"][1].update(metrics={"cpu.percent": "high"}), "hosts[1].metrics.cpu.percent", "number"),
    (lambda d: d["hosts"][1].update(supported_instances=[["x86_64", "qemu"]]), "hosts[1].supported_instances[0]", "architecture"),
    (lambda d: d["aggregates"].append({"id": 1}), "aggregates[1].id", "duplicate aggregate id 1"),
    (lambda d: d["aggregates"][0].update(id=0), "aggregates[0].id", ">= 1"),
    (lambda d: d["aggregates"][0].update(hosts=["nowhere"]), "aggregates[0].hosts", "no host named 'nowhere'"),
    (lambda d: d["aggregates"][0].update(metadata={"availability_zone": None}), "aggregates[0].metadata.availability_zone", "string"),
    (lambda d: d.update(hosts={}), "hosts", "array"),
    (lambda d: d.update(version=2), "version", "unknown field"),
])
def test_bad_fleet_values_name_their_field(change, field, words):
    error = refusal(change)
    assert error.field == field
    assert words in error.description


REQUEST = {
    "operation": "live_migrate",
    "resources": {"VCPU": 2, "MEMORY_MB": 2048},
    "required_traits": ["HW_CPU_X86_AVX2"],
    "member_of": [[1, 2]],
    "availability_zone": "az1",
    "flavor": {"name": "m1.small", "extra_specs": {"trait:STORAGE_DISK_SSD": "required"}},
    "image": {"id": "img-a", "properties": {"hw_architecture": "x86_64"}},
    "scheduler_hints": {"same_host": "inst-1", "different_host": ["inst-2", "inst-3"],
                        "build_near_host_ip": ["10.0.0.1"], "query": '["=", "$num_instances", 0]'},
    "server_group": {"policy": "anti-affinity", "members": ["inst-4"], "hosts": ["compute-1"],
                     "rules": {"max_server_per_host": 2}},
    "source_host": "compute-9",
    "num_instances": 3,
    "profile": "strict",
}


def test_request_fields_and_hint_shapes():
    request = request_from_json(REQUEST)
    assert request.operation is Operation.LIVE_MIGRATE
    assert request.member_of == (frozenset({1, 2}),)
    assert request.scheduler_hints == SchedulerHints(
        same_host=("inst-1",), different_host=("inst-2", "inst-3"), build_near_host_ip="10.0.0.1",
        cidr="/24", query='["=", "$num_instances", 0]')
    assert request.server_group.policy is GroupPolicy.ANTI_AFFINITY
    assert request.server_group.max_server_per_host == 2
    assert (request.source_host, request.num_instances, request.profile) == ("compute-9", 3, "strict")
    assert request_from_json(request_to_json(request)) == request


def test_request_defaults():
    request = request_from_json({"resources": {"VCPU": 1}, "image": None, "availability_zone": None})
    assert request.operation is Operation.BOOT
    assert (request.image, request.server_group, request.availability_zone) == (None, None, "")
    assert request.num_instances == 1
    assert request_from_json({"server_group": {"policy": "affinity"}}).server_group.max_server_per_host == 1


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d.update(operation="teleport"), "operation", "live_migrate"),
    (lambda d: d["resources"].update(VCPU=-2), "resources.VCPU", "from 0 to 2147483647"),
    (lambda d: d["resources"].update(VCPU=2**31), "resources.VCPU", "from 0 to 2147483647"),
    (lambda d: d.update(member_of=[[]]), "member_of[0]", "at least one"),
    (lambda d: d.update(member_of=[[1, "two"]]), "member_of[0][1]", ">= 1"),
    (lambda d: d["server_group"].update(policy="together"), "server_group.policy", "anti-affinity"),
    (lambda d: d["server_group"].pop("policy"), "server_group.policy", "required"),
    (lambda d: d["server_group"].update(rules={"max_server_per_host": 0}), "server_group.rules.max_server_per_host", ">= 1"),
    (lambda d: d["scheduler_hints"].update(cidr=["/24", "/16"]), "scheduler_hints.cidr", "list of one string"),
    (lambda d: d["scheduler_hints"].update(group="g1"), "scheduler_hints.group", "unknown field"),
    (lambda d: d["flavor"].update(extra_specs={"hw:cpu_policy": 1}), "flavor.extra_specs.hw:cpu_policy", "string"),
    (lambda d: d.update(num_instances=0), "num_instances", ">= 1"),
    (lambda d: d.update(image="img-a"), "image", "JSON object"),
])
def test_bad_request_values_name_their_field(change, field, words):
    error = refusal(change, build=lambda: copy.deepcopy(REQUEST), parse=request_from_json)
    assert error.field == field
    assert words in error.description


def test_validate_fleet_applies_to_model_values():
    fleet = fleet_from_json(SMALL_FLEET)
    validate_fleet(fleet)
    broken_host = fleet.hosts[0].__class__(name="compute-3", resources={"DISK_GB": Inventory(total=10, used=-1)})
    with pytest.raises(InvalidField) as raised:
        validate_fleet(fleet.__class__(hosts=fleet.hosts + (broken_host,)))
    assert raised.value.field == "hosts[2].resources.DISK_GB.used"


def test_the_documented_example_loads():
    text = (Path(__file__).parent.parent / "docs" / "fleet-file.md").read_text()
    example = text.split("```json", 1)[1].split("```", 1)[0]
    fleet = fleet_from_json(json.loads(example))
    assert fleet.hosts[0].resources["MEMORY_MB"].reserved == 512
    assert fleet.aggregates[0].metadata == {"availability_zone": "az1"}
