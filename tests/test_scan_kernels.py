"""scan_kernels (SelectDestinations' scan: every rule's kernel in one call) against each rule's own scan."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine import _fastfilters
from placecheck_engine.columns import build_columns
from placecheck_engine.decide import _compiled
from tests.fleetgen import scenarios


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_scan_kernels_equals_each_rules_scan(scenario, data):
    fleet, request, profile = scenario
    columns = build_columns(fleet)
    n = columns.host_count
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    placed = data.draw(st.integers(0, 2))
    compiled = _compiled(columns, request, profile)
    actives = compiled.actives
    kernels = compiled.kernels_for(columns, actives).kernels
    # Bits already set stay set: the kernels only OR theirs in.
    earlier = np.array(data.draw(st.lists(st.sampled_from([0, 1 << 63]), min_size=n, max_size=n)),
                       dtype=np.uint64)
    fail_bits = earlier.copy()
    counts = _fastfilters.scan_kernels(kernels, fail_bits, start, stop, placed)
    expected = earlier.copy()
    for bit, (active, kernel) in enumerate(zip(actives, kernels)):
        own = active.rule.scan(active, columns, expected, bit, start, stop, placed) if kernel is not None else 0
        assert counts[bit] == own, active.name
    assert fail_bits.tolist() == expected.tolist()


def test_scan_kernels_refuses_rows_outside_the_fail_bits_or_a_kernel():
    kernel = _fastfilters.RefuseEveryRow(4)
    with pytest.raises(IndexError):
        _fastfilters.scan_kernels([kernel], np.zeros(3, dtype=np.uint64), 0, 4, 0)
    with pytest.raises(IndexError):
        _fastfilters.scan_kernels([kernel], np.zeros(8, dtype=np.uint64), 0, 5, 0)
    fail_bits = np.zeros(8, dtype=np.uint64)
    assert _fastfilters.scan_kernels([None, kernel], fail_bits, 1, 3, 0) == [0, 2]
    assert fail_bits.tolist() == [0, 2, 2, 0, 0, 0, 0, 0]
