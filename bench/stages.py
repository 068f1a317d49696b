"""Section 4 stages: where a CheckDestination's and a SelectDestinations' time goes.

Each decision is run in process many times, its stages timed one by one: decode (the
request's bytes to a message, as grpcio's deserializer does), convert (message to
engine.model), the engine's own stages (engine.decide.StageClock: compile, scan, explain
or weigh), encode (the response message built and serialized), each beside the bare grpcio
echo's own p50 in the same run. These are warm-loop times: inside the worker the same handler
takes longer (section 4's "where the time goes" shows it beside the sidecar's own floor).
Measured twice: with the same request each call, as section 4 sends it (what the worker keeps
per request, its conversion and compiled rules, is reused), and with a new request each call.
"""
from __future__ import annotations

import functools
import itertools
import statistics
import time
import uuid
from dataclasses import dataclass

from bench import grpc_e2e, workload
from bench.timing import Figure, format_ratio, format_seconds
from placecheck_engine import decide
from placecheck.v1 import placement_pb2
from placecheck_server import convert

CALLS = 400
WARMUP_CALLS = 20
DECISION_ID = "0" * 32  # the shape of the worker's new_decision_id()


@dataclass(frozen=True)
class Breakdown:
    rpc: str
    seconds: dict[str, float]  # median per stage, in order
    new_each_call: bool = False  # a new request each call: nothing kept per request is reused

    @property
    def in_process(self) -> float:
        return sum(self.seconds.values())


def _decide_check(columns, profile, message, clock_after_convert):
    request = convert.request_from_proto_reused(message.request)
    hosts = convert.check_hosts_from_proto(message)
    result = decide.check_destination(columns, request, profile, hosts, stages=clock_after_convert())
    return convert.check_response(result, generation=1, decision_id=DECISION_ID, config_revision=profile.name)


def _decide_select(columns, profile, message, clock_after_convert):
    request = convert.request_from_proto_reused(message.request)
    max_alternates = convert.max_alternates_from_proto(message)
    result = decide.select_destinations(columns, request, profile, DECISION_ID, max_alternates,
                                        stages=clock_after_convert())
    return convert.select_response(result, generation=1, decision_id=DECISION_ID, config_revision=profile.name)


def _timed_call(message_class, decide_message, columns, profile, body: bytes, stages: dict[str, int]) -> None:
    """One call's stages: decode, then decide_message's (convert, then the engine's on the clock
    it starts once converted), and encode: the response it builds, serialized."""
    clocks = []

    def clock_after_convert() -> decide.StageClock:
        clocks.append(decide.StageClock())
        return clocks[0]

    started = time.perf_counter_ns()
    message = message_class.FromString(body)
    decoded = time.perf_counter_ns()
    decide_message(columns, profile, message, clock_after_convert).SerializeToString()
    (clock,) = clocks
    stages.update(decode=decoded - started, convert=clock.started - decoded, **clock.nanoseconds,
                  encode=time.perf_counter_ns() - clock.last_mark)


def _medians(call, columns, profile, bodies: list[bytes]) -> dict[str, float]:
    """Each stage's median over calls with these bodies (the first WARMUP_CALLS not counted)."""
    samples: dict[str, list[int]] = {}
    for index, body in enumerate(bodies):
        stages: dict[str, int] = {}
        call(columns, profile, body, stages)
        if index >= WARMUP_CALLS:
            for stage, nanoseconds in stages.items():
                samples.setdefault(stage, []).append(nanoseconds)
    return {stage: statistics.median(values) * 1e-9 for stage, values in samples.items()}


def measure(hosts: int, calls: int = CALLS) -> list[Breakdown]:
    """Both RPCs with section 4's request sent again and again (what is kept per request is
    reused), then with a new request each call (another instance_uuid, as each boot has)."""
    columns = workload.columns(hosts)
    profile = workload.profile()
    request = convert.request_to_proto(workload.request(hosts))
    host = grpc_e2e.check_host(hosts)
    count = WARMUP_CALLS + calls
    breakdowns = []
    for first_uuid, (rpc, call, body) in zip(itertools.count(0, count), (
            ("CheckDestination", functools.partial(_timed_call, placement_pb2.CheckDestinationRequest,
                                                   _decide_check),
             lambda request_: placement_pb2.CheckDestinationRequest(request=request_, hosts=[host])),
            ("SelectDestinations", functools.partial(_timed_call, placement_pb2.SelectDestinationsRequest,
                                                     _decide_select),
             lambda request_: placement_pb2.SelectDestinationsRequest(request=request_)))):
        new_requests = []
        for number in range(first_uuid, first_uuid + count):  # never seen before, by either RPC
            new_request = placement_pb2.PlacementRequest()
            new_request.CopyFrom(request)
            new_request.instance_uuid = str(uuid.UUID(int=number, version=4))
            new_requests.append(new_request)
        breakdowns.append(Breakdown(rpc, _medians(call, columns, profile, [body(request).SerializeToString()] * count)))
        breakdowns.append(Breakdown(rpc, _medians(call, columns, profile,
                                                  [body(new).SerializeToString() for new in new_requests]),
                                    new_each_call=True))
    return breakdowns


def figures(breakdowns: list[Breakdown], comparisons: list[grpc_e2e.Comparison], hosts: int) -> list[Figure]:
    """Each stage's median beside the echo's p50 of the same run."""
    end_to_end = {comparison.name: comparison for comparison in comparisons}
    result = []
    for breakdown in breakdowns:
        comparison = end_to_end[breakdown.rpc]
        echo = comparison.echo.p50
        rows = [*breakdown.seconds.items(), ("in process, all stages", breakdown.in_process)]
        which = "in a warm loop, " + ("a new request each call" if breakdown.new_each_call else "the same request each call")
        for stage, seconds in rows:
            result.append(Figure(
                "4 stages", f"{breakdown.rpc}, {hosts:,} hosts, {which}: {stage}", format_seconds(seconds),
                "bare grpcio echo p50 (section 4)", format_seconds(echo), f"{format_ratio(seconds / echo)} echo",
                "-", None))
    return result
