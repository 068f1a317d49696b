"""The sidecar's metrics over its real /metrics endpoint: status codes with shed load,
writes and publishes, worker restarts, config reloads, build info."""
from __future__ import annotations

import os
import signal

import grpc
import pytest

from placecheck_engine.demo import demo_fleet
from placecheck_server.metrics import AfterResponseExecutor, after_response
from placecheck import PlacementClient, StateClient
from placecheck.v1 import placement_pb2, state_pb2
from sidecar import REPO, start_sidecar, wait_for
from sidecar_load import burst, sample, scrape, select_request

PLACEMENT = "placecheck.v1.PlacementCheck"
FLEET_STATE = "placecheck.v1.FleetState"


def test_shed_load_is_counted_as_resource_exhausted_exactly_as_callers_see_it():
    # One handler thread: grpcio's limit is 128 calls in flight, far fewer than the burst.
    with start_sidecar(workers=1, demo_hosts=2_000, extra_args=("--threads-per-worker", "1")) as sidecar:
        outcomes = burst(sidecar.decision_target, 3_000)
        # A call is counted just after its response is sent (AfterResponseExecutor).
        samples = wait_for(lambda: (s := scrape(sidecar.metrics_url)) and sample(
            s, "placecheck_decisions_total", rpc="SelectDestinations", outcome="placed") >= outcomes["OK"] and s,
            "every answered call counted")
    assert outcomes["shed"] > 100, outcomes
    assert outcomes["RESOURCE_EXHAUSTED"] == outcomes["shed"], outcomes
    handled = {code: sample(samples, "placecheck_grpc_server_handled_total", service=PLACEMENT,
                            rpc="SelectDestinations", code=code) for code in ("OK", "RESOURCE_EXHAUSTED")}
    assert handled == {"OK": outcomes["OK"], "RESOURCE_EXHAUSTED": outcomes["shed"]}
    # Every call the server answered was counted as started; under load a few of the burst may
    # end at the client's transport (CANCELLED) without reaching the server at all.
    assert sample(samples, "placecheck_grpc_server_started_total", service=PLACEMENT,
                  rpc="SelectDestinations") == outcomes["OK"] + outcomes["shed"] >= 2_900
    # The handlers saw only the admitted calls.
    assert sample(samples, "placecheck_decisions_total", rpc="SelectDestinations",
                  outcome="placed") == outcomes["OK"]


def test_status_codes_writes_publishes_restarts_reloads_and_build_info(tmp_path):
    config = tmp_path / "placecheck.toml"
    good_config = (REPO / "etc" / "placecheck.toml").read_text()
    config.write_text(good_config)
    with start_sidecar(config=config, workers=1, demo_hosts=200) as sidecar, \
            PlacementClient(sidecar.decision_target, channels=1) as placement, \
            StateClient(sidecar.state_target) as state:
        placement.select_destinations(select_request().request, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            placement.check_destination(placement_pb2.PlacementRequest(), ["no-such-host"], timeout=10)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        state.update_usage([state_pb2.HostUsage(name=demo_fleet(200).hosts[0].name, used={"VCPU": 1})], timeout=10)
        with pytest.raises(grpc.RpcError):
            state.remove_hosts(["no-such-host"], timeout=10)

        config.write_text("this is = = not toml")
        os.kill(sidecar.pid, signal.SIGHUP)
        wait_for(lambda: "config reload refused" in sidecar.log(), "refused reload")
        refused_reload = scrape(sidecar.metrics_url)
        config.write_text(good_config)
        os.kill(sidecar.pid, signal.SIGHUP)
        wait_for(lambda: sample(scrape(sidecar.metrics_url), "placecheck_config_reloads_total", outcome="ok"),
                 "accepted reload")

        os.kill(sidecar.worker_pids()[0], signal.SIGKILL)
        samples = wait_for(lambda: (s := scrape(sidecar.metrics_url)) and
                           sample(s, "placecheck_worker_restarts_total", reason="exited") and s, "restart count")

    def handled(service, rpc, code):
        return sample(samples, "placecheck_grpc_server_handled_total", service=service, rpc=rpc, code=code)

    assert handled(PLACEMENT, "SelectDestinations", "OK") == 1
    assert handled(PLACEMENT, "CheckDestination", "NOT_FOUND") == 1
    assert handled(FLEET_STATE, "UpdateUsage", "OK") == 1
    assert handled(FLEET_STATE, "RemoveHosts", "NOT_FOUND") == 1
    assert sample(samples, "placecheck_grpc_server_handling_seconds_count", service=FLEET_STATE,
                  rpc="UpdateUsage") == 1
    # The demo fleet's base at start, then the usage update's delta.
    assert sample(samples, "placecheck_snapshot_publish_duration_seconds_count", kind="base") == 1
    assert sample(samples, "placecheck_snapshot_publish_duration_seconds_count", kind="delta") == 1
    assert sample(refused_reload, "placecheck_config_reloads_total", outcome="failed") == 1
    assert sample(refused_reload, "placecheck_config_last_reload_successful") == 0
    assert sample(samples, "placecheck_config_reloads_total", outcome="ok") == 1
    assert sample(samples, "placecheck_config_last_reload_successful") == 1
    assert sample(samples, "placecheck_worker_restarts_total", reason="exited") == 1
    build = [labels for (name, labels), value in samples.items() if name == "placecheck_build_info" and value == 1]
    assert len(build) == 1 and dict(build[0])["version"] and dict(build[0])["grpcio_version"] == grpc.__version__


def test_metric_updates_run_after_the_call_and_a_failing_one_spares_the_others(caplog):
    done = []

    def call():
        after_response(lambda: 1 / 0)
        after_response(lambda: done.append("counted"))
        done.append("answered")
        return "response"

    with AfterResponseExecutor(max_workers=1) as executor:
        assert executor.submit(call).result() == "response"
    assert done == ["answered", "counted"]
    assert "a metric update after a call failed" in caplog.text
    after_response(lambda: done.append("now"))  # outside such a thread: at once
    assert done[-1] == "now"
