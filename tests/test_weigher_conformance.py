"""Nova's ranking through the real gRPC API.

Every case of ../shared/conformance/nova-weighers.jsonl and nova-weighers-edge.jsonl goes to
one real sidecar (an edge case names its own enabled_filters in its config):
ReplaceFleet, then SelectDestinations for one instance with room for every passing host
among the alternates, under the case's profile. The selected host followed by its
alternates must be the case's `expect_order`, host for host, weights within 1e-6. Which
hosts pass depends on the filters: a case where Nova refuses a host by a rule the engine
does not implement yet is a strict expected failure naming the rule, so it flips when
the rule lands.
"""
from __future__ import annotations

import pytest

from conformance_cases import CONFORMANCE_DIR, case_fleet_proto, case_request_proto, load_case_files
from test_conformance import RPC_TIMEOUT_SECONDS, ConformanceRun, is_implemented, sidecar_with_a_profile_per_case

CASE_FILES = ("nova-weighers.jsonl", "nova-weighers-edge.jsonl")
CASES = load_case_files(CASE_FILES)
if not CASES:
    pytest.skip(f"conformance data not found in {CONFORMANCE_DIR}", allow_module_level=True)

WEIGHT_TOLERANCE = 1e-6
# The cases weigh a missing metric as Nova's [metrics] weight_of_unavailable, which Nova does
# with [metrics] required = False (README: "Ranking").
CASE_OPTIONS = {"metrics_required": False}

CASES_BY_NAME = {case["name"]: case for case in CASES}


def refusing_rules_not_implemented(case: dict) -> list[str]:
    """Rules by which Nova refuses some host of the case that the engine lacks."""
    return sorted({rule for verdicts in case["expect"].values() for rule, passes in verdicts.items()
                   if not passes and not is_implemented(rule)})


def case_params():
    params = []
    for case in CASES:
        missing = refusing_rules_not_implemented(case)
        marks = pytest.mark.xfail(strict=True, reason=f"needs {', '.join(missing)}") if missing else ()
        params.append(pytest.param(case["name"], id=case["name"], marks=marks))
    return params


class RankingRun(ConformanceRun):
    """Asks the sidecar for each case's ranking once and remembers it (or the error):
    `verdicts(case)` is the selected host and its alternates, as (host, weight)."""

    def _ask(self, case: dict) -> list[tuple[str, float]]:
        generation = self._state.replace_fleet(case_fleet_proto(case), timeout=RPC_TIMEOUT_SECONDS)
        response = self._placement.select_destinations(case_request_proto(case), max_alternates=len(case["hosts"]),
                                                        min_generation=generation, timeout=RPC_TIMEOUT_SECONDS)
        assert response.profile == case["name"]
        if not response.placements:
            return []
        (placement,) = response.placements
        return [(weighed.host, weighed.weight) for weighed in (placement.selected, *placement.alternates)]


def agrees(ranked: list[tuple[str, float]], expected: list[list]) -> bool:
    return [host for host, _ in ranked] == [host for host, _ in expected] and all(
        abs(weight - expected_weight) <= WEIGHT_TOLERANCE for (_, weight), (_, expected_weight) in zip(ranked, expected))


@pytest.fixture(scope="module")
def rankings(tmp_path_factory):
    cases = [{**case, "config": {**case["config"], **CASE_OPTIONS}} for case in CASES]
    with sidecar_with_a_profile_per_case(tmp_path_factory.mktemp("weigher-conformance"), cases) as clients:
        yield RankingRun(*clients)


@pytest.mark.parametrize("case_name", case_params())
def test_ranking_agrees_with_nova(rankings, case_name):
    case = CASES_BY_NAME[case_name]
    ranked = rankings.verdicts(case)
    assert agrees(ranked, case["expect_order"]), f"placecheck {ranked}\nNova      {case['expect_order']}"


def test_agreement_count(rankings, capsys):
    """Prints how many cases rank as Nova does; every case must be answered."""
    agreeing = sum(agrees(rankings.verdicts(case), case["expect_order"]) for case in CASES)
    waiting = [case["name"] for case in CASES if refusing_rules_not_implemented(case)]
    with capsys.disabled():
        print(f"\nNova weigher conformance: {agreeing}/{len(CASES)} cases rank as Nova "
              f"({len(waiting)} wait for filters not implemented yet)")
