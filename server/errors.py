"""Exceptions -> gRPC statuses with google.rpc error details (AIP-193).

`rpc_status_for(error)` gives the status and the outcome label the metrics use.
Anything it does not know is INTERNAL, with the traceback logged here and
nothing of it sent to the caller.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from placecheck_engine.model import InvalidField
from placecheck_engine.snapshot import SnapshotError
from placecheck_engine.store import StoreError, StoreFull
from placecheck_server.fleet_builder import BuildStopped

log = logging.getLogger(__name__)

ERROR_DOMAIN = "placecheck.dev"
# The longest string of a caller's echoed in a status (message and each detail field).
MAX_ECHOED_CHARS = 512
# At most this many internal errors are logged with their traceback per minute; the rest are counted.
INTERNAL_ERRORS_LOGGED_PER_MINUTE = 10
# How long a caller should wait before retrying while no snapshot is loaded yet.
NO_SNAPSHOT_RETRY_DELAY_S = 0.1
# How long a caller should wait before retrying a write the store could not keep (a disk to free).
STORE_RETRY_DELAY_S = 1


class SnapshotUnavailable(Exception):
    """No fleet snapshot has been published yet."""


class GenerationNotReached(Exception):
    """The snapshot did not reach the caller's min_generation before the deadline."""

    def __init__(self, wanted: int, current: int):
        super().__init__(f"snapshot generation {current} has not reached min_generation {wanted}")
        self.wanted = wanted
        self.current = current


class EpochMismatch(Exception):
    """The caller's min_generation was issued in another fleet history (epoch) than the snapshot's."""

    def __init__(self, expected: str, current: str):
        super().__init__(f"min_generation was issued in fleet history {expected!r}; "
                         f"this sidecar serves history {current!r}")
        self.expected = expected
        self.current = current


class NotFound(Exception):
    """A named thing (a host, an aggregate) is not in the fleet."""

    def __init__(self, resource_type: str, name: str, field_path: str = "", message: str = ""):
        super().__init__(message or f"{resource_type} {name!r} is not in the fleet")
        self.resource_type = resource_type
        self.name = name
        self.field_path = field_path


class _InternalErrorLog:
    """Logs internal errors with their tracebacks at a bounded rate, and how many were not."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._logged = self._suppressed = 0

    def __call__(self, error: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= 60:
                if self._suppressed:
                    log.error("%d more internal errors in the last minute were not logged", self._suppressed)
                self._window_start, self._logged, self._suppressed = now, 0, 0
            if self._logged >= INTERNAL_ERRORS_LOGGED_PER_MINUTE:
                self._suppressed += 1
                return
            self._logged += 1
        log.error("internal error answering a call", exc_info=error)


_log_internal_error = _InternalErrorLog()


def _pack(*details) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return packed


def _bounded(text: str) -> str:
    """A caller's value echoed back at most MAX_ECHOED_CHARS long: the status travels in
    metadata, which grpcio caps at 16 KiB, so a huge host name must not turn NOT_FOUND into
    RESOURCE_EXHAUSTED."""
    if len(text) <= MAX_ECHOED_CHARS:
        return text
    return f"{text[:MAX_ECHOED_CHARS]}... ({len(text)} characters)"


def _bounded_strings(message):
    """`message` with every string in it (nested messages and maps included) bounded."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING:
            if field.is_repeated:
                value[:] = [_bounded(item) for item in value]
            else:
                setattr(message, field.name, _bounded(value))
        elif field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key in list(value):
                    entry = value[key]
                    if isinstance(entry, str):
                        value[key] = _bounded(entry)
            else:
                for item in (value if field.is_repeated else [value]):
                    _bounded_strings(item)
    return message


# gRPC's own retry (every language's, when the caller's service config has a retry policy) reads
# the delay before its next attempt from this trailer only, not from a google.rpc.RetryInfo.
RETRY_PUSHBACK_METADATA = "grpc-retry-pushback-ms"


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def _status(code: int, message: str, *details) -> grpc.Status:
    status = rpc_status.to_status(status_pb2.Status(
        code=code, message=_bounded(message), details=_pack(*map(_bounded_strings, details))))
    retry_delays = [detail.retry_delay.ToMilliseconds() for detail in details
                    if isinstance(detail, error_details_pb2.RetryInfo)]
    if not retry_delays:
        return status
    return _Status(status.code, status.details,
                   (*status.trailing_metadata, (RETRY_PUSHBACK_METADATA, str(retry_delays[0]))))


def rpc_status_for(error: BaseException) -> tuple[str, grpc.Status]:
    """(outcome label, status) for an exception raised while answering a call."""
    if isinstance(error, BuildStopped):
        return "cancelled", _status(code_pb2.CANCELLED, str(error))
    if isinstance(error, InvalidField):
        return "invalid_argument", _status(
            code_pb2.INVALID_ARGUMENT, str(error),
            error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)]))
    if isinstance(error, NotFound):
        metadata = {"field": error.field_path} if error.field_path else {}
        return "not_found", _status(
            code_pb2.NOT_FOUND, str(error),
            error_details_pb2.ResourceInfo(resource_type=error.resource_type, resource_name=error.name,
                                           description=str(error)),
            error_details_pb2.ErrorInfo(reason=f"{error.resource_type.upper()}_NOT_FOUND",
                                        domain=ERROR_DOMAIN, metadata=metadata))
    if isinstance(error, SnapshotUnavailable):
        return "unavailable", _status(
            code_pb2.UNAVAILABLE, "no fleet snapshot has been published yet",
            error_details_pb2.ErrorInfo(reason="NO_SNAPSHOT", domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                nanos=int(NO_SNAPSHOT_RETRY_DELAY_S * 1e9))))
    if isinstance(error, GenerationNotReached):
        return "failed_precondition", _status(
            code_pb2.FAILED_PRECONDITION, str(error),
            error_details_pb2.PreconditionFailure(violations=[error_details_pb2.PreconditionFailure.Violation(
                type="SNAPSHOT_STALE", subject="min_generation", description=str(error))]),
            error_details_pb2.ErrorInfo(reason="SNAPSHOT_STALE", domain=ERROR_DOMAIN, metadata={
                "snapshotGeneration": str(error.current), "minGeneration": str(error.wanted)}))
    if isinstance(error, EpochMismatch):
        return "failed_precondition", _status(
            code_pb2.FAILED_PRECONDITION, str(error),
            error_details_pb2.PreconditionFailure(violations=[error_details_pb2.PreconditionFailure.Violation(
                type="EPOCH_MISMATCH", subject="expected_epoch", description=str(error))]),
            error_details_pb2.ErrorInfo(reason="EPOCH_MISMATCH", domain=ERROR_DOMAIN, metadata={
                "snapshotEpoch": error.current, "expectedEpoch": error.expected}))
    if isinstance(error, SnapshotError):  # damaged, or not this reader's: answer nothing from it
        return "unavailable", _status(
            code_pb2.UNAVAILABLE, str(error),
            error_details_pb2.ErrorInfo(reason="SNAPSHOT_DAMAGED", domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=STORE_RETRY_DELAY_S)))
    if isinstance(error, StoreError):  # the change was not kept: the caller may retry it
        full = isinstance(error, StoreFull)
        return ("resource_exhausted" if full else "unavailable"), _status(
            code_pb2.RESOURCE_EXHAUSTED if full else code_pb2.UNAVAILABLE, str(error),
            error_details_pb2.ErrorInfo(reason="STORE_FULL" if full else "STORE_UNAVAILABLE",
                                        domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=STORE_RETRY_DELAY_S)))
    _log_internal_error(error)
    return "internal", _status(code_pb2.INTERNAL, "internal error; see the sidecar's log")
