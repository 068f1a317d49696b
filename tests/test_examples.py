"""What a newcomer runs first: `make run ARGS=...`, the example fleet file and the READMEs' examples."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from placecheck_engine.fleetfile import load_fleet
from placecheck import PlacementClient, StateClient, wait_until_serving
from placecheck.v1 import placement_pb2
from sidecar import REPO, STARTUP_TIMEOUT_S, STOP_TIMEOUT_S, free_port

EXAMPLE_FLEET = REPO / "etc" / "example-fleet.json"
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def make_run():
    """`make run` with ARGS naming its own ports, socket and the example fleet; (decision, state) targets."""
    with tempfile.TemporaryDirectory(prefix="placecheck-make-run-") as directory:
        decision_target = f"127.0.0.1:{free_port()}"
        state_target = f"unix:{directory}/state.sock"
        args = f"--listen {decision_target} --state-listen {state_target} --metrics-port 0 --workers 1 " \
               f"--fleet {EXAMPLE_FLEET}"
        # -o: the build is make test's business; here only the run recipe and its ARGS are under test.
        process = subprocess.Popen(["make", "-s", "-o", ".venv/.built", "run", f"ARGS={args}"], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=open(Path(directory) / "log", "wb"),
                                   env={**os.environ, "TMPDIR": directory}, start_new_session=True)
        try:
            wait_until_serving(decision_target, timeout=STARTUP_TIMEOUT_S)
            yield decision_target, state_target
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_TIMEOUT_S)


def test_the_example_fleet_file_loads():
    fleet = load_fleet(str(EXAMPLE_FLEET))
    assert [host.name for host in fleet.hosts] == ["compute-a1", "compute-a2", "compute-b1", "compute-b2"]
    assert len(fleet.aggregates) == 2


def test_make_run_serves_with_its_args_and_the_example_fleet(make_run):
    decision_target, state_target = make_run
    with StateClient(state_target) as state:
        assert state.status(timeout=TIMEOUT_S).host_count == 4
    request = placement_pb2.PlacementRequest(resources={"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 20})
    with PlacementClient(decision_target, channels=1) as client:
        verdicts = client.check_destination(request, ["compute-b1", "compute-b2"], timeout=TIMEOUT_S).verdicts
        summary = client.select_destinations(request, timeout=TIMEOUT_S).summary
    assert verdicts[0].allowed
    assert [r.rule for r in verdicts[1].rejections] == ["ComputeFilter"]  # compute-b2 is disabled
    assert (summary.hosts_passed, summary.hosts_evaluated) == (3, 4)  # compute-a2's memory is nearly full


def _python_readme_example() -> str:
    readme = (REPO / "clients" / "python" / "README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return example


def test_the_python_readme_example_leaves_the_fleet_as_it_was(make_run):
    decision_target, state_target = make_run
    example = _python_readme_example()
    assert example.count('"127.0.0.1:50051"') == 2 and example.count("StateClient()") == 1
    example = example.replace('"127.0.0.1:50051"', repr(decision_target)).replace(
        "StateClient()", f"StateClient({state_target!r})")
    with StateClient(state_target) as state:
        before = state.status(timeout=TIMEOUT_S).host_count
        ran = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("example-host-1 False [('resource:MEMORY_MB', ")
        assert state.status(timeout=TIMEOUT_S).host_count == before == 4


def test_the_readme_names_files_that_exist():
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"placecheck load (\S+)", readme):
        assert (REPO / path).is_file(), path
