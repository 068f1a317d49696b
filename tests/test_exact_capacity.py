"""Placement's capacity rule stays exact at the edges of what the contract accepts: amounts and
inventory values up to Placement's 2**31 - 1, usage up to 2**53, allocation ratios up to
Placement's single-precision maximum. The kernel agrees with the plain-Python reference, whose
integer-to-float comparisons are exact; what lies beyond is refused at the door (see
tests/test_fleetfile.py and tests/test_server.py for the fields named)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import MAX_USED, PLACEMENT_MAX_INT, PLACEMENT_MAX_RATIO, Fleet, Host, Inventory, Request
from placecheck_engine.rules import RULES

RULE = RULES["resource"]
PROFILE = Profile(enabled_filters=("resource",))
EDGES = (0, 1, 2**31 - 2, PLACEMENT_MAX_INT)
USED_EDGES = (0, 1, PLACEMENT_MAX_INT, 2**31, 2**53 - 1, MAX_USED)
RATIOS = (1.0, 1.5, 16.0, 4194304.0, 1e30, PLACEMENT_MAX_RATIO)


def verdicts(inventory: Inventory, amount: int, placed: int = 0) -> tuple[bool, bool]:
    """(reference passes, kernel passes) for one host with this VCPU inventory."""
    fleet = Fleet((Host("h", resources={"VCPU": inventory}),))
    request = Request(resources={"VCPU": amount})
    columns = build_columns(fleet)
    (active,) = RULE.compile(request, columns, PROFILE)
    fail_bits = np.zeros(1, dtype=np.uint64)
    RULE.scan(active, columns, fail_bits, 0, 0, 1, placed)
    return RULE.reference(active.name, fleet.hosts[0], fleet, request, PROFILE, placed), not fail_bits[0]


@settings(max_examples=400, deadline=None)
@given(total=st.sampled_from(EDGES) | st.integers(0, PLACEMENT_MAX_INT),
       reserved=st.sampled_from(EDGES),
       ratio=st.sampled_from(RATIOS) | st.floats(1e-3, PLACEMENT_MAX_RATIO),
       used=st.sampled_from(USED_EDGES) | st.integers(0, MAX_USED),
       amount=st.sampled_from(EDGES[1:]) | st.integers(1, PLACEMENT_MAX_INT),
       placed=st.integers(0, 3))
def test_kernel_equals_reference_at_the_edges(total, reserved, ratio, used, amount, placed):
    inventory = Inventory(total=total, reserved=reserved, allocation_ratio=ratio, used=used)
    reference, kernel = verdicts(inventory, amount, placed)
    assert kernel == reference


@pytest.mark.parametrize("inventory, amount, fits", [
    (Inventory(total=PLACEMENT_MAX_INT), PLACEMENT_MAX_INT, True),
    (Inventory(total=PLACEMENT_MAX_INT, used=1), PLACEMENT_MAX_INT, False),
    # 2**53 of usage against the largest capacity: one unit short, then exactly room.
    (Inventory(total=PLACEMENT_MAX_INT, allocation_ratio=4194304.0, used=MAX_USED), 1, False),
    (Inventory(total=PLACEMENT_MAX_INT, allocation_ratio=4194304.0, used=MAX_USED - 4194305), 1, True),
    (Inventory(total=PLACEMENT_MAX_INT, allocation_ratio=PLACEMENT_MAX_RATIO, used=MAX_USED),
     PLACEMENT_MAX_INT, True),
])
def test_exact_at_the_limits(inventory, amount, fits):
    assert verdicts(inventory, amount) == (fits, fits)
