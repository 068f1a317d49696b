"""Nova conformance through the real gRPC API.

Every case of ../shared/conformance/nova-filters.jsonl goes to one real sidecar:
ReplaceFleet, then CheckDestination for all the case's hosts under the case's
profile. Each (rule, case) pair is one test: host by host, the rule refuses the
host exactly when Nova's does, and the rule was evaluated. Rules not implemented
yet are strict expected failures, so a rule that starts agreeing forces its
marker off.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import grpc
import pytest

from conformance_cases import (
    CONFORMANCE_DIR,
    case_fleet_proto,
    case_request_proto,
    case_rules,
    load_cases,
    profile_toml,
)
from engine.config import implemented_rules
from placecheck import PlacementClient, StateClient
from sidecar import start_sidecar

CASES_PATH = CONFORMANCE_DIR / "nova-filters.jsonl"
if not CASES_PATH.exists():
    pytest.skip(f"conformance data not found at {CASES_PATH}", allow_module_level=True)

# Every rule in the engine's registry; its "resource" rule stands for every "resource:<CLASS>" key.
IMPLEMENTED_RULES = frozenset(implemented_rules())
RPC_TIMEOUT_SECONDS = 10.0
STARTUP_DEMO_HOSTS = 10

CASES = load_cases(CASES_PATH)
CASES_BY_NAME = {case["name"]: case for case in CASES}
ALL_RULES = sorted({rule for case in CASES for rule in case_rules(case)})


def is_implemented(rule: str) -> bool:
    return ("resource" if rule.startswith("resource:") else rule) in IMPLEMENTED_RULES


def rule_case_params():
    not_yet = pytest.mark.xfail(strict=True, reason="not implemented yet")
    return [pytest.param(rule, case["name"], id=f"{rule}-{case['name']}",
                         marks=() if is_implemented(rule) else not_yet)
            for rule in ALL_RULES for case in CASES if rule in case_rules(case)]


@dataclass(frozen=True)
class CaseVerdicts:
    rejected: dict[str, frozenset[str]]  # host -> rules refusing it
    evaluated: dict[str, frozenset[str]]  # host -> rules evaluated for it
    messages: dict[str, list[str]]  # host -> "rule: message" of each rejection


class ConformanceRun:
    """Asks the sidecar about each case once and remembers the answer (or the error)."""

    def __init__(self, state: StateClient, placement: PlacementClient):
        self._state = state
        self._placement = placement
        self._answers: dict[str, CaseVerdicts | grpc.RpcError] = {}

    def _ask(self, case: dict) -> CaseVerdicts:
        generation = self._state.replace_fleet(case_fleet_proto(case), timeout=RPC_TIMEOUT_SECONDS)
        hosts = [host["name"] for host in case["hosts"]]
        response = self._placement.check_destination(case_request_proto(case), hosts,
                                                      min_generation=generation, timeout=RPC_TIMEOUT_SECONDS)
        assert [verdict.host for verdict in response.verdicts] == hosts
        assert response.profile == case["name"]
        return CaseVerdicts(
            rejected={v.host: frozenset(r.rule for r in v.rejections) for v in response.verdicts},
            evaluated={v.host: frozenset(v.rules_evaluated) for v in response.verdicts},
            messages={v.host: [f"{r.rule}: {r.message}" for r in v.rejections] for v in response.verdicts},
        )

    def verdicts(self, case: dict) -> CaseVerdicts:
        if case["name"] not in self._answers:
            try:
                self._answers[case["name"]] = self._ask(case)
            except grpc.RpcError as error:
                self._answers[case["name"]] = error
        answer = self._answers[case["name"]]
        if isinstance(answer, grpc.RpcError):
            pytest.fail(f"{case['name']}: {answer.code().name}: {answer.details()}")
        return answer


@contextlib.contextmanager
def sidecar_with_a_profile_per_case(directory, cases):
    """One sidecar whose profiles are the cases' configs, with its state and decision clients."""
    # Every rule the engine implements is enabled, so one that starts agreeing shows up here.
    config_path = directory / "profiles.toml"
    config_path.write_text(profile_toml(cases, implemented_rules()))
    # Each case replaces the fleet, so the start-up demo fleet only needs to exist.
    with start_sidecar(config=config_path, workers=1, metrics=False, demo_hosts=STARTUP_DEMO_HOSTS) as sidecar, \
            StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=1) as placement:
        yield state, placement


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    with sidecar_with_a_profile_per_case(tmp_path_factory.mktemp("conformance"), CASES) as clients:
        yield ConformanceRun(*clients)


@pytest.mark.parametrize("rule, case_name", rule_case_params())
def test_rule_agrees_with_nova(conformance, rule, case_name):
    case = CASES_BY_NAME[case_name]
    verdicts = conformance.verdicts(case)
    not_evaluated = [host for host in case["expect"] if rule not in verdicts.evaluated[host]]
    assert not not_evaluated, f"{rule} not in rules_evaluated for {not_evaluated}"
    passes = {host: rule not in verdicts.rejected[host] for host in case["expect"]}
    nova_passes = {host: expected[rule] for host, expected in case["expect"].items()}
    assert passes == nova_passes, f"rejections: {verdicts.messages}"


def test_agreement_per_rule(conformance, capsys):
    """Prints how many cases each rule agrees with Nova on; every case must be answered."""
    agreeing = dict.fromkeys(ALL_RULES, 0)
    expected_cases = dict.fromkeys(ALL_RULES, 0)
    for case in CASES:
        verdicts = conformance.verdicts(case)
        for rule in case_rules(case):
            expected_cases[rule] += 1
            agreeing[rule] += all(
                rule in verdicts.evaluated[host] and (rule not in verdicts.rejected[host]) == expected[rule]
                for host, expected in case["expect"].items())
    with capsys.disabled():
        print("\nNova conformance, cases agreeing per rule:")
        for rule in ALL_RULES:
            status = "" if is_implemented(rule) else "  (not implemented yet)"
            print(f"  {rule:<36} {agreeing[rule]:>3}/{expected_cases[rule]}{status}")
