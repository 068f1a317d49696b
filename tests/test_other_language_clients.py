"""The Node.js and Go clients against one real sidecar: each client's own tests (`npm test` in
clients/node, `go test ./...` in clients/go), run by its own tool with the sidecar's addresses in
PLACECHECK_DECISION_TARGET and PLACECHECK_STATE_TARGET (its workers' own ports, --worker-ports, in
PLACECHECK_WORKER_TARGET, its metrics in PLACECHECK_METRICS_URL), the TLS options against a second
one that requires mutual TLS and admits one identity (PLACECHECK_TLS_* and PLACECHECK_TOKEN), and
the call policy (default deadline, retries, Health.Watch) against a third, without a fleet on one
thread and started for each client (PLACECHECK_EMPTY_*), whose tests write its fleet at the end.

`make test` installs their dependencies first (`make node-client go-client`); a test skips only
when `node` or `go` is not installed.

The Java client's JUnit tests (`mvn test` in clients/java, offline once `make java-client` has
fetched its dependencies) start sidecars of their own: one with a demo fleet, and one without a
fleet on one thread for the retry policy (UNAVAILABLE, then RESOURCE_EXHAUSTED).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from xml.etree import ElementTree

import pytest

from pki import Authority
from placecheck import ClientTls
from sidecar import REPO, free_port_range, start_sidecar

DEMO_HOSTS = 500
RUN_TIMEOUT_S = 300.0  # a cold Go build cache compiles gRPC first (about a minute on 2 cores)
ADMITTED_TOKEN = "polyglot-conductor-token-4e1b"
NODE_CLIENT = REPO / "clients" / "node"
GO_CLIENT = REPO / "clients" / "go"
JAVA_CLIENT = REPO / "clients" / "java"


WORKERS = 2


@pytest.fixture(scope="module")
def polyglot_sidecar():
    """A sidecar of this module's own; the clients' tests add and remove their own hosts only."""
    base = free_port_range(WORKERS)
    with start_sidecar(workers=WORKERS, demo_hosts=DEMO_HOSTS, extra_args=("--worker-ports", str(base))) as running:
        yield {"PLACECHECK_DECISION_TARGET": running.decision_target, "PLACECHECK_STATE_TARGET": running.state_target,
               "PLACECHECK_WORKER_TARGET": "ipv4:" + ",".join(f"127.0.0.1:{base + index}" for index in range(WORKERS)),
               "PLACECHECK_METRICS_URL": running.metrics_url}


@pytest.fixture
def empty_sidecar():
    """No fleet (UNAVAILABLE with a RetryInfo of 100 ms, NOT_SERVING) and one thread, for one client's tests."""
    with start_sidecar(workers=1, wait_serving=False, extra_args=("--threads-per-worker", "1")) as running:
        yield {"PLACECHECK_EMPTY_DECISION_TARGET": running.decision_target,
               "PLACECHECK_EMPTY_STATE_TARGET": running.state_target,
               "PLACECHECK_EMPTY_METRICS_URL": running.metrics_url}


@pytest.fixture(scope="module")
def tls_sidecar(tmp_path_factory):
    """Mutual TLS, tokens, and only "conductor" may decide; the clients hold "intruder"'s certificate."""
    directory = tmp_path_factory.mktemp("pki")
    authority = Authority(directory, "polyglot-ca")
    server, intruder = authority.server(), authority.client("intruder")
    tokens = directory / "tokens"
    tokens.write_text(f"{ADMITTED_TOKEN} conductor\n")
    tls = ClientTls.from_files(str(authority.path), str(intruder.certificate), str(intruder.key))
    with start_sidecar(workers=1, demo_hosts=50, decision_tls=tls, extra_args=(
            "--tls-cert", str(server.certificate), "--tls-key", str(server.key), "--tls-client-ca",
            str(authority.path), "--tokens-file", str(tokens), "--decision-callers", "conductor")) as running:
        yield {"PLACECHECK_TLS_DECISION_TARGET": running.decision_target, "PLACECHECK_TLS_CA": str(authority.path),
               "PLACECHECK_TLS_CERT": str(intruder.certificate), "PLACECHECK_TLS_KEY": str(intruder.key),
               "PLACECHECK_TOKEN": ADMITTED_TOKEN}


def run_client_tests(command: list[str], cwd, *sidecar_envs: dict[str, str]) -> str:
    env = dict(os.environ)
    for sidecar_env in sidecar_envs:
        env.update(sidecar_env)
    result = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{' '.join(command)}` in {cwd} exited {result.returncode}:\n{output[-8000:]}"
    return output


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm is not installed: the Node.js client is not tested")
def test_node_client_against_the_sidecar(polyglot_sidecar, tls_sidecar, empty_sidecar):
    assert (NODE_CLIENT / "node_modules" / ".installed").exists(), \
        "clients/node has no dependencies installed: run `make node-client`"
    output = run_client_tests(["npm", "test", "--silent"], NODE_CLIENT, polyglot_sidecar, tls_sidecar, empty_sidecar)
    # The spec reporter marks a passed suite with ✔ and a skipped one with ﹣.
    assert "✔ against the real sidecar" in output, output[-8000:]
    assert "✔ with TLS and a token" in output, output[-8000:]
    assert "✔ call policy against a sidecar without a fleet" in output, output[-8000:]
    assert "✔ one channel over the workers' own ports" in output, output[-8000:]
    assert "ℹ fail 0" in output and "ℹ skipped 0" in output, output[-8000:]


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed: the Go client is not tested")
def test_go_client_against_the_sidecar(polyglot_sidecar, tls_sidecar, empty_sidecar):
    assert (GO_CLIENT / "gen" / "placecheck" / "v1" / ".generated").exists(), \
        "clients/go has no generated stubs: run `make go-client`"
    output = run_client_tests(["go", "test", "-count=1", "-v", "./..."], GO_CLIENT, polyglot_sidecar, tls_sidecar,
                              empty_sidecar)
    assert "--- SKIP" not in output, output[-8000:]
    for test in ("TestAllowedHost", "TestRefusedHostWithRulesAndReasons", "TestSelectWithAlternates",
                 "TestInvalidArgumentDecodedToItsField", "TestUnknownHostIsNotFound",
                 "TestOneConnectionPerChannelToTheSidecar", "TestTLSAndTokenOptions",
                 "TestWorkerTargetSpreadsOneChannelsCalls", "TestDefaultDeadline", "TestRetryInfoPacesRetries",
                 "TestNoRetriesOneAttempt", "TestWatchUntilTheFleetArrives"):
        assert f"--- PASS: {test} " in output, output[-8000:]


def surefire_outcomes(reports) -> dict[str, list[str]]:
    """'Class.method' -> the failure, error or skipped marks of its run (empty: passed)."""
    outcomes = {}
    for report in reports.glob("TEST-*.xml"):
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            marks = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[f"{case.get('classname').rsplit('.', 1)[-1]}.{case.get('name')}"] = marks
    return outcomes


@pytest.mark.skipif(shutil.which("mvn") is None or shutil.which("java") is None,
                    reason="mvn/java is not installed: the Java client is not tested")
def test_java_client_against_the_sidecar():
    assert (JAVA_CLIENT / ".installed").exists(), "clients/java has not been built: run `make java-client`"
    reports = JAVA_CLIENT / "target" / "surefire-reports"
    shutil.rmtree(reports, ignore_errors=True)
    result = subprocess.run(["mvn", "-q", "-B", "-o", "test"], cwd=JAVA_CLIENT, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`mvn -q -B -o test` in {JAVA_CLIENT} exited {result.returncode}:\n{output[-8000:]}"
    outcomes = surefire_outcomes(reports)
    assert not any(outcomes.values()), {test: marks for test, marks in outcomes.items() if marks}
    for test in ("PlacementClientTest.allowedHostReadsItsOwnWrite",
                 "PlacementClientTest.refusalNamesEveryRuleWithReasonsAndNumbers",
                 "PlacementClientTest.selectRanksOurHostsWithAlternates",
                 "PlacementClientTest.invalidArgumentIsDecodedToItsField",
                 "PlacementClientTest.unknownHostIsNotFoundWithItsResourceInfo",
                 "PlacementClientTest.unreachableMinGenerationIsFailedPrecondition",
                 "PlacementClientTest.anotherHistorysGenerationIsRefused",
                 "PlacementClientTest.callsRotateOverOneConnectionPerChannel",
                 "PlacementClientTest.healthWatchReportsServing",
                 "RetryPolicyTest.retryInfoPacesGrpcsOwnRetries",
                 "RetryPolicyTest.unavailableIsRetriedUntilTheFleetArrives",
                 "RetryPolicyTest.resourceExhaustedIsRetriedUntilTheLoadIsShed",
                 "SidecarSecurityTest.aTokenOfAnotherIdentityOrNoneKnownIsPermissionDenied",
                 "TlsTest.mutualTlsCarriesTheBearerToken"):
        assert test in outcomes, f"{test} did not run; ran: {sorted(outcomes)}"
