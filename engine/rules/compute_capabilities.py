"""Nova's ComputeCapabilitiesFilter: the flavor's `capabilities:` and unscoped extra specs
against the host's HostState attributes and stats, with Nova's extra-spec operators.

Scoping as Nova: `capabilities:a:b:c` reads attribute (or, when the attribute is None, stats
key) `a`, then walks `b`, `c` through dicts, parsing JSON strings on the way; an unscoped key
is checked only on hosts that have that attribute or stats key; other scopes are ignored. A
missing path fails; otherwise extra_specs_ops.match(str(value), requirement) decides.

Where a spec's value comes from decides how it is evaluated, never by a Python loop over hosts:
  hypervisor_type, hypervisor_version, supported_instances, stats, and the stats fallback:
      per distinct host profile (columns.dicts["host_profiles"]), folded into one table
  free_ram_mb, vcpus_used, num_instances ... (numbers per host, from the inventories):
      in the scan, a numpy comparison for numeric operators, else per distinct value (np.unique)
  host_ip: per distinct host_ip string among the scanned hosts
supported_instances reads as Nova's HostState holds it: a list of [arch, hv_type, vm_mode] lists in
canonical names (engine.model.Host canonicalises them as Nova's HVSpec does).
HostState attributes placecheck does not carry (cpu_info, numa_topology, pci_stats, ...) read
as None, as in a HostState whose compute node has not reported them, so Nova's stats fallback
applies: a host can carry its cpu_info as stats["cpu_info"] (a JSON string).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import InvalidField
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.extra_specs_ops import match, requirement_problem
from placecheck_engine.verdict import Rejection

CAPABILITY_NOT_MET = "CAPABILITY_NOT_MET"
CAPABILITY_MISSING = "CAPABILITY_MISSING"
CAPABILITY_NOT_COMPARABLE = "CAPABILITY_NOT_COMPARABLE"  # a numeric operator on a non-number

SCOPE = "capabilities"
MAXPHYSADDR_SPEC = "hw:maxphysaddr_bits"
MAXPHYSADDR_CAPABILITY = "capabilities:cpu_info:maxphysaddr:bits"

# HostState attributes read from the host profile.
PROFILE_ATTRIBUTES = ("hypervisor_type", "hypervisor_version", "supported_instances", "stats")
# HostState attributes derived per host from an inventory (Nova's _update_from_compute_node):
# attribute -> (resource class, "total" | "used" | "free", unit factor).
INVENTORY_ATTRIBUTES = {
    "total_usable_ram_mb": ("MEMORY_MB", "total", 1),
    "free_ram_mb": ("MEMORY_MB", "free", 1),
    "total_usable_disk_gb": ("DISK_GB", "total", 1),
    "free_disk_mb": ("DISK_GB", "free", 1024),
    "disk_mb_used": ("DISK_GB", "used", 1024),
    "vcpus_total": ("VCPU", "total", 1),
    "vcpus_used": ("VCPU", "used", 1),
}
# The allocation ratio of a class; None on a host without that inventory.
RATIO_ATTRIBUTES = {"ram_allocation_ratio": "MEMORY_MB", "cpu_allocation_ratio": "VCPU",
                    "disk_allocation_ratio": "DISK_GB"}
COUNT_ATTRIBUTES = ("num_instances", "num_io_ops", "failed_builds")  # host columns of that name
HOST_IP_ATTRIBUTE = "host_ip"
# A capability on these is a predicate per host name: refused rather than looped over hosts.
HOST_NAME_ATTRIBUTES = ("host", "nodename", "hypervisor_hostname")
NOT_CARRIED_ATTRIBUTES = ("uuid", "cell_uuid", "cpu_info", "numa_topology", "pci_stats", "limits",
                          "metrics", "aggregates", "instances", "updated", "allocation_candidates",
                          "service")
ROW_ATTRIBUTES = frozenset(INVENTORY_ATTRIBUTES) | frozenset(RATIO_ATTRIBUTES) | frozenset(COUNT_ATTRIBUTES) \
    | {HOST_IP_ATTRIBUTE}
HOST_STATE_ATTRIBUTES = frozenset(PROFILE_ATTRIBUTES) | ROW_ATTRIBUTES | frozenset(HOST_NAME_ATTRIBUTES) \
    | frozenset(NOT_CARRIED_ATTRIBUTES)

# Nova's numeric operators as numpy comparisons: float(str(value)) op float(operand) is the
# same comparison on the float64 of an int64 or float64 column.
NUMERIC_COMPARISONS = {"=": np.greater_equal, ">=": np.greater_equal, "<=": np.less_equal,
                       "==": np.equal, "!=": np.not_equal}


@dataclass(frozen=True)
class CapabilitySpec:
    key: str
    requirement: str
    path: tuple[str, ...]  # attribute or stats key, then keys inside it
    unscoped: bool  # checked only where the host has the attribute or stats key

    @property
    def attribute(self) -> str:
        return self.path[0]


def capability_specs(request) -> list[CapabilitySpec]:
    """The flavor's extra specs this filter checks, in the flavor's order."""
    specs = dict(request.flavor.extra_specs)
    bits = specs.pop(MAXPHYSADDR_SPEC, None)
    if bits is not None:
        specs[MAXPHYSADDR_CAPABILITY] = ">= " + bits
    checked = []
    for key, requirement in specs.items():
        scope = key.split(":")
        if len(scope) > 1 and scope[0] != SCOPE:
            continue
        path = tuple(scope) if len(scope) == 1 else tuple(scope[1:])
        if path[0] in HOST_NAME_ATTRIBUTES:
            raise InvalidField(f"request.flavor.extra_specs[{key}]",
                               "placecheck does not evaluate capabilities of the host name")
        if problem := requirement_problem(requirement):
            raise InvalidField(f"request.flavor.extra_specs[{key}]", problem)
        checked.append(CapabilitySpec(key, requirement, path, unscoped=len(scope) == 1))
    return checked


def walk(value, keys):
    """Nova's _get_capabilities past the HostState: JSON strings are parsed, dicts indexed,
    other values' attributes read; None when the path is missing."""
    for key in keys:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if isinstance(value, dict):
            value = value.get(key)
        else:
            # Nova then falls back to value.stats, which only a HostState has.
            value = getattr(value, key, None)
        if value is None:
            return None
    return value


def failure(spec: CapabilitySpec, first) -> tuple[str | None, object]:
    """(reason or None when it passes, the capability value) for the value of spec.attribute."""
    capability = walk(first, spec.path[1:]) if first is not None else None
    if capability is None:
        return CAPABILITY_MISSING, None
    try:
        return (None if match(str(capability), spec.requirement) else CAPABILITY_NOT_MET), capability
    except ValueError:
        return CAPABILITY_NOT_COMPARABLE, capability


def profile_failure(spec: CapabilitySpec, host_profile: dict, attribute_value=None) -> tuple[str | None, object]:
    """The spec on a host whose row attribute (if any) is `attribute_value`: a None attribute
    falls back to the stats key of that name, and an unscoped key neither an attribute nor in
    stats is ignored."""
    stats = host_profile["stats"]
    if spec.unscoped and spec.attribute not in HOST_STATE_ATTRIBUTES and spec.attribute not in stats:
        return None, None
    if attribute_value is None and spec.attribute in PROFILE_ATTRIBUTES:
        attribute_value = host_profile[spec.attribute]
        if attribute_value == "":  # hypervisor_type never reported: the API's strings have no None
            attribute_value = None
    return failure(spec, stats.get(spec.attribute) if attribute_value is None else attribute_value)


# --- per-host attribute values ------------------------------------------------------------

def canonical_ip(host_ip: str) -> str | None:
    """HostState.host_ip is a netaddr.IPAddress (None when unset): its canonical string."""
    if not host_ip:
        return None
    try:
        return str(ipaddress.ip_address(host_ip))
    except ValueError:
        return host_ip


def model_attribute(host, name: str):
    """A per-host attribute (ROW_ATTRIBUTES) of an engine.model.Host."""
    if name in INVENTORY_ATTRIBUTES:
        rc, part, factor = INVENTORY_ATTRIBUTES[name]
        inventory = host.resources.get(rc)
        if inventory is None:
            return 0
        return factor * {"total": inventory.total, "used": inventory.used,
                         "free": inventory.total - inventory.used}[part]
    if name in RATIO_ATTRIBUTES:
        inventory = host.resources.get(RATIO_ATTRIBUTES[name])
        return None if inventory is None else float(inventory.allocation_ratio)
    if name == HOST_IP_ATTRIBUTE:
        return canonical_ip(host.host_ip)
    return getattr(host, name)


def column_values(columns, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric per-host attribute over rows [start, stop): values, and where they are None."""
    def resource(array: str, rc: str) -> np.ndarray | None:
        index = columns.resource_class_index(rc)
        return None if index is None else columns.arrays[array][index, start:stop]

    if name in INVENTORY_ATTRIBUTES:
        rc, part, factor = INVENTORY_ATTRIBUTES[name]
        total, used = resource("rc_total", rc), resource("rc_used", rc)
        if total is None:
            return np.zeros(stop - start, dtype=np.int64), None
        return factor * {"total": total, "used": used, "free": total - used}[part], None
    if name in RATIO_ATTRIBUTES:
        ratio = resource("rc_ratio", RATIO_ATTRIBUTES[name])
        if ratio is None:
            return np.zeros(stop - start), np.ones(stop - start, dtype=bool)
        return ratio, resource("rc_present", RATIO_ATTRIBUTES[name]) == 0
    return columns.arrays[name][start:stop].astype(np.int64), None


def python_value(value):
    return float(value) if isinstance(value, np.floating) else int(value)


def row_attribute(columns, name: str, row: int):
    if name == HOST_IP_ATTRIBUTE:
        return canonical_ip(columns.dicts["host_ips"][int(columns.arrays["host_ip_id"][row])])
    values, none = column_values(columns, name, row, row + 1)
    return None if none is not None and none[0] else python_value(values[0])


# --- the rule -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RowSpec:
    """A spec on a per-host attribute, decided in the scan."""
    spec: CapabilitySpec
    refused_by_profile: np.ndarray  # uint8 per host profile: the verdict where the attribute is None


@dataclass(frozen=True, eq=False)
class CapabilityParams:
    specs: tuple[CapabilitySpec, ...]
    refused_by_profile: np.ndarray  # uint8 per host profile, every spec on profile attributes
    row_specs: tuple[RowSpec, ...]


def numeric_comparison(spec: CapabilitySpec):
    """(numpy comparison, operand) when the spec is one numeric operator on the attribute itself."""
    words = spec.requirement.split()
    if len(spec.path) != 1 or len(words) < 2 or words[0] not in NUMERIC_COMPARISONS:
        return None
    try:
        return NUMERIC_COMPARISONS[words[0]], float(words[1])
    except ValueError:
        return None


def refused_rows(row_spec: RowSpec, columns, start: int, stop: int, profile_ids: np.ndarray) -> np.ndarray:
    """bool over [start, stop): where the per-host spec fails."""
    spec = row_spec.spec
    if spec.attribute == HOST_IP_ATTRIBUTE:
        ip_ids = columns.arrays["host_ip_id"][start:stop]
        distinct, inverse = np.unique(ip_ids, return_inverse=True)
        values = [canonical_ip(columns.dicts["host_ips"][ip_id]) for ip_id in distinct.tolist()]
        none = np.array([value is None for value in values], dtype=bool)[inverse]
        refused = np.array([failure(spec, value)[0] is not None for value in values], dtype=bool)[inverse]
    else:
        values, none = column_values(columns, spec.attribute, start, stop)
        comparison = numeric_comparison(spec)
        if comparison is not None:
            compare, operand = comparison
            refused = ~compare(values.astype(np.float64), operand)
        else:
            distinct, inverse = np.unique(values, return_inverse=True)
            refused = np.array([failure(spec, python_value(value))[0] is not None for value in distinct],
                               dtype=bool)[inverse.reshape(-1)]
    if none is None:
        return refused
    return np.where(none, row_spec.refused_by_profile[profile_ids].astype(bool), refused)


class ComputeCapabilitiesFilter(Rule):
    name = "ComputeCapabilitiesFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        specs = capability_specs(request)
        if not specs:
            return [Active(self, self.name, None)]
        # Flavors repeat: the tables are decided once per flavor's specs and generation.
        return [Active(self, self.name, columns.memo(self.name, tuple(specs), lambda: self._params(specs, columns)))]

    @staticmethod
    def _params(specs: list[CapabilitySpec], columns) -> CapabilityParams | None:
        host_profiles = columns.dicts["host_profiles"]

        def refused_by_profile(checked) -> np.ndarray:
            return np.array([any(profile_failure(spec, host_profile)[0] is not None for spec in checked)
                             for host_profile in host_profiles], dtype=np.uint8)

        row_specs = tuple(RowSpec(spec, refused_by_profile([spec]))
                          for spec in specs if spec.attribute in ROW_ATTRIBUTES)
        profile_refusals = refused_by_profile([spec for spec in specs if spec.attribute not in ROW_ATTRIBUTES])
        if not row_specs and not profile_refusals.any():
            return None
        return CapabilityParams(tuple(specs), profile_refusals, row_specs)

    def kernel(self, active, columns):
        params: CapabilityParams = active.params
        if params.row_specs:  # those attributes are compared per row, in scan
            return None
        return _fastfilters.RefusedValuesKernel(columns.arrays["host_profile_id"], params.refused_by_profile)

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        params: CapabilityParams | None = active.params
        if params is None:
            return 0
        profile_ids = columns.arrays["host_profile_id"]
        if not params.row_specs:
            return self.kernel(active, columns).scan(fail_bits, bit, start, stop, placed)
        ids = profile_ids[start:stop]
        refused = params.refused_by_profile[ids].astype(bool)
        for row_spec in params.row_specs:
            refused |= refused_rows(row_spec, columns, start, stop, ids)
        fail_bits[start:stop] |= refused.astype(np.uint64) << np.uint64(bit)
        return int(refused.sum())

    def explain(self, active, columns, row, placed) -> Rejection:
        host_profile = columns.dicts["host_profiles"][int(columns.arrays["host_profile_id"][row])]
        for spec in active.params.specs:
            value = row_attribute(columns, spec.attribute, row) if spec.attribute in ROW_ATTRIBUTES else None
            reason, capability = profile_failure(spec, host_profile, value)
            if reason is not None:
                return Rejection(active.name, reason, describe(spec, reason, capability))
        raise AssertionError(f"row {row} passes every capability spec")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        host_profile = {"hypervisor_type": host.hypervisor_type, "hypervisor_version": host.hypervisor_version,
                        "supported_instances": [list(entry) for entry in host.supported_instances],
                        "stats": dict(host.stats)}
        return all(profile_failure(spec, host_profile, model_attribute(host, spec.attribute)
                                   if spec.attribute in ROW_ATTRIBUTES else None)[0] is None
                   for spec in capability_specs(request))


def describe(spec: CapabilitySpec, reason: str, capability) -> str:
    wanted = f"extra spec {spec.key} {spec.requirement!r}"
    if reason == CAPABILITY_MISSING:
        return f"{wanted} not met: the host has no {':'.join(spec.path)}"
    if reason == CAPABILITY_NOT_COMPARABLE:
        return f"{wanted} not met: the host has {str(capability)!r}, not comparable as a number"
    return f"{wanted} not met: the host has {str(capability)!r}"
