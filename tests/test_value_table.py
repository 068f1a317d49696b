"""The value-table broadcast kernels against numpy, and the ValueTableRule compile step."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from placecheck_engine import _fastfilters
from placecheck_engine.columns import Columns
from placecheck_engine.rules.value_table import ValueLimitRule, ValueTableRule

BIT = 5
OTHER_BITS = np.uint64(0b11)


@st.composite
def value_tables(draw):
    # Either side of 64 values: a table of fewer is held in one register by the kernels.
    values = draw(st.one_of(st.integers(1, 6), st.integers(60, 70)))
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
def test_refused_values_kernel(table, data):
    values, ids, start, stop = table
    refused_by_value = np.array(data.draw(st.lists(st.integers(0, 1), min_size=values, max_size=values)),
                                dtype=np.uint8)
    fail_bits = np.full(len(ids), OTHER_BITS, dtype=np.uint64)
    kernel = _fastfilters.RefusedValuesKernel(read_only(ids), read_only(refused_by_value))
    refused = kernel.scan(fail_bits, BIT, start, stop)
    expected = np.zeros(len(ids), dtype=bool)
    expected[start:stop] = refused_by_value[ids[start:stop]] == 1
    assert (fail_bits >> np.uint64(BIT) & np.uint64(1) == 1).tolist() == expected.tolist()
    assert [kernel.refuses_row(row) for row in range(start, stop)] == expected[start:stop].tolist()
    assert (fail_bits & OTHER_BITS == OTHER_BITS).all()
    assert refused == expected.sum()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 70), st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), max_size=40))
def test_refused_values_kernel_refuses_ids_outside_the_table(values, ids):
    ids = np.array(ids, dtype=np.int32)
    refused_by_value = np.zeros(values, dtype=np.uint8)  # every value in the table passes
    fail_bits = np.zeros(len(ids), dtype=np.uint64)
    kernel = _fastfilters.RefusedValuesKernel(read_only(ids), refused_by_value)
    refused = kernel.scan(fail_bits, BIT, 0, len(ids))
    outside = (ids < 0) | (ids >= values)
    assert (fail_bits != 0).tolist() == outside.tolist()
    assert [kernel.refuses_row(row) for row in range(len(ids))] == outside.tolist()
    assert refused == outside.sum()


@settings(max_examples=200, deadline=None)
@given(value_tables(), st.data())
def test_count_below_value_limit_kernel(table, data):
    values, ids, start, stop = table
    n = len(ids)
    counts = np.array(data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), dtype=np.int32)
    limits = np.array(data.draw(st.lists(st.integers(-1, 14), min_size=values, max_size=values)),
                      dtype=np.int64)
    placed = data.draw(st.integers(0, 3))
    fail_bits = np.full(n, OTHER_BITS, dtype=np.uint64)
    kernel = _fastfilters.CountBelowValueLimitKernel(read_only(counts), read_only(ids), read_only(limits))
    refused = kernel.scan(fail_bits, BIT, start, stop, placed)
    expected = np.zeros(n, dtype=bool)
    expected[start:stop] = counts[start:stop] + placed >= limits[ids[start:stop]]
    assert (fail_bits >> np.uint64(BIT) & np.uint64(1) == 1).tolist() == expected.tolist()
    assert [kernel.refuses_row(row, placed) for row in range(start, stop)] == expected[start:stop].tolist()
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


class ColourLimit(ValueLimitRule):
    """A toy rule: a host's count must stay below its colour's name length, or any length
    given as the request."""
    name = "ColourLimit"
    id_column = "colour_id"
    count_column = "count"

    def distinct_values(self, columns):
        return columns.dicts["colours"]

    def limit_of_value(self, value, request, profile):
        return len(value) if request is None else request

    def limit_key(self, request, profile):
        return request


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_value_limit_rule_kept_limits_match_the_table(data):
    # Not one colour: a single limit is compared without reading the ids (ValueLimits.uniform_limit).
    colours = ["red", "blue", "green", "purple"][:data.draw(st.sampled_from([0, 2, 3, 4]))]
    n = data.draw(st.integers(0, 30))
    # An id outside the table comes only from a damaged segment: the host is refused.
    ids = np.array(data.draw(st.lists(st.integers(-2, len(colours) + 1), min_size=n, max_size=n)),
                   dtype=np.int32)
    counts = np.array(data.draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)), dtype=np.int32)
    placed = data.draw(st.integers(0, 3))
    columns = Columns({"colour_id": read_only(ids), "count": read_only(counts)}, {"colours": colours})
    rule = ColourLimit()
    [active] = rule.compile(None, columns, None)
    fail_bits = np.zeros(n, dtype=np.uint64)
    refused = rule.scan(active, columns, fail_bits, BIT, 0, n, placed)
    limits = np.array([len(colour) for colour in colours], dtype=np.int64)
    expected = [not (0 <= value_id < len(colours)) or count + placed >= limits[value_id]
                for value_id, count in zip(ids.tolist(), counts.tolist())]
    assert (fail_bits != 0).tolist() == expected
    assert refused == sum(expected)
    table_fail_bits = np.zeros(n, dtype=np.uint64)
    assert _fastfilters.CountBelowValueLimitKernel(read_only(counts), read_only(ids), limits).scan(
        table_fail_bits, BIT, 0, n, placed) == refused
    assert table_fail_bits.tolist() == fail_bits.tolist()
