"""AvailabilityZone as Nova 34 decides it: map_az_to_placement_aggregate and the API's zone check.

The first tests port Nova's own (nova/tests/unit/scheduler/test_request_filter.py test_map_az*,
nova/tests/unit/test_availability_zones.py test_get_availability_zones); each runs on the
plain-Python reference and on the kernel.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.decide import check_destination
from placecheck_engine.model import Aggregate, Fleet, Host, InvalidField, Operation, Request
from placecheck_engine.rules import RULES
from placecheck_engine.rules.availability_zone import (
    INTERNAL_SERVICE_AVAILABILITY_ZONE,
    NOT_IN_ZONE_AGGREGATE,
    available_zones,
    available_zones_of_fleet,
)
from fleetgen import fleets

RULE = RULES["AvailabilityZone"]
PROFILE = Profile(enabled_filters=("AvailabilityZone",))


def passing_hosts(fleet: Fleet, zone: str) -> tuple[list[str], list[str]] | None:
    """(reference, kernel) names of the hosts the rule lets through; None when the request
    does not engage the rule (Nova adds no aggregate constraint)."""
    request = Request(availability_zone=zone)
    columns = build_columns(fleet)
    (active,) = RULE.compile(request, columns, PROFILE)
    if active.params is None:
        return None
    fail_bits = np.zeros(columns.host_count, dtype=np.uint64)
    RULE.scan(active, columns, fail_bits, 0, 0, columns.host_count, 0)
    reference = [host.name for host in fleet.hosts if RULE.reference(active.name, host, fleet, request, PROFILE, 0)]
    kernel = [host.name for row, host in enumerate(fleet.hosts) if not fail_bits[row]]
    return reference, kernel


def fleet_of(zones_by_host: dict[str, str | None], disabled: tuple[str, ...] = ()) -> Fleet:
    """Hosts, each in the zoned aggregate named after its zone (None: no aggregate)."""
    zones = sorted({zone for zone in zones_by_host.values() if zone is not None})
    aggregates = tuple(Aggregate(index + 1, f"agg-{zone}",
                                 frozenset(h for h, z in zones_by_host.items() if z == zone),
                                 {"availability_zone": zone}) for index, zone in enumerate(zones))
    return Fleet(tuple(Host(name, enabled=name not in disabled) for name in zones_by_host), aggregates)


def test_map_az():
    fleet = fleet_of({"host1": "fooaz", "host2": "otheraz", "host3": None})
    assert passing_hosts(fleet, "fooaz") == (["host1"], ["host1"])


def test_map_az_no_hint():
    assert passing_hosts(fleet_of({"host1": "fooaz"}), "") is None


def test_map_az_no_aggregates():
    # No aggregate carries the zone: no constraint, so every host passes, the default zone included.
    assert passing_hosts(fleet_of({"host1": "otheraz", "host2": None}), "fooaz") is None
    assert passing_hosts(fleet_of({"host1": "otheraz", "host2": None}), "nova") is None


def test_map_az_matches_the_metadata_value_to_the_letter():
    fleet = Fleet((Host("host1"), Host("host2")),
                  (Aggregate(1, "a", frozenset({"host1"}), {"availability_zone": "az1, az2"}),
                   Aggregate(2, "b", frozenset({"host2"}), {"availability_zone": "az2"})))
    assert passing_hosts(fleet, "az2") == (["host2"], ["host2"])
    assert passing_hosts(fleet, "az1, az2") == (["host1"], ["host1"])
    assert passing_hosts(fleet, "az1") is None


def test_get_availability_zones():
    # zone nova-test: host1 enabled, host2 disabled; nova-test2: host3 enabled;
    # nova-test3: host4 disabled; the default zone: host5 disabled.
    fleet = fleet_of({"host1": "nova-test", "host2": "nova-test", "host3": "nova-test2", "host4": "nova-test3",
                      "host5": None}, disabled=("host2", "host4", "host5"))
    expected = {"nova-test", "nova-test2", INTERNAL_SERVICE_AVAILABILITY_ZONE}
    assert available_zones(build_columns(fleet)) == available_zones_of_fleet(fleet) == expected


@settings(max_examples=80, deadline=None)
@given(fleets(max_hosts=16))
def test_available_zones_equal_reference(fleet):
    assert available_zones(build_columns(fleet)) == available_zones_of_fleet(fleet)


def test_a_boot_into_an_unavailable_zone_is_refused_whole():
    fleet = fleet_of({"host1": "az1", "host2": "az2"}, disabled=("host2",))
    columns = build_columns(fleet)
    for zone in ("az2", "az3", "nova"):
        with pytest.raises(InvalidField) as raised:
            check_destination(columns, Request(availability_zone=zone), PROFILE, ["host1"])
        assert raised.value.field == "request.availability_zone"
    assert check_destination(columns, Request(availability_zone="internal"), PROFILE, ["host1"]).verdicts


def test_a_move_keeps_its_zone_unchecked():
    # A move's request spec keeps the zone it was booted into, which Nova does not check again.
    fleet = fleet_of({"host1": "az1", "host2": "az2"}, disabled=("host2",))
    request = Request(operation=Operation.EVACUATE, availability_zone="az2", source_host="host9",
                      instance_uuid="00000000-0000-0000-0000-000000000001")
    result = check_destination(build_columns(fleet), request, PROFILE, ["host1", "host2"])
    reasons = {verdict.host: [rejection.reason for rejection in verdict.rejections] for verdict in result.verdicts}
    assert reasons == {"host1": [NOT_IN_ZONE_AGGREGATE], "host2": []}
    assert "its zone: az1" in result.verdicts[0].rejections[0].message
