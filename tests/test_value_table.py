"""The value-table broadcast kernels against numpy, and the ValueTableRule compile step."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from placecheck_engine import _fastfilters
from placecheck_engine.columns import Columns
from placecheck_engine.rules.value_table import ValueTableRule

BIT = 5
OTHER_BITS = np.uint64(0b11)


@st.composite
def value_tables(draw):
    values = draw(st.integers(1, 6))
    n = draw(st.integers(0, 40))
    ids = np.array(draw(st.lists(st.integers(0, values - 1), min_size=n, max_size=n)), dtype=np.int32)
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    return values, ids, start, stop


def read_only(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flags.writeable = False  # snapshot arrays are read-only views
    return array


@settings(max_examples=200, deadline=None)
@given(value_tables(), st.data())
def test_scan_refused_values(table, data):
    values, ids, start, stop = table
    refused_by_value = np.array(data.draw(st.lists(st.integers(0, 1), min_size=values, max_size=values)),
                                dtype=np.uint8)
    fail_bits = np.full(len(ids), OTHER_BITS, dtype=np.uint64)
    refused = _fastfilters.scan_refused_values(read_only(ids), read_only(refused_by_value),
                                               fail_bits, BIT, start, stop)
    expected = np.zeros(len(ids), dtype=bool)
    expected[start:stop] = refused_by_value[ids[start:stop]] == 1
    assert (fail_bits >> np.uint64(BIT) & np.uint64(1) == 1).tolist() == expected.tolist()
    assert (fail_bits & OTHER_BITS == OTHER_BITS).all()
    assert refused == expected.sum()


@settings(max_examples=200, deadline=None)
@given(value_tables(), st.data())
def test_scan_count_below_value_limit(table, data):
    values, ids, start, stop = table
    n = len(ids)
    counts = np.array(data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), dtype=np.int32)
    limits = np.array(data.draw(st.lists(st.integers(-1, 14), min_size=values, max_size=values)),
                      dtype=np.int64)
    placed = data.draw(st.integers(0, 3))
    fail_bits = np.full(n, OTHER_BITS, dtype=np.uint64)
    refused = _fastfilters.scan_count_below_value_limit(read_only(counts), read_only(ids), read_only(limits),
                                                        fail_bits, BIT, start, stop, placed)
    expected = np.zeros(n, dtype=bool)
    expected[start:stop] = counts[start:stop] + placed >= limits[ids[start:stop]]
    assert (fail_bits >> np.uint64(BIT) & np.uint64(1) == 1).tolist() == expected.tolist()
    assert (fail_bits & OTHER_BITS == OTHER_BITS).all()
    assert refused == expected.sum()


class EvenColour(ValueTableRule):
    """A toy rule: hosts pass when their colour's name has an even length."""
    name = "EvenColour"
    id_column = "colour_id"

    def __init__(self):
        self.evaluated = []

    def distinct_values(self, columns):
        return columns.dicts["colours"]

    def engages(self, request, profile):
        return request != "nothing"

    def passes_value(self, value, request, profile, columns):
        self.evaluated.append(value)
        return len(value) % 2 == 0


def test_value_table_rule_evaluates_each_distinct_value_once():
    ids = np.array([0, 1, 1, 2, 0, 2, 2], dtype=np.int32)
    columns = Columns({"colour_id": read_only(ids)}, {"colours": ["red", "blue", "green"]})
    rule = EvenColour()
    [active] = rule.compile("anything", columns, None)
    assert rule.evaluated == ["red", "blue", "green"]
    fail_bits = np.zeros(len(ids), dtype=np.uint64)
    assert rule.scan(active, columns, fail_bits, 0, 0, len(ids), 0) == 5
    assert fail_bits.tolist() == [1, 0, 0, 1, 1, 1, 1]
    assert rule.value_of(columns, 3) == "green"


def test_value_table_rule_not_engaged_or_refusing_nothing():
    columns = Columns({"colour_id": np.zeros(3, dtype=np.int32)}, {"colours": ["blue"]})
    rule = EvenColour()
    [active] = rule.compile("nothing", columns, None)
    assert active.params is None and rule.evaluated == []
    [active] = rule.compile("anything", columns, None)
    assert active.params is None  # no value refused: the scan has nothing to do
    assert rule.scan(active, columns, np.zeros(3, dtype=np.uint64), 0, 0, 3, 0) == 0
