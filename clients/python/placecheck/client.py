"""A thin, typed client for the placecheck sidecar.

This module is what a conductor installs: it depends on grpcio and the generated
stubs only, never on the engine or the server.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from placecheck.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, state_pb2, state_pb2_grpc

DEFAULT_DECISION_TARGET = "127.0.0.1:50051"
# The deadline of a call that sets none: above the sidecar's longest min_generation wait (2 s).
DEFAULT_DEADLINE_S = 5.0
# ReplaceFleet and ReplaceFleetStream's: a whole fleet of 100,000 hosts takes about 15 s to stream.
DEFAULT_REPLACE_DEADLINE_S = 60.0


def default_state_dir() -> str:
    """$XDG_STATE_HOME/placecheck, else ~/.local/state/placecheck: writable without privileges."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "placecheck")


def default_state_socket() -> str:
    """$XDG_RUNTIME_DIR/placecheck/state.sock, else state.sock in default_state_dir()'s `run`
    directory: a directory of the user's own, never a shared one like /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    directory = os.path.join(runtime, "placecheck") if runtime else os.path.join(default_state_dir(), "run")
    return os.path.join(directory, "state.sock")


DEFAULT_STATE_TARGET = f"unix:{default_state_socket()}"

ChannelOptions = Sequence[tuple[str, object]]
# A part of a streamed fleet: about 1.3 MB for demo-sized hosts, well under gRPC's 4 MiB default.
HOSTS_PER_PART = 1_000

PLACEMENT_SERVICE = placement_pb2.DESCRIPTOR.services_by_name["PlacementCheck"].full_name
STATE_SERVICE = state_pb2.DESCRIPTOR.services_by_name["FleetState"].full_name
# What the retry policy retries; other codes are answers, not transient failures.
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retry policy (the channel's service config) for UNAVAILABLE and RESOURCE_EXHAUSTED.

    When a refusal carries a google.rpc.RetryInfo (no fleet yet: 100 ms; the store full or failing:
    1 s), the sidecar also sends that delay as gRPC's retry pushback (`grpc-retry-pushback-ms`),
    which replaces the backoff. FleetState's writes are retried too: each replaces or removes by
    name, so sending one again changes nothing more. gRPC's C core allows at most 5 attempts.
    """

    max_attempts: int = 5  # the first included; 1: no retries
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self):
        if not 1 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be between 1 and 5 (gRPC's limit), got {self.max_attempts}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 < initial_backoff_s <= max_backoff_s")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be > 0")

    def as_service_config(self) -> dict | None:
        """The service config's retryPolicy; None for a single attempt (gRPC refuses fewer than 2)."""
        if self.max_attempts == 1:
            return None
        return {"maxAttempts": self.max_attempts, "initialBackoff": _duration(self.initial_backoff_s),
                "maxBackoff": _duration(self.max_backoff_s), "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": list(RETRYABLE_CODES)}


NO_RETRIES = RetryPolicy(max_attempts=1)


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}s"


def service_config(retry: RetryPolicy = RetryPolicy()) -> str:
    """gRPC's service config (JSON) for both placecheck services: round_robin over the target's
    addresses and the retry policy.

    The default deadline is not its `timeout`: grpcio 1.85 counts that from a start time it
    misconverts (a 2 s timeout expired after 0.12 s here), so the clients set it per call."""
    method_config = {"name": [{"service": PLACEMENT_SERVICE}, {"service": STATE_SERVICE}]}
    if retry_policy := retry.as_service_config():
        method_config["retryPolicy"] = retry_policy
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method_config]})


def _call_policy_options(retry: RetryPolicy) -> list[tuple[str, object]]:
    return [("grpc.service_config", service_config(retry)), ("grpc.enable_retries", 1)]


def _positive_deadline(default_deadline_s: float) -> float:
    if default_deadline_s <= 0:
        raise ValueError(f"default_deadline_s must be > 0, got {default_deadline_s}")
    return default_deadline_s


def worker_target(addresses: Sequence[str]) -> str:
    """One gRPC target for several decision addresses, e.g. the workers' own ports (`placecheck
    serve --worker-ports`): ["127.0.0.1:50061", "127.0.0.1:50062"] -> "ipv4:127.0.0.1:50061,
    127.0.0.1:50062" ("ipv6:" for [::1]:PORT), over which the channel's round_robin spreads calls.
    The addresses must be IP literals of one family; for a name, a DNS name resolving to several
    addresses does the same ("dns:///name:PORT")."""
    if not addresses:
        raise ValueError("no addresses")
    families = set()
    for address in addresses:
        host, separator, port = address.rpartition(":")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(f"{address!r} is not IP:PORT (a name needs a DNS target)") from None
        if not separator or not port.isdigit():
            raise ValueError(f"{address!r} is not IP:PORT")
    if len(families) > 1:
        raise ValueError(f"{list(addresses)} mixes IPv4 and IPv6 addresses")
    return f"ipv{families.pop()}:{','.join(addresses)}"


@dataclass(frozen=True)
class ClientTls:
    """TLS for a channel: the CA certificates that verify the sidecar (PEM; None: the system's),
    and for mutual TLS the client's certificate chain and private key (PEM)."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_files(cls, root_certificates: str | None = None, certificate_chain: str | None = None,
                   private_key: str | None = None) -> ClientTls:
        def read(path):
            if path is None:
                return None
            with open(path, "rb") as file:
                return file.read()
        return cls(read(root_certificates), read(certificate_chain), read(private_key))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


def _channel(target: str, options: ChannelOptions, tls: ClientTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.credentials(), options=list(options))


def _token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The bearer token as call metadata (sent with TLS or, to a loopback sidecar, without)."""
    return (("authorization", f"Bearer {token}"),) if token else None


class Generation(int):
    """A generation number that knows its fleet history (`epoch`): pass it as `min_generation`
    and the call also expects that epoch, so another history's generation never satisfies it."""

    epoch: str

    def __new__(cls, generation: int, epoch: str) -> Generation:
        value = super().__new__(cls, generation)
        value.epoch = epoch
        return value


def _expected_epoch(min_generation: int, expected_epoch: str | None) -> str:
    return getattr(min_generation, "epoch", "") if expected_epoch is None else expected_epoch


class PlacementClient:
    """Calls PlacementCheck over several channels, round-robin.

    The sidecar's workers share one port with SO_REUSEPORT, which spreads
    connections, not calls: one channel would pin every call to one worker.
    Each channel therefore gets its own subchannel pool (and so its own TCP
    connection) and a distinct channel id. Given the workers' own addresses
    instead (a list, or a worker_target()), each channel connects to every
    worker and its round_robin spreads the calls, so one channel is enough.

    A call without `timeout` gets `default_deadline_s`; UNAVAILABLE and
    RESOURCE_EXHAUSTED are retried by gRPC as `retry` says (NO_RETRIES: never).
    `tls` connects over TLS (mutual TLS with a client certificate); `token` is sent as
    `authorization: Bearer <token>` with every call.
    """

    def __init__(self, target: str | Sequence[str] = DEFAULT_DECISION_TARGET, channels: int | None = None,
                 options: ChannelOptions = (), *, tls: ClientTls | None = None, token: str | None = None,
                 default_deadline_s: float = DEFAULT_DEADLINE_S, retry: RetryPolicy = RetryPolicy()):
        if not isinstance(target, str):
            target, channels = worker_target(target), channels or 1
        channels = channels or os.cpu_count() or 2
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.target = target
        self._metadata = _token_metadata(token)
        self._deadline_s = _positive_deadline(default_deadline_s)
        policy = _call_policy_options(retry)
        self._channels = [
            _channel(target, [*policy, *options, ("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", index)],
                     tls)
            for index in range(channels)
        ]
        self._stubs = [placement_pb2_grpc.PlacementCheckStub(channel) for channel in self._channels]
        # next() on itertools.count is atomic under the GIL, so threads may share the client.
        self._call_counter = itertools.count()

    def _next_stub(self) -> placement_pb2_grpc.PlacementCheckStub:
        return self._stubs[next(self._call_counter) % len(self._stubs)]

    def check_destination(self, request: placement_pb2.PlacementRequest, hosts: Iterable[str], *,
                          min_generation: int = 0, expected_epoch: str | None = None,
                          timeout: float | None = None) -> placement_pb2.CheckDestinationResponse:
        """One verdict per host, in order: allowed, or every rule that refuses it. `expected_epoch`
        defaults to a Generation's own."""
        message = placement_pb2.CheckDestinationRequest(
            request=request, hosts=list(hosts), min_generation=min_generation,
            expected_epoch=_expected_epoch(min_generation, expected_epoch))
        return self._next_stub().CheckDestination(message, timeout=timeout or self._deadline_s,
                                                  metadata=self._metadata)

    def select_destinations(self, request: placement_pb2.PlacementRequest, *,
                            max_alternates: int | None = None, min_generation: int = 0,
                            expected_epoch: str | None = None, decision_id: str = "",
                            timeout: float | None = None) -> placement_pb2.SelectDestinationsResponse:
        """Ranked hosts with alternates; when too few fit, the summary says which rules eliminated them.
        `expected_epoch` defaults to a Generation's own."""
        message = placement_pb2.SelectDestinationsRequest(
            request=request, min_generation=min_generation, decision_id=decision_id,
            expected_epoch=_expected_epoch(min_generation, expected_epoch))
        if max_alternates is not None:
            message.max_alternates = max_alternates
        return self._next_stub().SelectDestinations(message, timeout=timeout or self._deadline_s,
                                                    metadata=self._metadata)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> PlacementClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class StateClient:
    """Feeds the fleet to the sidecar's state owner; every mutator returns the Generation it
    published (durably), to pass on as `min_generation`. `tls`, `token`, `default_deadline_s`
    (DEFAULT_REPLACE_DEADLINE_S at least for replacing the whole fleet) and `retry` as for
    PlacementClient (for a sidecar serving FleetState over TCP)."""

    def __init__(self, target: str = DEFAULT_STATE_TARGET, options: ChannelOptions = (), *,
                 tls: ClientTls | None = None, token: str | None = None,
                 default_deadline_s: float = DEFAULT_DEADLINE_S, retry: RetryPolicy = RetryPolicy()):
        self.target = target
        self._metadata = _token_metadata(token)
        self._deadline_s = _positive_deadline(default_deadline_s)
        self._replace_deadline_s = max(self._deadline_s, DEFAULT_REPLACE_DEADLINE_S)
        self._channel = _channel(target, [*_call_policy_options(retry), *options], tls)
        self._stub = state_pb2_grpc.FleetStateStub(self._channel)

    def replace_fleet(self, fleet: fleet_pb2.Fleet, *, allow_empty: bool = False,
                      timeout: float | None = None) -> Generation:
        """Replace the whole fleet; one without hosts only with allow_empty."""
        return _generation(self._stub.ReplaceFleet(
            state_pb2.ReplaceFleetRequest(fleet=fleet, allow_empty=allow_empty),
            timeout=timeout or self._replace_deadline_s,
            metadata=self._metadata))

    def replace_fleet_stream(self, fleet: fleet_pb2.Fleet, *, allow_empty: bool = False,
                             hosts_per_part: int = HOSTS_PER_PART, timeout: float | None = None) -> Generation:
        """Replace the whole fleet, sent in parts of `hosts_per_part` hosts: a fleet of any size."""
        if hosts_per_part < 1:
            raise ValueError(f"hosts_per_part must be >= 1, got {hosts_per_part}")

        def parts():
            yield state_pb2.ReplaceFleetPart(hosts=fleet.hosts[:hosts_per_part], aggregates=fleet.aggregates,
                                             allow_empty=allow_empty)
            for start in range(hosts_per_part, len(fleet.hosts), hosts_per_part):
                yield state_pb2.ReplaceFleetPart(hosts=fleet.hosts[start:start + hosts_per_part])

        return _generation(self._stub.ReplaceFleetStream(parts(), timeout=timeout or self._replace_deadline_s,
                                                         metadata=self._metadata))

    def upsert_hosts(self, hosts: Iterable[fleet_pb2.Host], *, timeout: float | None = None) -> Generation:
        return _generation(self._stub.UpsertHosts(state_pb2.UpsertHostsRequest(hosts=list(hosts)),
                                                  timeout=timeout or self._deadline_s, metadata=self._metadata))

    def remove_hosts(self, names: Iterable[str], *, timeout: float | None = None) -> Generation:
        return _generation(self._stub.RemoveHosts(state_pb2.RemoveHostsRequest(names=list(names)),
                                                  timeout=timeout or self._deadline_s, metadata=self._metadata))

    def upsert_aggregates(self, aggregates: Iterable[fleet_pb2.Aggregate], *,
                          timeout: float | None = None) -> Generation:
        message = state_pb2.UpsertAggregatesRequest(aggregates=list(aggregates))
        return _generation(self._stub.UpsertAggregates(message, timeout=timeout or self._deadline_s,
                                                       metadata=self._metadata))

    def remove_aggregates(self, ids: Iterable[int], *, timeout: float | None = None) -> Generation:
        return _generation(self._stub.RemoveAggregates(state_pb2.RemoveAggregatesRequest(ids=list(ids)),
                                                       timeout=timeout or self._deadline_s, metadata=self._metadata))

    def update_usage(self, usages: Iterable[state_pb2.HostUsage], *, timeout: float | None = None) -> Generation:
        return _generation(self._stub.UpdateUsage(state_pb2.UpdateUsageRequest(usages=list(usages)),
                                                  timeout=timeout or self._deadline_s, metadata=self._metadata))

    def status(self, *, timeout: float | None = None) -> state_pb2.GetStatusResponse:
        return self._stub.GetStatus(state_pb2.GetStatusRequest(), timeout=timeout or self._deadline_s,
                                    metadata=self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _generation(response) -> Generation:
    return Generation(response.generation, response.epoch)


def bad_request_violations(rpc_error: grpc.Call) -> list[tuple[str, str]]:
    """(field, description) pairs of the google.rpc.BadRequest in an error's rich
    status; empty when the error carries none."""
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return []
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations


def wait_until_serving(target: str | Sequence[str], timeout: float, *, service: str = "",
                       tls: ClientTls | None = None) -> None:
    """Block until grpc.health.v1 reports `service` SERVING at `target` (at every one of a list
    of addresses, e.g. the workers' own).

    One Watch waits for the connection, then for the status to change (the sidecar reports
    NOT_SERVING until it has a fleet); it is closed once SERVING, since an open Watch holds a
    sidecar thread. Raises TimeoutError when not SERVING within `timeout` seconds, saying what
    it saw last.
    """
    deadline = time.monotonic() + timeout
    for address in ([target] if isinstance(target, str) else target):
        _watch_until_serving(address, deadline, service, tls, timeout)


def _watch_until_serving(target: str, deadline: float, service: str, tls: ClientTls | None, timeout: float) -> None:
    last_seen = "no answer"
    with _channel(target, (), tls) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while (remaining := deadline - time.monotonic()) > 0:
            # wait_for_ready: keep trying to connect until the deadline rather than fail fast.
            statuses = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=remaining,
                                    wait_for_ready=True)
            try:
                for reply in statuses:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last_seen = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                last_seen = f"the Watch ended after {last_seen}"
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and last_seen != "no answer":
                    break  # out of time: what the Watch said last says more than the deadline
                last_seen = f"{error.code().name}: {error.details()}"
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    break
            finally:
                statuses.cancel()
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(f"{target} not serving {service or 'the server'} within {timeout}s ({last_seen})")
