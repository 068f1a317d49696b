"""A real Prometheus (Debian's package) scraping the real sidecar under load: every panel of the
Grafana dashboard has data, and every alert rule fires for a fault induced on purpose.

Prometheus runs with its own configuration (loopback, 1 s scrapes and rule evaluations, a temp
storage directory, no service manager) and deploy/prometheus/placecheck-rules.yml. Faults: a
burst past the concurrency limit (one handler thread), mostly refused CheckDestination calls,
three killed workers, a broken --config reloaded with SIGHUP, and writes stopped past
--max-snapshot-age.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import grpc
import pytest
import yaml

from placecheck_engine.demo import demo_fleet
from placecheck import PlacementClient, StateClient
from placecheck.v1 import placement_pb2, state_pb2
from sidecar import REPO, free_port, start_sidecar, wait_for
from sidecar_load import burst

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not found: install Debian's prometheus package (`make prometheus` does, as root)")

DASHBOARD = REPO / "deploy" / "grafana" / "placecheck.json"
RULES = REPO / "deploy" / "prometheus" / "placecheck-rules.yml"
MAX_SNAPSHOT_AGE_S = 3
DEMO_HOSTS = 500
# What Grafana puts in place of the dashboard's variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".+"}
ROOMY = placement_pb2.PlacementRequest(resources={"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1})
TOO_BIG = placement_pb2.PlacementRequest(resources={"VCPU": 100_000})
SHED_SERIES = 'placecheck_grpc_server_handled_total{rpc="SelectDestinations", code="RESOURCE_EXHAUSTED"}'


class Prometheus:
    def __init__(self, directory, metrics_url: str):
        target = urllib.parse.urlsplit(metrics_url).netloc
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "placecheck", "static_configs": [{"targets": [target]}]}]}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._ready():
            assert self.process.poll() is None, f"prometheus exited:\n{self.log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}",
                                    timeout=10) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def panel_queries() -> dict[str, str]:
    queries = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} [{target['refId']}]"] = expr
    return queries


def alert_rules() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]}


def has_a_number(result: list[dict]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


def keep_writing(state_target: str, stop: threading.Event) -> None:
    host = demo_fleet(DEMO_HOSTS).hosts[0].name
    with StateClient(state_target) as state:
        used = 0
        while not stop.wait(0.3):
            used = (used + 1) % 4
            state.update_usage([state_pb2.HostUsage(name=host, used={"VCPU": used})], timeout=10)


def decide_for_a_while(target: str, seconds: float) -> None:
    """Every decision outcome: placed, no_fit, allowed, refused (most checks), invalid_argument."""
    with PlacementClient(target, channels=4) as placement:
        host = placement.select_destinations(ROOMY, timeout=10).placements[0].selected.host
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            placement.select_destinations(ROOMY, timeout=10)
            placement.select_destinations(TOO_BIG, timeout=10)
            placement.check_destination(ROOMY, [host], timeout=10)
            for _ in range(3):
                placement.check_destination(TOO_BIG, [host], timeout=10)
            with pytest.raises(grpc.RpcError):
                placement.check_destination(placement_pb2.PlacementRequest(num_instances=10**6), [host],
                                            timeout=10)


def kill_workers(sidecar, times: int) -> None:
    for _ in range(times):
        victim = sidecar.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(workers := sidecar.worker_pids()) < 2 or victim in workers:
            assert time.monotonic() < deadline, "worker not restarted"
            time.sleep(0.05)


def test_every_panel_has_data_and_every_alert_fires_for_its_fault(tmp_path):
    started = time.monotonic()
    config = tmp_path / "placecheck.toml"
    config.write_text((REPO / "etc" / "placecheck.toml").read_text())
    with start_sidecar(config=config, workers=2, demo_hosts=DEMO_HOSTS,
                       extra_args=("--threads-per-worker", "1",
                                   "--max-snapshot-age", str(MAX_SNAPSHOT_AGE_S))) as sidecar:
        prometheus = Prometheus(tmp_path, sidecar.metrics_url)
        try:
            stop_writing = threading.Event()
            writer = threading.Thread(target=keep_writing, args=(sidecar.state_target, stop_writing))
            writer.start()
            try:
                decide_for_a_while(sidecar.decision_target, 5)
                # The shed count's 0 must be scraped before the burst, or its rate stays 0.
                wait_for(lambda: prometheus.query(SHED_SERIES), f"{SHED_SERIES} scraped")
                shed = burst(sidecar.decision_target, 3_000)["shed"]
                assert shed, "the burst was not shed: the shed-load panel and alert would not be tested"
                decide_for_a_while(sidecar.decision_target, 3)
                config.write_text("not = = toml")
                os.kill(sidecar.pid, signal.SIGHUP)
                kill_workers(sidecar, 3)
            finally:
                stop_writing.set()
                writer.join()
            decide_for_a_while(sidecar.decision_target, MAX_SNAPSHOT_AGE_S + 1)

            panels, alerts = panel_queries(), alert_rules()
            deadline = time.monotonic() + 30
            while True:
                empty_panels = [name for name, expr in panels.items() if not has_a_number(prometheus.query(expr))]
                silent_alerts = [name for name, expr in alerts.items() if not prometheus.query(expr)]
                unevaluated = [name for name in alerts if not prometheus.query(f'ALERTS{{alertname="{name}"}}')]
                if not (empty_panels or silent_alerts or unevaluated) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            shed_history = [series["values"] for series in prometheus.query(f"{SHED_SERIES}[5m]")]
        finally:
            prometheus.close()
    assert not empty_panels, f"panels without data: {empty_panels}"
    assert not silent_alerts, f"alert expressions that did not fire: {silent_alerts} (shed: {shed_history})"
    assert not unevaluated, f"alerts Prometheus never set pending or firing: {unevaluated}"
    print(f"{len(panels)} panel queries, {len(alerts)} alerts; {time.monotonic() - started:.1f} s")
