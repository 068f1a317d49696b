"""The decision log and the audit log: one JSON line per decision, and per FleetState write.

Both are gRPC server interceptors, so the servicers stay as they are: the decision log sits on
every worker's decision server (`--decision-log PATH|-`), the audit log on the supervisor's
state server (`--audit-log PATH|-`). A file is opened in append mode by every process writing
to it, and each line is one write(2), so lines of several workers never interleave.

Lines are serialised and written by a thread of their own behind a bounded queue: a slow
reader of stdout never holds a decision. The decision log keeps a `sample` of decisions, at
most `rate` lines a second per worker; the audit log keeps every write. A line dropped by the
rate limit or a full queue is counted in placecheck_log_lines_dropped_total{log,reason}.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing.util
import os
import queue
import random
import threading
import time
from dataclasses import dataclass

import grpc

from placecheck_server.metrics import handler_kind, multiprocess_metric
from placecheck_server.state_socket import RELAY_ADDRESS_PREFIX

QUEUE_LINES = 10_000
MAX_LISTED = 100  # names or ids listed per audit line; the count says how many there were
MAX_TEXT = 256  # characters kept of a caller's string (a request id, a name, a status message)
REQUEST_ID_KEYS = ("x-openstack-request-id", "x-request-id")
DECISION_RPCS = ("CheckDestination", "SelectDestinations")
# The state socket relay connects from an abstract unix address naming the uid SO_PEERCRED gave
# it (server/state_socket.py); grpcio shows that address as the call's peer.
RELAY_PEER_PREFIX = f"unix-abstract:{RELAY_ADDRESS_PREFIX}"


@dataclass(frozen=True)
class DecisionLogSettings:
    destination: str  # a file path, or "-" for standard output
    sample: float = 1.0  # share of decisions logged
    rate: float = 1000.0  # at most this many lines a second per worker


class JsonLines:
    """JSON lines appended to `destination` by a writer thread; closed at process exit."""

    def __init__(self, destination: str, log: str, rate: float | None = None):
        self._fd = 1 if destination == "-" else os.open(
            destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._rate = rate
        self._tokens, self._refilled = rate or 0.0, time.monotonic()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(QUEUE_LINES)
        self._dropped = multiprocess_metric(
            "Counter", "placecheck_log_lines_dropped",
            "Decision or audit log lines not written: over the rate limit or the writer's queue.", ["log", "reason"])
        self._dropped_rate, self._dropped_queue = (self._dropped.labels(log, reason)
                                                   for reason in ("rate_limit", "queue_full"))
        self._writer = threading.Thread(target=self._write, name=f"{log}-log", daemon=True)
        self._writer.start()
        multiprocessing.util.Finalize(self, self.close, exitpriority=10)  # flushed at exit, workers included

    def _admitted(self) -> bool:
        """A token from the bucket (`rate` a second, as many at once)."""
        if self._rate is None:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def offer(self, record: dict) -> None:
        if not self._admitted():
            self._dropped_rate.inc()
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped_queue.inc()

    def _write(self) -> None:
        while (record := self._queue.get()) is not None:
            line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
            try:
                os.write(self._fd, line)
            except OSError:
                self._dropped_queue.inc()

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
            if self._fd != 1:
                os.close(self._fd)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(text: str) -> str:
    return text[:MAX_TEXT]


def _listed(values) -> dict:
    values = list(values)
    return {"count": len(values), "first": [_clip(str(value)) for value in values[:MAX_LISTED]]}


def _status(context) -> tuple[str, str]:
    code = context.code()
    return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), _clip(context.details() or "")


class DecisionLog(grpc.ServerInterceptor):
    """One line per sampled CheckDestination / SelectDestinations: its decision id, the caller's
    request id, a digest of the request, the generation, profile and outcome, and the rules
    refusing each refused host (or, for a select, the chosen hosts and each rule's eliminations)."""

    def __init__(self, settings: DecisionLogSettings):
        self._lines = JsonLines(settings.destination, "decision", rate=settings.rate or None)
        self._sample = settings.sample

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        rpc = handler_call_details.method.rpartition("/")[2]
        if handler is None or rpc not in DECISION_RPCS or handler.unary_unary is None:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        behaviour = handler.unary_unary

        def logged(request, context):
            if self._sample < 1.0 and random.random() >= self._sample:
                return behaviour(request, context)
            started, response = time.perf_counter(), None
            try:
                response = behaviour(request, context)
                return response
            finally:
                self._lines.offer(self._record(rpc, request, response, context, metadata,
                                               time.perf_counter() - started))

        return grpc.unary_unary_rpc_method_handler(logged, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    @staticmethod
    def _record(rpc: str, request, response, context, metadata: dict, seconds: float) -> dict:
        request_id = next((metadata[key] for key in REQUEST_ID_KEYS if key in metadata), "")
        digest = (hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
                  if hasattr(request, "SerializeToString") else "")  # an undecodable body has none
        record = {"decision_id": response.decision_id if response is not None else None, "time": now_rfc3339(),
                  "request_id": _clip(str(request_id)), "operation": rpc, "request_sha256": digest}
        if response is None:
            code, message = _status(context)
            record.update(outcome=code, message=message)
        else:
            record.update(generation=response.generation, epoch=response.epoch, profile=response.profile,
                          config_revision=response.config_revision)
            if rpc == "CheckDestination":
                refused = {verdict.host: [rejection.rule for rejection in verdict.rejections]
                           for verdict in response.verdicts if not verdict.allowed}
                record.update(outcome="refused" if refused else "allowed", hosts=len(response.verdicts),
                              refused_by=refused)
            else:
                record.update(outcome="placed" if response.placements else "no_fit",
                              placed=[placement.selected.host for placement in response.placements],
                              eliminated_by={item.rule: item.hosts for item in response.summary.eliminations})
        record["duration_ms"] = round(seconds * 1e3, 3)
        return record


def caller(context) -> dict:
    """Who called: the uid the state socket relay read with SO_PEERCRED, else the peer address;
    and a client certificate's identity, when one was presented."""
    peer = context.peer() or ""
    who: dict = {}
    if peer.startswith(RELAY_PEER_PREFIX):
        who["uid"] = int(peer.rpartition("uid=")[2])
    else:
        who["peer"] = _clip(peer)
    identities = context.peer_identities()
    if identities:
        who["identity"] = _clip(identities[0].decode(errors="replace"))
    return who


def _what(rpc: str, request) -> dict:
    if rpc == "ReplaceFleet":
        return {"hosts": len(request.fleet.hosts), "aggregates": len(request.fleet.aggregates),
                "allow_empty": request.allow_empty}
    if rpc == "UpsertHosts":
        return {"hosts": _listed(host.name for host in request.hosts)}
    if rpc == "RemoveHosts":
        return {"hosts": _listed(request.names)}
    if rpc == "UpsertAggregates":
        return {"aggregates": _listed(aggregate.id for aggregate in request.aggregates)}
    if rpc == "RemoveAggregates":
        return {"aggregates": _listed(request.ids)}
    if rpc == "UpdateUsage":
        return {"hosts": _listed(usage.name for usage in request.usages)}
    return {}


class AuditLog(grpc.ServerInterceptor):
    """One line per FleetState write, kept whatever its outcome: when, who, what, and the
    generation it made (or the status it was refused with)."""

    def __init__(self, destination: str):
        self._lines = JsonLines(destination, "audit")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        rpc = handler_call_details.method.rpartition("/")[2]
        if handler is None or rpc == "GetStatus" or handler.response_streaming:
            return handler
        kind = handler_kind(handler)
        behaviour = getattr(handler, kind)

        def audited(request_or_parts, context):
            started, response, what = time.perf_counter(), None, {}
            if handler.request_streaming:  # ReplaceFleetStream: count the parts as they pass
                what = {"hosts": 0, "aggregates": 0, "parts": 0}
                request_or_parts = _counting(request_or_parts, what)
            else:
                what = _what(rpc, request_or_parts)
            try:
                response = behaviour(request_or_parts, context)
                return response
            finally:
                record = {"time": now_rfc3339(), "who": caller(context), "operation": rpc, "what": what}
                if response is None:
                    record["outcome"], record["message"] = _status(context)
                else:
                    record.update(outcome="OK", generation=response.generation, epoch=response.epoch)
                record["duration_ms"] = round((time.perf_counter() - started) * 1e3, 3)
                self._lines.offer(record)

        return getattr(grpc, f"{kind}_rpc_method_handler")(
            audited, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _counting(parts, what: dict):
    for part in parts:
        what["parts"] += 1
        what["hosts"] += len(part.hosts)
        what["aggregates"] += len(part.aggregates)
        yield part
