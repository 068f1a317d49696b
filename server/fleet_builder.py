"""Whole fleets are converted and encoded in a child process, so the state owner never holds them.

A whole fleet (ReplaceFleet, its stream, a --fleet file or the --demo fleet at start) means a
Python object per host, per inventory and per instance id: at 100,000 hosts about 500 MiB that
CPython's allocator keeps after they are freed (the arenas stay pinned by the few objects that
outlive them). A child of the fork server converts, validates and encodes the fleet
(engine.columns.build_columns) and hands back only its columns and aggregates; the child exits
after each fleet, and its memory with it. Errors raised there (InvalidField naming the field)
reach the caller as they are. A build its caller no longer wants (a stop requested while the
fleet loads at start, a ReplaceFleet whose caller went away) ends at once: the child is killed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Callable

from placecheck_engine.columns import Columns, build_columns
from placecheck_engine.fleetfile import validate_fleet
from placecheck_engine.model import Aggregate, Fleet


@dataclass(frozen=True)
class BuiltFleet:
    columns: Columns
    aggregates: tuple[Aggregate, ...]
    allow_empty: bool = False


class BuildStopped(Exception):
    """The caller stopped wanting the fleet before it was built."""


class FleetBuilder:
    def __init__(self, context):
        """context: the supervisor's forkserver multiprocessing context (its children start with
        the fork server's preloaded modules, not a copy of the threaded supervisor)."""
        self._context = context

    def _in_child(self, stopped: Callable[[], bool], function, *args) -> BuiltFleet:
        """function(*args) in a child of its own; BuildStopped once stopped() says so."""
        receiving, sending = self._context.Pipe(duplex=False)
        child = self._context.Process(target=_send_outcome, args=(sending, function, *args), name="fleet-builder",
                                      daemon=True)
        child.start()
        sending.close()
        try:
            while not receiving.poll(STOP_POLL_S):
                if stopped():
                    raise BuildStopped("the fleet was no longer wanted; its build was stopped")
                if not child.is_alive() and not receiving.poll():
                    raise RuntimeError(f"the fleet builder exited with {child.exitcode} before answering")
            try:
                failed, outcome = receiving.recv()
            except EOFError:
                raise RuntimeError(f"the fleet builder exited with {child.exitcode} before answering") from None
        finally:
            receiving.close()
            child.kill()
            child.join()
        if failed:
            raise outcome
        arrays, dicts, aggregates, allow_empty = outcome
        return BuiltFleet(Columns(arrays, dicts), aggregates, allow_empty)

    def from_request(self, fleet_bytes: bytes, allow_empty: bool, stopped: Callable[[], bool]) -> BuiltFleet:
        """A ReplaceFleetRequest's fleet (serialized fleet_pb2.Fleet); fields named as `fleet.hosts[i]...`."""
        return self._in_child(stopped, _build_from_request, fleet_bytes, allow_empty)

    def from_parts(self, part_bytes: list[bytes], stopped: Callable[[], bool]) -> BuiltFleet:
        """ReplaceFleetStream's parts (serialized state_pb2.ReplaceFleetPart); fields named as `parts[i].hosts[j]...`."""
        return self._in_child(stopped, _build_from_parts, part_bytes)

    def from_fleet_source(self, stopped: Callable[[], bool], load, *args) -> BuiltFleet:
        """load(*args) -> Fleet (a fleet file, the demo fleet) run in the child."""
        return self._in_child(stopped, _build_from_source, load, *args)


STOP_POLL_S = 0.1  # how soon a build its caller stopped wanting ends


def _send_outcome(sending, function, *args) -> None:
    """The child: (False, what function returns) or (True, the exception it raised), to the parent."""
    from placecheck_server.proctitle import set_process_title

    set_process_title("fleet-builder")
    try:
        outcome = (False, function(*args))
    except Exception as error:  # every error, InvalidField first, is the caller's to report
        outcome = (True, error)
    sending.send(outcome)
    sending.close()


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim) once a whole fleet's
    transfer buffers are freed: glibc otherwise keeps them for the next large allocation."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def _encoded(fleet: Fleet, allow_empty: bool):
    validate_fleet(fleet)
    columns = build_columns(fleet)
    return dict(columns.arrays), columns.dicts, fleet.aggregates, allow_empty


def _build_from_request(fleet_bytes: bytes, allow_empty: bool):
    from placecheck.v1 import fleet_pb2
    from placecheck_server import convert

    return _encoded(convert.fleet_from_proto(fleet_pb2.Fleet.FromString(fleet_bytes)), allow_empty)


def _build_from_parts(part_bytes: list[bytes]):
    from placecheck.v1 import state_pb2
    from placecheck_server import convert

    hosts, aggregates, allow_empty = [], [], False
    for index, data in enumerate(part_bytes):
        part = state_pb2.ReplaceFleetPart.FromString(data)
        hosts.extend(convert.hosts_from_proto(part.hosts, f"parts[{index}].hosts"))
        aggregates.extend(convert.aggregates_from_proto(part.aggregates, f"parts[{index}].aggregates"))
        allow_empty = allow_empty or part.allow_empty
    return _encoded(Fleet(hosts=tuple(hosts), aggregates=tuple(aggregates)), allow_empty)


def _build_from_source(load, *args):
    return _encoded(load(*args), True)
