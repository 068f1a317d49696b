"""MoveSource: the hosts Nova's scheduler skips for a move (ignore_hosts), reference and kernel.

Ported from Nova's nova/tests/unit/scheduler/test_host_manager.py
(test_get_filtered_hosts_with_ignore, test_get_filtered_hosts_with_ignore_case_insensitive):
Nova's HostManager drops every host whose name equals an ignored host's, ignoring case.
"""
from __future__ import annotations

import numpy as np
import pytest

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Fleet, Host, Operation, Request
from placecheck_engine.rules import RULES
from placecheck_engine.rules.move_source import SAME_HOST_COLD_MIGRATE_TRAIT

RULE = RULES["MoveSource"]
INSTANCE = "00000000-0000-0000-0000-00000000000a"
FAKE_HOSTS = ("fake_host1", "fake_host2", "fake_host3", "fake_host4", "fake_multihost")


def kept_out(fleet: Fleet, operation: Operation, source: str, profile: Profile = Profile()) -> list[str]:
    """Hosts the rule refuses, the same by the reference and the kernel."""
    request = Request(operation=operation, source_host=source, instance_uuid=INSTANCE)
    columns = build_columns(fleet)
    (active,) = RULE.compile(request, columns, profile)
    fail_bits = np.zeros(columns.host_count, dtype=np.uint64)
    if active.params is not None:
        RULE.scan(active, columns, fail_bits, 0, 0, columns.host_count, 0)
    kernel = [host.name for row, host in enumerate(fleet.hosts) if fail_bits[row]]
    reference = [host.name for host in fleet.hosts
                 if not RULE.reference(active.name, host, fleet, request, profile, 0)]
    assert kernel == reference
    return kernel


@pytest.mark.parametrize("source", ["fake_host3", "FaKe_HoSt3"],
                         ids=["test_get_filtered_hosts_with_ignore",
                              "test_get_filtered_hosts_with_ignore_case_insensitive"])
def test_ignored_source_host(source):
    fleet = Fleet(tuple(Host(name) for name in FAKE_HOSTS))
    assert kept_out(fleet, Operation.LIVE_MIGRATE, source) == ["fake_host3"]


def test_every_host_named_alike_is_skipped():
    fleet = Fleet((Host("compute-b"), Host("COMPUTE-B"), Host("compute-c")))
    assert kept_out(fleet, Operation.EVACUATE, "Compute-B") == ["compute-b", "COMPUTE-B"]


@pytest.mark.parametrize("operation", [Operation.BOOT, Operation.UNSHELVE])
def test_nothing_is_skipped_without_a_host_to_leave(operation):
    fleet = Fleet((Host("compute-b"), Host("compute-c")))
    assert kept_out(fleet, operation, "compute-b") == []


@pytest.mark.parametrize("source_traits, allow_resize, operation, skipped", [
    ((SAME_HOST_COLD_MIGRATE_TRAIT,), False, Operation.COLD_MIGRATE, []),
    ((), True, Operation.COLD_MIGRATE, ["compute-b"]),
    ((SAME_HOST_COLD_MIGRATE_TRAIT,), False, Operation.RESIZE, ["compute-b"]),
    ((), True, Operation.RESIZE, []),
    ((SAME_HOST_COLD_MIGRATE_TRAIT,), True, Operation.LIVE_MIGRATE, ["compute-b"]),
])
def test_staying_on_the_source(source_traits, allow_resize, operation, skipped):
    fleet = Fleet((Host("compute-b", traits=frozenset(source_traits)), Host("compute-c")))
    profile = Profile(allow_resize_to_same_host=allow_resize)
    assert kept_out(fleet, operation, "COMPUTE-B", profile) == skipped
