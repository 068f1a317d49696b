"""The aggregate-metadata rules on Nova's own unit-test tables (research §6.10-6.12) and their
explanations; kernel == reference on random fleets is in test_rules_kernel.py."""
from __future__ import annotations

import pytest

from placecheck_engine.config import Profile
from placecheck_engine.model import Aggregate, Fleet, Flavor, Host, Image, Request
from placecheck_engine.rules import aggregate_image_properties_isolation as image_isolation
from placecheck_engine.rules import aggregate_instance_extra_specs as extra_specs
from placecheck_engine.rules import aggregate_type_affinity as type_affinity
from placecheck_engine.rules.io_ops import TOO_MANY_IO_OPS
from placecheck_engine.rules.num_instances import TOO_MANY_INSTANCES
from test_rules_kernel import refusal


def host_in_aggregates(*metadatas, **host_fields) -> Fleet:
    """Host h0 in one aggregate per metadata dict; h1 in none."""
    return Fleet((Host("h0", **host_fields), Host("h1", **host_fields)),
                 tuple(Aggregate(i + 1, f"agg{i + 1}", frozenset({"h0"}), metadata)
                       for i, metadata in enumerate(metadatas)))


@pytest.mark.parametrize("rule, option, host_field, config, count, values, passes", [
    ("AggregateIoOpsFilter", "max_io_ops_per_host", "num_io_ops", 7, 7, [], False),
    ("AggregateIoOpsFilter", "max_io_ops_per_host", "num_io_ops", 7, 7, ["8"], True),
    ("AggregateIoOpsFilter", "max_io_ops_per_host", "num_io_ops", 8, 7, ["XXX"], True),
    ("AggregateIoOpsFilter", "max_io_ops_per_host", "num_io_ops", 9, 7, ["8", " 6 "], False),  # min, int() strips
    ("AggregateIoOpsFilter", "max_io_ops_per_host", "num_io_ops", 9, 7, ["8", "6,7"], True),  # not an int: config
    ("AggregateNumInstancesFilter", "max_instances_per_host", "num_instances", 4, 5, [], False),
    ("AggregateNumInstancesFilter", "max_instances_per_host", "num_instances", 4, 5, ["6"], True),
    ("AggregateNumInstancesFilter", "max_instances_per_host", "num_instances", 6, 0, ["XXX"], True),
    ("AggregateNumInstancesFilter", "max_instances_per_host", "num_instances", 50, 3, [str(2 ** 70)], True),
])
def test_aggregate_count_limits(rule, option, host_field, config, count, values, passes):
    fleet = host_in_aggregates(*({option: value} for value in values), **{host_field: count})
    rejection = refusal(fleet, Request(), Profile(**{option: config}), rule)
    assert (rejection is None) == passes
    if rejection:
        assert rejection.reason in (TOO_MANY_IO_OPS, TOO_MANY_INSTANCES)
        assert rejection.numbers["actual"] == count


def test_aggregate_count_limit_counts_placed_instances():
    fleet = host_in_aggregates({"max_io_ops_per_host": "3"}, num_io_ops=1)
    assert refusal(fleet, Request(), Profile(), "AggregateIoOpsFilter", placed=1) is None
    rejection = refusal(fleet, Request(), Profile(), "AggregateIoOpsFilter", placed=2)
    assert rejection.numbers == {"actual": 3, "limit": 3}
    assert "placed" in rejection.message and "smallest of the aggregates' max_io_ops_per_host 3" in rejection.message


@pytest.mark.parametrize("metadatas, specs, passes", [
    ([{"opt1": "1", "opt2": "2"}], {}, True),
    ([{"opt1": "1", "opt2": "2"}], {"opt1": "1", "aggregate_instance_extra_specs:opt2": "2"}, True),
    ([{"opt1": "1,3", "opt2": "2"}], {"opt1": "1", "aggregate_instance_extra_specs:opt1": "3"}, True),
    ([{"aggregate_instance_extra_specs": "1"}], {"aggregate_instance_extra_specs": "1"}, True),
    ([{"opt1": "1", "opt2": "2"}], {"opt1": "1", "opt2": "222"}, False),
    ([{"opt1": "1"}, {"opt1": "5"}], {"opt1": ">= 4"}, True),  # values united over aggregates
    ([{"opt1": "1"}], {"hw:opt1": "2", "trait:X": "required"}, True),  # other scopes ignored
    ([{"opt1": "1"}], {"absent": "1"}, False),
    ([{"opt1": "abc, 5"}], {"opt1": ">= 4"}, True),  # a value float() cannot read does not match
])
def test_aggregate_instance_extra_specs(metadatas, specs, passes):
    fleet = host_in_aggregates(*metadatas)
    rejection = refusal(fleet, Request(flavor=Flavor("f", specs)), Profile(), "AggregateInstanceExtraSpecsFilter")
    assert (rejection is None) == passes


def test_aggregate_instance_extra_specs_reasons():
    fleet = host_in_aggregates({"opt1": "1"})
    request = Request(flavor=Flavor("f", {"opt1": "2"}))
    rejection = refusal(fleet, request, Profile(), "AggregateInstanceExtraSpecsFilter")
    assert rejection.reason == extra_specs.AGGREGATE_METADATA_MISMATCH and "opt1" in rejection.message
    rejection = refusal(fleet, request, Profile(), "AggregateInstanceExtraSpecsFilter", host_row=1)
    assert rejection.reason == extra_specs.MISSING_AGGREGATE_METADATA


@pytest.mark.parametrize("metadatas, flavor, passes", [
    ([], "m1.small", True),
    ([{"instance_type": "m1.small"}], "m1.small", True),
    ([{"instance_type": "m1.large, m1.small"}], "m1.small", True),
    ([{"instance_type": "m1.large"}], "m1.small", False),
    ([{"instance_type": "m1.large"}, {"instance_type": "m1.small"}], "m1.small", True),
])
def test_aggregate_type_affinity(metadatas, flavor, passes):
    rejection = refusal(host_in_aggregates(*metadatas), Request(flavor=Flavor(flavor)), Profile(),
                        "AggregateTypeAffinityFilter")
    assert (rejection is None) == passes
    if rejection:
        assert rejection.reason == type_affinity.FLAVOR_NOT_IN_AGGREGATE_TYPES and flavor in rejection.message


@pytest.mark.parametrize("metadatas, properties, namespace, passes", [
    ([{"os_distro": "ubuntu"}], {"os_distro": "ubuntu"}, "", True),
    ([{"os_distro": "rhel, ubuntu"}], {"os_distro": "ubuntu"}, "", True),
    ([{"os_distro": "rhel"}], {"os_distro": "ubuntu"}, "", False),
    ([{"os_distro": "rhel"}], {}, "", True),  # absent properties pass
    ([{"os_distro": "rhel"}], {"os_distro": ""}, "", True),  # so do empty ones
    ([{"os_distro": "rhel"}], {"os_distro": "ubuntu"}, "hw", True),  # outside the namespace
    ([{"hw_architecture": "x86_64"}], {"hw_architecture": "aarch64"}, "hw", False),
    ([{"hw_architecture": "x86_64"}], {"architecture": "aarch64"}, "", False),  # legacy name
    ([{"ssd": "true"}], {"ssd": "false"}, "", True),  # not an ImageMetaProps field: Nova drops it
])
def test_aggregate_image_properties_isolation(metadatas, properties, namespace, passes):
    profile = Profile(aggregate_image_properties_isolation_namespace=namespace,
                      aggregate_image_properties_isolation_separator="_")
    request = Request(image=Image("img", properties))
    rejection = refusal(host_in_aggregates(*metadatas), request, profile, "AggregateImagePropertiesIsolation")
    assert (rejection is None) == passes
    if rejection:
        assert rejection.reason == image_isolation.IMAGE_PROPERTY_NOT_IN_AGGREGATE
    assert refusal(host_in_aggregates(*metadatas), Request(), profile, "AggregateImagePropertiesIsolation") is None
