"""NUMATopologyFilter and PciPassthroughFilter against Nova, through the real gRPC API.

Every case of ../shared/conformance-numa-pci/nova-numa-pci.jsonl goes to one real sidecar
(ReplaceFleet, then CheckDestination for all the case's hosts under the case's profile): host by
host, each of the two rules refuses the host exactly when Nova's filter does. A case Nova's API
refuses while building the request (`expect_invalid`) must be refused whole with INVALID_ARGUMENT
naming a field of the request.
"""
from __future__ import annotations

import grpc
import pytest

from conformance_cases import CONFORMANCE_DIR, case_rules, load_cases
from placecheck import bad_request_violations
from test_conformance import ConformanceRun, sidecar_with_a_profile_per_case

CASES_PATH = CONFORMANCE_DIR.parent / "conformance-numa-pci" / "nova-numa-pci.jsonl"
if not CASES_PATH.exists():
    pytest.skip(f"NUMA/PCI conformance data not found at {CASES_PATH}", allow_module_level=True)
CASES = load_cases(CASES_PATH)
CASES_BY_NAME = {case["name"]: case for case in CASES}
SCHEDULED_CASES = [case for case in CASES if not case.get("expect_invalid")]
REFUSED_CASES = [case for case in CASES if case.get("expect_invalid")]
RULES = ("NUMATopologyFilter", "PciPassthroughFilter")


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    with sidecar_with_a_profile_per_case(tmp_path_factory.mktemp("numa-pci"), CASES) as clients:
        yield ConformanceRun(*clients)


def disagreements(conformance, case: dict) -> list[str]:
    """Each (host, rule) where placecheck's verdict is not Nova's, with placecheck's reasons."""
    verdicts = conformance.verdicts(case)
    found = []
    for host, expected in case["expect"].items():
        for rule, nova_passes in expected.items():
            if rule not in verdicts.evaluated[host]:
                found.append(f"{host} {rule}: not evaluated")
            elif (rule not in verdicts.rejected[host]) != nova_passes:
                found.append(f"{host} {rule}: Nova {'passes' if nova_passes else 'refuses'}; "
                             f"placecheck says {verdicts.messages[host]}")
    return found


@pytest.mark.parametrize("case_name", [case["name"] for case in SCHEDULED_CASES])
def test_case_agrees_with_nova_host_by_host(conformance, case_name):
    assert disagreements(conformance, CASES_BY_NAME[case_name]) == []


@pytest.mark.parametrize("case_name", [case["name"] for case in REFUSED_CASES])
def test_a_request_nova_api_refuses_is_refused_naming_its_field(conformance, case_name):
    case = CASES_BY_NAME[case_name]
    answer = conformance.answer(case)
    assert isinstance(answer, grpc.RpcError), f"answered, where Nova raises {case['invalid_exception']}"
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT, answer.details()
    fields = [field for field, _ in bad_request_violations(answer)]
    assert len(fields) == 1 and fields[0].startswith("request."), fields


def test_agreement_per_rule(conformance, capsys):
    """Prints host verdicts agreeing per rule, and cases refused whole."""
    agreeing = dict.fromkeys(RULES, 0)
    verdict_count = dict.fromkeys(RULES, 0)
    for case in SCHEDULED_CASES:
        verdicts = conformance.verdicts(case)
        for host, expected in case["expect"].items():
            for rule in case_rules(case):
                verdict_count[rule] += 1
                agreeing[rule] += (rule in verdicts.evaluated[host]
                                   and (rule not in verdicts.rejected[host]) == expected[rule])
    refused = sum(isinstance(conformance.answer(case), grpc.RpcError) for case in REFUSED_CASES)
    with capsys.disabled():
        print(f"\nNova NUMA/PCI conformance ({CASES_PATH.name}), host verdicts agreeing per rule:")
        print(f"  {'refused whole (expect_invalid)':<24} {refused:>4}/{len(REFUSED_CASES)} cases")
        for rule in RULES:
            print(f"  {rule:<24} {agreeing[rule]:>4}/{verdict_count[rule]}")
    assert agreeing == verdict_count and refused == len(REFUSED_CASES)
