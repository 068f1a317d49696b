"""Nova's host weighers: raw values, normalisation, multipliers and the top-k.

Each weigher reads one column (its raw value per host), is normalised across the
hosts that pass every rule exactly as nova/weights.py normalize() does (RAM, CPU,
Disk and IoOps weighers have minval = 0: values clamp at 0 and the low bound is 0),
and contributes multiplier * normalised to the host's weight. The kernel
(weigh.pxi) weighs the passing rows and keeps the best k without sorting the
fleet; reference_weigh() is the same computation in plain Python over
engine.model hosts, for property tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from engine import _fastfilters
from engine.config import Profile
from engine.model import Host, Request
from engine.verdict import WeighedHost, WeigherScore


@dataclass(frozen=True)
class Weigher:
    name: str  # Nova's class name
    column: str  # the Columns array holding the raw value per row
    multiplier_option: str  # the Profile option (Nova's [filter_scheduler] name)
    clamp_at_zero: bool  # Nova's `minval = 0`
    # How much one instance of the request changes the raw value (HostState.consume_from_request).
    change_per_instance: Callable[[Request], float]
    # Reference: the raw value of a model host after `placed` instances of the request were
    # consumed on it, computed as Nova's HostState does.
    reference_value: Callable[[Host, Request, int], float]


def _inventory(host: Host, resource_class: str) -> tuple[float, float, float]:
    """(total, used, allocation_ratio); zeros without the inventory."""
    inventory = host.resources.get(resource_class)
    if inventory is None:
        return 0.0, 0.0, 0.0
    return float(inventory.total), float(inventory.used), inventory.allocation_ratio


def _free_ram_mb(host: Host, request: Request, placed: int) -> float:
    total, used, _ = _inventory(host, "MEMORY_MB")
    return total - used - placed * request.resources.get("MEMORY_MB", 0)


def _free_vcpus(host: Host, request: Request, placed: int) -> float:
    # consume_from_request adds to vcpus_used; CPUWeigher reads total * ratio - used.
    total, used, ratio = _inventory(host, "VCPU")
    return total * ratio - (used + placed * request.resources.get("VCPU", 0))


def _free_disk_mb(host: Host, request: Request, placed: int) -> float:
    total, used, _ = _inventory(host, "DISK_GB")
    return (total - used) * 1024.0 - placed * request.resources.get("DISK_GB", 0) * 1024.0


# Nova's in-tree order of these weighers; the weight is summed in this order.
WEIGHERS: tuple[Weigher, ...] = (
    Weigher("RAMWeigher", "w_free_ram_mb", "ram_weight_multiplier", True,
            lambda request: -float(request.resources.get("MEMORY_MB", 0)), _free_ram_mb),
    Weigher("CPUWeigher", "w_free_vcpus", "cpu_weight_multiplier", True,
            lambda request: -float(request.resources.get("VCPU", 0)), _free_vcpus),
    Weigher("DiskWeigher", "w_free_disk_mb", "disk_weight_multiplier", True,
            lambda request: -float(request.resources.get("DISK_GB", 0)) * 1024.0, _free_disk_mb),
    # "There is always an IO operation": every placement adds one.
    Weigher("IoOpsWeigher", "num_io_ops", "io_ops_weight_multiplier", True,
            lambda request: 1.0, lambda host, request, placed: float(host.num_io_ops + placed)),
    Weigher("NumInstancesWeigher", "num_instances", "num_instances_weight_multiplier", False,
            lambda request: 1.0, lambda host, request, placed: float(host.num_instances + placed)),
)


@dataclass(frozen=True)
class WeighPlan:
    """The weighers of one request: multipliers from the profile, consumption from the request."""

    weighers: tuple[Weigher, ...]
    multipliers: np.ndarray  # float64 per weigher
    changes_per_instance: np.ndarray  # float64 per weigher
    clamp_at_zero: np.ndarray  # uint8 per weigher


def plan_weighing(profile: Profile, request: Request) -> WeighPlan:
    return WeighPlan(
        weighers=WEIGHERS,
        multipliers=np.array([getattr(profile, w.multiplier_option) for w in WEIGHERS], dtype=np.float64),
        changes_per_instance=np.array([w.change_per_instance(request) for w in WEIGHERS], dtype=np.float64),
        clamp_at_zero=np.array([w.clamp_at_zero for w in WEIGHERS], dtype=np.uint8),
    )


@dataclass(frozen=True)
class Ranking:
    rows: np.ndarray  # int64, best first
    weights: np.ndarray  # float64, parallel to rows
    passing: int  # rows that were weighed (fail_bits == 0)
    bounds: np.ndarray  # float64 [weighers, 2]: each weigher's normalisation (low, high)


def rank(columns, plan: WeighPlan, fail_bits: np.ndarray, placed: np.ndarray | None, k: int,
         scratch: np.ndarray | None = None) -> Ranking:
    """The best k passing rows, with `placed[row]` instances of this request already consumed
    on each row (None: none yet). Ties keep row order. `scratch` (float64, one per row) can be
    reused across calls of one request."""
    if scratch is None:
        scratch = np.empty(len(fail_bits), dtype=np.float64)
    top_rows = np.empty(k, dtype=np.int64)
    top_weights = np.empty(k, dtype=np.float64)
    bounds = np.empty((len(plan.weighers), 2), dtype=np.float64)
    passing, found = _fastfilters.weigh_top_k(
        fail_bits, [columns.arrays[w.column] for w in plan.weighers], placed,
        plan.changes_per_instance, plan.multipliers, plan.clamp_at_zero, bounds, scratch, top_rows, top_weights)
    return Ranking(top_rows[:found], top_weights[:found], passing, bounds)


def score(columns, plan: WeighPlan, ranking: Ranking, position: int, placed_here: int) -> WeighedHost:
    """The ranked host at `position` with each weigher's raw value, normalised value and multiplier."""
    row = int(ranking.rows[position])
    scores = []
    for index, weigher in enumerate(plan.weighers):
        raw = float(columns.arrays[weigher.column][row] + placed_here * plan.changes_per_instance[index])
        low, high = (float(bound) for bound in ranking.bounds[index])
        scores.append(WeigherScore(weigher.name, raw, _normalized(raw, weigher.clamp_at_zero, low, high,
                                                                   ranking.passing),
                                   float(plan.multipliers[index])))
    return WeighedHost(columns.host_name(row), float(ranking.weights[position]), tuple(scores))


def _normalized(raw: float, clamp_at_zero: bool, low: float, high: float, passing: int) -> float:
    value = max(raw, 0.0) if clamp_at_zero else raw
    if passing <= 1 or low == high:
        return 0.0
    return (value - low) / (high - low)


def reference_weigh(hosts: Sequence[Host], profile: Profile, request: Request,
                    placed: Mapping[str, int] | None = None) -> list[WeighedHost]:
    """Nova's get_weighed_objects over model hosts (those that passed every rule, in fleet
    order), with `placed[name]` instances of the request already consumed on each: sorted
    by weight, descending, ties in fleet order."""
    placed = placed or {}
    if len(hosts) <= 1:  # Nova returns a lone host unweighed
        return [WeighedHost(host.name, 0.0) for host in hosts]
    totals = [0.0] * len(hosts)
    scores: list[list[WeigherScore]] = [[] for _ in hosts]
    for weigher in WEIGHERS:
        multiplier = getattr(profile, weigher.multiplier_option)
        raws = [weigher.reference_value(host, request, placed.get(host.name, 0)) for host in hosts]
        clamped = [max(raw, 0.0) for raw in raws] if weigher.clamp_at_zero else raws
        normalized = nova_normalize(clamped, minval=0.0 if weigher.clamp_at_zero else None)
        for index, (raw, value) in enumerate(zip(raws, normalized)):
            totals[index] += multiplier * value
            scores[index].append(WeigherScore(weigher.name, raw, value, multiplier))
    weighed = [WeighedHost(host.name, total, tuple(host_scores))
               for host, total, host_scores in zip(hosts, totals, scores)]
    return sorted(weighed, key=lambda weighed_host: weighed_host.weight, reverse=True)  # stable


def nova_normalize(values: Sequence[float], minval: float | None = None,
                   maxval: float | None = None) -> list[float]:
    """nova/weights.py normalize(): into [0, 1] over [minval, maxval], which default to the
    list's own min and max; all-equal bounds give all 0."""
    if not values:
        return []
    high = float(max(values) if maxval is None else maxval)
    low = float(min(values) if minval is None else minval)
    if low == high:
        return [0.0] * len(values)
    return [(value - low) / (high - low) for value in values]
