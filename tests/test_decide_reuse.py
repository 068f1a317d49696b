"""What the decision path keeps per request (engine.decide's compiled requests, server.convert's
converted requests) decides exactly as converting and compiling afresh: for another
instance_uuid, another profile, another generation, and a request refused as invalid."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from placecheck_engine.columns import build_columns, overlay, usage_delta
from placecheck_engine.config import default_config
from placecheck_engine.decide import check_destination, compile_rules, select_destinations
from placecheck_engine.model import Fleet, GroupPolicy, Host, InvalidField, Inventory, Operation, Request, ServerGroup
from placecheck_engine.rules import RULES
from placecheck.v1 import placement_pb2
from placecheck_server import convert

PROFILE = default_config().profile("")
MEMORY = {"MEMORY_MB": Inventory(total=4096)}
MEMBER, OTHER_MEMBER, BOOTED, NEW = (f"00000000-0000-4000-8000-00000000000{digit}" for digit in "1234")


def test_every_rule_that_reads_the_instance_uuid_says_so():
    for rule in RULES.values():
        reads = "instance_uuid" in inspect.getsource(type(rule))
        assert rule.reads_instance_uuid == reads, rule.name


def group_fleet() -> Fleet:
    # "a" runs a member of the anti-affinity group and the instance being checked (so it is exempt).
    return Fleet(hosts=(Host("a", resources=MEMORY, instances=(MEMBER, BOOTED), num_instances=2),
                        Host("b", resources=MEMORY)))


def anti_affinity_request(instance_uuid: str) -> Request:
    return Request(resources={"MEMORY_MB": 512}, instance_uuid=instance_uuid,
                   server_group=ServerGroup(policy=GroupPolicy.ANTI_AFFINITY, members=(MEMBER,)))


def refusals(columns, request: Request) -> list[list[str]]:
    return [[rejection.rule for rejection in verdict.rejections]
            for verdict in check_destination(columns, request, PROFILE, ["a", "b"]).verdicts]


@pytest.mark.parametrize("first", [BOOTED, NEW])
def test_a_compiled_request_serves_another_instance_uuid_as_a_fresh_compile(first):
    columns = build_columns(group_fleet())
    refusals(columns, anti_affinity_request(first))  # compiled and kept for `first`
    assert refusals(columns, anti_affinity_request(BOOTED)) == [[], []]
    assert refusals(columns, anti_affinity_request(NEW)) == [["ServerGroupAntiAffinityFilter"], []]
    assert refusals(build_columns(group_fleet()), anti_affinity_request(NEW)) == refusals(
        columns, anti_affinity_request(NEW))


def test_a_compiled_request_is_not_reused_by_a_later_generation_whose_instances_moved():
    fleet = group_fleet()
    base = build_columns(fleet)
    request = anti_affinity_request(NEW)
    assert refusals(base, request) == [["ServerGroupAntiAffinityFilter"], []]
    # The member moves from "a" to "b": a generation overlaid on the same base.
    moved = {0: dataclasses.replace(fleet.hosts[0], instances=(BOOTED,), num_instances=1),
             1: dataclasses.replace(fleet.hosts[1], instances=(MEMBER,), num_instances=1)}
    delta = usage_delta(base, None, 2, moved, {row: host.instances for row, host in moved.items()})
    assert refusals(overlay(base, delta), request) == [[], ["ServerGroupAntiAffinityFilter"]]


def test_a_compiled_request_is_kept_per_profile():
    columns = build_columns(group_fleet())
    request = anti_affinity_request(NEW)
    without_group_rule = dataclasses.replace(PROFILE, enabled_filters=tuple(
        name for name in PROFILE.enabled_filters if name != "ServerGroupAntiAffinityFilter"))
    assert refusals(columns, request) == [["ServerGroupAntiAffinityFilter"], []]
    assert check_destination(columns, request, without_group_rule, ["a"]).verdicts[0].rejections == ()
    assert [active.name for active in compile_rules(columns, request, without_group_rule)] == list(
        check_destination(columns, request, without_group_rule, ["a"]).verdicts[0].rules_evaluated)


def test_select_for_another_instance_uuid_picks_as_a_fresh_compile():
    columns = build_columns(group_fleet())
    select_destinations(columns, anti_affinity_request(BOOTED), PROFILE, "decision", 1)
    fresh = select_destinations(build_columns(group_fleet()), anti_affinity_request(NEW), PROFILE, "decision", 1)
    assert select_destinations(columns, anti_affinity_request(NEW), PROFILE, "decision", 1) == fresh
    assert [placement.selected.host for placement in fresh.placements] == ["b"]


def proto_request(instance_uuid: str, operation=placement_pb2.OPERATION_BOOT) -> placement_pb2.PlacementRequest:
    return placement_pb2.PlacementRequest(
        operation=operation, resources={"MEMORY_MB": 512}, instance_uuid=instance_uuid, source_host="a",
        server_group=placement_pb2.ServerGroup(policy=placement_pb2.SERVER_GROUP_POLICY_ANTI_AFFINITY,
                                               members=[MEMBER, OTHER_MEMBER]))


@pytest.mark.parametrize("instance_uuid", [BOOTED, NEW, ""])
def test_a_converted_request_is_the_fresh_conversion(instance_uuid):
    convert.request_from_proto_reused(proto_request(BOOTED))
    message = proto_request(instance_uuid)
    assert convert.request_from_proto_reused(message) == convert.request_from_proto(message)
    assert message.instance_uuid == instance_uuid  # the caller's message is left as it was


def test_a_move_without_an_instance_uuid_is_refused_after_the_same_move_with_one():
    move = placement_pb2.OPERATION_LIVE_MIGRATE
    assert convert.request_from_proto_reused(proto_request(BOOTED, move)).operation is Operation.LIVE_MIGRATE
    with pytest.raises(InvalidField) as refused:
        convert.request_from_proto_reused(proto_request("", move))
    assert refused.value.field == "request.instance_uuid"
