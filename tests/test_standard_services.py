"""grpc.health.v1 (List included) and server reflection as grpcurl and ghz use them, on both servers."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from placecheck_server.standard_services import LIVENESS_SERVICE
from sidecar import start_sidecar

TIMEOUT_S = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING

# What `grpcurl describe SYMBOL` and ghz's --call resolve first, each on a fresh connection: a
# method's full name must find its file without the service having been asked for before.
DECISION_SYMBOLS = ("placecheck.v1.PlacementCheck.CheckDestination", "placecheck.v1.PlacementCheck.SelectDestinations",
                    "placecheck.v1.PlacementCheck", "placecheck.v1.CheckDestinationRequest",
                    "grpc.health.v1.Health.List")
STATE_SYMBOLS = ("placecheck.v1.FleetState.UpdateUsage", "placecheck.v1.FleetState.ReplaceFleetStream",
                 "placecheck.v1.Fleet")


@pytest.mark.parametrize("target_name, symbols", [("decision_target", DECISION_SYMBOLS),
                                                  ("state_target", STATE_SYMBOLS)])
def test_reflection_resolves_methods_messages_and_services_with_their_imports(sidecar, target_name, symbols):
    for symbol in symbols:
        with grpc.insecure_channel(getattr(sidecar, target_name)) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            file = database.FindFileContainingSymbol(symbol)
            # Every import comes with it (or on request by name), as grpcurl needs to print types.
            for dependency in file.dependency:
                assert database.FindFileByName(dependency).name == dependency
        declared = {*(s.name for s in file.service), *(m.name for m in file.message_type)}
        assert symbol.startswith(file.package + ".") and symbol.removeprefix(file.package + ".").split(".")[0] in declared


def test_reflection_answers_not_found_for_an_unknown_method(sidecar):
    with grpc.insecure_channel(sidecar.decision_target) as channel:
        with pytest.raises(KeyError):
            ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol(
                "placecheck.v1.PlacementCheck.NoSuchMethod")


@pytest.mark.parametrize("target_name, service", [("decision_target", "placecheck.v1.PlacementCheck"),
                                                  ("state_target", "")])
def test_health_list_names_every_service_and_its_status(sidecar, target_name, service):
    with grpc.insecure_channel(getattr(sidecar, target_name)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=TIMEOUT_S)
    assert reply.statuses[""].status == SERVING
    assert reply.statuses[service].status == SERVING
    assert reply.statuses[LIVENESS_SERVICE].status == SERVING
    assert "Method not implemented" not in sidecar.log()


def test_liveness_serves_while_readiness_waits_for_a_fleet():
    """What deploy/kubernetes' probes ask: alive (not restarted) yet not ready before the first write."""
    with start_sidecar(workers=1, metrics=False, wait_serving=False) as empty:
        with grpc.insecure_channel(empty.decision_target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status(service: str):
                return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S,
                                  wait_for_ready=True).status

            assert status(LIVENESS_SERVICE) == SERVING
            assert status("placecheck.v1.PlacementCheck") == health_pb2.HealthCheckResponse.NOT_SERVING
