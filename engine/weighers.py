"""Nova's host weighers: raw values, normalisation, per-host multipliers and the top-k.

The weighers, in the order nova.scheduler.weights.all_weighers() loaded them from
Nova 34.0.0 when checked (it walks the package's modules, so only the order of the
floating-point sum depends on it):

  NumInstancesWeigher                 num_instances (+1 per instance placed)
  MetricsWeigher                      sum of metric * ratio over [metrics] weight_setting, each
                                      metric truncated to an integer as Nova's MonitorMetric.value
                                      (an IntegerField) holds it; a lacking metric: the request
                                      fails when metrics_required (Nova raises
                                      ComputeHostMetricNotFound), else weight_of_unavailable
                                      unless ratio * multiplier is 0
  CPUWeigher                          VCPU total * allocation_ratio - used       (minval 0)
  BuildFailureWeigher                 failed_builds, multiplier negated
  ServerGroupSoftAffinityWeigher      members of a soft-affinity group on the host
  ServerGroupSoftAntiAffinityWeigher  minus the members of a soft-anti-affinity group on it
  RAMWeigher                          MEMORY_MB total - used                     (minval 0)
  DiskWeigher                         (DISK_GB total - used) * 1024               (minval 0)
  PCIWeigher                          100 - min(free PCI devices, 99) (Nova's MAX_DEVS), the
                                      request's devices taken per instance placed
  IoOpsWeigher                        num_io_ops (+1 per instance placed)          (minval 0)
  HypervisorVersionWeigher            hypervisor_version, 0 when unknown

An instance of this request placed on a host counts as Nova's HostState.consume_from_request
counts it, and as a group member, as Nova's multi-create adds it to the group and the host.

Not weighed:
  ImagePropertiesWeigher  needs the image properties of the instances on each host, which
                          the fleet state does not carry
  CrossCellWeigher        the fleet state has no cells: every host weighs 0

Each weigher is normalised across the hosts that pass every rule as nova/weights.py
normalize() does, and contributes multiplier * normalised to a host's weight, the
multiplier being the profile option overridden by the host's aggregates' metadata key of
the same name (Nova's get_weight_multiplier: the smallest value wins, an unparsable one
gives the option's value). Multipliers are worked out once per distinct aggregate
membership (aggregate_set_id) and broadcast over hosts in the kernel (weigh.pxi), which
weighs the passing rows and keeps the best k without sorting; reference_weigh() is the
same computation in plain Python over engine.model hosts, for property tests.
"""
from __future__ import annotations

import functools
import logging
import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from placecheck_engine import _fastfilters, pci
from placecheck_engine.config import Profile
from placecheck_engine.model import Fleet, GroupPolicy, Host, InvalidField, Request
from placecheck_engine.rules.pci_passthrough_filter import request_pci
from placecheck_engine.verdict import WeighedHost, WeigherScore

log = logging.getLogger(__name__)


class MetricNotFound(InvalidField):
    """With metrics_required, a weighed host lacks a metric of metrics_weight_setting: Nova's
    MetricsWeigher raises ComputeHostMetricNotFound and the whole request fails."""

    def __init__(self, host: str, metric: str):
        super().__init__("request.profile", f"host {host!r} does not report metric {metric!r}, which "
                                            f"metrics_weight_setting weighs and metrics_required requires")
        self.host = host
        self.metric = metric


@functools.lru_cache(maxsize=64)  # once per distinct setting: profiles are few, requests many
def parse_weight_setting(entries: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """nova.scheduler.utils.parse_options(entries, sep='=', converter=float): (name, ratio)
    per valid "name=ratio" entry, in order; invalid entries are ignored with a warning. A
    non-finite ratio is ignored too (Nova would weigh every host NaN)."""
    good, bad = [], []
    for entry in entries:
        name, separator, text = entry.partition("=")
        try:
            ratio = float(text)
        except ValueError:
            ratio = None
        if name and separator and ratio is not None and math.isfinite(ratio):
            good.append((name, ratio))
        else:
            bad.append(entry)
    if bad:
        log.warning("ignoring the invalid elements of metrics_weight_setting: %s", ", ".join(bad))
    return tuple(good)


def nova_weight_multiplier(metadatas: Sequence[Mapping[str, str]], key: str, configured: float) -> float:
    """nova.scheduler.utils.get_weight_multiplier over the metadata of a host's aggregates:
    the smallest of their values for `key`, or `configured` when none has it or one does not
    parse as a number."""
    values = {metadata[key] for metadata in metadatas if key in metadata}
    if not values:
        return configured
    try:
        return min(float(value) for value in values)
    except ValueError:
        log.warning("could not decode %r weight multiplier %s", key, sorted(values))
        return configured


@dataclass(frozen=True)
class Weigher:
    name: str  # Nova's class name
    multiplier_option: str  # the Profile option, and the aggregate metadata key overriding it
    clamp_at_zero: bool  # Nova's `minval = 0`
    negated: bool  # the multiplier is -1 * the option (BuildFailureWeigher)
    # Per request: the raw value per row before any pick (None: 0 for every row), from the
    # columns, the request, the profile and this weigher's multiplier per aggregate set (with
    # the rows' set ids, None when every row takes multiplier_of_set[0]).
    raw_column: Callable[[object, Request, Profile, np.ndarray, np.ndarray | None], np.ndarray | None]
    # How much one instance of the request changes the raw value (consume_from_request).
    change_per_instance: Callable[[Request, Profile], float]
    # Reference: the raw value of a model host after `placed` instances of the request,
    # given the host's multiplier for this weigher, computed as Nova's weigher does.
    reference_value: Callable[[Host, Request, Profile, int, float], float]
    # A NaN raw value is a required metric the host lacks (MetricsWeigher).
    nan_is_missing_metric: bool = False
    # A lower bound on raw values other than Nova's minval 0, normalised over [min, max] like
    # the unbounded (PCIWeigher's max(1, MAX_DEVS - free): exact after any number of picks).
    floor: float | None = None

    @property
    def kernel_floor(self) -> float:
        return 0.0 if self.clamp_at_zero else -math.inf if self.floor is None else self.floor


def _column(name: str):
    return lambda columns, request, profile, multiplier_of_set, set_ids: columns.arrays[name]


def _inventory(host: Host, resource_class: str) -> tuple[float, float, float]:
    """(total, used, allocation_ratio); zeros without the inventory."""
    inventory = host.resources.get(resource_class)
    if inventory is None:
        return 0.0, 0.0, 0.0
    return float(inventory.total), float(inventory.used), inventory.allocation_ratio


def _free_ram_mb(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
    total, used, _ = _inventory(host, "MEMORY_MB")
    return total - used - placed * request.resources.get("MEMORY_MB", 0)


def _free_vcpus(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
    # consume_from_request adds to vcpus_used; CPUWeigher reads total * ratio - used.
    total, used, ratio = _inventory(host, "VCPU")
    return total * ratio - (used + placed * request.resources.get("VCPU", 0))


def _free_disk_mb(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
    total, used, _ = _inventory(host, "DISK_GB")
    return (total - used) * 1024.0 - placed * request.resources.get("DISK_GB", 0) * 1024.0


def _group_policy(request: Request) -> GroupPolicy | None:
    return request.server_group.policy if request.server_group is not None else None


def _members_on_rows(policy: GroupPolicy, sign: int):
    """The raw column of a soft (anti-)affinity weigher: sign * the group's members on each
    row, found through the instance index (never a loop over hosts)."""

    def column(columns, request: Request, profile: Profile, multiplier_of_set, set_ids):
        if _group_policy(request) is not policy or not request.server_group.members:
            return None
        rows = columns.instance_rows(request.server_group.members)
        if not len(rows):
            return None
        return (sign * np.bincount(rows, minlength=columns.host_count)).astype(np.int32)

    return column


def _members_on_host(policy: GroupPolicy, sign: int):
    def value(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
        if _group_policy(request) is not policy:
            return 0.0
        # Every instance of the request is a member, and Nova adds each pick to the host.
        return float(sign * (len(set(host.instances) & set(request.server_group.members)) + placed))

    return value


def _metrics_column(columns, request: Request, profile: Profile, multiplier_of_set, set_ids):
    setting = parse_weight_setting(profile.metrics_weight_setting)
    if not setting:
        return None
    names = columns.dicts["metric_names"]
    indices = [bisect_left(names, name) for name, _ in setting]
    indices = [index if index < len(names) and names[index] == name else -1
               for index, (name, _) in zip(indices, setting)]
    raw = np.empty(columns.host_count, dtype=np.float64)
    _fastfilters.metrics_raw(columns.arrays["metric_values"], np.array(indices, dtype=np.int64),
                             np.array([ratio for _, ratio in setting], dtype=np.float64),
                             multiplier_of_set, set_ids, profile.metrics_weight_of_unavailable,
                             profile.metrics_required, raw)
    return raw


def _metrics_value(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
    value = 0.0
    for name, ratio in parse_weight_setting(profile.metrics_weight_setting):
        if name in host.metrics:
            value += int(host.metrics[name]) * ratio
        elif profile.metrics_required:
            raise MetricNotFound(host.name, name)
        elif ratio * multiplier != 0:
            # The most negative weight, putting the host last; skipped when it would weigh 0.
            return profile.metrics_weight_of_unavailable
    return value


def _no_change(request: Request, profile: Profile) -> float:
    return 0.0


def _one_more(request: Request, profile: Profile) -> float:
    return 1.0


def _member_change(policy: GroupPolicy, sign: int):
    return lambda request, profile: float(sign) if _group_policy(request) is policy else 0.0


def _pci_devices_per_instance(request: Request, profile: Profile) -> float:
    return float(sum(pci_request.count for pci_request in request_pci(request, profile)))


def _pci_column(columns, request: Request, profile: Profile, multiplier_of_set, set_ids):
    """MAX_DEVS - free devices, unbounded: the kernel bounds it below at 1 after each pick."""
    return columns.derived("pci_weigher_raw", lambda columns: pci.MAX_DEVS - columns.arrays["pci_free_devices"])


def _pci_value(host: Host, request: Request, profile: Profile, placed: int, multiplier: float) -> float:
    # consume_from_request takes each placed instance's devices (pci.apply_requests on a host
    # the filters passed): the free count drops by the request's devices per instance.
    free = sum(pool.count for pool in host.pci_pools) - placed * _pci_devices_per_instance(request, profile)
    return pci.pci_weight(free)


WEIGHERS: tuple[Weigher, ...] = (
    Weigher("NumInstancesWeigher", "num_instances_weight_multiplier", False, False,
            _column("num_instances"), _one_more,
            lambda host, request, profile, placed, multiplier: float(host.num_instances + placed)),
    Weigher("MetricsWeigher", "metrics_weight_multiplier", False, False,
            _metrics_column, _no_change, _metrics_value, nan_is_missing_metric=True),
    Weigher("CPUWeigher", "cpu_weight_multiplier", True, False,
            _column("w_free_vcpus"), lambda request, profile: -float(request.resources.get("VCPU", 0)),
            _free_vcpus),
    Weigher("BuildFailureWeigher", "build_failure_weight_multiplier", False, True,
            _column("failed_builds"), _no_change,
            lambda host, request, profile, placed, multiplier: float(host.failed_builds)),
    Weigher("ServerGroupSoftAffinityWeigher", "soft_affinity_weight_multiplier", False, False,
            _members_on_rows(GroupPolicy.SOFT_AFFINITY, 1), _member_change(GroupPolicy.SOFT_AFFINITY, 1),
            _members_on_host(GroupPolicy.SOFT_AFFINITY, 1)),
    Weigher("ServerGroupSoftAntiAffinityWeigher", "soft_anti_affinity_weight_multiplier", False, False,
            _members_on_rows(GroupPolicy.SOFT_ANTI_AFFINITY, -1), _member_change(GroupPolicy.SOFT_ANTI_AFFINITY, -1),
            _members_on_host(GroupPolicy.SOFT_ANTI_AFFINITY, -1)),
    Weigher("RAMWeigher", "ram_weight_multiplier", True, False,
            _column("w_free_ram_mb"), lambda request, profile: -float(request.resources.get("MEMORY_MB", 0)),
            _free_ram_mb),
    Weigher("DiskWeigher", "disk_weight_multiplier", True, False,
            _column("w_free_disk_mb"), lambda request, profile: -float(request.resources.get("DISK_GB", 0)) * 1024.0,
            _free_disk_mb),
    Weigher("PCIWeigher", "pci_weight_multiplier", False, False,
            _pci_column, _pci_devices_per_instance, _pci_value, floor=1.0),
    # "There is always an IO operation": every placement adds one.
    Weigher("IoOpsWeigher", "io_ops_weight_multiplier", True, False,
            _column("num_io_ops"), _one_more,
            lambda host, request, profile, placed, multiplier: float(host.num_io_ops + placed)),
    Weigher("HypervisorVersionWeigher", "hypervisor_version_weight_multiplier", False, False,
            _column("hypervisor_version"), _no_change,
            lambda host, request, profile, placed, multiplier: float(host.hypervisor_version or 0)),
)
MULTIPLIER_OPTIONS = frozenset(weigher.multiplier_option for weigher in WEIGHERS)


def _signed(weigher: Weigher, multiplier: float) -> float:
    return -1 * multiplier if weigher.negated else multiplier


@dataclass(frozen=True)
class WeighPlan:
    """The weighers of one request over one snapshot."""

    weighers: tuple[Weigher, ...]
    columns: tuple[np.ndarray | None, ...]  # raw value per row before any pick (None: 0)
    changes_per_instance: np.ndarray  # float64 per weigher
    floors: np.ndarray  # float64 per weigher: Weigher.kernel_floor
    multipliers: np.ndarray  # float64 [aggregate sets (or 1), weighers], signed as Nova uses them
    set_ids: np.ndarray | None  # each row's index into multipliers; None: row 0 for every host
    metrics_weighed: tuple[str, ...]  # MetricsWeigher's metric names, in setting order


def _multipliers(columns, profile: Profile) -> tuple[np.ndarray, np.ndarray | None]:
    """Each weigher's multiplier per distinct aggregate membership, when some aggregate's
    metadata overrides one; else one row of the profile's values. Once per profile values
    and snapshot generation (shared: read only)."""
    configured = tuple(getattr(profile, weigher.multiplier_option) for weigher in WEIGHERS)
    return columns.memo("weigher_multipliers", configured, lambda: _multiplier_table(columns, configured))


def _multiplier_table(columns, configured: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    overridden = set()
    for metadata in columns.dicts["aggregate_metadata"]:
        overridden.update(MULTIPLIER_OPTIONS.intersection(metadata))
    if not overridden:
        return np.array([[_signed(w, value) for w, value in zip(WEIGHERS, configured)]]), None
    set_count = len(columns.dicts["aggregate_sets"])
    table = np.empty((set_count, len(WEIGHERS)), dtype=np.float64)
    for set_id in range(set_count):
        metadatas = columns.aggregate_metadata_of_set(set_id)
        table[set_id] = [_signed(w, nova_weight_multiplier(metadatas, w.multiplier_option, value)
                                 if w.multiplier_option in overridden else value)
                         for w, value in zip(WEIGHERS, configured)]
    return table, columns.arrays["aggregate_set_id"]


def plan_weighing(columns, profile: Profile, request: Request) -> WeighPlan:
    multipliers, set_ids = _multipliers(columns, profile)
    raw_columns = tuple(weigher.raw_column(columns, request, profile, np.ascontiguousarray(multipliers[:, index]),
                                           set_ids)
                        for index, weigher in enumerate(WEIGHERS))
    return WeighPlan(
        weighers=WEIGHERS,
        columns=raw_columns,
        changes_per_instance=np.array([w.change_per_instance(request, profile) for w in WEIGHERS],
                                      dtype=np.float64),
        floors=np.array([w.kernel_floor for w in WEIGHERS], dtype=np.float64),
        multipliers=multipliers,
        set_ids=set_ids,
        metrics_weighed=tuple(name for name, _ in parse_weight_setting(profile.metrics_weight_setting)),
    )


def start_weighing(plan: WeighPlan, fail_bits: np.ndarray) -> "_fastfilters.Weighing":
    """The kernel's weighing of the rows with fail_bits == 0; it reads fail_bits again on
    refresh() and, for the consumed row, on consume(row)."""
    may_be_nan = np.array([w.nan_is_missing_metric and column is not None
                           for w, column in zip(plan.weighers, plan.columns)], dtype=np.uint8)
    return _fastfilters.Weighing(fail_bits, list(plan.columns), plan.changes_per_instance, plan.floors,
                                 may_be_nan, plan.multipliers, plan.set_ids)


@dataclass(frozen=True)
class Ranking:
    rows: np.ndarray  # int64, best first
    weights: np.ndarray  # float64, parallel to rows
    passing: int  # rows that were weighed (fail_bits == 0)
    bounds: tuple[tuple[float, float], ...]  # each weigher's normalisation (low, high)
    weighing: "_fastfilters.Weighing"  # what was ranked: score() reads a row's values from it


def rank(columns, plan: WeighPlan, weighing, k: int) -> Ranking:
    """The best k passing rows, ties in row order."""
    missing_row = weighing.missing_row
    if missing_row >= 0:
        raise MetricNotFound(columns.host_name(missing_row), _missing_metric(columns, plan, missing_row))
    top_rows = np.empty(k, dtype=np.int64)
    top_weights = np.empty(k, dtype=np.float64)
    found = weighing.top(top_rows, top_weights)
    return Ranking(top_rows[:found], top_weights[:found], weighing.passing, tuple(weighing.bounds), weighing)


def _missing_metric(columns, plan: WeighPlan, row: int) -> str:
    """The first metric of the setting that the row's host does not report."""
    names = columns.dicts["metric_names"]
    for name in plan.metrics_weighed:
        index = bisect_left(names, name)
        if index == len(names) or names[index] != name or math.isnan(columns.arrays["metric_values"][index, row]):
            return name
    raise AssertionError(f"row {row} reports every weighed metric")


def score(columns, plan: WeighPlan, ranking: Ranking, row: int, weight: float, placed_here: int) -> WeighedHost:
    """A ranked row, with `placed_here` instances of the request on it when ranked, with each
    weigher's raw value, normalised value and multiplier."""
    passing = ranking.passing
    scores = tuple([WeigherScore(weigher.name, raw if weigher.floor is None else max(raw, weigher.floor),
                                 _normalized(raw, weigher.kernel_floor, low, high, passing), multiplier)
                    for weigher, (raw, multiplier), (low, high)
                    in zip(plan.weighers, ranking.weighing.raw_and_multipliers(row, placed_here), ranking.bounds)])
    return WeighedHost(columns.host_name(row), weight, scores)


def _normalized(raw: float, floor: float, low: float, high: float, passing: int) -> float:
    value = max(raw, floor)
    if passing <= 1 or low == high:
        return 0.0
    return (value - low) / (high - low)


def reference_weigh(hosts: Sequence[Host], fleet: Fleet, profile: Profile, request: Request,
                    placed: Mapping[str, int] | None = None) -> list[WeighedHost]:
    """Nova's get_weighed_objects over model hosts (those that passed every rule, in fleet
    order), with `placed[name]` instances of the request already consumed on each: sorted
    by weight, descending, ties in fleet order."""
    placed = placed or {}
    if len(hosts) <= 1:  # Nova returns a lone host unweighed
        return [WeighedHost(host.name, 0.0) for host in hosts]
    totals = [0.0] * len(hosts)
    scores: list[list[WeigherScore]] = [[] for _ in hosts]
    metadatas = [[aggregate.metadata for aggregate in fleet.aggregates_of(host.name)] for host in hosts]
    for weigher in WEIGHERS:
        configured = getattr(profile, weigher.multiplier_option)
        multipliers = [_signed(weigher, nova_weight_multiplier(host_metadatas, weigher.multiplier_option,
                                                               configured))
                       for host_metadatas in metadatas]
        raws = [weigher.reference_value(host, request, profile, placed.get(host.name, 0), multiplier)
                for host, multiplier in zip(hosts, multipliers)]
        clamped = [max(raw, weigher.kernel_floor) for raw in raws]
        normalized = nova_normalize(clamped, minval=0.0 if weigher.clamp_at_zero else None)
        for index, (raw, value, multiplier) in enumerate(zip(raws, normalized, multipliers)):
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
