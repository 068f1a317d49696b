"""Nova conformance through the real gRPC API.

Every case of ../shared/conformance/nova-filters.jsonl and nova-filters-edge.jsonl goes
to one real sidecar: ReplaceFleet, then CheckDestination for all the case's hosts under
the case's profile. Each (rule, case) pair is one test: host by host, the rule refuses the
host exactly when Nova's does, and the rule was evaluated. A case Nova's API refuses before
scheduling (`expect_invalid`: a zone no enabled host is in) must be refused whole, with
INVALID_ARGUMENT on request.availability_zone; its per-rule verdicts, which are Nova's
scheduler's, are held by tests/test_rules_reference_conformance.py. Rules not implemented
yet are strict expected failures, so a rule that starts agreeing forces its marker off.
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
    load_case_files,
    profile_toml,
)
from placecheck_engine.config import implemented_rules
from placecheck import PlacementClient, StateClient, bad_request_violations
from sidecar import start_sidecar

CASE_FILES = ("nova-filters.jsonl", "nova-filters-edge.jsonl")
CASES = load_case_files(CASE_FILES)
if not CASES:
    pytest.skip(f"conformance data not found in {CONFORMANCE_DIR}", allow_module_level=True)

# Every rule in the engine's registry; its "resource" rule stands for every "resource:<CLASS>" key.
IMPLEMENTED_RULES = frozenset(implemented_rules())
RPC_TIMEOUT_SECONDS = 10.0
STARTUP_DEMO_HOSTS = 10

CASES_BY_NAME = {case["name"]: case for case in CASES}
SCHEDULED_CASES = [case for case in CASES if not case.get("expect_invalid")]
REFUSED_CASES = [case for case in CASES if case.get("expect_invalid")]
ALL_RULES = sorted({rule for case in SCHEDULED_CASES for rule in case_rules(case)})


def is_implemented(rule: str) -> bool:
    return ("resource" if rule.startswith("resource:") else rule) in IMPLEMENTED_RULES


def rule_case_params():
    not_yet = pytest.mark.xfail(strict=True, reason="not implemented yet")
    return [pytest.param(rule, case["name"], id=f"{rule}-{case['name']}",
                         marks=() if is_implemented(rule) else not_yet)
            for rule in ALL_RULES for case in SCHEDULED_CASES if rule in case_rules(case)]


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

    def answer(self, case: dict):
        """The case's answer, or the RpcError it was refused with."""
        if case["name"] not in self._answers:
            try:
                self._answers[case["name"]] = self._ask(case)
            except grpc.RpcError as error:
                self._answers[case["name"]] = error
        return self._answers[case["name"]]

    def verdicts(self, case: dict):
        answer = self.answer(case)
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


@pytest.mark.parametrize("case_name", [case["name"] for case in REFUSED_CASES])
def test_unavailable_zone_is_refused_as_nova_api_refuses_it(conformance, case_name):
    answer = conformance.answer(CASES_BY_NAME[case_name])
    assert isinstance(answer, grpc.RpcError), f"answered {answer}"
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT, answer.details()
    assert [field for field, _ in bad_request_violations(answer)] == ["request.availability_zone"]


def test_agreement_per_rule(conformance, capsys):
    """Prints how many cases each rule agrees with Nova on; every case must be answered."""
    agreeing = dict.fromkeys(ALL_RULES, 0)
    expected_cases = dict.fromkeys(ALL_RULES, 0)
    refused = sum(isinstance(conformance.answer(case), grpc.RpcError) for case in REFUSED_CASES)
    for case in SCHEDULED_CASES:
        verdicts = conformance.verdicts(case)
        for rule in case_rules(case):
            expected_cases[rule] += 1
            agreeing[rule] += all(
                rule in verdicts.evaluated[host] and (rule not in verdicts.rejected[host]) == expected[rule]
                for host, expected in case["expect"].items())
    with capsys.disabled():
        print(f"\nNova conformance ({', '.join(CASE_FILES)}), cases agreeing per rule:")
        print(f"  {'refused whole (expect_invalid)':<36} {refused:>3}/{len(REFUSED_CASES)}")
        for rule in ALL_RULES:
            status = "" if is_implemented(rule) else "  (not implemented yet)"
            print(f"  {rule:<36} {agreeing[rule]:>3}/{expected_cases[rule]}{status}")
