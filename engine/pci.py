"""PCI passthrough as Nova 34 decides it: the [pci] alias config, a boot's PCI requests, and
whether a host's device pools can meet them.

A plain-Python port of nova/pci/request.py (get_alias_from_config, get_pci_requests_from_flavor),
the SR-IOV part of nova/network/neutron.py create_resource_requests, hardware.
get_pci_numa_policy_constraint and nova/pci/stats.py PciDeviceStats (support_requests and the
pool filters it runs), with PCI in Placement off (Nova's default): no request carries a Placement
allocation, so any matching pool may serve it. PciPassthroughFilter asks `supports` without NUMA
cells; NUMATopologyFilter asks it with the host cells a guest would take.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

from placecheck_engine import nova_fields as nf
from placecheck_engine.image_meta import IMAGE_PROPERTIES_PATH, image_meta_props
from placecheck_engine.model import InvalidField, PciPool, Request

# Reason code for explanations: a PCI request the host's free devices cannot meet.
PCI_DEVICES_UNAVAILABLE = "PCI_DEVICES_UNAVAILABLE"

REQUIRED, LEGACY, PREFERRED, SOCKET = "required", "legacy", "preferred", "socket"
NUMA_POLICIES = (REQUIRED, LEGACY, PREFERRED, SOCKET)  # PCINUMAAffinityPolicy.ALL

TYPE_PCI, TYPE_PF, TYPE_VF, TYPE_VDPA = "type-PCI", "type-PF", "type-VF", "vdpa"
# An alias may not ask for vDPA devices (only a vdpa port can).
ALIAS_DEVICE_TYPES = (TYPE_PCI, TYPE_PF, TYPE_VF)

ALIAS_EXTRA_SPEC = "pci_passthrough:alias"
POLICY_EXTRA_SPEC = "hw:pci_numa_affinity_policy"
POLICY_IMAGE_PROPERTY = "hw_pci_numa_affinity_policy"
_PCI_ID = re.compile(r"^([\da-fA-F]{4})$")  # PCI_VENDOR_PATTERN, searched as jsonschema does

# vnic_types whose port takes a PCI device (VNIC_TYPES_SRIOV), the device type some ask for, and
# the others Neutron knows. Accelerator ports need a Cyborg device profile placecheck cannot see.
SRIOV_VNIC_TYPES = ("direct", "macvtap", "direct-physical", "virtio-forwarder", "vdpa", "remote-managed")
_DEVICE_TYPE_FOR_VNIC_TYPE = {"direct-physical": TYPE_PF, "vdpa": TYPE_VDPA}
ACCELERATOR_VNIC_TYPES = ("accelerator-direct", "accelerator-direct-physical")
OTHER_VNIC_TYPES = ("normal", "baremetal", "smart-nic")

# Spec keys Placement matches (PCI in Placement); the pool filters ignore them.
_IGNORED_SPEC_KEYS = frozenset(("resource_class", "traits", "rp_uuids"))
_FALSE_STRINGS = frozenset(("0", "f", "false", "off", "n", "no"))
# PCIWeigher: free devices beyond this weigh alike (only scarcity matters).
MAX_DEVS = 100


class PciAliasError(ValueError):
    """A [pci] alias list Nova refuses (PciInvalidAlias); `index` is the entry at fault."""

    def __init__(self, index: int, description: str):
        super().__init__(f"pci_alias[{index}]: {description}")
        self.index = index
        self.description = description


@dataclass(frozen=True)
class Alias:
    numa_policy: str
    specs: tuple[dict, ...]  # one device spec per entry of that name: any of them will do


@dataclass(frozen=True)
class PciRequest:
    """Nova's InstancePCIRequest: `count` devices, each matching one of `specs`."""
    count: int
    specs: tuple[dict, ...]
    alias_name: str  # "" for a port's request
    numa_policy: str
    requester: str  # "alias gpu" / "port 0", for explanations


# ---------------------------------------------------------------------------------------------
# The [pci] alias config


def parse_aliases(entries: tuple[str, ...]) -> dict[str, Alias]:
    """get_alias_from_config: JSON objects by name; entries of one name are alternatives and
    must agree on NUMA policy and device type. PciAliasError names the first entry Nova refuses."""
    policies: dict[str, str] = {}
    specs: dict[str, list[dict]] = {}
    parsed: list[tuple[int, str, dict]] = []  # (entry, name, spec)
    for index, entry in enumerate(entries):
        try:
            spec = json.loads(entry)
        except ValueError as error:
            raise PciAliasError(index, f"not JSON: {error}") from None
        _check_alias_schema(index, spec)
        spec = dict(spec)
        name = spec.pop("name").strip()
        numa_policy = spec.pop("numa_policy", None) or LEGACY
        device_type = spec.pop("device_type", None)
        if device_type:
            spec["dev_type"] = device_type
        if "live_migratable" in spec:
            spec["live_migratable"] = "true" if _strict_boolean(index, spec["live_migratable"]) else "false"
        parsed.append((index, name, spec))
        if name not in specs:
            policies[name], specs[name] = numa_policy, [spec]
            continue
        if policies[name] != numa_policy:
            raise PciAliasError(index, f"NUMA policy mismatch for alias '{name}'")
        # Nova compares the device types by key: an entry of a repeated name without one fails.
        if "dev_type" not in specs[name][0] or "dev_type" not in spec:
            raise PciAliasError(index, f"alias '{name}' is repeated, so each entry needs a device_type")
        if specs[name][0]["dev_type"] != spec["dev_type"]:
            raise PciAliasError(index, f"Device type mismatch for alias '{name}'")
        specs[name].append(spec)
    # Without PCI in Placement a device is only known by its PCI ids.
    without_ids = [(index, name) for index, name, spec in parsed if "vendor_id" not in spec or "product_id" not in spec]
    if without_ids:
        names = ",".join(sorted({name for _, name in without_ids}))
        raise PciAliasError(without_ids[0][0], f"The PCI alias(es) {names} does not have vendor_id and product_id "
                                               "fields set.")
    return {name: Alias(policies[name], tuple(specs[name])) for name in specs}


def _check_alias_schema(index: int, spec) -> None:
    """Nova's _ALIAS_SCHEMA."""
    if not isinstance(spec, dict):
        raise PciAliasError(index, f"{spec!r} is not of type 'object'")
    if "name" not in spec:
        raise PciAliasError(index, "'name' is a required property")
    known = {"name", "capability_type", "product_id", "vendor_id", "device_type", "numa_policy",
             "resource_class", "traits", "live_migratable"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise PciAliasError(index, f"Additional properties are not allowed ({', '.join(map(repr, unknown))})")
    for key, value in spec.items():
        if not isinstance(value, str):
            raise PciAliasError(index, f"{key}: {value!r} is not of type 'string'")
    if not 1 <= len(spec["name"]) <= 256:
        raise PciAliasError(index, "name: must be 1 to 256 characters long")
    for key, choices in (("capability_type", ("pci",)), ("device_type", ALIAS_DEVICE_TYPES),
                         ("numa_policy", NUMA_POLICIES)):
        if key in spec and spec[key] not in choices:
            raise PciAliasError(index, f"{key}: {spec[key]!r} is not one of {list(choices)}")
    for key in ("product_id", "vendor_id"):
        if key in spec and not _PCI_ID.search(spec[key]):
            raise PciAliasError(index, f"{key}: {spec[key]!r} does not match '{_PCI_ID.pattern}'")


def _strict_boolean(index: int, value: str) -> bool:
    """oslo's bool_from_string(strict=True)."""
    lowered = value.strip().lower()
    if lowered in nf.TRUE_STRINGS or lowered in _FALSE_STRINGS:
        return lowered in nf.TRUE_STRINGS
    raise PciAliasError(index, f"live_migratable: unrecognised boolean {value!r}")


def _bool_from_string(value) -> bool:
    """oslo's bool_from_string (lenient): anything not a true string, None included, is False."""
    if isinstance(value, bool):
        return value
    return nf.flexible_boolean(str(value))


# ---------------------------------------------------------------------------------------------
# A boot's PCI requests


def pci_requests(request: Request, aliases: dict[str, Alias]) -> tuple[PciRequest, ...]:
    """The flavor's alias requests, then one request per SR-IOV port, as Nova's API builds them
    (with the PCI NUMA affinity policy of flavor or image); InvalidField where the API refuses."""
    policy = _flavor_image_policy(request)
    return _alias_requests(request.flavor.extra_specs, aliases, policy) + _port_requests(request, policy)


def _flavor_image_policy(request: Request) -> str | None:
    """hardware.get_pci_numa_policy_constraint."""
    flavor_policy = request.flavor.extra_specs.get(POLICY_EXTRA_SPEC)
    image_policy = image_meta_props(request.image.properties).get(POLICY_IMAGE_PROPERTY) if request.image else None
    if flavor_policy and image_policy and flavor_policy != image_policy:  # ImagePCINUMAPolicyForbidden
        raise InvalidField(f"{IMAGE_PROPERTIES_PATH}[{POLICY_IMAGE_PROPERTY}]",
                           f"{image_policy!r} may not override the flavor's {POLICY_EXTRA_SPEC} {flavor_policy!r}")
    policy = flavor_policy or image_policy
    if policy and policy not in NUMA_POLICIES:  # InvalidPCINUMAAffinity
        raise InvalidField(f"request.flavor.extra_specs[{POLICY_EXTRA_SPEC}]",
                           f"invalid PCI NUMA affinity {policy!r} (one of {', '.join(NUMA_POLICIES)})")
    return policy


def _alias_requests(extra_specs: dict[str, str], aliases: dict[str, Alias],
                    policy: str | None) -> tuple[PciRequest, ...]:
    if ALIAS_EXTRA_SPEC not in extra_specs:
        return ()
    value = extra_specs[ALIAS_EXTRA_SPEC]
    path = f"request.flavor.extra_specs[{ALIAS_EXTRA_SPEC}]"
    # Parsed as the boot does (the flavor API checks the format only from microversion 2.86);
    # a value it cannot parse fails the boot.
    items = [item.split(":") for item in value.split(",")]
    if any(len(item) != 2 for item in items):
        raise InvalidField(path, f"{value!r} is not a comma-separated list of alias:count")
    requests = []
    for name, count in items:
        name = name.strip()
        if name not in aliases:  # PciRequestAliasNotDefined
            raise InvalidField(path, f"PCI alias {name} is not defined")
        try:
            count = int(count)
        except ValueError:
            raise InvalidField(path, f"the count of alias {name}, {count.strip()!r}, is not a number") from None
        alias = aliases[name]
        requests.append(PciRequest(count=count, specs=alias.specs, alias_name=name,
                                   numa_policy=policy or alias.numa_policy, requester=f"alias {name}"))
    return tuple(requests)


def _port_requests(request: Request, policy: str | None) -> tuple[PciRequest, ...]:
    """create_resource_requests: one device per SR-IOV port, on the port's physical network."""
    requests = []
    for index, port in enumerate(request.ports):
        path = f"request.ports[{index}]"
        if port.vnic_type in ACCELERATOR_VNIC_TYPES:  # DeviceProfileError without one
            raise InvalidField(f"{path}.vnic_type", f"{port.vnic_type} needs a Cyborg device profile, "
                                                    "which placecheck does not take")
        if port.vnic_type not in SRIOV_VNIC_TYPES + OTHER_VNIC_TYPES:
            raise InvalidField(f"{path}.vnic_type", f"unknown vnic_type {port.vnic_type!r}")
        if port.numa_affinity_policy and port.numa_affinity_policy not in NUMA_POLICIES:
            raise InvalidField(f"{path}.numa_affinity_policy",
                               f"invalid {port.numa_affinity_policy!r} (one of {', '.join(NUMA_POLICIES)})")
        if port.vnic_type not in SRIOV_VNIC_TYPES:
            continue
        # A network without a physical network (tunnelled) asks for devices without the tag.
        spec = {"physical_network": port.physical_network or None,
                "remote_managed": str(port.vnic_type == "remote-managed")}
        if port.vnic_type in _DEVICE_TYPE_FOR_VNIC_TYPE:
            spec["dev_type"] = _DEVICE_TYPE_FOR_VNIC_TYPE[port.vnic_type]
        if port.trusted is not None:
            spec["trusted"] = str(port.trusted)
        # The port's policy wins over the flavor's and image's; none at all is legacy.
        requests.append(PciRequest(count=1, specs=(spec,), alias_name="",
                                   numa_policy=port.numa_affinity_policy or policy or LEGACY,
                                   requester=f"port {index}"))
    return tuple(requests)


# ---------------------------------------------------------------------------------------------
# A host's pools, as PciDeviceStats holds them


def pools_as_nova_sees(pools: tuple[PciPool, ...]) -> tuple[dict, ...]:
    """The pools as PciDeviceStats' dicts (PciDevicePool.to_dict, the tags flattened in), in its
    order: sorted by how many keys a pool has, stably. The compute adds remote_managed "false"
    to network-capable pools without it. Values keep their case: matching ignores it."""
    return tuple(_nova_pool(pool) for pool in _nova_order(pools))


def _nova_order(pools: tuple[PciPool, ...]) -> list[PciPool]:
    return [pools[index] for index in _nova_indices(pools)]


def _nova_indices(pools: tuple[PciPool, ...]) -> list[int]:
    return sorted(range(len(pools)), key=lambda index: len(_nova_pool(pools[index])))


def _nova_pool(pool: PciPool) -> dict:
    nova_pool = dict(pool.tags)
    # The model's own fields win over a tag of the same name.
    nova_pool.update(product_id=pool.product_id, vendor_id=pool.vendor_id, numa_node=pool.numa_node,
                     count=pool.count, dev_type=pool.dev_type)
    if pool.dev_type in (TYPE_VF, TYPE_PF, TYPE_VDPA) and nova_pool.get("remote_managed") is None:
        nova_pool["remote_managed"] = "false"
    return nova_pool


def _spec_matches(pool: dict, specs) -> bool:
    """utils.pci_device_prop_match: every key of one spec equal to the pool's, strings compared
    case-insensitively (a key the pool lacks reads as None)."""
    def lowered(value):
        return value.lower() if isinstance(value, str) else value

    return any(all(lowered(pool.get(key)) == lowered(value) for key, value in spec.items()) for spec in specs)


# ---------------------------------------------------------------------------------------------
# support_requests


def supports(pools: tuple[PciPool, ...], requests: tuple[PciRequest, ...], numa_cells=None,
             host_cells=()) -> bool:
    """PciDeviceStats.support_requests: the requests, taken one after the other from the pools,
    can all be met. `numa_cells` (anything with the `id` of a host cell) are the host cells the
    guest takes, None to ignore NUMA; `host_cells` are the host's cells (the socket policy)."""
    return unmet_request(pools, requests, numa_cells, host_cells) is None


def unmet_request(pools: tuple[PciPool, ...], requests: tuple[PciRequest, ...], numa_cells=None,
                  host_cells=()) -> tuple[PciRequest, int] | None:
    """The first request the pools cannot meet, with how many devices they had free for it
    after the requests before it took theirs; None when all are met."""
    stats = _Stats(pools)
    for request in requests:
        if not stats.apply(request, numa_cells, host_cells):
            return request, sum(pool["count"] for pool in stats.usable(request, numa_cells, host_cells))
    return None


def apply_requests(pools: tuple[PciPool, ...], requests: tuple[PciRequest, ...], numa_cells=None,
                   host_cells=()) -> tuple[PciPool, ...] | None:
    """PciDeviceStats.apply_requests: the pools once the requests took their devices (a pool
    emptied is gone, as in Nova), in the host's order; None when a request cannot be met."""
    stats = _Stats(pools)
    for request in requests:
        if not stats.apply(request, numa_cells, host_cells):
            return None
    left = {stats.origin[id(pool)]: pool["count"] for pool in stats.pools}
    return tuple(dataclasses.replace(pool, count=left[index]) for index, pool in enumerate(pools) if index in left)


def pci_weight(free_devices: int) -> float:
    """PCIWeigher._weigh_object of a host with this many free devices: fewer weigh more. Nova
    weighs every host so, whether or not the request asks for devices: PCI guests stack on the
    hosts with fewest devices, the others avoid hosts with many."""
    return float(MAX_DEVS - min(free_devices, MAX_DEVS - 1))


def describe_unmet(request: PciRequest, free: int) -> str:
    """"alias gpu needs 2 devices (vendor 10de product 1eb8, type-PCI); the host has 1 free"."""
    wanted = " or ".join(_describe_spec(spec) for spec in request.specs)
    noun = "device" if request.count == 1 else "devices"
    return f"{request.requester} needs {request.count} {noun} ({wanted}); the host has {free} free"


def _describe_spec(spec: dict) -> str:
    parts = []
    if "vendor_id" in spec or "product_id" in spec:
        parts.append(f"vendor {spec.get('vendor_id', 'any')} product {spec.get('product_id', 'any')}")
    if spec.get("physical_network", "") != "":
        parts.append(f"physical_network {spec['physical_network'] or 'none'}")
    if "dev_type" in spec:
        parts.append(spec["dev_type"])
    if _bool_from_string(spec.get("remote_managed")):
        parts.append("remote-managed")
    if "trusted" in spec:
        parts.append(f"trusted {spec['trusted'].lower()}")
    return ", ".join(parts) or "any device"


class _Stats:
    """A PciDeviceStats copy the requests are applied to: Nova's pool dicts, in its order."""

    def __init__(self, pools: tuple[PciPool, ...]):
        indices = _nova_indices(pools)
        self.pools = [_nova_pool(pools[index]) for index in indices]
        self.origin = {id(nova_pool): index for nova_pool, index in zip(self.pools, indices)}  # host's index

    def apply(self, request: PciRequest, numa_cells, host_cells) -> bool:
        """_apply_request: take the request's devices from its usable pools, in order."""
        usable = self.usable(request, numa_cells, host_cells)
        # An empty list fails even a request for no device.
        if not usable or sum(pool["count"] for pool in usable) < request.count:
            return False
        count = request.count
        for pool in usable:
            if pool["count"] > count:
                pool["count"] -= count
                break
            count -= pool["count"]
            self.pools.remove(pool)  # emptied (a pool of 0 is dropped too)
            if not count:
                break
        return True

    def usable(self, request: PciRequest, numa_cells, host_cells) -> list[dict]:
        """_filter_pools, its sub-filters in Nova's order (the NUMA one counts the devices that
        match the spec, before the others drop any); its early exits only ever compare a
        shrinking total with the count, so checking the final total is the same."""
        specs = _matched_specs(request)
        pools = [pool for pool in self.pools if _spec_matches(pool, specs)]
        pools = _numa_affine(pools, request, numa_cells, host_cells)
        return [pool for pool in pools if _not_withheld(pool, request)]


def matches_spec(pool: PciPool, request: PciRequest) -> bool:
    """The pool's devices match one of the request's specs (the devices the NUMA affinity step
    counts, before PF, vDPA, remote-managed and live-migratable devices are withheld)."""
    return _spec_matches(_nova_pool(pool), _matched_specs(request))


def serves(pool: PciPool, request: PciRequest) -> bool:
    """The pool's devices can serve the request, NUMA aside: a request's devices, free and NUMA
    affinity permitting, come only from such pools (a per-host bound: their free devices)."""
    nova_pool = _nova_pool(pool)
    return _spec_matches(nova_pool, _matched_specs(request)) and _not_withheld(nova_pool, request)


def _matched_specs(request: PciRequest) -> list[dict]:
    return [{key: value for key, value in spec.items() if key not in _IGNORED_SPEC_KEYS} for spec in request.specs]


def _not_withheld(pool: dict, request: PciRequest) -> bool:
    """PF, vDPA and remote-managed devices serve only requests that ask for them
    (_filter_pools_for_unrequested_*); live-migratable ones as _live_migratable_ok says."""
    specs = request.specs
    if pool.get("dev_type") == TYPE_PF and all(spec.get("dev_type") != TYPE_PF for spec in specs):
        return False
    if pool.get("dev_type") == TYPE_VDPA and all(spec.get("dev_type") != TYPE_VDPA for spec in specs):
        return False
    if _bool_from_string(pool.get("remote_managed")) and not any(
            _bool_from_string(spec.get("remote_managed")) for spec in specs):
        return False
    return _live_migratable_ok(pool, request)


def _numa_affine(pools: list[dict], request: PciRequest, numa_cells, host_cells) -> list[dict]:
    """_filter_pools_for_numa_cells: the strictest affinity that has enough devices, down to
    the request's policy. required: the guest's cells; socket: those, else the cells of their
    sockets; legacy: those, else devices without a NUMA node; preferred: those, else any,
    affine ones first."""
    if not numa_cells:
        return pools
    policy = request.numa_policy or LEGACY
    cell_ids = [cell.id for cell in numa_cells]
    on_cells = [pool for pool in pools if pool.get("numa_node") in cell_ids]
    if policy == REQUIRED or sum(pool["count"] for pool in on_cells) >= request.count:
        return on_cells
    if policy == SOCKET:
        return _socket_affine(pools, numa_cells, host_cells)
    cell_ids.append(None)  # devices that report no NUMA node
    near = [pool for pool in pools if pool.get("numa_node") in cell_ids]
    if policy == LEGACY or sum(pool["count"] for pool in near) >= request.count:
        return near
    return sorted(pools, key=lambda pool: pool.get("numa_node") not in cell_ids)


def _socket_affine(pools: list[dict], numa_cells, host_cells) -> list[dict]:
    """_filter_pools_for_socket_affinity: devices on any host cell of the guest cells' sockets;
    none when a host cell's socket is unknown."""
    if any(cell.socket is None for cell in host_cells):
        return []
    guest_cell_ids = {cell.id for cell in numa_cells}
    sockets = {cell.socket for cell in host_cells if cell.id in guest_cell_ids}
    allowed = {cell.id for cell in host_cells if cell.socket in sockets}
    return [pool for pool in pools if pool.get("numa_node") in allowed]


def _live_migratable_ok(pool: dict, request: PciRequest) -> bool:
    """_filter_pools_for_live_migratable_devices: when every spec asks the same answer, only
    pools that give it exactly."""
    for wanted in ("true", "false"):
        if all(spec.get("live_migratable") == wanted for spec in request.specs):
            return pool.get("live_migratable") == wanted
    return True
