"""Record the tables of Nova's own NUMA unit tests, for tests/test_nova_numa_fit.py.

Not a test: run it with a Python that has Nova 34.0.0 and its unit-test dependencies
(ddt, testtools, fixtures, oslotest, wsgi-intercept):

    PYTHONPATH=<test deps> <nova venv>/bin/python tests/capture_nova_numa_tables.py

It runs Nova's unit tests for numa_get_constraints, numa_fit_instance_to_host,
_numa_fit_instance_cell, numa_usage_from_instance_numa, NUMATopologyFilter.host_passes and the
helpers they test directly (nova/tests/unit/virt/test_hardware.py,
nova/tests/unit/scheduler/filters/test_numa_topology_filters.py) and records each call a test
makes to them (not the calls they make to each other): the inputs in placecheck's terms and
Nova's answer. A test only passes when that answer is the one it asserts, so the record is the
test's table, with Nova's test name (tests/data/nova_numa_unit_tables.json). Calls placecheck's
model cannot express (network metadata, provider mappings) and calls whose test mocks a step of
Nova's decision are left out, counted on stdout. It then runs seeded random scenarios through
the same functions, labelled the same way (tests/data/nova_numa_random_scenarios.json).
"""
from __future__ import annotations

import collections
import copy
import json
import random
import sys
import unittest
import unittest.mock
from pathlib import Path

from nova import exception, objects
from nova.conf import CONF

objects.register_all()
from nova.scheduler.filters import numa_topology_filter
from nova.pci import stats
from nova.virt import hardware

OUTPUT = Path(__file__).resolve().parent / "data" / "nova_numa_unit_tables.json"
RANDOM_OUTPUT = OUTPUT.with_name("nova_numa_random_scenarios.json")  # RandomScenarios' and RandomConstraints' records
TEST_CLASSES = [
    "nova.tests.unit.virt.test_hardware.NUMATopologyTest",
    "nova.tests.unit.virt.test_hardware.VirtNUMAHostTopologyTestCase",
    "nova.tests.unit.virt.test_hardware.VirtNUMATopologyCellUsageTestCase",
    "nova.tests.unit.virt.test_hardware.VirtMemoryPagesTestCase",
    "nova.tests.unit.virt.test_hardware.VirtLockMemoryTestCase",
    "nova.tests.unit.virt.test_hardware.CPUPinningCellTestCase",
    "nova.tests.unit.virt.test_hardware.CPUPinningTestCase",
    "nova.tests.unit.virt.test_hardware.CPUSReservedCellTestCase",
    "nova.tests.unit.virt.test_hardware.CPURealtimeTestCase",
    "nova.tests.unit.virt.test_hardware.EmulatorThreadsTestCase",
    "nova.tests.unit.virt.test_hardware.HostCellsSortingTestCase",
    "nova.tests.unit.scheduler.filters.test_numa_topology_filters",
]

records: list[dict] = []
skipped: collections.Counter = collections.Counter()
current = {"test": "", "depth": 0}


class Unsupported(Exception):
    pass


def _set(obj, name, default=None):
    return getattr(obj, name) if obj.obj_attr_is_set(name) else default


def host_cell(cell) -> dict:
    if _set(cell, "network_metadata") is not None and (cell.network_metadata.physnets
                                                       or cell.network_metadata.tunneled):
        raise Unsupported("host cell network metadata")
    return {"id": cell.id, "cpuset": sorted(_set(cell, "cpuset", set())),
            "pcpuset": sorted(_set(cell, "pcpuset", set())), "memory": _set(cell, "memory", 0),
            "cpu_usage": _set(cell, "cpu_usage", 0), "memory_usage": _set(cell, "memory_usage", 0),
            "pinned_cpus": sorted(_set(cell, "pinned_cpus", set())),
            "siblings": [sorted(s) for s in _set(cell, "siblings", [])],
            "mempages": [{"size_kb": p.size_kb, "total": p.total, "used": _set(p, "used", 0),
                          "reserved": _set(p, "reserved", 0)} for p in _set(cell, "mempages", [])],
            "socket": _set(cell, "socket")}


def guest_cell(cell) -> dict:
    return {"id": _set(cell, "id", 0), "cpus": sorted(_set(cell, "cpuset", set())),
            "pcpus": sorted(_set(cell, "pcpuset", set())), "memory": _set(cell, "memory", 0),
            "pagesize": _set(cell, "pagesize"), "cpu_policy": _set(cell, "cpu_policy"),
            "cpu_thread_policy": _set(cell, "cpu_thread_policy")}


def guest_topology(topology) -> dict | None:
    if topology is None:
        return None
    return {"cells": [guest_cell(cell) for cell in topology.cells],
            "emulator_threads_policy": _set(topology, "emulator_threads_policy")}


def fitted_cell(cell) -> dict:
    pinning = _set(cell, "cpu_pinning_raw") or {}  # keyed by the vCPU as a string
    return {"id": cell.id, "pinning": sorted((int(vcpu), pcpu) for vcpu, pcpu in pinning.items()),
            "cpuset_reserved": sorted(_set(cell, "cpuset_reserved") or ()), "pagesize": _set(cell, "pagesize")}


def limits_of(limits) -> list | None:
    if limits is None:
        return None
    if _set(limits, "network_metadata") is not None:
        raise Unsupported("network metadata limits")
    return [limits.cpu_allocation_ratio, limits.ram_allocation_ratio]


def image_properties(image_meta) -> dict:
    """The typed ImageMetaProps back as the strings Glance would hand Nova."""
    props, strings = image_meta.properties, {}
    for name in props.fields:
        if not props.obj_attr_is_set(name):
            continue
        value = getattr(props, name)
        if name in ("hw_numa_cpus", "hw_numa_mem"):
            for index, item in enumerate(value):
                strings[f"{name}.{index}"] = ",".join(map(str, sorted(item))) if name == "hw_numa_cpus" else str(item)
        elif name == "traits_required":
            strings.update({f"trait:{trait}": "required" for trait in value})
        elif isinstance(value, bool):
            strings[name] = "true" if value else "false"
        else:
            strings[name] = str(value)
    return strings


def pci_requests_of(requests) -> list:
    if not requests:
        return []
    return [{"count": r.count, "specs": r.spec, "alias_name": _set(r, "alias_name") or "",
             "numa_policy": _set(r, "numa_policy") or ""} for r in requests]


def pools_of(pci_stats) -> list | None:
    if pci_stats is None:
        return None
    pools = []
    for pool in pci_stats.pools:
        tags = {k: v for k, v in pool.items()
                if k not in ("vendor_id", "product_id", "dev_type", "numa_node", "count", "devices")}
        pools.append({"vendor_id": pool["vendor_id"], "product_id": pool["product_id"],
                      "dev_type": pool.get("dev_type", "type-PCI"), "numa_node": pool.get("numa_node"),
                      "count": pool["count"], "tags": tags})
    return pools


def _a_step_is_mocked() -> bool:
    """The test replaced part of Nova's decision with a mock: its answer is the mock's."""
    steps = [getattr(hardware, name) for name in dir(hardware) if callable(getattr(hardware, name)) and name != "LOG"]
    steps += [stats.PciDeviceStats.support_requests, stats.PciDeviceStats.apply_requests]
    return any(isinstance(step, unittest.mock.Base) for step in steps)


def recorded(kind: str, capture_inputs, describe_result):
    def wrap(function):
        def wrapper(*args, **kwargs):
            outermost = current["depth"] == 0
            record = None
            if outermost:
                try:
                    if _a_step_is_mocked():
                        raise Unsupported("a step mocked")
                    record = {"test": current["test"], "kind": kind, **capture_inputs(*args, **kwargs)}
                except Unsupported as why:
                    skipped[f"{kind}: {why}"] += 1
            current["depth"] += 1
            try:
                result = function(*args, **kwargs)
            except exception.NovaException as error:
                if record is not None:
                    record["raises"] = type(error).__name__
                    records.append(record)
                raise
            finally:
                current["depth"] -= 1
            if record is not None:
                record["result"] = describe_result(result)
                records.append(record)
            return result
        return wrapper
    return wrap


def _constraints_inputs(flavor, image_meta):
    return {"flavor": {"name": _set(flavor, "name", ""), "vcpus": _set(flavor, "vcpus", 0),
                       "memory_mb": _set(flavor, "memory_mb", 0),
                       "extra_specs": dict(_set(flavor, "extra_specs", {}) or {})},
            "image_properties": image_properties(image_meta)}


def _fit_inputs(host_topology, instance_topology, provider_mapping=None, limits=None, pci_requests=None,
                pci_stats=None):
    if host_topology is None or instance_topology is None:
        raise Unsupported("no topology")
    return {"host_cells": [host_cell(c) for c in host_topology.cells],
            "guest": guest_topology(copy.deepcopy(instance_topology)), "limits": limits_of(limits),
            "pci_requests": pci_requests_of(pci_requests), "pci_pools": pools_of(pci_stats),
            "packing": CONF.compute.packing_host_numa_cells_allocation_strategy}


def _cell_inputs(host, instance, limits=None, cpuset_reserved=0):
    return {"host_cell": host_cell(host), "guest_cell": guest_cell(copy.deepcopy(instance)),
            "limits": limits_of(limits), "reserved": cpuset_reserved}


def _filter_inputs(self, host_state, spec_obj):
    if _set(spec_obj, "network_metadata") is not None:
        raise Unsupported("network metadata")
    image = spec_obj.image if spec_obj.obj_attr_is_set("image") and spec_obj.image else None
    return {"host_cells": [host_cell(c) for c in host_state.numa_topology.cells]
            if host_state.numa_topology else [],
            "cpu_allocation_ratio": host_state.cpu_allocation_ratio,
            "ram_allocation_ratio": host_state.ram_allocation_ratio,
            "pci_pools": pools_of(host_state.pci_stats),
            "guest": guest_topology(copy.deepcopy(spec_obj.numa_topology)),
            "extra_specs": dict(spec_obj.flavor.extra_specs or {}),
            "image_properties": image_properties(image) if image else {},
            "pci_requests": pci_requests_of(spec_obj.pci_requests.requests if spec_obj.pci_requests else None),
            "packing": CONF.compute.packing_host_numa_cells_allocation_strategy}


def _usage_inputs(host_topology, instance_topology, free=False):
    if free or not host_topology or not instance_topology:
        raise Unsupported("freeing, or no topology")
    return {"host_cells": [host_cell(c) for c in host_topology.cells],
            "placed": [{**guest_cell(c), **fitted_cell(c)} for c in instance_topology.cells]}


def _flavor_image_inputs(flavor, image_meta):
    return {"flavor": {"vcpus": _set(flavor, "vcpus", 0), "extra_specs": dict(_set(flavor, "extra_specs", {}) or {})},
            "image_properties": image_properties(image_meta)}


def _locked_memory_inputs(flavor, image_meta, mach_type=None):
    inputs = _flavor_image_inputs(flavor, image_meta)
    if any("mem_encryption" in key for key in [*inputs["flavor"]["extra_specs"], *inputs["image_properties"]]):
        raise Unsupported("memory encryption")
    return inputs


def _pagesize_request_inputs(host, instance):
    return {"host_cell": host_cell(host), "memory": instance.memory, "pagesize": instance.pagesize}


def _as_list(value):
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def install() -> None:
    # Helpers of numa_get_constraints and of the fit, where a test calls them directly.
    for name in ("_get_numa_pagesize_constraint", "get_realtime_cpu_constraint", "get_cpu_policy_constraint",
                 "get_cpu_thread_policy_constraint"):
        setattr(hardware, name, recorded(name, _flavor_image_inputs, _as_list)(getattr(hardware, name)))
    hardware.get_locked_memory_constraint = recorded(
        "get_locked_memory_constraint", _locked_memory_inputs, lambda locked: locked
    )(hardware.get_locked_memory_constraint)
    hardware._numa_cell_supports_pagesize_request = recorded(
        "_numa_cell_supports_pagesize_request", _pagesize_request_inputs, lambda size: size
    )(hardware._numa_cell_supports_pagesize_request)
    hardware.numa_usage_from_instance_numa = recorded(
        "usage", _usage_inputs, lambda t: t and [host_cell(c) for c in t.cells])(hardware.numa_usage_from_instance_numa)
    hardware.numa_get_constraints = recorded(
        "constraints", _constraints_inputs, guest_topology)(hardware.numa_get_constraints)
    hardware.numa_fit_instance_to_host = recorded(
        "fit", _fit_inputs, lambda t: None if t is None else [fitted_cell(c) for c in t.cells]
    )(hardware.numa_fit_instance_to_host)
    hardware._numa_fit_instance_cell = recorded(
        "fit_cell", _cell_inputs, lambda c: None if c is None else fitted_cell(c))(hardware._numa_fit_instance_cell)
    cls = numa_topology_filter.NUMATopologyFilter
    cls.host_passes = recorded("filter", _filter_inputs, bool)(cls.host_passes)


def _cell(cell_id, cpus, memory, pages=()):
    return objects.NUMACell(
        id=cell_id, cpuset=set(cpus), pcpuset=set(), memory=memory, cpu_usage=0, memory_usage=0, pinned_cpus=set(),
        siblings=[{cpu} for cpu in cpus], socket=0,
        mempages=[objects.NUMAPagesTopology(size_kb=size, total=total, used=0, reserved=0) for size, total in pages])


class NovaSearchQuirks(unittest.TestCase):
    """Not Nova's tests: cases where numa_fit_instance_to_host's mutation of the guest cells it
    tries changes its answer (both find no fit though one exists), labelled by Nova's code."""

    def test_cache_keyed_by_mutated_guest_cell_id(self):
        # Guest cell 0 fits host cell 1, so its id becomes 1; the cache then holds "(2, 1) does
        # not fit" from guest cell 1, and guest cell 0 never tries host cell 2, where it fits.
        host = objects.NUMATopology(cells=[_cell(0, [0, 1, 2, 3], 512), _cell(1, [4, 5, 6, 7], 4096),
                                           _cell(2, [8], 4096)])
        guest = objects.InstanceNUMATopology(cells=[
            objects.InstanceNUMACell(id=0, cpuset={0}, pcpuset=set(), memory=1024),
            objects.InstanceNUMACell(id=1, cpuset={1, 2, 3}, pcpuset=set(), memory=1024)])
        self.assertIsNone(hardware.numa_fit_instance_to_host(host, guest, {}))

    def test_page_size_settled_on_sticks(self):
        # Guest cell 0 asks for large pages and settles on 2 MiB ones in host cell 0; tried on
        # host cell 1 later it asks for 2 MiB pages, which that cell lacks (it has 1 GiB ones).
        host = objects.NUMATopology(cells=[
            _cell(0, [0, 1, 2, 3], 4096, [(4, 1048576), (2048, 1024)]),
            _cell(1, [4], 4096, [(4, 1048576), (1048576, 2)]), _cell(2, [8], 4096, [(4, 1048576)])])
        guest = objects.InstanceNUMATopology(cells=[
            objects.InstanceNUMACell(id=0, cpuset={0}, pcpuset=set(), memory=1024, pagesize=hardware.MEMPAGES_LARGE),
            objects.InstanceNUMACell(id=1, cpuset={1, 2, 3}, pcpuset=set(), memory=1024,
                                     pagesize=hardware.MEMPAGES_LARGE)])
        self.assertIsNone(hardware.numa_fit_instance_to_host(host, guest, {}))


def _random_host_cell(rng: random.Random, cell_id: int, first_cpu: int):
    threads = rng.choice((1, 1, 2, 2, 4))
    cores = rng.randint(1, 6)
    cpus = list(range(first_cpu, first_cpu + threads * cores))
    siblings = [set(cpus[core * threads:(core + 1) * threads]) for core in range(cores)]
    layout = rng.choice(("legacy", "split", "dedicated", "shared"))
    if layout == "legacy":  # vcpu_pin_set: the same CPUs for both
        cpuset = pcpuset = set(cpus)
    elif layout == "split":
        cut = rng.randint(0, cores) * threads
        cpuset, pcpuset = set(cpus[:cut]), set(cpus[cut:])
    else:
        cpuset, pcpuset = (set(), set(cpus)) if layout == "dedicated" else (set(cpus), set())
    memory = rng.choice((1024, 2048, 4096, 8192))
    pages = [(4, memory * 256, rng.choice((0, 0, memory * 64, memory * 256)), 0)]
    if rng.random() < 0.6:
        total = rng.choice((256, 512, 1024))
        pages.append((2048, total, rng.choice((0, 0, total // 2, total)), rng.choice((0, 0, 64))))
    if rng.random() < 0.3:
        pages.append((1048576, rng.choice((1, 2, 4)), rng.choice((0, 1)), 0))
    return objects.NUMACell(
        id=cell_id, cpuset=cpuset, pcpuset=pcpuset, memory=memory,
        cpu_usage=rng.choice((0, 0, 0, len(cpuset), 2 * len(cpuset))),
        memory_usage=rng.choice((0, 0, 0, memory // 2, memory)),
        pinned_cpus=set(rng.sample(sorted(pcpuset), rng.randint(0, len(pcpuset) // 2))) if pcpuset else set(),
        siblings=siblings, socket=rng.choice((0, cell_id // 2)),
        mempages=[objects.NUMAPagesTopology(size_kb=size, total=total, used=min(used, total), reserved=reserved)
                  for size, total, used, reserved in (pages if rng.random() < 0.9 else [])])


def _random_flavor(rng: random.Random):
    vcpus = rng.choice((1, 2, 2, 4, 4, 6, 8))
    memory = rng.choice((512, 1024, 1024, 2048, 4096))
    specs = {}
    policy = rng.choice(("dedicated", "dedicated", "shared", "mixed", None))
    if policy:
        specs["hw:cpu_policy"] = policy
    if policy == "mixed" and vcpus > 1:
        specs["hw:cpu_dedicated_mask"] = rng.choice(("^0", f"0-{vcpus // 2 - 1}" if vcpus > 2 else "0"))
    if policy == "dedicated" and rng.random() < 0.6:
        specs["hw:cpu_thread_policy"] = rng.choice(("isolate", "prefer", "require"))
    if policy == "dedicated" and rng.random() < 0.2:
        specs["hw:emulator_threads_policy"] = "isolate"
    nodes = rng.choice((None, None, 1, 2, 2, 4))
    if nodes:
        specs["hw:numa_nodes"] = str(nodes)
    if nodes == 2 and vcpus > 2 and rng.random() < 0.4:
        specs.update({"hw:numa_cpus.0": "0", "hw:numa_cpus.1": f"1-{vcpus - 1}",
                      "hw:numa_mem.0": str(memory // 4), "hw:numa_mem.1": str(memory - memory // 4)})
    if rng.random() < 0.4:
        specs["hw:mem_page_size"] = rng.choice(("small", "large", "any", "2048", "2MB", "1GB"))
    return objects.Flavor(vcpus=vcpus, memory_mb=memory, extra_specs=specs, name="random")


GPU, NIC = ("10de", "1eb8"), ("8086", "154d")


def _random_pci(rng: random.Random, cells):
    """Pools of two device kinds on random cells (or none), and requests for them with a
    random NUMA affinity policy: the PciDeviceStats and InstancePCIRequests of Nova."""
    pools = [objects.PciDevicePool(vendor_id=vendor, product_id=product, count=rng.randint(1, 3),
                                   numa_node=rng.choice([None] + [cell.id for cell in cells]),
                                   tags={"dev_type": "type-PCI"})
             for vendor, product in rng.sample((GPU, NIC, GPU, NIC), rng.randint(1, 4))]
    requests = [objects.InstancePCIRequest(count=rng.randint(1, 2), spec=[{"vendor_id": vendor, "product_id": product}],
                                           alias_name="gpu" if (vendor, product) == GPU else "nic",
                                           numa_policy=rng.choice(("legacy", "preferred", "required", "socket")))
                for vendor, product in rng.sample((GPU, NIC), rng.randint(1, 2))]
    host = objects.NUMATopology(cells=cells)
    return requests, stats.PciDeviceStats(host, stats=objects.PciDevicePoolList(objects=pools))


class RandomScenarios(unittest.TestCase):
    """Not Nova's tests: seeded random hosts and flavors, each guest topology built by
    numa_get_constraints, fitted by numa_fit_instance_to_host (with or without limits, spread or
    pack, with or without PCI requests and devices) and, where it fits, consumed by
    numa_usage_from_instance_numa: Nova's answers recorded."""

    SCENARIOS = 400

    def test_random(self):
        rng = random.Random(13)
        for _ in range(self.SCENARIOS):
            cells, first_cpu = [], 0
            for cell_id in range(rng.choice((1, 2, 2, 3, 4))):
                cells.append(_random_host_cell(rng, cell_id, first_cpu))
                first_cpu += 16
            host = objects.NUMATopology(cells=cells)
            try:
                guest = hardware.numa_get_constraints(_random_flavor(rng), objects.ImageMeta.from_dict({}))
            except exception.NovaException:
                continue
            if guest is None:
                continue
            limits = None if rng.random() < 0.3 else objects.NUMATopologyLimits(
                cpu_allocation_ratio=rng.choice((1.0, 4.0, 16.0)), ram_allocation_ratio=rng.choice((1.0, 1.5)))
            CONF.set_override("packing_host_numa_cells_allocation_strategy", rng.random() < 0.3, "compute")
            pci_requests, pci_stats = _random_pci(rng, cells) if rng.random() < 0.4 else (None, None)
            fitted = hardware.numa_fit_instance_to_host(host, guest, {}, limits=limits, pci_requests=pci_requests,
                                                        pci_stats=pci_stats)
            CONF.clear_override("packing_host_numa_cells_allocation_strategy", "compute")
            # Nova's usage needs page sizes on every cell (its smallest page size): computes report them.
            if fitted is not None and all(cell.mempages for cell in cells):
                try:
                    hardware.numa_usage_from_instance_numa(host, fitted)
                except exception.CPUPinningInvalid:
                    pass  # isolate pins whole cores: one whose sibling is already pinned (recorded as raising)


def _random_specs(rng: random.Random, vcpus: int, memory: int) -> tuple[dict, dict]:
    """Flavor extra specs and image properties (Glance's strings) touching every input of
    numa_get_constraints, valid or not, agreeing or conflicting."""
    pick = rng.choice
    specs, props = {}, {}
    for key, values in (("hw:cpu_policy", ("dedicated", "shared", "mixed", "Dedicated", "")),
                        ("hw:cpu_thread_policy", ("isolate", "prefer", "require", "bogus")),
                        ("hw:emulator_threads_policy", ("isolate", "share", "bogus")),
                        ("hw:numa_nodes", ("1", "2", "3", "4", "0", "two", "02")),
                        ("hw:mem_page_size", ("small", "large", "any", "2048", "2MB", "1GB", "1G", "4")),
                        ("hw:cpu_dedicated_mask", ("^0", "0", "0-1", f"0-{vcpus - 1}", "9", "")),
                        ("hw:cpu_realtime", ("yes", "no", "true")),
                        ("hw:cpu_realtime_mask", ("^0", "^0-1", "1", f"0-{vcpus}")),
                        ("hw:locked_memory", ("true", "false")),
                        ("resources:PCPU", (str(vcpus), str(vcpus + 1), "1")),
                        ("resources:VCPU", (str(vcpus),)),
                        ("trait:HW_CPU_HYPERTHREADING", ("required", "forbidden"))):
        if rng.random() < 0.2:
            specs[key] = pick(values)
    for key, values in (("hw_cpu_policy", ("dedicated", "shared", "mixed")),
                        ("hw_cpu_thread_policy", ("isolate", "prefer", "require")),
                        ("hw_numa_nodes", ("1", "2", "4")),
                        ("hw_mem_page_size", ("small", "large", "2048", "1GB")),
                        ("hw_cpu_realtime_mask", ("^0", "1")),
                        ("hw_locked_memory", ("true", "false")),
                        ("trait:HW_CPU_HYPERTHREADING", ("required",))):
        if rng.random() < 0.1:
            props[key] = pick(values)
    if rng.random() < 0.2:  # a guest NUMA layout, complete or not, in the flavor or the image
        cut = rng.randint(0, vcpus - 1)
        layout = {"cpus.0": f"0-{cut}", "cpus.1": f"{cut + 1}-{vcpus - 1}" if cut + 1 < vcpus else "",
                  "mem.0": str(memory // 2), "mem.1": str(memory - memory // 2 + pick((0, 0, 512)))}
        layout = {key: value for key, value in layout.items() if value and rng.random() < 0.9}
        if rng.random() < 0.7:
            specs.update({f"hw:numa_{key}": value for key, value in layout.items()})
            specs.setdefault("hw:numa_nodes", "2")
        else:
            props.update({f"hw_numa_{key}": value for key, value in layout.items()})
            props.setdefault("hw_numa_nodes", "2")
    return specs, props


class RandomConstraints(unittest.TestCase):
    """Not Nova's tests: seeded random flavors and images through numa_get_constraints, its
    answer or the exception it raises recorded."""

    SCENARIOS = 600

    def test_random(self):
        rng = random.Random(34)
        for _ in range(self.SCENARIOS):
            vcpus, memory = rng.choice((1, 2, 3, 4, 8)), rng.choice((512, 1024, 2048, 3072))
            specs, props = _random_specs(rng, vcpus, memory)
            try:
                image = objects.ImageMeta.from_dict({"properties": props})
            except ValueError:
                continue  # ImageMetaProps refuses the image before NUMA is looked at
            try:
                hardware.numa_get_constraints(objects.Flavor(vcpus=vcpus, memory_mb=memory, extra_specs=specs,
                                                             name="random"), image)
            except exception.NovaException:
                pass  # recorded with the exception's name


class Recording(unittest.TextTestResult):
    @staticmethod
    def name(test) -> str:
        """"NUMATopologyTest.test_topology_constraints": Nova's class and test name."""
        return ".".join(test.id().split(".")[-2:])

    def startTest(self, test):
        current["test"] = self.name(test)
        super().startTest(test)


def main() -> int:
    install()
    suite = unittest.defaultTestLoader.loadTestsFromNames(TEST_CLASSES)
    suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(NovaSearchQuirks))
    suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(RandomScenarios))
    suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(RandomConstraints))
    result = unittest.TextTestRunner(resultclass=Recording, verbosity=0, stream=sys.stderr).run(suite)
    failed = {Recording.name(test) for test, _ in result.failures + result.errors}
    kept = [r for r in records if r["test"] not in failed]
    OUTPUT.parent.mkdir(exist_ok=True)
    for path, part in ((OUTPUT, [r for r in kept if not r["test"].startswith("Random")]),
                       (RANDOM_OUTPUT, [r for r in kept if r["test"].startswith("Random")])):
        path.write_text(json.dumps(part, indent=None, sort_keys=True).replace('}, {"', '},\n{"') + "\n")
    print(f"{len(kept)} calls from {len({r['test'] for r in kept})} tests; left out: {dict(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
