"""NUMATopologyFilter as Nova 34 decides it, in plain Python: the reference of the rule.

Two halves, as in Nova:
- guest_topology: the guest NUMA topology the API builds from the flavor and the image
  (nova.virt.hardware.numa_get_constraints), or InvalidField where the API refuses the boot;
- fit: whether that topology fits a host's NUMA cells (numa_fit_instance_to_host with the
  filter's NUMATopologyLimits and the PCI requests), and which host cells, CPUs and pages it
  takes (consume applies that, as HostState.consume_from_request does between the picks of one
  multi-instance request).

Nova's search mutates the guest cells it tries (the page size it settled on, the host cell id
it was last given, its last pinning) and caches (host cell id, guest cell id) pairs keyed by
those mutated ids; both change answers in corner cases, so the search below keeps that state
the same way rather than being tidier than Nova.
"""
from __future__ import annotations

import collections
import itertools
import math
import re
from dataclasses import dataclass, replace

from placecheck_engine import pci
from placecheck_engine.image_meta import IMAGE_PROPERTIES_PATH, NUMA_NODES_MAX, image_meta_props
from placecheck_engine.image_meta import _cpu_set as parse_cpu_spec  # Nova's hardware.parse_cpu_spec
from placecheck_engine.model import Host, InvalidField, MemPages, NumaCell, Request
from placecheck_engine.nova_fields import (CPU_ALLOCATION_POLICY, CPU_THREAD_ALLOCATION_POLICY,
                                           flexible_boolean)

# Nova's page size classes (hardware.MEMPAGES_*); any other page size is in KiB.
MEMPAGES_SMALL, MEMPAGES_LARGE, MEMPAGES_ANY = -1, -2, -3
PAGE_CLASSES = {"small": MEMPAGES_SMALL, "large": MEMPAGES_LARGE, "any": MEMPAGES_ANY}

DEDICATED, MIXED, SHARED = "dedicated", "mixed", "shared"
ISOLATE, PREFER, REQUIRE = "isolate", "prefer", "require"
EMULATOR_THREADS_POLICIES = ("share", "isolate")  # CPUEmulatorThreadsPolicy.ALL
PINNED_POLICIES = (DEDICATED, MIXED)
SHARED_POLICIES = (SHARED, MIXED, None)

# Why a host fails NUMATopologyFilter.
NUMA_NO_HOST_TOPOLOGY = "NUMA_NO_HOST_TOPOLOGY"  # the guest has a NUMA topology, the host none
NUMA_CELLS_TOO_FEW = "NUMA_CELLS_TOO_FEW"  # fewer host cells than guest cells, or no distinct ones left
NUMA_CPUS = "NUMA_CPUS"  # not enough (free) CPUs in a cell, or over the CPU allocation ratio
NUMA_MEMORY = "NUMA_MEMORY"  # not enough memory in a cell, or over the RAM allocation ratio
NUMA_PAGES = "NUMA_PAGES"  # the page size asked for is missing or has too few free pages
NUMA_THREAD_POLICY = "NUMA_THREAD_POLICY"  # the CPU thread policy cannot be met on the cores
NUMA_PCI_AFFINITY = "NUMA_PCI_AFFINITY"  # the PCI devices are not on (or near) the chosen cells

FLAVOR_PATH = "request.flavor.extra_specs"


def _flavor_field(key: str) -> str:
    return f"{FLAVOR_PATH}[{key}]"


def _image_field(key: str) -> str:
    return f"{IMAGE_PROPERTIES_PATH}[{key}]"


def _refused(field_path: str, nova_exception: str, description: str) -> InvalidField:
    """Nova's API refuses the boot with this exception (HTTP 400)."""
    return InvalidField(field_path, f"{description} (Nova's {nova_exception})")


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA cell (Nova's InstanceNUMACell) as the API builds it."""
    id: int
    cpus: frozenset[int]  # guest vCPUs floating over the host's shared CPUs (Nova's cpuset)
    pcpus: frozenset[int]  # guest vCPUs pinned one to one to dedicated host CPUs (pcpuset)
    memory: int  # MB
    pagesize: int | float | None  # KiB, or MEMPAGES_*; None (or 0): no page size asked for
    cpu_policy: str | None  # dedicated | mixed | shared | None
    cpu_thread_policy: str | None  # isolate | prefer | require | None


@dataclass(frozen=True)
class GuestTopology:
    cells: tuple[GuestCell, ...]
    emulator_threads_policy: str | None = None  # share | isolate | None

    @property
    def emulator_threads_isolated(self) -> bool:
        return self.emulator_threads_policy == "isolate"

    @property
    def cpu_policy(self) -> str | None:
        # numa_get_constraints gives every cell the same policies.
        return self.cells[0].cpu_policy


@dataclass(frozen=True)
class CellPlacement:
    """Where one guest cell landed (Nova's fitted InstanceNUMACell)."""
    guest_cell: int  # index of the guest cell in the topology
    host_cell: int  # the host cell's id
    pinning: tuple[tuple[int, int], ...]  # (guest vCPU, host CPU) for the dedicated vCPUs
    cpuset_reserved: frozenset[int]  # host CPU kept for the isolated emulator threads
    pagesize: int | float | None  # the page size settled on (KiB); None: none asked for
    shared_cpus: int  # floating vCPUs counted against the cell's cpu_usage
    memory: int  # MB
    cpu_policy: str | None
    cpu_thread_policy: str | None


@dataclass(frozen=True)
class Fit:
    cells: tuple[CellPlacement, ...]
    emulator_threads_policy: str | None = None
    pci_requests: tuple = ()  # the PCI requests met near these cells (engine.pci.PciRequest)


@dataclass(frozen=True)
class Misfit:
    reason: str  # one of the NUMA_* codes above
    explanation: str


# ---------------------------------------------------------------------------------------------
# The guest topology (hardware.numa_get_constraints)


def _flavor_size(request: Request) -> tuple[int, int]:
    """(vCPUs, memory MB) of the flavor; model.Flavor's 0 means: from the request's resources."""
    flavor = request.flavor
    vcpus = flavor.vcpus or request.resources.get("VCPU", 0) + request.resources.get("PCPU", 0)
    memory = flavor.memory_mb or request.resources.get("MEMORY_MB", 0)
    return vcpus, memory


_BYTES = re.compile(r"^([-+]?\d*\.?\d+)([KMGTPEZYRQ]i?)?(b|bit|B)$")  # oslo's IEC string_to_bytes
_UNIT_EXPONENTS = {unit: power for power, unit in enumerate("KMGTPEZYRQ", start=1)}


def _page_size(request: str, field_path: str) -> int | float:
    """A page size request as Nova reads it: a class, KiB digits, or a size with a unit
    ("2MB" -> 2048.0: a float, as Nova's division leaves it)."""
    if request in PAGE_CLASSES:
        return PAGE_CLASSES[request]
    if request.isdigit():
        return int(request)
    match = _BYTES.match(request)
    if not match:
        raise _refused(field_path, "MemoryPageSizeInvalid", f"invalid memory page size {request!r}")
    magnitude = float(match.group(1))
    if match.group(3) in ("b", "bit"):
        magnitude /= 8
    if match.group(2):
        magnitude *= 1024 ** _UNIT_EXPONENTS[match.group(2)[0]]
    return math.ceil(magnitude) / 1024


def _page_size_constraint(extra_specs: dict, image: dict) -> int | float | None:
    flavor_request, image_request = extra_specs.get("hw:mem_page_size"), image.get("hw_mem_page_size")
    if not flavor_request and image_request:
        raise _refused(_image_field("hw_mem_page_size"), "MemoryPageSizeForbidden",
                       f"page size {image_request!r} asked by the image, forbidden by the flavor (none)")
    if not flavor_request:
        return None
    pagesize = _page_size(flavor_request, _flavor_field("hw:mem_page_size"))
    if image_request and pagesize in (MEMPAGES_ANY, MEMPAGES_LARGE):
        return _page_size(image_request, _image_field("hw_mem_page_size"))
    if image_request:
        raise _refused(_image_field("hw_mem_page_size"), "MemoryPageSizeForbidden",
                       f"page size {image_request!r} asked by the image, forbidden by the flavor's "
                       f"{flavor_request!r}")
    return pagesize


def _cpu_policy(extra_specs: dict, image: dict) -> str | None:
    flavor_policy, image_policy = extra_specs.get("hw:cpu_policy"), image.get("hw_cpu_policy")
    if flavor_policy and flavor_policy not in CPU_ALLOCATION_POLICY.valid:
        raise _refused(_flavor_field("hw:cpu_policy"), "InvalidCPUAllocationPolicy",
                       f"{flavor_policy!r} is not one of {sorted(CPU_ALLOCATION_POLICY.valid)}")
    # The image's value is already one of them: ImageMetaProps refuses any other.
    conflict = ((flavor_policy == MIXED and image_policy == DEDICATED)
                or (flavor_policy == SHARED and image_policy in PINNED_POLICIES))
    if conflict:
        raise _refused(_image_field("hw_cpu_policy"), "ImageCPUPinningForbidden",
                       f"the image's CPU policy {image_policy!r} conflicts with the flavor's {flavor_policy!r}")
    return flavor_policy or image_policy or None


def _cpu_thread_policy(extra_specs: dict, image: dict) -> str | None:
    flavor_policy, image_policy = extra_specs.get("hw:cpu_thread_policy"), image.get("hw_cpu_thread_policy")
    if flavor_policy and flavor_policy not in CPU_THREAD_ALLOCATION_POLICY.valid:
        raise _refused(_flavor_field("hw:cpu_thread_policy"), "InvalidCPUThreadAllocationPolicy",
                       f"{flavor_policy!r} is not one of {sorted(CPU_THREAD_ALLOCATION_POLICY.valid)}")
    if flavor_policy in (None, PREFER):
        return flavor_policy or image_policy
    if image_policy and image_policy != flavor_policy:
        raise _refused(_image_field("hw_cpu_thread_policy"), "ImageCPUThreadPolicyForbidden",
                       f"the image's CPU thread policy {image_policy!r} conflicts with the flavor's "
                       f"{flavor_policy!r}")
    return flavor_policy


def _cpu_mask(mask: str, vcpus: int, field_path: str) -> set[int]:
    """A CPU mask as Nova expands it: "^0" excludes from all the guest's vCPUs."""
    spec = f"0-{vcpus - 1},{mask}" if mask.strip().startswith("^") else mask
    try:
        return set(parse_cpu_spec(spec))
    except ValueError as error:
        raise _refused(field_path, "Invalid", str(error)) from None


def _emulator_threads_policy(extra_specs: dict) -> str | None:
    policy = extra_specs.get("hw:emulator_threads_policy")
    if not policy:
        return None
    if policy not in EMULATOR_THREADS_POLICIES:
        raise _refused(_flavor_field("hw:emulator_threads_policy"), "InvalidEmulatorThreadsPolicy",
                       f"{policy!r} is not one of {list(EMULATOR_THREADS_POLICIES)}")
    return policy


def _realtime_cpus(extra_specs: dict, image: dict, vcpus: int) -> set[int] | None:
    realtime_asked = extra_specs.get("hw:cpu_realtime")
    if realtime_asked is None or not flexible_boolean(realtime_asked):
        return None
    # The image's mask wins: it knows more about the guest.
    if image.get("hw_cpu_realtime_mask"):
        mask, field_path = image["hw_cpu_realtime_mask"], _image_field("hw_cpu_realtime_mask")
    else:
        mask, field_path = extra_specs.get("hw:cpu_realtime_mask"), _flavor_field("hw:cpu_realtime_mask")
    all_vcpus = set(range(vcpus))
    realtime = _cpu_mask(mask, vcpus, field_path) if mask else set(all_vcpus)
    if not realtime:
        raise _refused(field_path, "RealtimeMaskNotFoundOrInvalid", "the realtime mask names no vCPU")
    # Every vCPU realtime leaves none for the emulator threads, unless they have a policy.
    emulator_policy = _emulator_threads_policy(extra_specs)  # Nova refuses a bad one here already
    if realtime == all_vcpus and not emulator_policy:
        raise _refused(field_path, "RealtimeMaskNotFoundOrInvalid",
                       "the realtime mask must leave a vCPU for the emulator threads, or set their policy")
    if not realtime <= all_vcpus:
        raise _refused(field_path, "RealtimeMaskNotFoundOrInvalid",
                       f"the realtime mask names vCPUs beyond the guest's {vcpus}")
    return realtime


def _dedicated_mask(extra_specs: dict, vcpus: int) -> set[int] | None:
    mask = extra_specs.get("hw:cpu_dedicated_mask")
    if not mask:
        return None
    field_path = _flavor_field("hw:cpu_dedicated_mask")
    dedicated = _cpu_mask(mask, vcpus, field_path)
    all_vcpus = set(range(vcpus))
    if not dedicated or not all_vcpus - dedicated or not dedicated <= all_vcpus:
        raise _refused(field_path, "InvalidMixedInstanceDedicatedMask",
                       f"{mask!r} must name some, not all, of the guest's {vcpus} vCPUs")
    return dedicated


_VCPU_RESOURCE = re.compile(r"resources([1-9][0-9]*)?:VCPU")
_PCPU_RESOURCE = re.compile(r"resources([1-9][0-9]*)?:PCPU")
_HYPERTHREADING_TRAIT = re.compile(r"trait([1-9][0-9]*)?:HW_CPU_HYPERTHREADING")


def _requested_vcpus_pcpus(extra_specs: dict) -> tuple[int, int]:
    """resources[N]:VCPU / PCPU totals; a non-integer amount is refused elsewhere, not here."""
    totals = {_VCPU_RESOURCE: 0, _PCPU_RESOURCE: 0}
    for key, value in extra_specs.items():
        for pattern in totals:
            if pattern.match(key):
                try:
                    totals[pattern] += int(value)
                except ValueError:
                    pass
    return totals[_VCPU_RESOURCE], totals[_PCPU_RESOURCE]


def _hyperthreading_trait(extra_specs: dict, image: dict) -> str | None:
    for key, value in extra_specs.items():
        if _HYPERTHREADING_TRAIT.match(key):
            return value
    return "required" if "HW_CPU_HYPERTHREADING" in image.get("traits_required", ()) else None


def _node_count(extra_specs: dict, image: dict) -> int | None:
    flavor_nodes, image_nodes = extra_specs.get("hw:numa_nodes"), image.get("hw_numa_nodes")
    if flavor_nodes and image_nodes:
        raise _refused(_image_field("hw_numa_nodes"), "ImageNUMATopologyForbidden",
                       "the image may not set hw_numa_nodes when the flavor sets hw:numa_nodes")
    nodes = flavor_nodes or image_nodes
    if nodes is None:
        return None
    field_path = _flavor_field("hw:numa_nodes") if flavor_nodes else _image_field("hw_numa_nodes")
    # oslo's is_int_like: the text must read back as the same integer ("02" and " 2" do not).
    try:
        int_like = str(int(nodes)) == str(nodes)
    except ValueError:
        int_like = False
    if not int_like or int(nodes) < 1:
        raise _refused(field_path, "InvalidNUMANodesNumber", f"{nodes!r} is not a number of NUMA nodes >= 1")
    return int(nodes)


def _numbered(extra_specs: dict, key: str, parse) -> list | None:
    """hw:numa_cpus.0, hw:numa_cpus.1, ... up to the first gap."""
    values = []
    for cell in range(NUMA_NODES_MAX):
        name = f"{key}.{cell}"
        if name not in extra_specs:
            break
        try:
            values.append(parse(extra_specs[name]))
        except ValueError as error:
            raise _refused(_flavor_field(name), "Invalid", str(error)) from None
    return values or None


def _flavor_or_image_list(extra_specs: dict, image: dict, key: str, parse) -> tuple[list | None, str]:
    """The per-cell list of the flavor (`hw:numa_cpus.N`) or the image, never both; and the
    field to name if it is wrong."""
    image_name = key.replace(":", "_")
    flavor_list = _numbered(extra_specs, key, parse)
    if flavor_list is None:
        return image.get(image_name), _image_field(f"{image_name}.0")
    if image.get(image_name) is not None:
        raise _refused(_image_field(f"{image_name}.0"), "ImageNUMATopologyForbidden",
                       f"the image may not set {image_name} when the flavor sets {key}")
    return flavor_list, _flavor_field(f"{key}.0")


def guest_topology(request: Request, profile) -> GuestTopology | None:
    """hardware.numa_get_constraints: the guest's NUMA topology, None when it asks for none.

    InvalidField, naming the extra spec or image property, where Nova's API refuses the boot."""
    extra_specs = request.flavor.extra_specs
    image = image_meta_props(request.image.properties) if request.image is not None else {}
    vcpus, memory = _flavor_size(request)

    cpu_policy = _cpu_policy(extra_specs, image)
    thread_policy = _cpu_thread_policy(extra_specs, image)
    realtime = _realtime_cpus(extra_specs, image, vcpus)
    dedicated = _dedicated_mask(extra_specs, vcpus)
    emulator_policy = _emulator_threads_policy(extra_specs)

    requested_vcpus, requested_pcpus = _requested_vcpus_pcpus(extra_specs)
    if cpu_policy and (requested_vcpus or requested_pcpus):
        raise _refused(_flavor_field("resources:PCPU" if requested_pcpus else "resources:VCPU"),
                       "InvalidRequest", "resources:VCPU / resources:PCPU cannot be combined with a CPU policy")
    if requested_vcpus and requested_pcpus:
        raise _refused(_flavor_field("resources:PCPU"), "InvalidRequest",
                       "resources:VCPU and resources:PCPU cannot both be given")
    if requested_pcpus:
        needed = vcpus + 1 if emulator_policy == "isolate" else vcpus
        if requested_pcpus != needed:
            raise _refused(_flavor_field("resources:PCPU"), "InvalidRequest",
                           f"resources:PCPU must be {needed} for {vcpus} vCPUs"
                           + (" with hw:emulator_threads_policy=isolate" if emulator_policy == "isolate" else ""))
        cpu_policy = DEDICATED
    if requested_vcpus:
        cpu_policy = SHARED

    trait = _hyperthreading_trait(extra_specs, image)
    if thread_policy and trait:
        raise _refused(_flavor_field("trait:HW_CPU_HYPERTHREADING"), "InvalidRequest",
                       "trait:HW_CPU_HYPERTHREADING cannot be combined with a CPU thread policy")
    if trait == "forbidden":
        thread_policy = ISOLATE
    elif trait == "required":
        thread_policy = REQUIRE

    if cpu_policy in (SHARED, None):
        if thread_policy:
            field_path = (_flavor_field("hw:cpu_thread_policy") if "hw:cpu_thread_policy" in extra_specs
                          else _image_field("hw_cpu_thread_policy") if "hw_cpu_thread_policy" in image
                          else _flavor_field("trait:HW_CPU_HYPERTHREADING"))
            raise _refused(field_path, "CPUThreadPolicyConfigurationInvalid",
                           "a CPU thread policy needs the dedicated CPU policy")
        if emulator_policy == "isolate":
            raise _refused(_flavor_field("hw:emulator_threads_policy"), "BadRequirementEmulatorThreadsPolicy",
                           "isolated emulator threads need the dedicated CPU policy")
        if dedicated:
            raise _refused(_flavor_field("hw:cpu_dedicated_mask"), "RequiredMixedInstancePolicy",
                           "hw:cpu_dedicated_mask needs the mixed CPU policy")
        if realtime:
            raise _refused(_flavor_field("hw:cpu_realtime"), "RealtimeConfigurationInvalid",
                           "realtime vCPUs need the dedicated CPU policy")
    elif cpu_policy == DEDICATED:
        if dedicated:
            raise _refused(_flavor_field("hw:cpu_dedicated_mask"), "RequiredMixedInstancePolicy",
                           "hw:cpu_dedicated_mask needs the mixed CPU policy")
    else:  # mixed: exactly one of the two masks says which vCPUs are dedicated
        if bool(realtime) == bool(dedicated):
            raise _refused(_flavor_field("hw:cpu_dedicated_mask"), "RequiredMixedOrRealtimeCPUMask",
                           "the mixed CPU policy needs hw:cpu_dedicated_mask or a realtime mask, not both")
        dedicated = dedicated or realtime

    nodes = _node_count(extra_specs, image)
    pagesize = _page_size_constraint(extra_specs, image)
    persistent_memory = [label for label in extra_specs.get("hw:pmem", "").split(",") if label.strip()]
    _locked_memory(extra_specs, image)  # for its refusals: locked memory changes no fit

    dedicated = set(range(vcpus)) if cpu_policy == DEDICATED else dedicated or set()
    # What gives a guest a NUMA topology: asking for one, pinned CPUs, a page size, vPMEM.
    if not (nodes or pagesize or persistent_memory or cpu_policy in PINNED_POLICIES):
        return None
    nodes = nodes or 1
    cpu_list, cpu_field = _flavor_or_image_list(extra_specs, image, "hw:numa_cpus", parse_cpu_spec)
    mem_list, mem_field = _flavor_or_image_list(extra_specs, image, "hw:numa_mem", int)
    if cpu_list is None and mem_list is None:
        cells = _cells_evenly(nodes, vcpus, memory, extra_specs)
    elif cpu_list is not None and mem_list is not None and len(cpu_list) == nodes == len(mem_list):
        cells = _cells_as_given(vcpus, memory, cpu_list, mem_list, cpu_field, mem_field)
    else:
        raise _refused(cpu_field if cpu_list is None or len(cpu_list) != nodes else mem_field,
                       "ImageNUMATopologyIncomplete",
                       f"hw:numa_cpus.N and hw:numa_mem.N must both be given for each of the {nodes} NUMA nodes")
    shared = set(range(vcpus)) - dedicated
    return GuestTopology(
        cells=tuple(GuestCell(id=cell, cpus=frozenset(cpus & shared), pcpus=frozenset(cpus & dedicated),
                              memory=cell_memory, pagesize=pagesize, cpu_policy=cpu_policy,
                              cpu_thread_policy=thread_policy)
                    for cell, (cpus, cell_memory) in enumerate(cells)),
        emulator_threads_policy=emulator_policy)


def _locked_memory(extra_specs: dict, image: dict) -> bool | None:
    """Whether the guest's memory is locked; it needs a page size, and flavor and image must
    agree. (Nova also locks it for memory encryption, which placecheck does not model.)"""
    flavor_locked, image_locked = extra_specs.get("hw:locked_memory"), image.get("hw_locked_memory")
    if flavor_locked is not None:
        locked = flexible_boolean(flavor_locked)
        if image_locked is not None and locked != image_locked:
            raise _refused(_image_field("hw_locked_memory"), "FlavorImageLockedMemoryConflict",
                           f"the image's hw_locked_memory={image_locked} conflicts with the flavor's {locked}")
    else:
        locked = image_locked
    if locked and not (extra_specs.get("hw:mem_page_size") or image.get("hw_mem_page_size")):
        raise _refused(_flavor_field("hw:locked_memory") if flavor_locked is not None
                       else _image_field("hw_locked_memory"),
                       "LockMemoryForbidden", "locked memory needs hw:mem_page_size")
    return locked


def _cells_evenly(nodes: int, vcpus: int, memory: int, extra_specs: dict):
    """_get_numa_topology_auto: vCPUs and memory split evenly over the nodes, in order."""
    if vcpus % nodes or memory % nodes:
        field_path = (_flavor_field("hw:numa_nodes") if "hw:numa_nodes" in extra_specs
                      else _image_field("hw_numa_nodes"))
        raise _refused(field_path, "ImageNUMATopologyAsymmetric",
                       f"{vcpus} vCPUs and {memory} MB do not split evenly over {nodes} NUMA nodes")
    per_node = vcpus // nodes
    return [(set(range(node * per_node, (node + 1) * per_node)), memory // nodes) for node in range(nodes)]


def _cells_as_given(vcpus: int, memory: int, cpu_list, mem_list, cpu_field: str, mem_field: str):
    """_get_numa_topology_manual: each node's vCPUs and memory as given; every vCPU once."""
    unassigned = set(range(vcpus))
    for cpus in cpu_list:
        for cpu in cpus:
            if cpu > vcpus - 1:
                raise _refused(cpu_field, "ImageNUMATopologyCPUOutOfRange",
                               f"vCPU {cpu} is beyond the guest's last vCPU {vcpus - 1}")
            if cpu not in unassigned:
                raise _refused(cpu_field, "ImageNUMATopologyCPUDuplicates", f"vCPU {cpu} is in two NUMA nodes")
            unassigned.remove(cpu)
    if unassigned:
        raise _refused(cpu_field, "ImageNUMATopologyCPUsUnassigned",
                       f"vCPUs {sorted(unassigned)} are in no NUMA node")
    if sum(mem_list) != memory:
        raise _refused(mem_field, "ImageNUMATopologyMemoryOutOfRange",
                       f"the nodes' memory adds up to {sum(mem_list)} MB, the flavor has {memory} MB")
    return [(set(cpus), cell_memory) for cpus, cell_memory in zip(cpu_list, mem_list)]


# ---------------------------------------------------------------------------------------------
# The host


def host_limits(host: Host, profile) -> tuple[float, float]:
    """(CPU, RAM) allocation ratios of the host's NUMATopologyLimits."""
    def ratio(explicit, resource_class, default):
        if explicit is not None:
            return explicit
        if resource_class in host.resources:
            return host.resources[resource_class].allocation_ratio
        return default
    return (ratio(host.cpu_allocation_ratio, "VCPU", profile.cpu_allocation_ratio),
            ratio(host.ram_allocation_ratio, "MEMORY_MB", profile.ram_allocation_ratio))


def free_pcpus(cell: NumaCell) -> frozenset[int]:
    return cell.pcpuset - cell.pinned_cpus


def free_memory(cell: NumaCell) -> int:
    return cell.memory - cell.memory_usage


def has_threads(cell: NumaCell) -> bool:
    return any(len(siblings) > 1 for siblings in cell.siblings)


def _pages(cell: NumaCell, size_kb) -> MemPages | None:
    return next((pages for pages in cell.mempages if pages.size_kb == size_kb), None)


def _pages_hold(pages: MemPages, memory_kb: int, use_free: bool = True) -> bool:
    """NUMACell.can_fit_pagesize for a size the cell has: whole pages, and enough of them."""
    available_kb = (pages.free if use_free else pages.total) * pages.size_kb
    return memory_kb <= available_kb and memory_kb % pages.size_kb == 0


def page_size_for(cell: NumaCell, memory_mb: int, pagesize) -> int | float | None:
    """_numa_cell_supports_pagesize_request: the largest fitting size of the class asked for
    (or the one size asked for), None when none fits."""
    sizes = sorted((pages.size_kb for pages in cell.mempages), reverse=True)
    candidates = {MEMPAGES_SMALL: sizes[-1:], MEMPAGES_LARGE: sizes[:-1], MEMPAGES_ANY: sizes}.get(pagesize, [pagesize])
    for size in candidates:
        pages = _pages(cell, size)
        if pages is not None and _pages_hold(pages, memory_mb * 1024):
            return size
    return None


# ---------------------------------------------------------------------------------------------
# One guest cell on one host cell (_numa_fit_instance_cell, _pack_instance_onto_cores)


@dataclass
class _CellState:
    """A guest cell as Nova's search mutates it: the id of the host cell it last fitted (the
    cache is keyed by it), the page size it settled on, its last pinning."""
    cell: GuestCell
    id: int
    pagesize: int | float | None
    pinning: tuple[tuple[int, int], ...] = ()
    cpuset_reserved: frozenset[int] = frozenset()


@dataclass(frozen=True)
class _CellMisfit:
    reason: str
    detail: str  # about the host cell: "host cell 0 has 3 free dedicated CPUs"


def _fmt_size(size) -> str:
    """A page size in KiB, "2048 KiB" also when Nova holds it as 2048.0."""
    return f"{int(size)} KiB" if size == int(size) else f"{size} KiB"


def _fit_cell(host_cell: NumaCell, state: _CellState, limits: tuple[float, float] | None,
              reserved_cpus: int) -> _CellMisfit | None:
    """Whether the guest cell fits the host cell; on success `state` holds the pinning. Like
    Nova, the page size settled on is kept in `state` even when a later check fails."""
    cell = state.cell
    pinned = cell.cpu_policy in PINNED_POLICIES
    cell_no = host_cell.id
    if state.pagesize:
        size = page_size_for(host_cell, cell.memory, state.pagesize)
        if not size:
            return _CellMisfit(NUMA_PAGES, _pages_detail(host_cell, cell.memory, state.pagesize))
        state.pagesize = size
    elif host_cell.mempages:
        # No page size asked for: the smallest pages hold the memory. Floating guests may
        # overcommit them (their total counts); pinned guests, for legacy reasons, may not.
        smallest = min(host_cell.mempages, key=lambda pages: pages.size_kb)
        if not _pages_hold(smallest, cell.memory * 1024, use_free=pinned):
            pages = smallest.free if pinned else smallest.total
            return _CellMisfit(NUMA_MEMORY, f"host cell {cell_no} has {pages * smallest.size_kb // 1024} MB in "
                                            f"{'free ' if pinned else ''}{_fmt_size(smallest.size_kb)} pages")
    elif pinned and free_memory(host_cell) < cell.memory:
        return _CellMisfit(NUMA_MEMORY, f"host cell {cell_no} has {free_memory(host_cell)} MB free")
    elif not pinned and host_cell.memory < cell.memory:
        return _CellMisfit(NUMA_MEMORY, f"host cell {cell_no} has {host_cell.memory} MB")

    # A guest never overcommits against itself: its vCPUs must not outnumber the cell's CPUs.
    if pinned and len(cell.pcpus) + reserved_cpus > len(host_cell.pcpuset):
        return _CellMisfit(NUMA_CPUS, f"host cell {cell_no} has {len(host_cell.pcpuset)} dedicated CPUs")
    if cell.cpu_policy in SHARED_POLICIES and len(cell.cpus) > len(host_cell.cpuset):
        return _CellMisfit(NUMA_CPUS, f"host cell {cell_no} has {len(host_cell.cpuset)} shared CPUs")
    if pinned:
        if len(cell.pcpus) + reserved_cpus > len(free_pcpus(host_cell)):
            return _CellMisfit(NUMA_CPUS, f"host cell {cell_no} has {len(free_pcpus(host_cell))} free "
                                          f"dedicated CPUs")
        packed = _pack_onto_cores(host_cell, cell, reserved_cpus)
        if isinstance(packed, _CellMisfit):
            return packed
        # Pinned, the guest cell belongs to this host cell now, even if the limits refuse it below.
        state.pinning, state.cpuset_reserved = packed
        state.id = host_cell.id
    if cell.cpu_policy in SHARED_POLICIES and limits:
        cpu_ratio, ram_ratio = limits
        cpu_limit = len(host_cell.cpuset) * cpu_ratio
        if host_cell.cpu_usage + len(cell.cpus) > cpu_limit:
            return _CellMisfit(NUMA_CPUS, f"host cell {cell_no} has {host_cell.cpu_usage} of {cpu_limit:g} shared "
                                          f"vCPUs in use ({len(host_cell.cpuset)} CPUs x {cpu_ratio:g})")
        ram_limit = host_cell.memory * ram_ratio
        if host_cell.memory_usage + cell.memory > ram_limit:
            return _CellMisfit(NUMA_MEMORY, f"host cell {cell_no} has {host_cell.memory_usage} of {ram_limit:g} MB "
                                            f"in use ({host_cell.memory} MB x {ram_ratio:g})")
    state.id = host_cell.id
    return None


def fit_cell(host_cell: NumaCell, cell: GuestCell, limits: tuple[float, float] | None,
             reserved_cpus: int = 0) -> CellPlacement | Misfit:
    """_numa_fit_instance_cell on its own: one guest cell on one host cell, with the
    (CPU, RAM) allocation ratios of the limits (None: no limits) and CPUs kept for emulator threads."""
    state = _CellState(cell, cell.id, cell.pagesize)
    misfit = _fit_cell(host_cell, state, limits, reserved_cpus)
    if misfit is not None:
        return Misfit(misfit.reason, f"guest cell {cell.id} needs {_guest_cell_needs(cell, reserved_cpus)}; "
                                     f"{misfit.detail}")
    return _placement(cell.id, state)


def _pages_detail(host_cell: NumaCell, memory_mb: int, pagesize) -> str:
    sizes = ", ".join(f"{pages.free} free {_fmt_size(pages.size_kb)} pages ({pages.free * pages.size_kb // 1024} MB)"
                      for pages in sorted(host_cell.mempages, key=lambda pages: pages.size_kb))
    return f"host cell {host_cell.id} has {sizes or 'no page size information'}"


def _pack_onto_cores(host_cell: NumaCell, cell: GuestCell, reserved_cpus: int):
    """_pack_instance_onto_cores: ((vCPU, host CPU) pairs, reserved host CPUs), or why not.

    Sibling sets with the most free threads are tried first, so that a guest's vCPUs share
    cores; `isolate` takes one thread of wholly free cores and keeps their siblings unused,
    `require` only settles for cores with two or more free threads, `prefer` (or none) falls
    back to any free CPUs."""
    # Nova takes max() over the siblings; a cell that reports none has no core to pin on.
    threads_per_core = max(map(len, host_cell.siblings), default=0) or 1
    free = free_pcpus(host_cell)
    # Free thread count -> the sibling sets that have at least that many free threads.
    sibling_sets: dict[int, list[set[int]]] = collections.defaultdict(list)
    for siblings in host_cell.siblings:
        free_siblings = set(siblings) & free
        for threads in range(1, len(free_siblings) + 1):
            sibling_sets[threads].append(free_siblings)
    needed = len(cell.pcpus) + reserved_cpus
    policy = cell.cpu_thread_policy

    if policy == ISOLATE:
        whole_cores = len(sibling_sets.get(threads_per_core, ()))
        if not whole_cores:
            return _CellMisfit(NUMA_THREAD_POLICY, f"host cell {host_cell.id} has no wholly free core")
        if threads_per_core != 1 and host_cell.pcpuset != host_cell.cpuset:
            # Nova bug 1889633: isolate only works on SMT hosts configured with vcpu_pin_set.
            return _CellMisfit(NUMA_THREAD_POLICY, f"host cell {host_cell.id} has SMT and separate shared and "
                                                   f"dedicated CPU sets (Nova bug 1889633)")
        pinning = _pinning(1, sibling_sets[threads_per_core], cell.pcpus)
        reserved = _reserved(sibling_sets[1], pinning, reserved_cpus, isolate=True)
        if not pinning or (reserved_cpus and not reserved):
            return _CellMisfit(NUMA_THREAD_POLICY, f"host cell {host_cell.id} has {whole_cores} wholly free "
                                                   f"cores for {needed}")
        return tuple(pinning), frozenset(reserved or ())

    if policy == REQUIRE and threads_per_core <= 1:
        return _CellMisfit(NUMA_THREAD_POLICY, f"host cell {host_cell.id} has no SMT siblings")
    pinning = reserved = None
    threads = 1
    for threads, candidate_sets in sorted(sibling_sets.items(), reverse=True):
        if policy == REQUIRE and threads <= 1:
            continue
        pinning = _pinning(threads, candidate_sets, cell.pcpus)
        reserved = _reserved(sibling_sets[1], pinning, reserved_cpus)
        if pinning is None or (reserved_cpus and not reserved):
            continue
        break
    if policy != REQUIRE and not pinning:
        # Every free CPU as a core of its own: resource use over the guest's performance.
        singles = [{cpu} for cpu in itertools.chain(*sibling_sets[1])]
        pinning = _pinning(threads, singles, cell.pcpus)
        reserved = _reserved(singles, pinning, reserved_cpus)
    if pinning is None or (reserved_cpus and not reserved):
        if policy == REQUIRE:
            cores = len(sibling_sets.get(2, ()))
            return _CellMisfit(NUMA_THREAD_POLICY, f"host cell {host_cell.id} has {cores} cores with 2 or more "
                                                   f"free threads for {needed} CPUs")
        return _CellMisfit(NUMA_CPUS, f"host cell {host_cell.id} has {len(free)} free dedicated CPUs")
    return tuple(pinning), frozenset(reserved or ())


def _pinning(threads: int, sibling_sets: list[set[int]], vcpus: frozenset[int]) -> list[tuple[int, int]] | None:
    """`threads` threads of each sibling set, in order, to the guest's vCPUs in order."""
    if threads * len(sibling_sets) < len(vcpus):
        return None
    usable = [list(siblings)[:threads] for siblings in sibling_sets]
    return list(zip(sorted(vcpus), itertools.chain(*usable)))


def _reserved(sibling_sets: list[set[int]], pinning, reserved_cpus: int, isolate: bool = False) -> set[int] | None:
    """The host CPUs left for the emulator threads after the pinning (whole cores gone under
    isolate); None when none are asked for or none are left."""
    if not pinning or not reserved_cpus:
        return None
    usable = [list(siblings) for siblings in sibling_sets]
    for _vcpu, host_cpu in pinning:
        # As Nova: removing from the list being walked skips the next set, which cannot
        # hold this CPU too as sibling sets do not overlap.
        for siblings in usable:
            if host_cpu in siblings:
                if isolate:
                    usable.remove(siblings)
                else:
                    siblings.remove(host_cpu)
    return set(list(itertools.chain(*usable))[:reserved_cpus]) or None


# ---------------------------------------------------------------------------------------------
# The whole guest on the host (numa_fit_instance_to_host)


def _pci_devices_per_cell(host: Host) -> dict:
    per_cell: dict = collections.defaultdict(int)
    for pool in host.pci_pools:
        per_cell[pool.numa_node] += pool.count
    return per_cell


def _host_cells_in_search_order(host: Host, topology: GuestTopology, pci_requests, packing: bool):
    """The order Nova tries host cells in when it has more than the guest needs: spread (or,
    packing, fill) by free memory, then by floating CPU use or free dedicated CPUs, then cells
    with PCI devices first when some are asked for, last when not (stable sorts)."""
    cells = list(host.numa_cells)
    if len(cells) == len(topology.cells):
        return cells
    cells.sort(key=free_memory, reverse=not packing)
    if topology.cpu_policy in (None, SHARED):
        cells.sort(key=lambda cell: cell.cpu_usage, reverse=packing)
    else:
        cells.sort(key=lambda cell: len(free_pcpus(cell)), reverse=not packing)
    devices = _pci_devices_per_cell(host)
    cells.sort(key=lambda cell: devices.get(cell.id, 0), reverse=bool(pci_requests))
    return cells


def fit(host: Host, topology: GuestTopology, pci_requests, profile) -> Fit | Misfit:
    """numa_fit_instance_to_host with the filter's limits: the first assignment of the guest
    cells to distinct host cells, in Nova's order, where every cell fits and the PCI requests
    can be met with their NUMA affinity policies; else why not."""
    host_cells = host.numa_cells
    if not host_cells:
        return Misfit(NUMA_NO_HOST_TOPOLOGY, f"the guest asks for {len(topology.cells)} NUMA cell(s); "
                                             f"the host reports no NUMA topology")
    if len(host_cells) < len(topology.cells):
        return Misfit(NUMA_CELLS_TOO_FEW, f"the guest needs {len(topology.cells)} NUMA cells; "
                                          f"the host has {len(host_cells)}")
    limits = host_limits(host, profile)
    packing = profile.packing_host_numa_cells_allocation_strategy
    ordered = _host_cells_in_search_order(host, topology, pci_requests, packing)
    states = [_CellState(cell, cell.id, cell.pagesize) for cell in topology.cells]
    not_fit: set[tuple[int, int]] = set()
    fits: set[tuple[int, int]] = set()
    first_cells_fitted = None  # the first host cells every guest cell fitted, for the explanation
    for permutation in itertools.permutations(ordered, len(states)):
        for index, (host_cell, state) in enumerate(zip(permutation, states)):
            # Keyed by the guest cell's current id, which earlier fits have changed (as Nova).
            pair = (host_cell.id, state.id)
            if pair in not_fit:
                break
            if pair in fits:
                state.id = host_cell.id
                continue
            # Isolated emulator threads take one more CPU, beside guest cell 0.
            reserved = 1 if topology.emulator_threads_isolated and index == 0 else 0
            misfit = _fit_cell(host_cell, state, limits, reserved)
            if misfit is not None:
                not_fit.add(pair)
                break
            fits.add(pair)
        else:
            chosen = tuple(permutation)
            first_cells_fitted = first_cells_fitted or chosen
            if pci_requests and not pci.supports(host.pci_pools, pci_requests, numa_cells=chosen,
                                                 host_cells=host_cells):
                continue
            return Fit(cells=tuple(_placement(index, state) for index, state in enumerate(states)),
                       emulator_threads_policy=topology.emulator_threads_policy, pci_requests=tuple(pci_requests))
    return _misfit(host, topology, pci_requests, limits, first_cells_fitted)


def _placement(index: int, state: _CellState) -> CellPlacement:
    cell = state.cell
    return CellPlacement(guest_cell=index, host_cell=state.id, pinning=state.pinning,
                         cpuset_reserved=state.cpuset_reserved, pagesize=state.pagesize or None,
                         shared_cpus=len(cell.cpus), memory=cell.memory, cpu_policy=cell.cpu_policy,
                         cpu_thread_policy=cell.cpu_thread_policy)


def _guest_cell_needs(cell: GuestCell, reserved: int) -> str:
    needs = []
    if cell.pcpus:
        policy = f" (thread policy {cell.cpu_thread_policy})" if cell.cpu_thread_policy else ""
        extra = f" + {reserved} for emulator threads" if reserved else ""
        needs.append(f"{len(cell.pcpus)} dedicated CPUs{extra}{policy}")
    if cell.cpus or cell.cpu_policy in SHARED_POLICIES:
        needs.append(f"{len(cell.cpus)} shared vCPUs")
    pages = {MEMPAGES_SMALL: " in small pages", MEMPAGES_LARGE: " in large pages",
             MEMPAGES_ANY: " in pages of any size"}.get(cell.pagesize, f" in {_fmt_size(cell.pagesize)} pages"
                                                        if cell.pagesize else "")
    needs.append(f"{cell.memory} MB{pages}")
    return ", ".join(needs)


def _misfit(host: Host, topology: GuestTopology, pci_requests, limits, first_cells_fitted) -> Misfit:
    """Why no assignment fitted: the first guest cell that fits no host cell, with each host
    cell's shortfall; else the PCI requests; else too few distinct host cells."""
    for index, cell in enumerate(topology.cells):
        reserved = 1 if topology.emulator_threads_isolated and index == 0 else 0
        # Each host cell judged afresh: the search skips the pairs its cache has decided.
        found = [_fit_cell(host_cell, _CellState(cell, cell.id, cell.pagesize), limits, reserved)
                 for host_cell in host.numa_cells]
        if all(found):
            reason = collections.Counter(misfit.reason for misfit in found).most_common(1)[0][0]
            return Misfit(reason, f"guest cell {index} needs {_guest_cell_needs(cell, reserved)}; "
                                  + ", ".join(misfit.detail for misfit in found))
    if pci_requests and first_cells_fitted:
        unmet = pci.unmet_request(host.pci_pools, pci_requests, numa_cells=first_cells_fitted,
                                  host_cells=host.numa_cells)
        cell_ids = [cell.id for cell in first_cells_fitted]
        devices = ", ".join(f"{'no NUMA node' if node is None else f'cell {node}'}: {count}"
                            for node, count in _pci_devices_per_cell(host).items())
        detail = (f"{pci.describe_unmet(*unmet)} near them (NUMA affinity policy {unmet[0].numa_policy or 'legacy'})"
                  if unmet else "no other host cells it fits are near enough devices")
        return Misfit(NUMA_PCI_AFFINITY, f"the guest fits host cells {cell_ids}: {detail}; free PCI devices "
                                         f"of any kind by NUMA node: {devices or 'none'}")
    return Misfit(NUMA_CELLS_TOO_FEW, f"each of the guest's {len(topology.cells)} cells fits some host cell, "
                                      f"but no {len(topology.cells)} distinct host cells hold them together")


def consume(host: Host, placed: Fit) -> Host:
    """The host with the guest's pinned CPUs, memory, pages and shared vCPUs taken
    (numa_usage_from_instance_numa), and its PCI devices taken near its cells
    (PciDeviceStats.apply_requests), as HostState.consume_from_request does between the picks
    of one multi-instance request."""
    cells = []
    for cell in host.numa_cells:
        for placement in placed.cells:
            if placement.host_cell == cell.id:
                cell = _cell_with(cell, placement)
        cells.append(cell)
    pools = host.pci_pools
    if placed.pci_requests:
        by_id = {cell.id: cell for cell in host.numa_cells}
        chosen = [by_id[placement.host_cell] for placement in placed.cells]
        pools = pci.apply_requests(pools, placed.pci_requests, numa_cells=chosen, host_cells=host.numa_cells)
        assert pools is not None, "a Fit's PCI requests can be met near its cells"
    return replace(host, numa_cells=tuple(cells), pci_pools=pools)


def _cell_with(cell: NumaCell, placement: CellPlacement) -> NumaCell:
    mempages = cell.mempages
    if mempages:
        size = placement.pagesize or min(pages.size_kb for pages in mempages)
        taken = placement.memory * 1024 / size
        taken = int(taken) if taken == int(taken) else taken  # Nova keeps a fraction of a page
        mempages = tuple(replace(pages, used=max(0, pages.used + taken)) if pages.size_kb == size else pages
                         for pages in mempages)
    pinned = cell.pinned_cpus
    if placement.cpu_policy in PINNED_POLICIES:
        taken_cpus = {host_cpu for _vcpu, host_cpu in placement.pinning} | placement.cpuset_reserved
        if placement.cpu_thread_policy == ISOLATE:
            # Whole cores go to an isolated guest: Nova pins the sibling sets its CPUs are in.
            taken_cpus = {cpu for siblings in cell.siblings if siblings & taken_cpus for cpu in siblings}
        pinned = pinned | taken_cpus
    return replace(cell, mempages=mempages, pinned_cpus=frozenset(pinned),
                   memory_usage=max(0, cell.memory_usage + placement.memory),
                   cpu_usage=max(0, cell.cpu_usage + placement.shared_cpus))


def requires_smt(request: Request) -> bool:
    """The filter's first check, on the raw flavor and image values: dedicated CPUs with the
    `require` thread policy need a host with SMT siblings."""
    extra_specs = request.flavor.extra_specs
    image = image_meta_props(request.image.properties) if request.image is not None else {}
    return (DEDICATED in (extra_specs.get("hw:cpu_policy"), image.get("hw_cpu_policy"))
            and REQUIRE in (extra_specs.get("hw:cpu_thread_policy"), image.get("hw_cpu_thread_policy")))


def _satisfies_cpu_policy(host: Host, request: Request) -> bool:
    return not host.numa_cells or not requires_smt(request) or any(has_threads(cell) for cell in host.numa_cells)


def check(host: Host, request: Request, profile) -> Fit | Misfit | None:
    """NUMATopologyFilter on one host: None when the guest asks for no NUMA topology (passes),
    else its Fit or Misfit."""
    topology = guest_topology(request, profile)  # Nova's API refuses a bad request before any filter
    requests = pci.pci_requests(request, pci.parse_aliases(profile.pci_alias))
    return decide(host, request, topology, requests, profile)


def decide(host: Host, request: Request, topology: GuestTopology | None, pci_requests, profile) -> Fit | Misfit | None:
    """NUMATopologyFilter.host_passes for the guest topology and PCI requests the API built."""
    if not _satisfies_cpu_policy(host, request):
        return Misfit(NUMA_THREAD_POLICY, f"the guest asks for dedicated CPUs with thread policy require; none "
                                          f"of the host's {len(host.numa_cells)} cells has SMT siblings")
    if topology is None:
        return None
    return fit(host, topology, pci_requests, profile)


def numa_topology_passes(host: Host, request: Request, profile) -> bool:
    """NUMATopologyFilter.host_passes, the reference."""
    return not isinstance(check(host, request, profile), Misfit)
