"""The standard gRPC services every placecheck server carries: grpc.health.v1 and server reflection.

grpcio-health-checking (1.85, the newest) leaves Health/List unimplemented (UNIMPLEMENTED and a
logged traceback), and grpcio-reflection answers NOT_FOUND for a method's name because protobuf's
descriptor pool finds files by message, enum, field and service names only: `grpcurl describe
placecheck.v1.PlacementCheck.CheckDestination` and ghz's reflection mode ask for exactly that.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

# Health/List may answer RESOURCE_EXHAUSTED past this many services (grpc.health.v1's own advice);
# a placecheck server has two.
MAX_LISTED_SERVICES = 100


# A health service name that is SERVING for as long as the server answers (until its graceful
# shutdown), fleet or no fleet: what a liveness probe asks, so a sidecar still waiting for its
# first fleet (NOT_SERVING: not ready) is not restarted for it.
LIVENESS_SERVICE = "placecheck.liveness"


class HealthServicer(health.HealthServicer):
    """grpcio's HealthServicer with List (every service set so far and its status) and LIVENESS_SERVICE."""

    def __init__(self):
        super().__init__()
        self.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    def List(self, request, context):
        with self._lock:
            statuses = dict(self._server_status)
        if len(statuses) > MAX_LISTED_SERVICES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_LISTED_SERVICES} services")
        return health_pb2.HealthListResponse(statuses={
            service: health_pb2.HealthCheckResponse(status=status) for service, status in statuses.items()})


class _MethodResolvingPool:
    """A descriptor pool whose FindFileContainingSymbol also finds a service's method by its full name."""

    def __init__(self, pool: descriptor_pool.DescriptorPool):
        self._pool = pool

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str):
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file


def add_reflection(server: grpc.Server, service_names) -> None:
    """Reflection over `service_names` plus health and reflection themselves."""
    reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server,
                                        pool=_MethodResolvingPool(descriptor_pool.Default()))
