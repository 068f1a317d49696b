"""The `placecheck` command against the real sidecar."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from placecheck_engine.demo import demo_fleet
from placecheck_engine.fleetfile import fleet_to_json
from placecheck import StateClient
from placecheck.v1 import fleet_pb2
from sidecar import REPO, start_sidecar

TIMEOUT_S = 60


def placecheck(*args: str) -> subprocess.CompletedProcess:
    """Run the installed console script (python -m placecheck_server.cli when it is not installed)."""
    script = Path(sys.executable).with_name("placecheck")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "placecheck_server.cli"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def cli_hosts(sidecar):
    with StateClient(sidecar.state_target) as state:
        state.upsert_hosts([
            fleet_pb2.Host(name="cli-roomy", resources={
                "VCPU": fleet_pb2.Inventory(total=32), "MEMORY_MB": fleet_pb2.Inventory(total=65_536)}),
            fleet_pb2.Host(name="cli-tight", enabled=False, resources={
                "VCPU": fleet_pb2.Inventory(total=4), "MEMORY_MB": fleet_pb2.Inventory(total=2_048, used=1_024)}),
        ], timeout=10)
    return sidecar


def test_check_prints_every_reason_and_exits_1_for_a_refused_host(cli_hosts):
    result = placecheck("check", "--target", cli_hosts.decision_target, "--host", "cli-tight", "--host",
                        "cli-roomy", "--vcpus", "2", "--ram-mb", "2048")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "cli-tight: refused by 2 rules"
    assert any(line.startswith("  ComputeFilter [") for line in lines)
    memory = next(line for line in lines if line.startswith("  resource:MEMORY_MB ["))
    assert "2048" in memory and "1024" in memory  # requested and free
    assert any(line.startswith("cli-roomy: allowed") for line in lines)
    assert lines[-1].startswith("snapshot generation ")


def test_check_exits_0_when_every_host_is_allowed(cli_hosts, tmp_path):
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"resources": {"VCPU": 4, "MEMORY_MB": 4096}}))
    result = placecheck("check", "--target", cli_hosts.decision_target, "--host", "cli-roomy",
                        "--request-json", str(request_file), "--json")
    assert result.returncode == 0, result.stderr
    [verdict] = json.loads(result.stdout)["verdicts"]
    assert verdict["host"] == "cli-roomy" and verdict["allowed"]


def test_select_prints_picks_or_the_summary_line(cli_hosts):
    placed = placecheck("select", "--target", cli_hosts.decision_target, "--vcpus", "1", "--max-alternates", "1")
    assert placed.returncode == 0, placed.stderr
    assert placed.stdout.startswith("instance 1: ")
    assert "\n  alternate: " in placed.stdout
    none_fit = placecheck("select", "--target", cli_hosts.decision_target, "--resource", "VCPU=100000")
    assert none_fit.returncode == 1, none_fit.stderr
    assert "no placement for 1 instance(s): 0/" in none_fit.stdout
    assert " resource:VCPU" in none_fit.stdout


def test_errors_exit_2_with_the_reason(cli_hosts):
    unknown = placecheck("check", "--target", cli_hosts.decision_target, "--host", "no-such-host", "--vcpus", "1")
    assert unknown.returncode == 2
    assert "NOT_FOUND" in unknown.stderr and "no-such-host" in unknown.stderr
    invalid = placecheck("check", "--target", cli_hosts.decision_target, "--host", "cli-roomy",
                         "--operation", "live_migrate")
    assert invalid.returncode == 2
    assert "request.source_host: required for OPERATION_LIVE_MIGRATE" in invalid.stderr
    usage = placecheck("check", "--vcpus", "1")  # no --host
    assert usage.returncode == 2 and "--host" in usage.stderr


def test_load_replaces_the_fleet_and_status_reports_it(tmp_path):
    fleet = demo_fleet(30, 7)
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(json.dumps(fleet_to_json(fleet)))
    with start_sidecar(workers=1, demo_hosts=10, metrics=False) as own:
        loaded = placecheck("load", str(fleet_file), "--state", own.state_target)
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip() == (f"published generation 2: {len(fleet.hosts)} hosts, "
                                         f"{len(fleet.aggregates)} aggregates")
        status = placecheck("status", "--state", own.state_target)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"generation 2: {len(fleet.hosts)} hosts, {len(fleet.aggregates)} aggregates")
        missing = placecheck("load", str(tmp_path / "missing.json"), "--state", own.state_target)
        assert missing.returncode == 2 and "missing.json" in missing.stderr


def test_load_takes_a_fleet_over_grpcs_default_4_mib_message_limit(tmp_path):
    fleet = demo_fleet(10_000, 0)
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(json.dumps(fleet_to_json(fleet)))
    with start_sidecar(workers=1, metrics=False, wait_serving=False) as own:
        loaded = placecheck("load", str(fleet_file), "--state", own.state_target)
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip().startswith("published generation 1: 10000 hosts")
        with StateClient(own.state_target) as state:
            assert state.status(timeout=10).host_count == 10_000


def test_select_prints_only_the_weighers_that_moved_a_host(cli_hosts):
    placed = placecheck("select", "--target", cli_hosts.decision_target, "--vcpus", "1", "--max-alternates", "3")
    assert placed.returncode == 0, placed.stderr
    weighed = [line for line in placed.stdout.splitlines() if " weight " in line]
    assert weighed
    for line in weighed:
        contributions = re.findall(r"(\w+Weigher) ([+-]\d+\.\d{4})", line)
        assert all(float(value) != 0 for _, value in contributions), line
    # The demo fleet's hosts differ in free RAM, so RAMWeigher moves every one but the emptiest.
    assert any("RAMWeigher" in line for line in weighed)


def test_invalid_argument_prints_its_reason_once(cli_hosts):
    invalid = placecheck("check", "--target", cli_hosts.decision_target, "--host", "cli-roomy",
                         "--operation", "live_migrate")
    assert invalid.returncode == 2
    assert invalid.stderr.count("request.source_host: required for OPERATION_LIVE_MIGRATE") == 1, invalid.stderr


def test_targets_default_to_the_environment(cli_hosts, monkeypatch):
    monkeypatch.setenv("PLACECHECK_DECISION_TARGET", cli_hosts.decision_target)
    monkeypatch.setenv("PLACECHECK_STATE_TARGET", cli_hosts.state_target)
    checked = placecheck("check", "--host", "cli-roomy", "--vcpus", "1")
    assert checked.returncode == 0, checked.stderr
    status = placecheck("status", "--json")
    assert status.returncode == 0, status.stderr
    assert int(json.loads(status.stdout)["host_count"]) >= 2  # int64: a JSON string


def test_help_shows_examples_exit_codes_and_no_markdown():
    for command in ((), ("check",), ("select",), ("load",), ("status",), ("serve",), ("sync", "openstack")):
        shown = placecheck(*command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "`" not in shown.stdout, command
    for command in ((), ("check",), ("select",)):
        shown = placecheck(*command, "--help").stdout
        assert "examples:\n  placecheck serve --demo" in shown
        assert "exit codes:\n  0  success" in shown and "\n  1  a refusal" in shown and "\n  2  a usage" in shown
        assert "PLACECHECK_DECISION_TARGET" in shown
