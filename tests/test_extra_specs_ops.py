"""Nova's extra_specs_ops.match: every case of nova's test_extra_specs_ops.py (research §6.9)."""
from __future__ import annotations

import pytest

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.decide import check_destination
from placecheck_engine.model import Flavor, Fleet, Host, InvalidField, Request
from placecheck_engine.rules.extra_specs_ops import match

CPU_FLAGS = str(["aes", "mmx", "aux"])


@pytest.mark.parametrize("value, req, expected", [
    # no operator: whole-string equality
    ("1", "1", True), ("", "1", False), ("3", "1", False), ("222", "2", False),
    ("4", "> 2", False),  # ">" is not an operator
    # "=" is >=
    ("123", "= 123", True), ("124", "= 123", True), ("34", "= 234", False),
    ("34", "=", False),  # an operator without an operand
    # string equality
    ("123", "s== 123", True), ("1234", "s== 123", False),
    ("1234", "s!= 123", True), ("123", "s!= 123", False),
    # string ordering is lexicographic
    ("1000", "s>= 234", False), ("1234", "s<= 1000", False), ("2", "s< 12", False), ("12", "s> 2", False),
    # <in> is a substring test on the first operand only
    ("12311321", "<in> 11", True), ("12311321", "<in> 12311321", True),
    ("12311321", "<in> 12311321 <in>", True), ("12310321", "<in> 11", False),
    ("12310321", "<in> 11 <in>", False),
    # <or>
    ("12", "<or> 11 <or> 12", True), ("12", "<or> 11 <or> 12 <or>", True),
    ("13", "<or> 11 <or> 12", False), ("13", "<or> 11 <or> 12 <or>", False),
    # numeric ordering
    ("2", "<= 10", True), ("3", "<= 2", False), ("3", ">= 1", True), ("2", ">= 3", False),
    # <all-in>: every operand is a substring (of a list's str)
    (CPU_FLAGS, "<all-in> aes mmx", True), (CPU_FLAGS, "<all-in> mmx", True),
    (CPU_FLAGS, "<all-in>  txt", False), (CPU_FLAGS, "<all-in> txt 3dnow", False),
    (CPU_FLAGS, "<all-in> txt aes", False),
])
def test_nova_cases(value, req, expected):
    assert match(value, req) is expected


@pytest.mark.parametrize("value, req, expected", [
    ("2", "== 2.0", True), ("2", "!= 2.0", False), ("2.5", "!= 2", True),
    ("10", "s<= 9", True), ("b", "s> a", True),
    ("x", "<or> x", True),
    ("", "", True),  # an empty requirement is plain equality
])
def test_more_operators(value, req, expected):
    assert match(value, req) is expected


@pytest.mark.parametrize("req", ["= 1", "s== 1", "<in> 1", "<or> 1", "<all-in> 1"])
def test_none_value_never_matches_an_operator(req):
    assert match(None, req) is False


def test_none_value_equals_only_by_plain_equality():
    assert match(None, "1") is False


@pytest.mark.parametrize("value, req, error", [
    ("abc", ">= 1", ValueError),  # float() of the value, as in Nova
    ("1", "== one", ValueError),
    ("1", "<or>", IndexError),  # Nova pops an alternative that is not there
])
def test_errors_as_nova_raises_them(value, req, error):
    with pytest.raises(error):
        match(value, req)


@pytest.mark.parametrize("rule, key", [("ComputeCapabilitiesFilter", "capabilities:cpu_vendor"),
                                       ("AggregateInstanceExtraSpecsFilter", "cpu_vendor")])
def test_a_lone_or_is_refused_with_its_field(rule, key):
    # Nova's match() pops an alternative from an empty list on every host with a value.
    fleet = Fleet((Host("h1", stats={"cpu_vendor": "Intel"}),))
    request = Request(flavor=Flavor(extra_specs={key: " <or> "}))
    with pytest.raises(InvalidField) as raised:
        check_destination(build_columns(fleet), request, Profile(enabled_filters=(rule,)), ["h1"])
    assert raised.value.field == f"request.flavor.extra_specs[{key}]"
