"""Registering a servicer so that a body that does not decode is the caller's error.

grpcio answers a request its deserializer cannot parse with INTERNAL and logs a traceback for
every such call. Registered here, the body is decoded leniently: an undecodable one reaches
the method as UndecodableBody and is answered INVALID_ARGUMENT naming the message type, with
nothing logged per call.
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from placecheck_engine.model import InvalidField
from placecheck_server.errors import rpc_status_for


@dataclass(frozen=True)
class UndecodableBody:
    message_type: str  # the request message's full name
    reason: str


def _lenient_decoder(message_class):
    def decode(body: bytes):
        try:
            return message_class.FromString(body)
        except DecodeError as error:
            return UndecodableBody(message_class.DESCRIPTOR.full_name, str(error))
    return decode


def _refusing_undecodable(method):
    def handle(request, context):
        if isinstance(request, UndecodableBody):
            refusal = InvalidField("request", f"the body is not a valid {request.message_type}: {request.reason}")
            context.abort_with_status(rpc_status_for(refusal)[1])
        return method(request, context)
    return handle


def add_unary_servicer(server: grpc.Server, servicer, service) -> None:
    """Serve every method of `service` (a ServiceDescriptor of unary methods) from the
    servicer's method of the same name, as the generated add_*Servicer_to_server would."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name} streams; only unary methods are registered here")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, method.name)),
            request_deserializer=_lenient_decoder(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
