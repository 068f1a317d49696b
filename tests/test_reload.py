"""SIGHUP configuration reload, over the real sidecar: no call dropped, new settings and profiles
take effect, bad files are refused with one log line and change nothing, restarts keep the reload."""
from __future__ import annotations

import glob
import os
import re
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from placecheck_engine.config import config_from_bytes, load_config
from placecheck import PlacementClient, bad_request_violations, wait_until_serving
from placecheck.v1 import placement_pb2
from sidecar import start_sidecar

TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 15.0
WORKERS = 2

# IoOpsFilter allows a host while num_io_ops < max_io_ops_per_host; no other rule can refuse.
RULES = 'enabled_filters = ["resource", "IoOpsFilter"]\n'
STRICT = f"[profiles.default]\n{RULES}max_io_ops_per_host = 8\n"        # "busy" refused
RELAXED = f"[profiles.default]\n{RULES}max_io_ops_per_host = 16\n"      # "busy" allowed
WITH_TIGHT_PROFILE = STRICT + f"\n[profiles.tight]\n{RULES}max_io_ops_per_host = 1\n"  # "light" refused in tight

BAD_FILES = [
    pytest.param("[profiles.default]\nmax_io_ops_per_host = \n", "", "not valid TOML", id="toml-error"),
    pytest.param("[profiles.default]\nmax_io_ops_per_hots = 16\n", "profiles.default.max_io_ops_per_hots",
                 "unknown option", id="unknown-option"),
    pytest.param('[profiles.default]\nenabled_filters = ["NoSuchFilter"]\n', "profiles.default.enabled_filters",
                 "unknown rule 'NoSuchFilter'", id="unknown-rule"),
]


def host(name: str, io_ops: int) -> dict:
    return {"name": name, "num_io_ops": io_ops,
            "resources": {"VCPU": {"total": 64}, "MEMORY_MB": {"total": 65_536}, "DISK_GB": {"total": 1_000}}}


FLEET = {"hosts": [host("busy", 8), host("light", 1)], "aggregates": []}
REQUEST = placement_pb2.PlacementRequest(resources={"VCPU": 1})


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reload") / "placecheck.toml"
    path.write_text(STRICT)
    return path


@pytest.fixture(scope="module")
def reloadable(config_path):
    with start_sidecar(config=config_path, fleet=FLEET, workers=WORKERS, metrics=False) as running:
        assert len(glob.glob(str(running.tmpdir / "placecheck-config-*" / "accepted.toml"))) == 1
        yield running
        running.stop()
        assert not glob.glob(str(running.tmpdir / "placecheck-config-*"))  # the accepted copy goes too


@pytest.fixture(scope="module")
def placement(reloadable):
    # More channels than workers, so calls reach every worker.
    with PlacementClient(reloadable.decision_target, channels=4 * WORKERS) as client:
        yield client


def check(placement: PlacementClient, host_name: str, profile: str = "") -> placement_pb2.CheckDestinationResponse:
    request = placement_pb2.PlacementRequest(resources=REQUEST.resources, profile=profile)
    return placement.check_destination(request, [host_name], timeout=TIMEOUT_S)


def wait_for_log(sidecar, pattern: str, after: int, count: int = 1) -> list[str]:
    """Lines matching `pattern` logged after offset `after`, once there are `count` of them."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while True:
        lines = [line for line in sidecar.log()[after:].splitlines() if re.search(pattern, line)]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"no {count} x {pattern!r} in the log:\n{sidecar.log()[after:]}"
        time.sleep(0.02)


def reload(sidecar, config_path: Path, text: str) -> str:
    """Write the file, SIGHUP the supervisor, and wait until every worker is on its revision."""
    config_path.write_text(text)
    revision = load_config(config_path).revision
    after = len(sidecar.log())
    os.kill(sidecar.pid, signal.SIGHUP)
    wait_for_log(sidecar, rf"now on config revision {revision}$", after, count=WORKERS)
    return revision


def use_config(sidecar, placement, config_path: Path, text: str) -> str:
    """Make `text` the running configuration, whatever an earlier test left."""
    config_path.write_text(text)
    revision = load_config(config_path).revision
    if check(placement, "busy").config_revision == revision:
        return revision
    return reload(sidecar, config_path, text)


def test_calls_from_several_threads_keep_succeeding_across_reloads(reloadable, placement, config_path):
    strict = use_config(reloadable, placement, config_path, STRICT)
    relaxed = config_from_bytes(RELAXED.encode(), "relaxed").revision
    seen: list[tuple[float, str, bool]] = []  # (call started, revision, "busy" allowed)
    errors: list[BaseException] = []
    done = threading.Event()

    def call_in_a_loop():
        with PlacementClient(reloadable.decision_target, channels=2) as own:
            while not done.is_set():
                started = time.monotonic()
                try:
                    response = own.check_destination(REQUEST, ["busy"], timeout=TIMEOUT_S)
                except grpc.RpcError as error:
                    errors.append(error)
                    continue
                seen.append((started, response.config_revision, response.verdicts[0].allowed))

    callers = [threading.Thread(target=call_in_a_loop) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        for text in (RELAXED, STRICT, RELAXED, STRICT, RELAXED):
            time.sleep(0.2)
            reload(reloadable, config_path, text)
        every_worker_switched = time.monotonic()
        time.sleep(0.2)
    finally:
        done.set()
        for caller in callers:
            caller.join(TIMEOUT_S)
    assert errors == []
    assert {revision for _, revision, _ in seen} == {strict, relaxed}
    # Each call was decided on the configuration its response names: "busy" passes only the relaxed one.
    assert all(allowed == (revision == relaxed) for _, revision, allowed in seen)
    # A call started after every worker logged the last reload is answered on it.
    late = {revision for started, revision, _ in seen if started > every_worker_switched}
    assert late == {relaxed}


def test_a_changed_setting_takes_effect(reloadable, placement, config_path):
    strict = use_config(reloadable, placement, config_path, STRICT)
    refused = check(placement, "busy")
    assert refused.config_revision == strict and not refused.verdicts[0].allowed
    assert [r.rule for r in refused.verdicts[0].rejections] == ["IoOpsFilter"]

    relaxed = reload(reloadable, config_path, RELAXED)
    for _ in range(4 * WORKERS):
        allowed = check(placement, "busy")
        assert (allowed.config_revision, allowed.verdicts[0].allowed) == (relaxed, True)


@pytest.mark.parametrize("text, key, reason", BAD_FILES)
def test_a_bad_file_is_refused_with_one_log_line_and_the_old_revision_keeps_answering(
        reloadable, placement, config_path, text, key, reason):
    kept = use_config(reloadable, placement, config_path, STRICT)
    config_path.write_text(text)
    after = len(reloadable.log())
    os.kill(reloadable.pid, signal.SIGHUP)
    [line] = wait_for_log(reloadable, "config reload refused", after)
    named = f"keeping revision {kept}: {config_path}: {key + ': ' if key else ''}"
    assert named in line and reason in line.split(named, 1)[1]
    time.sleep(0.2)  # room for a wrongly forwarded reload to show
    assert "now on config revision" not in reloadable.log()[after:]
    for _ in range(4 * WORKERS):
        response = check(placement, "busy")
        assert (response.config_revision, response.verdicts[0].allowed) == (kept, False)


def test_a_profile_added_by_reload_can_be_requested_by_name(reloadable, placement, config_path):
    use_config(reloadable, placement, config_path, STRICT)
    with pytest.raises(grpc.RpcError) as raised:
        check(placement, "light", profile="tight")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = bad_request_violations(raised.value)
    assert field == "request.profile" and "'tight'" in description

    revision = reload(reloadable, config_path, WITH_TIGHT_PROFILE)
    for _ in range(4 * WORKERS):
        tight = check(placement, "light", profile="tight")
        assert (tight.profile, tight.config_revision, tight.verdicts[0].allowed) == ("tight", revision, False)
        default = check(placement, "light")
        assert (default.profile, default.verdicts[0].allowed) == ("default", True)


def test_a_restarted_worker_starts_on_the_last_accepted_configuration(reloadable, placement, config_path):
    relaxed = use_config(reloadable, placement, config_path, RELAXED)
    # The operator's file turns bad after the reload: the restarted worker must not read it.
    config_path.write_text(BAD_FILES[1].values[0])
    restarted = kill_a_worker_and_wait_for_its_successor(reloadable)
    [started] = wait_for_log(reloadable, rf"\[{restarted}\] .* serving .* on config revision ", 0)
    assert started.endswith(f"on config revision {relaxed}")
    assert_every_worker_answers_on(reloadable, relaxed, busy_allowed=True)


def test_a_reload_forwarded_while_a_worker_starts_up_reaches_it(reloadable, placement, config_path):
    use_config(reloadable, placement, config_path, RELAXED)
    restarted = kill_a_worker_and_wait_for_its_successor(reloadable)
    # The successor is still starting (importing, well before its SIGHUP handler exists).
    config_path.write_text(STRICT)
    strict = load_config(config_path).revision
    os.kill(reloadable.pid, signal.SIGHUP)
    wait_for_log(reloadable, rf"\[{restarted}\] .* (serving .* on|now on) config revision {strict}$", 0)
    assert restarted in reloadable.worker_pids()
    assert_every_worker_answers_on(reloadable, strict, busy_allowed=False)


def kill_a_worker_and_wait_for_its_successor(sidecar) -> int:
    before = sidecar.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while len(now := sidecar.worker_pids()) < WORKERS or before[0] in now:
        assert time.monotonic() < deadline, "the killed worker was not restarted"
        time.sleep(0.005)
    [successor] = set(now) - set(before)
    return successor


def assert_every_worker_answers_on(sidecar, revision: str, busy_allowed: bool) -> None:
    wait_until_serving(sidecar.decision_target, timeout=RELOAD_TIMEOUT_S)
    with PlacementClient(sidecar.decision_target, channels=4 * WORKERS) as spread:
        for _ in range(4 * WORKERS):
            response = spread.check_destination(REQUEST, ["busy"], timeout=TIMEOUT_S)
            assert (response.config_revision, response.verdicts[0].allowed) == (revision, busy_allowed)


def test_without_a_config_file_sighup_has_nothing_to_reload(sidecar):
    workers = sidecar.worker_pids()
    after = len(sidecar.log())
    os.kill(sidecar.pid, signal.SIGHUP)
    wait_for_log(sidecar, "started without --config, nothing to reload", after)
    with PlacementClient(sidecar.decision_target, channels=4) as client:
        assert client.select_destinations(placement_pb2.PlacementRequest(resources={"VCPU": 1}),
                                          timeout=TIMEOUT_S).placements
    assert sidecar.worker_pids() == workers
