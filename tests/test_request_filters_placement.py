"""Nova's request filters that constrain aggregates and traits (require_tenant_aggregate,
isolate_aggregates, compute_status_filter) and AggregateMultiTenancyIsolation, on the tables of
Nova 34's own unit tests (nova/tests/unit/scheduler/test_request_filter.py and
filters/test_aggregate_multitenancy_isolation_filters.py; each case's id is Nova's test name),
checked host by host against both the plain-Python reference and the kernel.

Nova's unit tests mock the aggregate lookups; here each mocked aggregate holds one host
("in-<aggregate>") of a real fleet, beside a host in no aggregate ("no-aggregate"), and the
lookups are ours, so the tables hold what Nova's database queries return.
"""
from __future__ import annotations

import numpy as np
import pytest

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Aggregate, Fleet, Flavor, Host, Image, InvalidField, Request
from placecheck_engine.rules import RULES
from placecheck_engine.rules import aggregate_multitenancy_isolation as tenancy
from placecheck_engine.rules import compute_status_filter, isolate_aggregates, require_tenant_aggregate

LONE_HOST = "no-aggregate"


def fleet_of(aggregates: dict[str, dict[str, str]], **host_fields) -> Fleet:
    """One host per named aggregate (its metadata given), and one host in none."""
    names = [f"in-{name}" for name in aggregates] + [LONE_HOST]
    return Fleet(tuple(Host(name, **host_fields) for name in names),
                 tuple(Aggregate(i + 1, name, frozenset({f"in-{name}"}), metadata)
                       for i, (name, metadata) in enumerate(aggregates.items())))


def passing_hosts(rule_name: str, fleet: Fleet, request: Request, profile: Profile) -> set[str]:
    """The hosts the rule lets through; the kernel, the reference and every explanation agree."""
    rule, columns = RULES[rule_name], build_columns(fleet)
    [active] = rule.compile(request, columns, profile)
    fail_bits = np.zeros(columns.host_count, dtype=np.uint64)
    refused = rule.scan(active, columns, fail_bits, 3, 0, columns.host_count, 0)
    kernel = [not bits for bits in fail_bits.tolist()]
    reference = [rule.reference(active.name, host, fleet, request, profile, 0) for host in fleet.hosts]
    assert kernel == reference
    assert refused == kernel.count(False)
    for row, passes in enumerate(kernel):
        if not passes:
            rejection = rule.explain(active, columns, row, 0)
            assert rejection.rule == rule_name and rejection.message
    return {host.name for host, passes in zip(fleet.hosts, kernel) if passes}


def every_host(fleet: Fleet) -> set[str]:
    return {host.name for host in fleet.hosts}


# --- require_tenant_aggregate --------------------------------------------------------------

TENANT = Profile(limit_tenants_to_placement_aggregate=True)
TENANT_REQUIRED = Profile(limit_tenants_to_placement_aggregate=True,
                          placement_aggregate_required_for_tenants=True)
# The aggregates of test_require_tenant_aggregate, as Nova's lookup by the value 'owner' sees them.
OWNER_AGGREGATES = {"agg1": {"filter_tenant_id": "owner"}, "agg2": {"filter_tenant_id:12": "owner"},
                    "agg3": {"other_key": "owner"}}


@pytest.mark.parametrize("aggregates, project, profile, passing", [
    pytest.param(OWNER_AGGREGATES, "owner", Profile(), {"in-agg1", "in-agg2", "in-agg3", LONE_HOST},
                 id="test_require_tenant_aggregate_disabled"),
    pytest.param(OWNER_AGGREGATES, "owner", TENANT, {"in-agg1", "in-agg2"},
                 id="test_require_tenant_aggregate"),
    pytest.param({"agg3": {"other_key": "owner"}}, "owner", TENANT_REQUIRED, set(),
                 id="test_require_tenant_aggregate_no_match"),
    pytest.param({"agg3": {"other_key": "owner"}}, "owner", TENANT, {"in-agg3", LONE_HOST},
                 id="test_require_tenant_aggregate_no_match_not_required"),
    # Beyond Nova's table: what its database lookup (value == project) returns.
    pytest.param({"agg1": {"filter_tenant_id": "owner, other"}}, "owner", TENANT, {"in-agg1", LONE_HOST},
                 id="a comma list is not the project: nothing is required"),
    pytest.param({"agg1": {"filter_tenant_id": "other", "owner_key": "owner"}}, "owner", TENANT_REQUIRED,
                 set(), id="only the entry whose value is the project counts, and its key is no tenant key"),
    pytest.param({"agg1": {"filter_tenant_idx": "owner"}, "agg2": {"filter_tenant_id": "Owner"}}, "owner",
                 TENANT, {"in-agg1"}, id="a key prefix match, a case-sensitive value"),
])
def test_require_tenant_aggregate(aggregates, project, profile, passing):
    fleet = fleet_of(aggregates)
    assert passing_hosts("require_tenant_aggregate", fleet, Request(project_id=project), profile) == passing


def test_require_tenant_aggregate_reasons():
    fleet = fleet_of(OWNER_AGGREGATES)
    columns, rule = build_columns(fleet), RULES["require_tenant_aggregate"]
    [active] = rule.compile(Request(project_id="owner"), columns, TENANT)
    rejection = rule.explain(active, columns, columns.row_of(LONE_HOST), 0)
    assert rejection.reason == require_tenant_aggregate.NOT_IN_TENANT_AGGREGATE
    assert "'owner'" in rejection.message and "1, 2" in rejection.message
    [active] = rule.compile(Request(project_id="nobody"), columns, TENANT_REQUIRED)
    rejection = rule.explain(active, columns, columns.row_of("in-agg1"), 0)
    assert rejection.reason == require_tenant_aggregate.NO_TENANT_AGGREGATE
    assert "'nobody'" in rejection.message and "placement_aggregate_required_for_tenants" in rejection.message


def test_require_tenant_aggregate_without_a_project_has_no_answer():
    """Nova's lookup asserts when the request spec has no project (get_by_metadata(value=None))."""
    columns = build_columns(fleet_of(OWNER_AGGREGATES))
    with pytest.raises(InvalidField) as raised:
        RULES["require_tenant_aggregate"].compile(Request(), columns, TENANT)
    assert raised.value.field == "request.project_id"
    assert RULES["require_tenant_aggregate"].compile(Request(), columns, Profile())[0].params is None


# --- isolate_aggregates --------------------------------------------------------------------

ISOLATED = Profile(enable_isolated_aggregate_filtering=True)
DXVA, DCB_ETS = "HW_GPU_API_DXVA", "HW_NIC_DCB_ETS"
WINDOWS, XYZ = "CUSTOM_WINDOWS_LICENSED_TRAIT", "CUSTOM_XYZ_TRAIT"


def requiring(*traits: str) -> dict[str, str]:
    return {f"trait:{trait}": "required" for trait in traits}


@pytest.mark.parametrize("aggregates, flavor_traits, image_traits, profile, passing", [
    # Nova's mock returns agg4 as well, though the query it asserts (keys not in the flavor's)
    # would not: agg4 requires only traits the flavor requires.
    pytest.param({"agg1": requiring(WINDOWS), "agg2": requiring(WINDOWS, XYZ), "agg4": requiring(DXVA, DCB_ETS)},
                 (DXVA, DCB_ETS), (), ISOLATED, {"in-agg4", LONE_HOST}, id="test_isolate_aggregates"),
    pytest.param({"agg2": requiring(WINDOWS, XYZ), "agg4": requiring(DXVA, DCB_ETS)},
                 (DXVA, XYZ), (), ISOLATED, {LONE_HOST}, id="test_isolate_aggregates_union"),
    pytest.param({"agg1": {"availability_zone": "az1"}}, (DXVA, DCB_ETS), (), ISOLATED, {"in-agg1", LONE_HOST},
                 id="test_isolate_agg_trait_on_flavor_destination_not_set"),
    pytest.param({"agg1": requiring(DXVA, DCB_ETS)}, (DXVA,), (DCB_ETS,), ISOLATED, {"in-agg1", LONE_HOST},
                 id="test_isolate_agg_trait_on_flv_img_destination_not_set"),
    # Beyond Nova's table.
    pytest.param({"agg1": requiring(WINDOWS)}, (), (), Profile(), {"in-agg1", LONE_HOST},
                 id="disabled (enable_isolated_aggregate_filtering defaults to False)"),
    pytest.param({"agg1": {f"trait:{WINDOWS}": "Required"}, "agg2": {f"Trait:{WINDOWS}": "required"},
                  "agg3": {WINDOWS: "required"}}, (), (), ISOLATED, {"in-agg1", "in-agg2", "in-agg3", LONE_HOST},
                 id="only trait:NAME=required isolates, case-sensitively"),
])
def test_isolate_aggregates(aggregates, flavor_traits, image_traits, profile, passing):
    request = Request(flavor=Flavor("f", requiring(*flavor_traits)),
                      image=Image("img", requiring(*image_traits)))
    assert passing_hosts("isolate_aggregates", fleet_of(aggregates), request, profile) == passing


@pytest.mark.parametrize("request_", [
    pytest.param(Request(required_traits=frozenset({WINDOWS})), id="the caller's required traits"),
    pytest.param(Request(flavor=Flavor("f", {f"trait1:{WINDOWS}": "required"})), id="a granular group's trait"),
    pytest.param(Request(image=Image("img", requiring(WINDOWS))), id="the image's trait:NAME=required"),
])
def test_isolate_aggregates_counts_every_required_trait(request_):
    fleet = fleet_of({"agg1": requiring(WINDOWS)})
    assert passing_hosts("isolate_aggregates", fleet, request_, ISOLATED) == every_host(fleet)
    assert passing_hosts("isolate_aggregates", fleet, Request(), ISOLATED) == {LONE_HOST}


def test_isolate_aggregates_reason_names_the_aggregate_and_its_traits():
    fleet = fleet_of({"agg1": requiring(WINDOWS, DXVA)})
    columns, rule = build_columns(fleet), RULES["isolate_aggregates"]
    [active] = rule.compile(Request(flavor=Flavor("f", requiring(DXVA))), columns, ISOLATED)
    rejection = rule.explain(active, columns, columns.row_of("in-agg1"), 0)
    assert rejection.reason == isolate_aggregates.IN_ISOLATED_AGGREGATE
    assert f"1 ({WINDOWS})" in rejection.message and DXVA not in rejection.message


# --- with_tenant_and_az_and_traits: the request filters together ---------------------------

def test_with_tenant_and_az_and_traits():
    """Nova's mocks, one aggregate per uuid with the metadata each lookup saw (the zone part is
    AvailabilityZone's)."""
    fleet = fleet_of({"agg1": {"filter_tenant_id": "owner"} | requiring(WINDOWS),
                      "agg2": {"filter_tenant_id:12": "owner"} | requiring(WINDOWS, XYZ),
                      "agg3": {"other_key": "owner"} | requiring(XYZ),
                      "agg4": {"availability_zone": "myaz"}})
    profile = Profile(limit_tenants_to_placement_aggregate=True, enable_isolated_aggregate_filtering=True)
    request = Request(project_id="owner", availability_zone="myaz", flavor=Flavor("f", requiring(DXVA, DCB_ETS)))
    assert passing_hosts("require_tenant_aggregate", fleet, request, profile) == {"in-agg1", "in-agg2"}
    assert passing_hosts("isolate_aggregates", fleet, request, profile) == {"in-agg4", LONE_HOST}


# --- compute_status_filter -----------------------------------------------------------------

@pytest.mark.parametrize("profile", [Profile(), TENANT])
def test_compute_status_filter(profile):
    """Always on: COMPUTE_STATUS_DISABLED is a forbidden trait of every request."""
    fleet = Fleet((Host("disabled", traits=frozenset({compute_status_filter.COMPUTE_STATUS_DISABLED})),
                   Host("other", traits=frozenset({"CUSTOM_GOLD"})), Host("none")), ())
    request = Request(project_id="p", flavor=Flavor("f", {}))
    assert passing_hosts("compute_status_filter", fleet, request, profile) == {"other", "none"}
    columns, rule = build_columns(fleet), RULES["compute_status_filter"]
    [active] = rule.compile(request, columns, profile)
    assert rule.explain(active, columns, 0, 0).reason == compute_status_filter.COMPUTE_STATUS_DISABLED


def test_request_filters_run_first_in_novas_order():
    names = list(RULES)
    assert names.index("require_tenant_aggregate") < names.index("compute_status_filter") \
        < names.index("isolate_aggregates") < names.index("resource")


# --- AggregateMultiTenancyIsolation --------------------------------------------------------

TENANT_HOST = "in-aggregates"


@pytest.mark.parametrize("metadatas, project, passes", [
    pytest.param([{"filter_tenant_id": "my_tenantid"}], "my_tenantid", True,
                 id="test_aggregate_multi_tenancy_isolation_with_meta_passes"),
    pytest.param([{"filter_tenant_id": "my_tenantid,mytenantid2"}], "my_tenantid", True,
                 id="test_aggregate_multi_tenancy_isolation_with_meta_passes_comma"),
    pytest.param([{"filter_tenant_id": "other_tenantid"}], "my_tenantid", False,
                 id="test_aggregate_multi_tenancy_isolation_fails"),
    pytest.param([{"filter_tenant_id": "other_tenantid,other_tenantid2"}], "my_tenantid", False,
                 id="test_aggregate_multi_tenancy_isolation_fails_comma"),
    pytest.param([{}], "my_tenantid", True, id="test_aggregate_multi_tenancy_isolation_no_meta_passes"),
    *(pytest.param([{"filter_tenant_id": "my_tenantid", "filter_tenant_id_gr1": "my_tenantid1,my_tenantid2",
                     "filter_tenant_id_gr2": "my_tenantid5,my_tenantid4"}], project, passes,
                   id=f"test_aggregate_multi_tenancy_isolation_with_prefix-{project}")
      for project, passes in (("my_tenantid", True), ("my_tenantid2", True), ("my_tenantid6", False))),
    # Beyond Nova's table: the tenants of several aggregates unite; spaces around commas.
    pytest.param([{"filter_tenant_id": "my_tenantid"}, {"filter_tenant_id_gr2": "my_tenantid5"}], "my_tenantid5",
                 True, id="tenants united over aggregates"),
    pytest.param([{"filter_tenant_id": "my_tenantid"}, {"filter_tenant_id_gr2": "my_tenantid5"}], "my_tenantid6",
                 False, id="a project in none of the aggregates"),
    pytest.param([{"filter_tenant_id": "a , my_tenantid "}], "my_tenantid", True, id="values stripped"),
    # No project: Nova's project_id None is no listed tenant, not even an empty one.
    pytest.param([{"filter_tenant_id": "my_tenantid"}], "", False, id="no project, a tenant aggregate"),
    pytest.param([{"filter_tenant_id": ""}], "", False, id="no project, an empty tenant value"),
    pytest.param([{"filter_tenant_idx": " , "}], "", False, id="no project, empty tenants under a prefixed key"),
    pytest.param([{"other": "x"}], "", True, id="no project, no tenant key"),
])
def test_aggregate_multitenancy_isolation(metadatas, project, passes):
    fleet = Fleet((Host(TENANT_HOST), Host(LONE_HOST)),
                  tuple(Aggregate(i + 1, f"agg{i + 1}", frozenset({TENANT_HOST}), metadata)
                        for i, metadata in enumerate(metadatas)))
    expected = {TENANT_HOST, LONE_HOST} if passes else {LONE_HOST}
    request = Request(project_id=project)
    assert passing_hosts("AggregateMultiTenancyIsolation", fleet, request, Profile()) == expected
    if not passes:
        columns, rule = build_columns(fleet), RULES["AggregateMultiTenancyIsolation"]
        [active] = rule.compile(request, columns, Profile())
        rejection = rule.explain(active, columns, columns.row_of(TENANT_HOST), 0)
        assert rejection.reason == tenancy.PROJECT_NOT_IN_AGGREGATE_TENANTS
        assert (repr(project) if project else "without a project") in rejection.message
