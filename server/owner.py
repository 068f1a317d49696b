"""The state owner's gRPC face: placecheck.v1.FleetState over engine.state.FleetState.

Mutations run one at a time (each publishes a generation before it returns);
every message is converted and validated in full before the fleet is touched,
so a rejected call changes nothing.
"""
from __future__ import annotations

import threading

from engine.model import InvalidField
from engine.state import FleetState, HostUsage
from placecheck.v1 import state_pb2, state_pb2_grpc
from server import convert
from server.errors import NotFound, rpc_status_for

STATE_SERVICE = state_pb2.DESCRIPTOR.services_by_name["FleetState"].full_name


def host_usage_from_proto(msg: state_pb2.HostUsage, path: str) -> HostUsage:
    if not msg.name:
        raise InvalidField(f"{path}.name", "must not be empty")
    for rc, used in msg.used.items():
        if not convert.RESOURCE_CLASS_PATTERN.match(rc):
            raise InvalidField(f"{path}.used[{rc}]", "resource class must match [A-Z0-9_]+")
        if used < 0:
            raise InvalidField(f"{path}.used[{rc}]", "must be >= 0")
    for count in ("num_instances", "num_io_ops"):
        if msg.HasField(count) and getattr(msg, count) < 0:
            raise InvalidField(f"{path}.{count}", "must be >= 0")
    instances = None
    if msg.HasField("instances"):
        for index, uuid in enumerate(msg.instances.uuids):
            if not uuid:
                raise InvalidField(f"{path}.instances.uuids[{index}]", "must not be empty")
        instances = tuple(msg.instances.uuids)
    return HostUsage(
        name=msg.name,
        used=dict(msg.used),
        num_instances=msg.num_instances if msg.HasField("num_instances") else None,
        num_io_ops=msg.num_io_ops if msg.HasField("num_io_ops") else None,
        instances=instances,
    )


class FleetStateServicer(state_pb2_grpc.FleetStateServicer):
    def __init__(self, state: FleetState):
        self._state = state
        self._mutation_lock = threading.Lock()

    def _mutate(self, context, resource_type: str, change):
        """Run `change()` -> generation under the lock; KeyError is an unknown `resource_type`."""
        try:
            with self._mutation_lock:
                generation = change()
        except KeyError as error:
            _, status = rpc_status_for(NotFound(resource_type, str(error.args[0]) if error.args else ""))
            context.abort_with_status(status)
        except Exception as error:
            _, status = rpc_status_for(error)
            context.abort_with_status(status)
        return generation

    def _validated(self, context, convert_message):
        try:
            return convert_message()
        except Exception as error:
            _, status = rpc_status_for(error)
            context.abort_with_status(status)

    def ReplaceFleet(self, request, context):
        fleet = self._validated(context, lambda: convert.fleet_from_proto(request.fleet))
        generation = self._mutate(context, "host", lambda: self._state.replace(fleet))
        return state_pb2.ReplaceFleetResponse(generation=generation)

    def UpsertHosts(self, request, context):
        hosts = self._validated(context, lambda: convert.hosts_from_proto(request.hosts, "hosts"))
        generation = self._mutate(context, "host", lambda: self._state.upsert_hosts(hosts))
        return state_pb2.UpsertHostsResponse(generation=generation)

    def RemoveHosts(self, request, context):
        names = self._validated(context, lambda: convert.names_from_proto(request.names, "names"))
        generation = self._mutate(context, "host", lambda: self._state.remove_hosts(names))
        return state_pb2.RemoveHostsResponse(generation=generation)

    def UpsertAggregates(self, request, context):
        aggregates = self._validated(context, lambda: convert.aggregates_from_proto(request.aggregates,
                                                                                     "aggregates"))
        generation = self._mutate(context, "aggregate", lambda: self._state.upsert_aggregates(aggregates))
        return state_pb2.UpsertAggregatesResponse(generation=generation)

    def RemoveAggregates(self, request, context):
        ids = self._validated(context, lambda: convert.aggregate_ids_from_proto(request.ids, "ids"))
        generation = self._mutate(context, "aggregate", lambda: self._state.remove_aggregates(ids))
        return state_pb2.RemoveAggregatesResponse(generation=generation)

    def UpdateUsage(self, request, context):
        usages = self._validated(context, lambda: [host_usage_from_proto(usage, f"usages[{index}]")
                                                   for index, usage in enumerate(request.usages)])
        generation = self._mutate(context, "host", lambda: self._state.update_usage(usages))
        return state_pb2.UpdateUsageResponse(generation=generation)

    def GetStatus(self, request, context):
        status = self._state.status()
        return state_pb2.GetStatusResponse(
            generation=status.generation, host_count=status.host_count,
            aggregate_count=status.aggregate_count, age_seconds=status.age_seconds,
            snapshot_bytes=status.snapshot_bytes)
