"""Reference predicates and kernels against Nova 34's own verdicts (nova-filters.jsonl and
nova-filters-edge.jsonl; for the cases Nova's API refuses, `expect_invalid`, the verdicts its
scheduler gives, which the gRPC suite cannot reach).

For every rule key placecheck implements, every (case, host) pair must agree, both for the
plain-Python reference and for the kernel scanning build_columns(fleet). Keys the cases
carry for rules implemented elsewhere (JsonFilter, Aggregate*...) are not checked here.
"""
from __future__ import annotations

import numpy as np
import pytest

from placecheck_engine.columns import build_columns
from placecheck_engine.rules import RULES
from conformance_cases import CONFORMANCE_DIR, load_case_files
from fleetgen import fleet_from_case, profile_from_case, request_from_case

CASES = load_case_files(("nova-filters.jsonl", "nova-filters-edge.jsonl"))


def rule_for_key(key: str):
    return RULES["resource"] if key.startswith("resource:") else RULES.get(key)


RULE_KEYS = sorted({key for case in CASES for verdicts in case["expect"].values()
                    for key in verdicts if rule_for_key(key) is not None})


def decisions(case: dict) -> dict[str, tuple[list[bool], list[bool]]]:
    """For each active rule name: (reference verdicts, kernel verdicts), one per host."""
    fleet, request, profile = fleet_from_case(case), request_from_case(case), profile_from_case(case)
    columns = build_columns(fleet)
    result = {}
    for rule in RULES.values():
        for active in rule.compile(request, columns, profile):
            fail_bits = np.zeros(columns.host_count, dtype=np.uint64)
            rule.scan(active, columns, fail_bits, 0, 0, columns.host_count, 0)
            reference = [rule.reference(active.name, host, fleet, request, profile, 0)
                         for host in fleet.hosts]
            result[active.name] = (reference, (fail_bits == 0).tolist())
    return result


@pytest.fixture(scope="module")
def all_decisions():
    return [decisions(case) for case in CASES]


@pytest.mark.skipif(not CASES, reason=f"conformance cases not found in {CONFORMANCE_DIR}")
@pytest.mark.parametrize("key", RULE_KEYS or ["(no cases)"])
def test_rule_agrees_with_nova(key, all_decisions, record_property):
    agreeing, engaged, disagreements = 0, 0, []
    for case, decided in zip(CASES, all_decisions):
        hosts = [h["name"] for h in case["hosts"] if key in case["expect"][h["name"]]]
        if not hosts:
            continue
        engaged += 1
        # A rule the request does not engage (no hint, no group...) passes every host.
        reference, kernel = decided.get(key, ([True] * len(case["hosts"]),) * 2)
        names = [h["name"] for h in case["hosts"]]
        wrong = [(name, case["expect"][name][key], reference[row], kernel[row])
                 for row, name in enumerate(names) if name in hosts
                 and not case["expect"][name][key] == reference[row] == kernel[row]]
        if wrong:
            disagreements.append((case["name"], wrong))
        else:
            agreeing += 1
    record_property("agreeing_cases", agreeing)
    print(f"{key}: {agreeing}/{engaged} cases agree")
    assert engaged > 0
    assert not disagreements, f"(host, nova, reference, kernel): {disagreements[:5]}"
