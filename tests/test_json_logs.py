"""The decision log and the audit log, read back from a real sidecar's files."""
from __future__ import annotations

import hashlib
import json
import os

import grpc
import pytest

from placecheck_engine.demo import demo_fleet
from placecheck import StateClient
from placecheck.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, state_pb2
from sidecar import start_sidecar
from sidecar_load import sample, scrape

ROOMY = placement_pb2.PlacementRequest(resources={"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1})
TOO_BIG = placement_pb2.PlacementRequest(resources={"VCPU": 100_000})


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def digest(message) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def test_every_decision_is_logged_with_its_request_id_generation_outcome_and_refusing_rules(tmp_path):
    log_path = tmp_path / "decisions.jsonl"
    hosts = [host.name for host in demo_fleet(50).hosts[:2]]
    sent = []
    with start_sidecar(workers=2, demo_hosts=50, extra_args=("--decision-log", str(log_path))) as sidecar:
        with grpc.insecure_channel(sidecar.decision_target) as channel:
            stub = placement_pb2_grpc.PlacementCheckStub(channel)
            for index, (rpc, message) in enumerate([
                    ("CheckDestination", placement_pb2.CheckDestinationRequest(request=ROOMY, hosts=hosts)),
                    ("CheckDestination", placement_pb2.CheckDestinationRequest(request=TOO_BIG, hosts=hosts)),
                    ("SelectDestinations", placement_pb2.SelectDestinationsRequest(request=ROOMY)),
                    ("SelectDestinations", placement_pb2.SelectDestinationsRequest(request=TOO_BIG)),
                    ("CheckDestination", placement_pb2.CheckDestinationRequest(request=ROOMY, hosts=["nowhere"]))]):
                request_id = f"req-{index}"
                try:
                    response = getattr(stub, rpc)(message, timeout=10,
                                                  metadata=(("x-openstack-request-id", request_id),))
                except grpc.RpcError as error:
                    response = error
                sent.append((rpc, message, request_id, response))
        sidecar.stop()  # workers flush their lines as they exit
    lines = {line["request_id"]: line for line in read_lines(log_path)}
    assert len(lines) == len(sent)
    for rpc, message, request_id, response in sent:
        line = lines[request_id]
        assert line["operation"] == rpc and line["request_sha256"] == digest(message)
        assert line["duration_ms"] > 0 and line["time"].endswith("Z")
        if isinstance(response, grpc.RpcError):
            assert (line["outcome"], line["decision_id"]) == ("NOT_FOUND", None)
            assert "nowhere" in line["message"]
            continue
        assert line["decision_id"] == response.decision_id
        assert (line["generation"], line["epoch"], line["profile"], line["config_revision"]) == \
            (response.generation, response.epoch, response.profile, response.config_revision)
    allowed, refused, placed, no_fit = (lines[f"req-{index}"] for index in range(4))
    assert allowed["outcome"] == "allowed" and allowed["refused_by"] == {}
    assert refused["outcome"] == "refused" and set(refused["refused_by"]) == set(hosts)
    assert all("resource:VCPU" in rules for rules in refused["refused_by"].values())
    assert placed["outcome"] == "placed" and placed["placed"]
    assert no_fit["outcome"] == "no_fit" and no_fit["placed"] == [] and no_fit["eliminated_by"]["resource:VCPU"] == 50


def test_the_decision_log_samples_and_is_rate_limited(tmp_path):
    sampled_path, limited_path = tmp_path / "sampled.jsonl", tmp_path / "limited.jsonl"
    calls = 400
    for path, extra in ((sampled_path, ("--decision-log-sample", "0.5")),
                        (limited_path, ("--decision-log-rate", "5"))):
        with start_sidecar(workers=1, demo_hosts=20, extra_args=("--decision-log", str(path), *extra)) as sidecar:
            with grpc.insecure_channel(sidecar.decision_target) as channel:
                stub = placement_pb2_grpc.PlacementCheckStub(channel)
                message = placement_pb2.SelectDestinationsRequest(request=ROOMY)
                for _ in range(calls):
                    stub.SelectDestinations(message, timeout=10)
            dropped = sample(scrape(sidecar.metrics_url), "placecheck_log_lines_dropped_total",
                             log="decision", reason="rate_limit")
            sidecar.stop()
        written = len(read_lines(path))
        if path is sampled_path:
            assert 0.35 * calls < written < 0.65 * calls and dropped == 0
        else:  # a burst of 5, then 5 a second: 400 calls take far less than 10 s
            assert 5 <= written < 60 and written + dropped == calls


def test_every_fleet_write_is_audited_with_the_writer_uid_and_the_generation_it_made(tmp_path):
    log_path = tmp_path / "audit.jsonl"
    host = demo_fleet(20).hosts[0].name
    with start_sidecar(workers=1, demo_hosts=20, extra_args=("--audit-log", str(log_path))) as sidecar:
        with StateClient(sidecar.state_target) as state:
            usage = state.update_usage([state_pb2.HostUsage(name=host, used={"VCPU": 1})], timeout=10)
            upserted = state.upsert_aggregates([fleet_pb2.Aggregate(id=77, name="audited")], timeout=10)
            with pytest.raises(grpc.RpcError):
                state.remove_hosts(["nowhere"], timeout=10)
            streamed = state.replace_fleet_stream(fleet_pb2.Fleet(hosts=[fleet_pb2.Host(
                name="only", resources={"VCPU": fleet_pb2.Inventory(total=4)})]), timeout=10)
            state.status(timeout=10)  # a read: not audited
        sidecar.stop()
    lines = read_lines(log_path)
    assert [line["operation"] for line in lines] == ["UpdateUsage", "UpsertAggregates", "RemoveHosts",
                                                     "ReplaceFleetStream"]
    assert all(line["who"] == {"uid": os.getuid()} for line in lines)
    update, aggregates, refused, replaced = lines
    assert (update["outcome"], update["generation"], update["epoch"]) == ("OK", usage, usage.epoch)
    assert update["what"] == {"hosts": {"count": 1, "first": [host]}}
    assert aggregates["generation"] == upserted and aggregates["what"] == {"aggregates": {"count": 1, "first": ["77"]}}
    assert refused["outcome"] == "NOT_FOUND" and "generation" not in refused
    assert replaced["generation"] == streamed and replaced["what"] == {"hosts": 1, "aggregates": 0, "parts": 1}
