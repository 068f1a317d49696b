"""The decision path both RPCs share: compile every enabled rule once per request,
scan rows into per-row failure bits, explain refusals, weigh and pick.

Python work here is per rule and per pick; every loop over hosts runs in the
kernel (engine/_fastfilters).
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.config import Profile
from placecheck_engine.image_meta import image_meta_props
from placecheck_engine.model import GroupPolicy, InvalidField, Request
from placecheck_engine.rules.base import Active
from placecheck_engine.verdict import CheckResult, FilterSummary, HostVerdict, InstancePlacement, SelectResult, WeighedHost
from placecheck_engine.weighers import WeighPlan, plan_weighing, rank, score, start_weighing

MAX_ACTIVE_RULES = 64  # one bit each in a uint64 per row
AFFINITY_RULE = "ServerGroupAffinityFilter"
# Compiled requests kept per snapshot generation: a boot's request is new (its instance_uuid),
# so what repeats is a request checked host after host or sent again, soon after.
COMPILED_REQUESTS_KEPT = 64


_per_thread = threading.local()


class StageClock:
    """Nanoseconds each stage of a decision took (bench/stages.py). check_destination and
    select_destinations take one as `stages` and mark the end of each stage; the default,
    None, times nothing."""

    def __init__(self):
        self.nanoseconds: dict[str, int] = {}
        self.started = self.last_mark = time.perf_counter_ns()

    def mark(self, stage: str) -> None:
        """The time since the previous mark (or the clock's start) goes to `stage`."""
        now = time.perf_counter_ns()
        self.nanoseconds[stage] = self.nanoseconds.get(stage, 0) + now - self.last_mark
        self.last_mark = now


def _row_scratch(host_count: int) -> np.ndarray:
    """This thread's fail_bits for one-row scans. A check resets and reads only the rows it
    scans, so the array is never cleared as a whole (allocating one per check costs more
    than the check)."""
    fail_bits = getattr(_per_thread, "fail_bits", None)
    if fail_bits is None or len(fail_bits) != host_count:
        fail_bits = _per_thread.fail_bits = np.zeros(host_count, dtype=np.uint64)
    return fail_bits


class UnknownHost(LookupError):
    """A host named in a request is not in the fleet."""

    def __init__(self, name: str):
        super().__init__(f"host {name!r} is not in the fleet")
        self.host = name


# Every field of Request that compiling may read: all but num_instances (the picks' count),
# profile (the profile itself is in the key) and instance_uuid (new with every boot: the rules
# that read it, Rule.reads_instance_uuid, are compiled again for each). A field added to Request
# must be added here.
_KEYED_REQUEST_FIELDS = ("operation", "resources", "required_traits", "forbidden_traits", "member_of",
                         "availability_zone", "flavor", "image", "project_id", "scheduler_hints",
                         "server_group", "source_host", "ports")
if set(_KEYED_REQUEST_FIELDS) | {"num_instances", "profile", "instance_uuid"} != \
        {field.name for field in dataclasses.fields(Request)}:
    raise ImportError("engine.decide._KEYED_REQUEST_FIELDS does not name every field of engine.model.Request")


def request_key(request: Request):
    """A hashable value equal for two requests exactly when compiling them gives the same rules,
    those that read the instance_uuid aside; None when some value is unhashable (never cached)."""
    flavor, image = request.flavor, request.image
    try:
        key = (request.operation, frozenset(request.resources.items()), request.required_traits,
               request.forbidden_traits, request.member_of, request.availability_zone,
               flavor.name, frozenset(flavor.extra_specs.items()), flavor.vcpus, flavor.memory_mb,
               None if image is None else (image.id, frozenset(image.properties.items()), image.disk_format),
               request.project_id, request.scheduler_hints, request.server_group, request.source_host,
               request.ports)
        hash(key)
    except TypeError:
        return None
    return key


# Requests whose key was made lately, by id: the server hands the same Request object for a
# request sent again, so its key (frozensets of its dicts) is made once. Each entry holds its
# request, so an id is not reused while the entry lives.
_keys_by_request_id: dict[int, tuple[Request, object]] = {}


def _request_key_reused(request: Request):
    entry = _keys_by_request_id.get(id(request))
    if entry is not None and entry[0] is request:
        return entry[1]
    key = request_key(request)
    if len(_keys_by_request_id) >= COMPILED_REQUESTS_KEPT:
        _keys_by_request_id.clear()  # cheaper than tracking age; a cleared key is made again
    _keys_by_request_id[id(request)] = (request, key)
    return key


@dataclasses.dataclass
class _Compiled:
    profile: Profile  # held so that its id, in the cache key, is not reused while the entry lives
    actives: tuple[Active, ...]  # compiled for instance_uuid
    evaluated: tuple[str, ...]  # the actives' names
    instance_uuid: str
    reading_instance_uuid: tuple[int, ...]  # the actives whose rule reads it
    # The request's weighing over this generation, made by its first SelectDestinations (two
    # threads may both make it; either is the same; read only).
    plan: WeighPlan | None = None
    kernels: "_RequestKernels | None" = None  # the actives' kernels, made by its first call (as plan)

    def actives_for(self, columns, request: Request) -> tuple[Active, ...]:
        """The actives for this request: those of a rule that reads the instance_uuid made the
        request's (Rule.for_instance) when its instance_uuid is another."""
        if request.instance_uuid == self.instance_uuid or not self.reading_instance_uuid:
            return self.actives
        actives = list(self.actives)
        for index in self.reading_instance_uuid:
            active = actives[index]
            actives[index] = active.rule.for_instance(active, request, columns, self.profile)
        return tuple(actives)

    def weigh_plan(self, columns, request: Request) -> WeighPlan:
        if self.plan is None:
            self.plan = plan_weighing(columns, self.profile, request)
        return self.plan

    def kernels_for(self, columns, actives: tuple[Active, ...]) -> "_RequestKernels":
        """The kernels of actives_for's actives: those of the rules that read the instance_uuid
        made again when the request is another instance's."""
        if self.kernels is None:
            self.kernels = _RequestKernels.of(columns, self.actives)
        if actives is self.actives:
            return self.kernels
        return _RequestKernels.of(columns, actives, self.reading_instance_uuid, self.kernels.kernels)


@dataclasses.dataclass(frozen=True)
class _RequestKernels:
    """A request's compiled rules as kernels, run in one C call on one row (refused_bits) or over a
    range (select_destinations' scan_kernels); the rules without a kernel scan in Python."""

    kernels: list  # per active: its Kernel, or None (not engaged, or scanned in Python)
    scanned_in_python: tuple[int, ...]  # the engaged actives without a kernel

    @classmethod
    def of(cls, columns, actives, indexes=None, kernels: list | None = None) -> "_RequestKernels":
        """Every active's kernel; or `kernels` with those of actives[i] for i in indexes made again."""
        kernels = list(kernels) if kernels is not None else [None] * len(actives)
        for index in range(len(actives)) if indexes is None else indexes:
            active = actives[index]
            kernels[index] = active.rule.kernel(active, columns) if active.params is not None else None
        return cls(kernels, tuple(bit for bit, (active, kernel) in enumerate(zip(actives, kernels))
                                  if kernel is None and active.params is not None))

    def refused_bits(self, actives, columns, scratch: np.ndarray, row: int, placed: int) -> int:
        """Bit i set when actives[i] refuses the row; `scratch` is a fail_bits array to scan into."""
        bits = _fastfilters.refused_bits(self.kernels, row, placed)
        if self.scanned_in_python:
            scratch[row] = 0
            for bit in self.scanned_in_python:
                actives[bit].rule.scan(actives[bit], columns, scratch, bit, row, row + 1, placed)
            bits |= int(scratch[row])
        return bits


def _compiled(columns, request: Request, profile: Profile) -> _Compiled:
    """compile_rules, once per request key, profile and snapshot generation. Pinned to the
    generation (a usage array is read) because compiled rules may hold rows found through the
    generation's instance lists (group members, same_host/different_host instances)."""

    def compile_for_generation() -> _Compiled:
        columns.arrays["num_instances"]  # noqa: B018 -- notes the usage read: cached per generation
        actives = tuple(compile_rules(columns, request, profile))
        return _Compiled(profile, actives, tuple(active.name for active in actives), request.instance_uuid,
                         tuple(index for index, active in enumerate(actives) if active.rule.reads_instance_uuid))

    key = _request_key_reused(request)
    if key is None:
        return compile_for_generation()
    compiled = columns.memo("compiled_rules", (key, id(profile)), compile_for_generation, COMPILED_REQUESTS_KEPT)
    return compiled if compiled.profile is profile else compile_for_generation()


def compile_rules(columns, request: Request, profile: Profile) -> list[Active]:
    """Every enabled rule compiled for the request, in the profile's order."""
    from placecheck_engine.rules import RULES
    from placecheck_engine.rules.numa_topology_filter import guest_demands

    # Nova's API refuses, whichever rules run, an image its ImageMetaProps cannot type and a NUMA
    # topology or PCI request it cannot build.
    if request.image is not None:
        image_meta_props(request.image.properties)
    guest_demands(request, profile)
    actives: list[Active] = []
    for name in profile.enabled_filters:
        try:
            rule = RULES[name]
        except KeyError:
            raise ValueError(f"profile {profile.name!r} enables unknown rule {name!r}") from None
        rule.validate(request, columns, profile)
        actives.extend(rule.compile(request, columns, profile))
    if len(actives) > MAX_ACTIVE_RULES:
        raise InvalidField("request", f"engages {len(actives)} rules; at most {MAX_ACTIVE_RULES}")
    return actives


def check_destination(columns, request: Request, profile: Profile, hosts: list[str],
                      stages: StageClock | None = None) -> CheckResult:
    """For each named host, every rule that refuses it (with its numbers), or none."""
    rows = []
    for name in hosts:
        row = columns.row_of(name)
        if row is None:
            raise UnknownHost(name)
        rows.append(row)
    if stages is not None:
        stages.mark("find hosts")
    compiled = _compiled(columns, request, profile)
    actives, evaluated = compiled.actives_for(columns, request), compiled.evaluated
    kernels = compiled.kernels_for(columns, actives)
    scratch = _row_scratch(columns.host_count)
    if stages is not None:
        stages.mark("compile")
    verdicts = []
    for name, row in zip(hosts, rows):
        refused = kernels.refused_bits(actives, columns, scratch, row, 0)
        if stages is not None:
            stages.mark("scan")
        rejections = tuple(actives[bit].rule.explain(actives[bit], columns, row, 0) for bit in _set_bits(refused))
        verdicts.append(HostVerdict(name, rejections, evaluated))
        if stages is not None:
            stages.mark("explain")
    return CheckResult(tuple(verdicts), profile.name)


def _set_bits(bits: int):
    """The indexes of the set bits, lowest first."""
    while bits:
        lowest = bits & -bits
        yield lowest.bit_length() - 1
        bits ^= lowest


@dataclasses.dataclass
class _Selection:
    """One SelectDestinations request in progress: the rows' failure bits and their weighing
    (which counts the instances placed on each row)."""

    columns: object
    request: Request
    profile: Profile
    actives: list[Active]
    fail_bits: np.ndarray
    plan: WeighPlan
    rng: random.Random
    kernels: _RequestKernels  # the actives' kernels: made again when an affinity pick recompiles one
    weighing: object = None
    picked_rows: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.weighing = start_weighing(self.plan, self.fail_bits)

    def placed_on(self, row: int) -> int:
        placed = self.weighing.placed
        return int(placed[row]) if placed is not None else 0

    def sorted_hosts(self, k: int) -> list[tuple[int, WeighedHost]]:
        """The first k hosts of Nova's _get_sorted_hosts: best weight first, the hosts tied at
        the top shuffled when shuffle_best_same_weighed_hosts, then a random one of the first
        host_subset_size moved to the front; each with its row."""
        ranking = rank(self.columns, self.plan, self.weighing, k)
        ranked = list(zip(ranking.rows.tolist(), ranking.weights.tolist()))
        if not ranked:
            return []
        if self.profile.shuffle_best_same_weighed_hosts:
            tied = self.weighing.tied_at_top()
            # The first k of a random order of the tied hosts: a partial shuffle.
            shuffled = [(int(tied[index]), ranked[0][1])
                        for index in self.rng.sample(range(len(tied)), min(len(tied), k))]
            ranked = shuffled + ranked[len(tied):]
        chosen = self.rng.randrange(min(self.profile.host_subset_size, len(ranked)))
        ranked.insert(0, ranked.pop(chosen))
        return [(row, score(self.columns, self.plan, ranking, row, weight, self.placed_on(row)))
                for row, weight in ranked]

    def consume(self, row: int) -> None:
        """Nova's consume_from_request on the picked host, then its row's verdicts again."""
        self.fail_bits[row] = self.kernels.refused_bits(self.actives, self.columns, self.fail_bits, row,
                                                            self.placed_on(row) + 1)
        self.weighing.consume(row)
        self.picked_rows.append(row)
        self._follow_affinity(row)

    def _follow_affinity(self, row: int) -> None:
        # Nova adds each pick to the group's hosts; only the affinity filter reads them, and
        # only the first pick into an empty group changes its verdicts: from then on every
        # instance must land on that host.
        group = self.request.server_group
        if group is None or group.policy is not GroupPolicy.AFFINITY or group.hosts \
                or len(self.picked_rows) != 1:
            return
        for bit, active in enumerate(self.actives):
            if active.name != AFFINITY_RULE:
                continue
            host = self.columns.host_name(row)
            joined = dataclasses.replace(self.request, server_group=dataclasses.replace(group, hosts=(host,)))
            (self.actives[bit],) = active.rule.compile(joined, self.columns, self.profile)
            self.kernels = _RequestKernels.of(self.columns, self.actives)
            rejoined = self.actives[bit]
            self.fail_bits &= ~np.uint64(1 << bit)
            if rejoined.params is not None:
                rejoined.rule.scan(rejoined, self.columns, self.fail_bits, bit, 0, self.columns.host_count, 0)
            self.weighing.refresh()


def select_destinations(columns, request: Request, profile: Profile, decision_id: str,
                        max_alternates: int | None, stages: StageClock | None = None) -> SelectResult:
    """Ranked hosts with alternates for each of the request's instances, all or none;
    the summary says how many hosts each rule eliminated. Randomness (host_subset_size,
    shuffle_best_same_weighed_hosts) is seeded from decision_id, so a decision replays
    from its id."""
    instances = max(request.num_instances, 1)
    alternates = profile.max_attempts - 1 if max_alternates is None else max_alternates
    if alternates < 0:
        raise InvalidField("max_alternates", f"must be >= 0, got {alternates}")
    compiled = _compiled(columns, request, profile)
    compiled_actives = compiled.actives_for(columns, request)
    actives = list(compiled_actives)  # a list: an affinity pick recompiles one
    kernels = compiled.kernels_for(columns, compiled_actives)
    if stages is not None:
        stages.mark("compile")
    n = columns.host_count
    fail_bits = np.zeros(n, dtype=np.uint64)
    eliminated = _fastfilters.scan_kernels(kernels.kernels, fail_bits, 0, n, 0)
    for bit in kernels.scanned_in_python:
        eliminated[bit] = actives[bit].rule.scan(actives[bit], columns, fail_bits, bit, 0, n, 0)
    hosts_passed = n - int(np.count_nonzero(fail_bits))
    if stages is not None:
        stages.mark("scan")

    def summary(placed: int) -> FilterSummary:
        counts = sorted(((active.name, count) for active, count in zip(actives, eliminated)),
                        key=lambda rule_count: -rule_count[1])  # stable: ties in rule order
        return FilterSummary(n, hosts_passed, tuple(counts), instances, placed)

    if hosts_passed == 0:
        return SelectResult((), summary(0), profile.name)
    selection = _Selection(columns, request, profile, actives, fail_bits, compiled.weigh_plan(columns, request),
                           random.Random(decision_id), kernels)
    subset_size = profile.host_subset_size
    selected = []
    alternates_of_single = ()
    for _ in range(instances):
        # One instance: the alternates come from this same ranking, as in Nova.
        hosts = selection.sorted_hosts(max(subset_size, 1 + alternates) if instances == 1 else subset_size)
        if not hosts:
            return SelectResult((), summary(0), profile.name)  # all or nothing, as Nova
        row, host = hosts[0]
        selected.append(host)
        alternates_of_single = tuple(weighed for _, weighed in hosts[1:1 + alternates])
        if instances > 1:  # a single instance's pick changes nothing that is read afterwards
            selection.consume(row)
    if instances == 1:
        shared_alternates = alternates_of_single
    else:
        shared_alternates = _alternates_after_all_picks(selection, subset_size, alternates)
    placements = tuple(InstancePlacement(host, shared_alternates) for host in selected)
    result = SelectResult(placements, summary(instances), profile.name)
    if stages is not None:
        stages.mark("weigh")
    return result


def _alternates_after_all_picks(selection: _Selection, subset_size: int, alternates: int) -> tuple:
    """Nova re-filters and re-weighs once every instance is consumed, sorts as for a pick, and
    offers the hosts not chosen for any instance."""
    if alternates == 0:
        return ()
    picked = set(selection.picked_rows)
    hosts = selection.sorted_hosts(max(subset_size, alternates + len(picked)))
    return tuple(weighed for row, weighed in hosts if row not in picked)[:alternates]
