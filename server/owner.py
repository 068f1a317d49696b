"""The state owner's gRPC face: placecheck.v1.FleetState over engine.state.FleetState.

FleetState serialises the mutations (each is durable in the store and published
as a generation before it returns); every message is converted and validated in
full before the fleet is touched, so a rejected call changes nothing. Every
response names the generation with the fleet history's epoch.
"""
from __future__ import annotations

from placecheck_engine.state import FleetState
from placecheck.v1 import state_pb2, state_pb2_grpc
from placecheck_server import convert
from placecheck_server.errors import NotFound, rpc_status_for
from placecheck_server.fleet_builder import BuiltFleet, FleetBuilder, release_freed_memory

STATE_SERVICE = state_pb2.DESCRIPTOR.services_by_name["FleetState"].full_name


class FleetStateServicer(state_pb2_grpc.FleetStateServicer):
    def __init__(self, state: FleetState, builder: FleetBuilder):
        self._state = state
        self._builder = builder  # whole fleets are built in a child process

    def _mutate(self, context, resource_type: str, change):
        """Run `change()` -> generation; a KeyError names an unknown `resource_type`."""
        try:
            generation = change()
        except KeyError as error:
            message = str(error.args[0]) if error.args else f"unknown {resource_type}"
            _, status = rpc_status_for(NotFound(resource_type, "", message=message))
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
        built = self._validated(context, lambda: self._builder.from_request(
            request.fleet.SerializeToString(), request.allow_empty, _caller_gone(context)))
        return self._replaced(context, built, "fleet.hosts")

    def ReplaceFleetStream(self, request_iterator, context):
        built = self._validated(context, lambda: self._builder.from_parts(
            [part.SerializeToString() for part in request_iterator], _caller_gone(context)))
        return self._replaced(context, built, "parts.hosts")

    def _replaced(self, context, built: BuiltFleet, hosts_field: str) -> state_pb2.ReplaceFleetResponse:
        generation = self._mutate(context, "host", lambda: self._state.replace_columns(
            built.columns, built.aggregates, built.allow_empty, hosts_field))
        del built  # the columns are the published segment's now
        release_freed_memory()
        return state_pb2.ReplaceFleetResponse(generation=generation, epoch=self._state.epoch)

    def UpsertHosts(self, request, context):
        hosts = self._validated(context, lambda: convert.hosts_from_proto(request.hosts, "hosts"))
        generation = self._mutate(context, "host", lambda: self._state.upsert_hosts(hosts))
        return state_pb2.UpsertHostsResponse(generation=generation, epoch=self._state.epoch)

    def RemoveHosts(self, request, context):
        names = self._validated(context, lambda: convert.names_from_proto(request.names, "names"))
        generation = self._mutate(context, "host", lambda: self._state.remove_hosts(names))
        return state_pb2.RemoveHostsResponse(generation=generation, epoch=self._state.epoch)

    def UpsertAggregates(self, request, context):
        aggregates = self._validated(context, lambda: convert.aggregates_from_proto(request.aggregates,
                                                                                     "aggregates"))
        generation = self._mutate(context, "aggregate", lambda: self._state.upsert_aggregates(aggregates))
        return state_pb2.UpsertAggregatesResponse(generation=generation, epoch=self._state.epoch)

    def RemoveAggregates(self, request, context):
        ids = self._validated(context, lambda: convert.aggregate_ids_from_proto(request.ids, "ids"))
        generation = self._mutate(context, "aggregate", lambda: self._state.remove_aggregates(ids))
        return state_pb2.RemoveAggregatesResponse(generation=generation, epoch=self._state.epoch)

    def UpdateUsage(self, request, context):
        usages = self._validated(context, lambda: [convert.host_usage_from_proto(usage, f"usages[{index}]")
                                                   for index, usage in enumerate(request.usages)])
        generation = self._mutate(context, "host", lambda: self._state.update_usage(usages))
        return state_pb2.UpdateUsageResponse(generation=generation, epoch=self._state.epoch)

    def GetStatus(self, request, context):
        status = self._state.status()
        return state_pb2.GetStatusResponse(
            generation=status.generation, host_count=status.host_count,
            aggregate_count=status.aggregate_count, age_seconds=status.age_seconds,
            snapshot_bytes=status.snapshot_bytes, epoch=status.epoch)


def _caller_gone(context):
    """A fleet build's `stopped`: the caller cancelled or its deadline passed."""
    return lambda: not context.is_active()
