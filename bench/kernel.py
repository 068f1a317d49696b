"""Section 1: the Cython kernel against its plain-Python reference.

Same fleet, same request: every active rule's `scan` over all rows (the full
rule chain), timed per rule and in total, against every rule's `reference` over
engine.model hosts (on a sample of hosts when the fleet is large, scaled per
host). The sample also checks that both say the same for every (host, rule).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from bench import workload
from bench.timing import Figure, best_of, format_ratio
from placecheck_engine.decide import compile_rules
from placecheck_engine.rules.base import Active

SPEEDUP_TARGET = 300
CORE_RULE_NS_TARGET = 5.0
# The per-host predicates over fixed-width columns (Placement's and Nova's numeric checks);
# the rest look up instance or aggregate sets compiled per request.
CORE_RULES = ("resource", "RequiredTraits", "ForbiddenTraits", "MemberOf", "AvailabilityZone",
              "ComputeFilter", "IoOpsFilter", "NumInstancesFilter")
SAMPLE_SEED = 7


@dataclass(frozen=True)
class KernelRun:
    hosts: int
    actives: list[Active]
    rule_seconds: dict[str, float]  # one full scan per active rule
    chain_seconds: float  # every active rule's scan, back to back
    reference_seconds_per_host: float
    reference_sample: int
    disagreements: int


def active_rules(hosts: int) -> list[Active]:
    """The request's compiled rules that scan (a rule the request does not engage passes all)."""
    request = workload.request(hosts)
    return [active for active in compile_rules(workload.columns(hosts), request, workload.profile())
            if active.params is not None]


def scan_chain(actives: list[Active], columns, fail_bits: np.ndarray) -> None:
    for bit, active in enumerate(actives):
        active.rule.scan(active, columns, fail_bits, bit, 0, len(fail_bits), 0)


def measure(hosts: int, min_seconds: float, reference_seconds: float) -> KernelRun:
    columns = workload.columns(hosts)
    fleet = workload.fleet(hosts)
    request = workload.request(hosts)
    profile = workload.profile()
    actives = active_rules(hosts)
    fail_bits = np.zeros(hosts, dtype=np.uint64)
    rule_seconds = {}
    for bit, active in enumerate(actives):
        rule_seconds[active.name] = best_of(
            lambda: active.rule.scan(active, columns, fail_bits, bit, 0, hosts, 0),
            runs=5, min_seconds=min_seconds)
    chain_seconds = best_of(lambda: scan_chain(actives, columns, fail_bits), runs=5, min_seconds=min_seconds)

    # fail_bits now holds every rule's verdict on every row: the reference must agree.
    rows = list(range(hosts))
    random.Random(SAMPLE_SEED).shuffle(rows)
    checked = disagreements = 0
    reference_elapsed = 0.0
    for row in rows:
        host = fleet.hosts[row]
        started = time.perf_counter()
        verdicts = [active.rule.reference(active.name, host, fleet, request, profile, 0) for active in actives]
        reference_elapsed += time.perf_counter() - started
        refused = int(fail_bits[row])
        disagreements += sum(passed == bool(refused >> bit & 1) for bit, passed in enumerate(verdicts))
        checked += 1
        if reference_elapsed >= reference_seconds and checked >= 100:
            break
    return KernelRun(hosts, actives, rule_seconds, chain_seconds, reference_elapsed / checked, checked,
                     disagreements)


def figures(runs: list[KernelRun]) -> list[Figure]:
    result = []
    for run in runs:
        chain_ns = run.chain_seconds / run.hosts * 1e9
        reference_ns = run.reference_seconds_per_host * 1e9
        speedup = reference_ns / chain_ns
        sampled = f"reference on {run.reference_sample} hosts" if run.reference_sample < run.hosts else ""
        agreement = f"{run.disagreements} disagreements in {run.reference_sample * len(run.actives)} verdicts"
        result.append(Figure(
            "1 kernel", f"full chain, {len(run.actives)} rules, {run.hosts:,} hosts", f"{chain_ns:.2f} ns/host",
            "plain-Python reference", f"{reference_ns:,.0f} ns/host", f"{format_ratio(speedup)} faster",
            f">= {SPEEDUP_TARGET}x", speedup >= SPEEDUP_TARGET, "; ".join(filter(None, (sampled, agreement)))))
    largest = max(runs, key=lambda run: run.hosts)
    chain_ns = largest.chain_seconds / largest.hosts * 1e9
    for active in largest.actives:
        rule_ns = largest.rule_seconds[active.name] / largest.hosts * 1e9
        core = active.rule.name in CORE_RULES
        result.append(Figure(
            "1 kernel", f"{active.name}, {largest.hosts:,} hosts", f"{rule_ns:.2f} ns/host",
            "full chain", f"{chain_ns:.2f} ns/host", f"{format_ratio(rule_ns / chain_ns)} of chain",
            f"<= {CORE_RULE_NS_TARGET:g} ns/host" if core else "-",
            rule_ns <= CORE_RULE_NS_TARGET if core else None))
    return result
