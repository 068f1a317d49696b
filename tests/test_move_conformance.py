"""Nova 34's moves through the real gRPC API.

Every case of ../shared/conformance/nova-moves.jsonl goes to one real sidecar: ReplaceFleet,
then CheckDestination with the case's request (operation and source host included) for the
hosts in `check`. Host by host, the destination is allowed (no rule refuses it) exactly when
Nova 34 lets the move land there; a refusal names the rules Nova's answer implies.
"""
from __future__ import annotations

import pytest

from conformance_cases import CONFORMANCE_DIR, case_fleet_proto, case_request_proto, load_case_files
from test_conformance import RPC_TIMEOUT_SECONDS, ConformanceRun, sidecar_with_a_profile_per_case

CASES = load_case_files(("nova-moves.jsonl",))
if not CASES:
    pytest.skip(f"conformance data not found in {CONFORMANCE_DIR}", allow_module_level=True)
CASES_BY_NAME = {case["name"]: case for case in CASES}


class MoveRun(ConformanceRun):
    """`verdicts(case)`: for each checked host, the rules refusing it."""

    def _ask(self, case: dict) -> dict[str, list[str]]:
        generation = self._state.replace_fleet(case_fleet_proto(case), timeout=RPC_TIMEOUT_SECONDS)
        response = self._placement.check_destination(case_request_proto(case), case["check"],
                                                      min_generation=generation, timeout=RPC_TIMEOUT_SECONDS)
        assert response.profile == case["name"]
        return {verdict.host: [rejection.rule for rejection in verdict.rejections] for verdict in response.verdicts}


@pytest.fixture(scope="module")
def moves(tmp_path_factory):
    with sidecar_with_a_profile_per_case(tmp_path_factory.mktemp("move-conformance"), CASES) as clients:
        yield MoveRun(*clients)


@pytest.mark.parametrize("case_name, host", [(case["name"], host) for case in CASES for host in case["check"]])
def test_move_lands_where_nova_lets_it(moves, case_name, host):
    case = CASES_BY_NAME[case_name]
    refusing = moves.verdicts(case)[host]
    assert (not refusing) == case["nova"][host], f"{case['what']}: refused by {refusing}"
    detail = case["nova_detail"][host]
    if detail["ignored"]:
        # Nova skips the host before any filter runs; placecheck also names what else refuses it.
        assert "MoveSource" in refusing, case["what"]
    else:
        assert set(refusing) == set(detail["filters"]) | set(detail["placement"]), case["what"]


def test_move_agreement_count(moves, capsys):
    """Prints how many destinations agree with Nova; every case must be answered."""
    checked = [(case, host) for case in CASES for host in case["check"]]
    agreeing = sum((not moves.verdicts(case)[host]) == case["nova"][host] for case, host in checked)
    with capsys.disabled():
        print(f"\nNova move conformance: {agreeing}/{len(checked)} destinations agree")
