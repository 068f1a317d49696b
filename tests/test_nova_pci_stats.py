"""Nova 34.0.0's own unit tests of PCI scheduling, their tables ported to engine.pci.

From nova/tests/unit/pci/test_stats.py, pci/test_request.py,
scheduler/filters/test_pci_passthrough_filters.py and scheduler/weights/test_weights_pci.py;
each test is named as Nova's and asserts Nova's expected value.

Nova's fixtures build pools from devices (PciDeviceStats.add_device): a pool per device address
(a VF's parent address), its device spec's tags, and remote_managed "false" added to VF/PF/vDPA
pools. The pools here are those pools, the address kept as a tag. What only the compute's
claim does (consume_requests taking a PF's VFs with it) is not scheduling and is not ported:
test_consume_VF_and_PF_requests_failed.
"""
from __future__ import annotations

import json

import pytest

from placecheck_engine import pci
from placecheck_engine.config import ConfigError, Profile, config_from_bytes
from placecheck_engine.model import Flavor, Image, InvalidField, NumaCell, PciPool, Port, Request
from placecheck_engine.weighers import nova_weight_multiplier


def pool(vendor_id, product_id, numa_node=0, count=1, dev_type="type-PCI", **tags) -> PciPool:
    return PciPool(vendor_id=vendor_id, product_id=product_id, dev_type=dev_type, numa_node=numa_node,
                   count=count, tags=tags)


def request(count=1, *specs, policy="", alias_name="") -> pci.PciRequest:
    return pci.PciRequest(count=count, specs=specs, alias_name=alias_name, numa_policy=policy,
                          requester=f"alias {alias_name}" if alias_name else "test")


def cells(*ids) -> tuple[NumaCell, ...]:
    return tuple(NumaCell(id=cell_id) for cell_id in ids)


def taken(pools, requests, numa_cells=None) -> list[str] | None:
    """consume_requests' product ids (one per device), from the pools' counts before and after
    apply_requests; None when a request cannot be met."""
    after = pci.apply_requests(pools, requests, numa_cells)
    if after is None:
        return None
    left = {p.tags["address"]: p.count for p in after}
    return sorted(p.product_id for p in pools for _ in range(p.count - left.get(p.tags["address"], 0)))


# ---------------------------------------------------------------------------------------------
# pci/test_stats.py PciDeviceStatsTestCase: four type-PCI devices, then three v4 ones


def stats_pools():
    # fake_pci_4 shares fake_pci_3's address in Nova, a pool of its own by its other ids; its
    # address differs here so that `taken` tells the pools apart.
    return (pool("v1", "p1", 0, address="0000:00:00.1"), pool("v2", "p2", 1, address="0000:00:00.2"),
            pool("v1", "p1", 0, address="0000:00:00.3"), pool("v3", "p3", None, address="0000:00:00.3b"))


def stats_pools_with_numa():
    return stats_pools() + (pool("v4", "pr0", 0, address="0000:00:00.4"), pool("v4", "pr1", 1, address="0000:00:00.5"),
                            pool("v4", "pr_none", None, address="0000:00:00.6"))


PCI_REQUESTS = (request(1, {"vendor_id": "v1"}), request(1, {"vendor_id": "v2"}))
PCI_REQUESTS_MULTIPLE = (request(1, {"vendor_id": "v1"}), request(3, {"vendor_id": "v2"}))


def fake_requests(vendor_ids=("v1", "v2"), policy="", count=1):
    return tuple(request(count, {"vendor_id": vendor_id}, policy=policy) for vendor_id in vendor_ids)


def test_apply_requests():
    left = pci.apply_requests(stats_pools(), PCI_REQUESTS)
    assert len(left) == 2
    assert (left[0].vendor_id, left[0].count) == ("v1", 1)


def test_apply_requests_failed():
    assert pci.apply_requests(stats_pools(), PCI_REQUESTS_MULTIPLE) is None


def test_support_requests():
    pools = stats_pools()
    assert pci.supports(pools, PCI_REQUESTS)
    assert [p.count for p in pools] == [1, 1, 1, 1]


def test_support_requests_failed():
    assert not pci.supports(stats_pools(), PCI_REQUESTS_MULTIPLE)


def test_support_requests_numa():
    assert pci.supports(stats_pools(), PCI_REQUESTS, cells(0, 1))


def test_support_requests_numa_failed():
    assert not pci.supports(stats_pools(), PCI_REQUESTS, cells(0))


def test_support_requests_no_numa_info():
    assert pci.supports(stats_pools(), fake_requests(["v3"]), cells(0))
    # 'legacy' is the default numa_policy so the result must be same
    assert pci.supports(stats_pools(), fake_requests(["v3"], pci.LEGACY), cells(0))


def test_support_requests_numa_pci_numa_policy_preferred():
    assert pci.supports(stats_pools(), fake_requests(policy=pci.PREFERRED), cells(0))


def test_support_requests_no_numa_info_pci_numa_policy_required():
    assert not pci.supports(stats_pools(), fake_requests(["v3"], pci.REQUIRED), cells(0))


def nova_pool_dicts(pools):
    return list(pci.pools_as_nova_sees(pools))


def test_filter_pools_for_socket_affinity_no_socket():
    host_cells = (NumaCell(id=0, socket=None),)
    assert pci._socket_affine(nova_pool_dicts(stats_pools()), cells(0), host_cells) == []


def test_filter_pools_for_socket_affinity():
    host_cells = (NumaCell(id=1, socket=1),)
    pools = pci._socket_affine(nova_pool_dicts(stats_pools()), cells(1), host_cells)
    assert [(p["product_id"], p["vendor_id"]) for p in pools] == [("p2", "v2")]


def test_consume_requests():
    assert taken(stats_pools(), PCI_REQUESTS) == ["p1", "p2"]


def test_consume_requests_empty():
    assert taken(stats_pools(), ()) == []


def test_consume_requests_failed():
    assert taken(stats_pools(), PCI_REQUESTS_MULTIPLE) is None


def test_consume_requests_numa():
    assert taken(stats_pools(), PCI_REQUESTS, cells(0, 1)) == ["p1", "p2"]


def test_consume_requests_numa_failed():
    assert taken(stats_pools(), PCI_REQUESTS, cells(0)) is None


def test_consume_requests_no_numa_info():
    assert taken(stats_pools(), (request(1, {"vendor_id": "v3"}),), cells(0)) == ["p3"]


# _test_consume_requests_numa_policy: (cell ids, policy, expected product ids or None, vendor, count)
NUMA_POLICY_CASES = {
    "test_consume_requests_numa_policy_required": ([0], pci.REQUIRED, ["pr0"], "v4", 1),
    "test_consume_requests_numa_policy_required_fail": ([999], pci.REQUIRED, None, "v4", 1),
    "test_consume_requests_numa_policy_legacy": ([0], pci.LEGACY, ["pr0"], "v4", 1),
    "test_consume_requests_numa_policy_legacy_fallback": ([999], pci.LEGACY, ["pr_none"], "v4", 1),
    "test_consume_requests_numa_policy_legacy_multiple": ([0], pci.PREFERRED, ["pr0", "pr_none"], "v4", 2),
    "test_consume_requests_numa_policy_legacy_fail": ([0], pci.LEGACY, None, "v2", 1),
    "test_consume_requests_numa_policy_preferred": ([0], pci.PREFERRED, ["pr0"], "v4", 1),
    "test_consume_requests_numa_policy_preferred_fallback_a": ([999], pci.PREFERRED, ["pr_none"], "v4", 1),
    "test_consume_requests_numa_policy_preferred_fallback_b": ([0], pci.PREFERRED, ["p2"], "v2", 1),
    "test_consume_requests_numa_policy_preferred_multiple_a": ([0], pci.PREFERRED, ["pr0", "pr_none"], "v4", 2),
    "test_consume_requests_numa_policy_preferred_multiple_b": ([0], pci.PREFERRED, ["pr0", "pr1", "pr_none"], "v4",
                                                              3),
}


@pytest.mark.parametrize("cell_ids, policy, expected, vendor_id, count", NUMA_POLICY_CASES.values(),
                         ids=NUMA_POLICY_CASES.keys())
def test_consume_requests_numa_policy(cell_ids, policy, expected, vendor_id, count):
    requests = fake_requests([vendor_id], policy, count)
    assert taken(stats_pools_with_numa(), requests, cells(*cell_ids)) == expected


# ---------------------------------------------------------------------------------------------
# PciDeviceStatsWithTagsTestCase: tagged, untagged, remote-managed and live-migratable devices


def tagged_pools():
    return (
        *(pool("1137", "0072", address=f"0000:0b:00.{i}") for i in range(3)),
        *(pool("1137", "0071", address=f"0000:0a:00.{i}", physical_network="physnet1") for i in range(4)),
        pool("15b3", "101e", dev_type="type-VF", address="0000:0c:00.0", remote_managed="true"),
        pool("15b3", "101c", dev_type="type-VF", address="0000:0d:00.0"),
        pool("15b3", "101c", dev_type="type-VF", address="0000:0e:00.0"),
        pool("15b4", "102e", dev_type="type-VF", address="0000:0f:00.0", live_migratable="true"),
        pool("15b5", "102f", dev_type="type-VF", address="0000:10:00.0", live_migratable="false"))


def test_add_devices():
    # Pools are ordered on their number of keys; remote_managed "false" is added to VFs.
    seen = [(p["vendor_id"], p["product_id"], p["count"], p.get("physical_network"), p.get("remote_managed"),
             p.get("live_migratable")) for p in pci.pools_as_nova_sees(tagged_pools())]
    assert seen == [("1137", "0072", 1, None, None, None)] * 3 + [("1137", "0071", 1, "physnet1", None, None)] * 4 + [
        ("15b3", "101e", 1, None, "true", None), ("15b3", "101c", 1, None, "false", None),
        ("15b3", "101c", 1, None, "false", None), ("15b4", "102e", 1, None, "false", "true"),
        ("15b5", "102f", 1, None, "false", "false")]


def test_consume_requests_with_tags():
    requests = (request(1, {"physical_network": "physnet1"}),
                request(1, {"vendor_id": "1137", "product_id": "0072"}),
                request(1, {"vendor_id": "15b3", "product_id": "101e", "remote_managed": "True"}),
                request(1, {"vendor_id": "15b3", "product_id": "101c", "remote_managed": "False"}),
                request(1, {"vendor_id": "15b3", "product_id": "101c", "remote_managed": "False"}),
                request(1, {"vendor_id": "15b4", "product_id": "102e", "live_migratable": "true"}),
                request(1, {"vendor_id": "15b5", "product_id": "102f", "live_migratable": "false"}))
    pools = tagged_pools()
    assert sorted(set(taken(pools, requests))) == ["0071", "0072", "101c", "101e", "102e", "102f"]
    left = {p.tags["address"]: p.count for p in pci.apply_requests(pools, requests)}
    counts = [left.get(p["address"], 0) for p in pci.pools_as_nova_sees(pools)]
    assert counts == [0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# PciDeviceStatsPlacementSupportTestCase, PciDeviceStatsProviderMappingTestCase (no mapping)


def test_filter_pools_for_spec_ignores_rc_and_traits_in_spec():
    pools = (pool("dead", "beef", address="a"),)
    spec = {"vendor_id": "dead", "product_id": "beef", "resource_class": "foo", "traits": "blue"}
    assert taken(pools, (request(1, spec),)) == ["beef"]


def test_support_request_unrestricted():
    pools = (pool("dead", "beef", 0, 2, "type-VF", address="0000:81:00.0"),
             pool("dead", "beef", 0, 1, "type-PF", address="0000:82:00.0"),
             pool("dead", "beef", 0, 1, "type-PF", address="0000:83:00.0"),
             pool("dead", "beef", 0, 1, "type-PCI", address="0000:84:00.0"))
    requests = tuple(request(1, {"vendor_id": "dead", "product_id": "beef", "dev_type": dev_type}, alias_name="a-dev")
                     for dev_type in ("type-VF", "type-PF", "type-PCI"))
    assert pci.supports(pools, requests)
    left = pci.apply_requests(pools, requests)
    # three devices taken, the emptied pools purged: the remaining VF and PF
    assert sum(p.count for p in left) == 5 - 3
    assert len(left) == 2


# ---------------------------------------------------------------------------------------------
# PciDeviceVFPFStatsTestCase: two PFs with four VFs and four vDPA devices each, and two
# remote-managed PFs with four remote-managed VFs each


def vf_pf_pools(vf_product_id="1515", pf_product_id="1528"):
    return (*(pool("8086", pf_product_id, dev_type="type-PF", address=f"0000:81:00.{i}") for i in range(2)),
            *(pool("8086", vf_product_id, count=4, dev_type="type-VF", address=f"vf 0000:81:00.{i}") for i in range(2)),
            *(pool("8086", vf_product_id, count=4, dev_type="vdpa", address=f"vdpa 0000:81:00.{i}") for i in range(2)),
            *(pool("15b3", "a2d6", dev_type="type-PF", address=f"0001:81:00.{i}", remote_managed="false")
              for i in range(2)),
            *(pool("15b3", "101e", count=4, dev_type="type-VF", address=f"vf 0001:81:00.{i}", remote_managed="true")
              for i in range(2)))


VF_PF_CASES = {
    "test_consume_VDPA_requests": ({}, [request(8, {"dev_type": "vdpa"})], ["1515"] * 8),
    "test_consume_VF_requests": ({}, [request(2, {"product_id": "1515"})], ["1515"] * 2),
    "test_consume_PF_requests": ({}, [request(2, {"product_id": "1528", "dev_type": "type-PF"})], ["1528"] * 2),
    "test_consume_VF_and_PF_requests": ({}, [request(2, {"product_id": "1515"}),
                                             request(1, {"product_id": "1528", "dev_type": "type-PF"})],
                                        ["1515", "1515", "1528"]),
    "test_consume_VF_and_PF_same_product_id_failed": ({"pf_product_id": "1515"},
                                                      [request(9, {"product_id": "1515"})], None),
    "test_consume_PF_not_remote_managed": ({}, [request(2, {"product_id": "1528", "dev_type": "type-PF",
                                                            "remote_managed": "false"})], ["1528"] * 2),
    "test_consume_VF_requests_remote_managed": ({}, [request(2, {"remote_managed": "true"})], ["101e"] * 2),
    "test_consume_VF_requests_remote_managed_filtered": ({}, [request(1, {"product_id": "101e",
                                                                          "remote_managed": "false"}),
                                                              request(1, {"product_id": "101e"})], None),
    "test_consume_VF_requests_remote_managed_mix": ({}, [request(1, {"product_id": "101e", "remote_managed": "true"}),
                                                         request(1, {"product_id": "1515",
                                                                     "remote_managed": "false"})], ["101e", "1515"]),
}


@pytest.mark.parametrize("fixture, requests, expected", VF_PF_CASES.values(), ids=VF_PF_CASES.keys())
def test_vf_pf_requests(fixture, requests, expected):
    assert taken(vf_pf_pools(**fixture), tuple(requests)) == expected


# ---------------------------------------------------------------------------------------------
# pci/test_request.py: the [pci] alias config and the flavor's requests

FAKE_ALIAS1 = json.dumps({"name": "QuickAssist", "capability_type": "pci", "product_id": "4443", "vendor_id": "8086",
                          "device_type": "type-PCI", "numa_policy": "legacy", "live_migratable": "true"})
FAKE_ALIAS2 = json.dumps({"name": "IntelNIC", "capability_type": "pci", "product_id": "1111", "vendor_id": "8086",
                          "device_type": "type-PF", "live_migratable": "false"})
QUICK_ASSIST_SPEC = {"capability_type": "pci", "product_id": "4443", "vendor_id": "8086", "dev_type": "type-PCI",
                     "live_migratable": "true"}
INTEL_NIC_SPEC = {"vendor_id": "8086", "product_id": "1111", "dev_type": "type-PF", "capability_type": "pci",
                  "live_migratable": "false"}


def test_get_alias_from_config_valid():
    assert pci.parse_aliases((FAKE_ALIAS1,))["QuickAssist"] == pci.Alias("legacy", (QUICK_ASSIST_SPEC,))


def test_get_alias_from_config_valid_multispec():
    alias = json.dumps({"name": "QuickAssist", "capability_type": "pci", "product_id": "4444", "vendor_id": "8086",
                        "device_type": "type-PCI"})
    expected = pci.Alias("legacy", (QUICK_ASSIST_SPEC, {"capability_type": "pci", "product_id": "4444",
                                                        "vendor_id": "8086", "dev_type": "type-PCI"}))
    assert pci.parse_aliases((FAKE_ALIAS1, alias))["QuickAssist"] == expected


INVALID_ALIASES = {
    "test_get_alias_from_config_invalid_device_type": {"name": "xxx", "device_type": "N"},
    "test_get_alias_from_config_invalid_live_migratable": {"name": "xxx", "live_migratable": "invalid"},
    "test_get_alias_from_config_device_type_vdpa": {"name": "xxx", "device_type": "vdpa"},
    "test_get_alias_from_config_invalid_product_id": {"name": "xxx", "product_id": "g111"},
    "test_get_alias_from_config_invalid_vendor_id": {"name": "xxx", "vendor_id": "0xg111"},
    "test_get_alias_from_config_invalid_capability_type": {"name": "xxx", "capability_type": "usb"},
    "test_get_alias_from_config_invalid_numa_policy": {"name": "xxx", "numa_policy": "derp"},
    "test_get_alias_from_config_invalid_arbitrary_field": {"name": "xxx", "foo": "bar"},
}


@pytest.mark.parametrize("alias", INVALID_ALIASES.values(), ids=INVALID_ALIASES.keys())
def test_get_alias_from_config_invalid(alias):
    with pytest.raises(pci.PciAliasError) as refused:
        pci.parse_aliases((json.dumps(alias),))
    assert refused.value.index == 0


@pytest.mark.parametrize("policy", pci.NUMA_POLICIES)
def test_get_alias_from_config_valid_numa_policy(policy):
    alias = json.dumps({"name": "xxx", "capability_type": "pci", "product_id": "1111", "vendor_id": "8086",
                        "device_type": "type-PCI", "numa_policy": policy})
    assert pci.parse_aliases((alias,))["xxx"].numa_policy == policy


XXX_ALIAS = {"name": "xxx", "capability_type": "pci", "product_id": "1111", "vendor_id": "8086"}
CONFLICTING_ALIASES = {
    "test_get_alias_from_config_conflicting_device_type": (
        dict(XXX_ALIAS, device_type="type-PF"), dict(XXX_ALIAS, device_type="type-PCI"),
        "Device type mismatch for alias 'xxx'"),
    "test_get_alias_from_config_conflicting_numa_policy": (
        dict(XXX_ALIAS, numa_policy="required"), dict(XXX_ALIAS, numa_policy="legacy"),
        "NUMA policy mismatch for alias 'xxx'"),
}


@pytest.mark.parametrize("first, second, reason", CONFLICTING_ALIASES.values(), ids=CONFLICTING_ALIASES.keys())
def test_get_alias_from_config_conflicting(first, second, reason):
    with pytest.raises(pci.PciAliasError) as refused:
        pci.parse_aliases((json.dumps(first), json.dumps(second)))
    assert (refused.value.index, refused.value.description) == (1, reason)


def test_get_alias_from_config_missing_ids():
    aliases = ({"name": "a1", "product_id": "4444"}, {"name": "a2", "vendor_id": "4444"}, {"name": "a3"},
               {"name": "a4", "resource_class": "foo"},  # ignored as PCI in Placement is not enabled
               {"name": "a5", "vendor_id": "4444", "product_id": "4444"})
    with pytest.raises(pci.PciAliasError) as refused:
        pci.parse_aliases(tuple(map(json.dumps, aliases)))
    assert refused.value.description == ("The PCI alias(es) a1,a2,a3,a4 does not have vendor_id and product_id "
                                         "fields set.")


def flavor_request(alias_value: str | None, flavor_policy=None, image_policy=None, ports=()) -> Request:
    extra_specs = {} if alias_value is None else {"pci_passthrough:alias": alias_value}
    if flavor_policy:
        extra_specs["hw:pci_numa_affinity_policy"] = flavor_policy
    image = Image(properties={"hw_pci_numa_affinity_policy": image_policy}) if image_policy else None
    return Request(flavor=Flavor(extra_specs=extra_specs), image=image, ports=tuple(ports))


def summary(requests):
    return [(r.count, r.alias_name, list(r.specs)) for r in requests]


def test_translate_alias_to_requests():
    requests = pci.pci_requests(flavor_request("QuickAssist : 3, IntelNIC: 1"),
                                pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2)))
    assert summary(requests) == [(3, "QuickAssist", [QUICK_ASSIST_SPEC]), (1, "IntelNIC", [INTEL_NIC_SPEC])]


def test_translate_alias_to_requests_invalid():
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(flavor_request("QuickAssistX : 3"), pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2)))
    assert refused.value.field == "request.flavor.extra_specs[pci_passthrough:alias]"


def test_translate_alias_to_requests_affinity_policy():
    # the flavor's policy wins over the aliases' (legacy, and unset = legacy)
    requests = pci.pci_requests(flavor_request("QuickAssist : 3, IntelNIC: 1", flavor_policy=pci.PREFERRED),
                                pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2)))
    assert summary(requests) == [(3, "QuickAssist", [QUICK_ASSIST_SPEC]), (1, "IntelNIC", [INTEL_NIC_SPEC])]
    assert [r.numa_policy for r in requests] == [pci.PREFERRED, pci.PREFERRED]


def test_get_pci_requests_from_flavor():
    requests = pci.pci_requests(flavor_request("QuickAssist:3"), pci.parse_aliases((FAKE_ALIAS1,)))
    assert summary(requests) == [(3, "QuickAssist", [QUICK_ASSIST_SPEC])]


def test_get_pci_requests_from_flavor_multiple():
    requests = pci.pci_requests(flavor_request("QuickAssist:3, IntelNIC: 1"),
                                pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2)))
    assert summary(requests) == [(3, "QuickAssist", [QUICK_ASSIST_SPEC]), (1, "IntelNIC", [INTEL_NIC_SPEC])]


def test_get_pci_requests_from_flavor_including_space():
    alias4 = json.dumps({"name": " Cirrus Logic ", "capability_type": "pci", "product_id": "0ff2",
                         "vendor_id": "10de", "device_type": "type-PCI"})
    requests = pci.pci_requests(flavor_request(" Cirrus Logic : 4, IntelNIC: 3"),
                                pci.parse_aliases((FAKE_ALIAS2, alias4)))
    assert summary(requests) == [
        (4, "Cirrus Logic", [{"vendor_id": "10de", "product_id": "0ff2", "dev_type": "type-PCI",
                              "capability_type": "pci"}]),
        (3, "IntelNIC", [INTEL_NIC_SPEC])]


def test_get_pci_requests_from_flavor_no_extra_spec():
    assert pci.pci_requests(flavor_request(None), pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2))) == ()


def test_get_pci_requests_from_flavor_affinity_policy():
    requests = pci.pci_requests(flavor_request("QuickAssist:3, IntelNIC: 1", image_policy=pci.PREFERRED),
                                pci.parse_aliases((FAKE_ALIAS1, FAKE_ALIAS2)))
    assert [r.numa_policy for r in requests] == [pci.PREFERRED, pci.PREFERRED]


# ---------------------------------------------------------------------------------------------
# scheduler/filters/test_pci_passthrough_filters.py: PciPassthroughFilter.host_passes is
# "no request, or supports(pools, requests)"


def passes(pools, requests) -> bool:
    return pci.supports(pools, requests) if requests else True


def test_pci_passthrough_pass():
    assert passes((pool("8086", "1520"),), (request(1, {"vendor_id": "8086"}),))


def test_pci_passthrough_fail():
    assert not passes((pool("8086", "1520"),), (request(2, {"vendor_id": "8086"}),))


def test_pci_passthrough_no_pci_request():
    assert passes((), ())


def test_pci_passthrough_no_pci_stats():
    assert not passes((), (request(1, {"vendor_id": "8086"}),))


# ---------------------------------------------------------------------------------------------
# scheduler/weights/test_weights_pci.py: fake pools of fake_pool_dict with these counts


def normalized(weights: list[float]) -> list[float]:
    """nova.weights.normalize: to [0, 1]; all equal is all 0."""
    low, high = min(weights), max(weights)
    return [0.0 if high == low else (weight - low) / (high - low) for weight in weights]


def weighed(hosts: dict[str, list[int]], multiplier=1.0) -> list[tuple[str, float]]:
    """Hosts (their pools' free counts) by weight, best first, as HostWeightHandler.get_weighed_objects
    with PCIWeigher. Nova's tests with a PCI request in the spec expect the same weights as without:
    the weigher reads only the free devices."""
    raw = [pci.pci_weight(sum(counts)) for counts in hosts.values()]
    ranked = [(name, multiplier * weight) for name, weight in zip(hosts, normalized(raw))]
    return sorted(ranked, key=lambda host: -host[1])




def test_multiplier_no_pci_empty_hosts():
    assert weighed({"host1": [3, 1], "host2": []})[0] == ("host2", 1.0)


def test_multiplier_no_pci_non_empty_hosts():
    assert weighed({"host1": [2, 2, 2], "host2": [3, 1]})[0] == ("host2", 1.0)


def test_multiplier_with_pci():
    assert weighed({"host1": [4, 1], "host2": [10], "host3": [1, 1, 1, 1]})[0] == ("host3", 1.0)


def test_multiplier_with_many_pci():
    assert [weight for _, weight in weighed({"host1": [500], "host2": [2000]})] == [0.0, 0.0]


def test_multiplier_none():
    hosts = {"host1": [4, 1], "host2": [10], "host3": [1, 1, 1, 1]}
    assert [weight for _, weight in weighed(hosts, 0.0)] == [0.0, 0.0, 0.0]


def test_host_with_agg():
    multiplier = nova_weight_multiplier([{"pci_weight_multiplier": "1.5"}], "pci_weight_multiplier", 0.0)
    assert weighed({"host1": [2, 2, 2], "host2": [3, 1]}, multiplier)[0] == ("host2", 1.5)


# ---------------------------------------------------------------------------------------------
# network/test_neutron.py test_create_resource_requests: one device per SR-IOV port


def test_create_resource_requests():
    ports = (Port("direct", "physnet1"), Port("normal", "physnet1"), Port("normal", ""), Port("macvtap", "physnet1"),
             Port("macvtap", "physnet2"), Port("direct-physical", "physnet3"), Port("direct", "physnet4", trusted=True),
             Port("vdpa", "physnet1"), Port("remote-managed", "physnet1"))
    requests = pci.pci_requests(flavor_request(None, ports=ports), {})
    assert len(requests) == 7
    assert requests[3].specs[0]["dev_type"] == "type-PF"
    assert requests[5].specs[0]["dev_type"] == "vdpa"
    # only the trusted VF has the trusted tag; only the remote-managed port remote_managed True
    assert [spec.get("trusted") for r in requests for spec in r.specs] == [None] * 4 + ["True"] + [None] * 2
    assert [r.specs[0]["remote_managed"] for r in requests] == ["False"] * 6 + ["True"]
    assert [r.requester for r in requests] == ["port 0", "port 3", "port 4", "port 5", "port 6", "port 7", "port 8"]
    assert all(r.count == 1 and r.numa_policy == pci.LEGACY for r in requests)


def test_port_numa_policy_wins_over_flavor_policy():
    # "port NUMA policies take precedence over image and flavor policies"
    ports = (Port("direct", "physnet1", numa_affinity_policy=pci.REQUIRED), Port("direct", "physnet1"))
    requests = pci.pci_requests(flavor_request(None, flavor_policy=pci.SOCKET, ports=ports), {})
    assert [r.numa_policy for r in requests] == [pci.REQUIRED, pci.SOCKET]


# ---------------------------------------------------------------------------------------------
# virt/test_hardware.py PCINUMAAffinityPolicyTest: hardware.get_pci_numa_policy_constraint

GPU_ALIAS = json.dumps({"name": "gpu", "vendor_id": "10de", "product_id": "1eb8"})


@pytest.mark.parametrize("policy", pci.NUMA_POLICIES)
def test_get_pci_numa_policy_flavor(policy):
    (gpu,) = pci.pci_requests(flavor_request("gpu:1", flavor_policy=policy), pci.parse_aliases((GPU_ALIAS,)))
    assert gpu.numa_policy == policy


@pytest.mark.parametrize("policy", pci.NUMA_POLICIES)
def test_get_pci_numa_policy_image(policy):
    (gpu,) = pci.pci_requests(flavor_request("gpu:1", image_policy=policy), pci.parse_aliases((GPU_ALIAS,)))
    assert gpu.numa_policy == policy


@pytest.mark.parametrize("policy", pci.NUMA_POLICIES)
def test_get_pci_numa_policy_no_conflict(policy):
    (gpu,) = pci.pci_requests(flavor_request("gpu:1", policy, policy), pci.parse_aliases((GPU_ALIAS,)))
    assert gpu.numa_policy == policy


def test_get_pci_numa_policy_conflict():  # ImagePCINUMAPolicyForbidden
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(flavor_request("gpu:1", pci.LEGACY, pci.REQUIRED), pci.parse_aliases((GPU_ALIAS,)))
    assert refused.value.field == "request.image.properties[hw_pci_numa_affinity_policy]"


def test_get_pci_numa_policy_invalid():  # InvalidPCINUMAAffinity; the image property is refused too
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(flavor_request("gpu:1", flavor_policy="fake"), pci.parse_aliases((GPU_ALIAS,)))
    assert refused.value.field == "request.flavor.extra_specs[hw:pci_numa_affinity_policy]"
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(flavor_request("gpu:1", image_policy="fake"), pci.parse_aliases((GPU_ALIAS,)))
    assert refused.value.field == "request.image.properties[hw_pci_numa_affinity_policy]"


# ---------------------------------------------------------------------------------------------
# The profile refuses an alias list Nova refuses, naming the entry


def test_profile_refuses_an_alias_nova_refuses():
    entries = [GPU_ALIAS, json.dumps({"name": "gpu", "vendor_id": "10de", "product_id": "1eb9",
                                      "numa_policy": "required"})]
    with pytest.raises(ConfigError) as refused:
        Profile.from_options("nfv", {"pci_alias": entries})
    assert refused.value.key == "profiles.nfv.pci_alias[1]"
    assert "NUMA policy mismatch for alias 'gpu'" in refused.value.description
    assert Profile.from_options("nfv", {"pci_alias": entries[:1]}).pci_alias == (GPU_ALIAS,)


def test_live_migratable_is_compared_case_sensitively():
    # _filter_pools_for_live_migratable_devices compares "true" exactly, after the spec match
    # (which ignores case) let a "True" pool through
    asked = (request(1, {"vendor_id": "15b4", "live_migratable": "true"}),)
    assert not pci.supports((pool("15b4", "102e", dev_type="type-VF", live_migratable="True"),), asked)
    assert pci.supports((pool("15b4", "102e", dev_type="type-VF", live_migratable="true"),), asked)


def test_config_file_refuses_an_alias_nova_refuses():
    toml = '[profiles.nfv]\npci_alias = [\'{"name": "gpu", "vendor_id": "10de"}\']\n'
    with pytest.raises(ConfigError) as refused:
        config_from_bytes(toml.encode(), "scheduler.toml")
    assert (refused.value.source, refused.value.key) == ("scheduler.toml", "profiles.nfv.pci_alias[0]")
    assert "does not have vendor_id and product_id" in refused.value.description
