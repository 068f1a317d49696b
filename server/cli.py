"""The placecheck command: serve, check, select, load, status, sync openstack."""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
OPERATIONS = ("boot", "live_migrate", "cold_migrate", "resize", "evacuate", "unshelve")
DEFAULT_TIMEOUT_S = 10.0
# Where check/select and load/status/sync connect when --target / --state is not given.
DECISION_TARGET_ENV = "PLACECHECK_DECISION_TARGET"
STATE_TARGET_ENV = "PLACECHECK_STATE_TARGET"

EPILOG = f"""\
examples:
  placecheck serve --demo
  placecheck check --host compute-00042 --vcpus 2 --ram-mb 2048 --disk-gb 20
  placecheck check --host compute-00007 --vcpus 4 --operation live_migrate \\
      --source-host compute-00042 --instance-uuid 1f0e9a52-5b9e-4c1c-8a51-0d1c6a0f3b7e
  placecheck select --vcpus 2 --ram-mb 2048 --num-instances 3
  placecheck load etc/example-fleet.json
  placecheck status

exit codes:
  0  success (check: every host allowed; select: every instance placed)
  1  a refusal (check: a host refused; select: nothing fits)
  2  a usage, file or RPC error

environment:
  {DECISION_TARGET_ENV}  check and select's default --target
  {STATE_TARGET_ENV}     load, status and sync's default --state
  PLACECHECK_TOKEN            the bearer token to send, unless --token-file
"""


def _names(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def _uids(text: str) -> frozenset[int]:
    import pwd

    uids = set()
    for name in _names(text):
        try:
            uids.add(int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise argparse.ArgumentTypeError(f"no user {name!r}") from None
    return frozenset(uids)


def _serve(args) -> int:
    from placecheck_server.json_logs import DecisionLogSettings
    from placecheck_server.security import read_tls, read_tokens
    from placecheck_server.supervisor import ServeOptions, serve
    from placecheck_server.worker import RequestLimits

    metrics_host, _, metrics_port = args.metrics_port.rpartition(":")
    if not metrics_port.isdigit():
        print(f"placecheck serve: --metrics-port must be PORT or HOST:PORT, got {args.metrics_port!r}",
              file=sys.stderr)
        return EXIT_ERROR
    return serve(ServeOptions(
        listen=args.listen, state_listen=args.state_listen,
        metrics_port=int(metrics_port), metrics_host=metrics_host or "127.0.0.1",
        workers=args.workers, worker_ports=args.worker_ports, threads_per_worker=args.threads_per_worker,
        config_path=args.config,
        state_dir=args.state_dir, fleet_path=args.fleet, demo=args.demo,
        demo_hosts=args.demo_hosts, demo_seed=args.demo_seed, max_snapshot_age_s=args.max_snapshot_age,
        orphan_grace_s=args.orphan_grace, grace_s=args.grace, log_level=args.log_level,
        snapshot_verify_interval_s=args.snapshot_verify_interval,
        limits=RequestLimits(max_instances=args.max_instances, max_check_hosts=args.max_check_hosts,
                             max_generation_wait_s=args.max_generation_wait, max_waiting_calls=args.max_waiting_calls),
        tls=read_tls(args.tls_cert, args.tls_key, args.tls_client_ca),
        tokens=read_tokens(args.tokens_file) if args.tokens_file else None,
        decision_callers=args.decision_callers, state_writers=args.state_writers or frozenset(),
        state_allow_uids=args.state_allow_uid,
        decision_log=DecisionLogSettings(args.decision_log, args.decision_log_sample, args.decision_log_rate)
        if args.decision_log else None,
        audit_log=args.audit_log))


def _placement_request(args):
    """The request from --server or --request-json (if any) with the flags given on top."""
    from placecheck.v1 import placement_pb2

    if getattr(args, "server", None):
        from placecheck_server.openstack_check import NovaServers, server_request
        from placecheck_server.openstack_feed import connect

        message = server_request(NovaServers(connect(args.os_cloud, "compute")), args.server, args.flavor)
    elif args.request_json:
        from placecheck_engine.fleetfile import request_from_json
        from placecheck_server.convert import request_to_proto

        with open(args.request_json) as file:
            message = request_to_proto(request_from_json(json.load(file)))
    else:
        message = placement_pb2.PlacementRequest()
    for resource_class, amount in (("VCPU", args.vcpus), ("MEMORY_MB", args.ram_mb), ("DISK_GB", args.disk_gb)):
        if amount is not None:
            message.resources[resource_class] = amount
    for resource_class, amount in args.resource:
        message.resources[resource_class] = amount
    if args.operation:
        message.operation = placement_pb2.Operation.Value(f"OPERATION_{args.operation.upper()}")
    for field in ("source_host", "instance_uuid", "profile"):
        if getattr(args, field):
            setattr(message, field, getattr(args, field))
    if args.az:
        message.availability_zone = args.az
    message.required_traits.extend(args.required_trait)
    message.forbidden_traits.extend(args.forbidden_trait)
    if getattr(args, "num_instances", None) is not None:
        message.num_instances = args.num_instances
    return message


def _footer(response) -> str:
    return (f"snapshot generation {response.generation}, profile {response.profile}, "
            f"config {response.config_revision}, decision {response.decision_id}")


def _print_json(response) -> None:
    from google.protobuf import json_format

    print(json_format.MessageToJson(response, preserving_proto_field_name=True))


def _add_credentials(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("credentials", "for a sidecar serving TLS or authenticating callers "
                                                      "(README: Security)")
    group.add_argument("--tls-ca", metavar="FILE", help="PEM CA certificates that verify the sidecar: connect "
                                                        "over TLS (any --tls-* does; without this one the "
                                                        "system's roots verify)")
    group.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate, for mutual TLS (with --tls-key)")
    group.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    group.add_argument("--token-file", metavar="FILE",
                       help="a file holding the bearer token to send (default: $PLACECHECK_TOKEN, if set)")


def _credentials(args) -> dict:
    """PlacementClient's and StateClient's tls and token from _add_credentials' options."""
    from placecheck import ClientTls

    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = ClientTls.from_files(args.tls_ca, args.tls_cert, args.tls_key)
    if args.token_file:
        with open(args.token_file) as file:
            token = file.read().strip()
    else:
        token = os.environ.get("PLACECHECK_TOKEN") or None
    return {"tls": tls, "token": token}


def _check(args) -> int:
    from placecheck import PlacementClient

    with PlacementClient(args.target, channels=1, **_credentials(args)) as client:
        response = client.check_destination(_placement_request(args), args.host, timeout=args.timeout)
    refused = [v for v in response.verdicts if not v.allowed]
    if args.json:
        _print_json(response)
    else:
        for verdict in response.verdicts:
            if verdict.allowed:
                print(f"{verdict.host}: allowed ({len(verdict.rules_evaluated)} rules passed)")
                continue
            count = len(verdict.rejections)
            print(f"{verdict.host}: refused by {count} rule{'s' if count != 1 else ''}")
            for rejection in verdict.rejections:
                print(f"  {rejection.rule} [{rejection.reason}]: {rejection.message}")
        print(_footer(response))
    return EXIT_REFUSED if refused else EXIT_OK


def _weighed(weighed) -> str:
    """The host, its weight and the weighers that moved it (a contribution of 0 says nothing)."""
    parts = ", ".join(f"{s.weigher} {s.contribution:+.4f}" for s in weighed.weighers if s.contribution)
    return f"{weighed.host} weight {weighed.weight:.4f}" + (f" ({parts})" if parts else "")


def _select(args) -> int:
    from placecheck import PlacementClient

    with PlacementClient(args.target, channels=1, **_credentials(args)) as client:
        response = client.select_destinations(_placement_request(args), max_alternates=args.max_alternates,
                                              timeout=args.timeout)
    if args.json:
        _print_json(response)
    else:
        for number, placement in enumerate(response.placements, 1):
            print(f"instance {number}: {_weighed(placement.selected)}")
            for alternate in placement.alternates:
                print(f"  alternate: {_weighed(alternate)}")
        summary = response.summary
        if response.placements:
            print(f"{summary.hosts_passed}/{summary.hosts_evaluated} hosts fit")
        else:
            print(f"no placement for {summary.instances_requested} instance(s): {summary.message}")
        print(_footer(response))
    return EXIT_OK if response.placements else EXIT_REFUSED


def _load(args) -> int:
    from placecheck_engine.fleetfile import load_fleet
    from placecheck import StateClient
    from placecheck_server.convert import fleet_to_proto

    fleet = load_fleet(args.fleet)
    with StateClient(args.state, **_credentials(args)) as client:
        generation = client.replace_fleet_stream(fleet_to_proto(fleet), allow_empty=args.allow_empty,
                                                 timeout=args.timeout)
    print(f"published generation {generation}: {len(fleet.hosts)} hosts, {len(fleet.aggregates)} aggregates")
    return EXIT_OK


def _status(args) -> int:
    from placecheck import StateClient

    with StateClient(args.state, **_credentials(args)) as client:
        status = client.status(timeout=args.timeout)
    if args.json:
        _print_json(status)
    else:
        print(f"generation {status.generation}: {status.host_count} hosts, {status.aggregate_count} aggregates, "
              f"last write {status.age_seconds:.1f}s ago, {status.snapshot_bytes} bytes, "
              f"fleet history {status.epoch or '-'}")
    return EXIT_OK


def _sync_openstack(args) -> int:
    import logging
    import signal
    import threading

    from placecheck import StateClient
    from placecheck_server.feed_metrics import FeedMetrics, serve_feed_metrics
    from placecheck_server.openstack_feed import FeedError, NovaReader, OpenStackFeed, PlacementReader, connect, run

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = FeedMetrics()
    metrics_host, _, metrics_port = args.metrics_port.rpartition(":")
    http = serve_feed_metrics(metrics_host or "127.0.0.1", int(metrics_port), metrics) if int(metrics_port) else None

    def count_request(service: str) -> None:
        metrics.api_requests.labels(service).inc()

    reader = PlacementReader(connect(args.os_cloud, "placement", args.concurrency), args.concurrency, count_request)
    nova = None if args.without_nova else NovaReader(connect(args.os_cloud, "compute"), count_request)
    try:
        with StateClient(args.state) as state:
            feed = OpenStackFeed(reader, state, nova, metrics)
            if args.once:
                try:
                    print(feed.sync())
                except FeedError as error:
                    print(f"placecheck sync openstack: {error.kind}: {error}", file=sys.stderr)
                    return EXIT_ERROR
                return EXIT_OK
            stop = threading.Event()
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signal_number, lambda *_: stop.set())
            run(feed, args.interval, stop, args.max_backoff)
    finally:
        reader.close()
        if http is not None:
            http.shutdown()
    return EXIT_OK


def _resource(text: str) -> tuple[str, int]:
    resource_class, separator, amount = text.partition("=")
    if not separator or not resource_class:
        raise argparse.ArgumentTypeError(f"expected CLASS=N, got {text!r}")
    try:
        return resource_class, int(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"amount of {resource_class} must be an integer, got {amount!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number_at_least(text: str, minimum: float, inclusive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= minimum if inclusive else value > minimum) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number {'>=' if inclusive else '>'} {minimum:g}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number_at_least(text, 0.0, inclusive=False)


def _non_negative_float(text: str) -> float:
    return _number_at_least(text, 0.0, inclusive=True)


def _fraction(text: str) -> float:
    value = _number_at_least(text, 0.0, inclusive=False)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from placecheck import DEFAULT_DECISION_TARGET, DEFAULT_STATE_TARGET
    from placecheck_server.metrics import placecheck_version
    from placecheck_server.supervisor import ServeOptions, default_state_dir

    defaults = ServeOptions()
    decision_target = os.environ.get(DECISION_TARGET_ENV) or DEFAULT_DECISION_TARGET
    state_target = os.environ.get(STATE_TARGET_ENV) or DEFAULT_STATE_TARGET
    parser = argparse.ArgumentParser(prog="placecheck", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"placecheck {placecheck_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", help="TOML file of named profiles (default: built-in profile)")
    serve.add_argument("--state-dir",
                       help="where the fleet is kept durably and recovered from at start (default: "
                            f"$XDG_STATE_HOME/placecheck, here {default_state_dir()}; with --demo, a "
                            "temporary directory removed at exit)")
    serve.add_argument("--fleet", help="JSON fleet file: the first write of a state directory that holds "
                                       "none (a recovered fleet wins). Without --fleet or --demo the sidecar "
                                       "starts with no fleet, NOT_SERVING until one is written")
    serve.add_argument("--demo", action="store_true", help="a generated demo fleet instead of --fleet")
    serve.add_argument("--listen", default=defaults.listen, help="decision address HOST:PORT (%(default)s)")
    serve.add_argument("--state-listen", default=defaults.state_listen,
                       help="fleet-state address, unix:PATH or HOST:PORT (%(default)s; a unix socket's "
                            "directory must be this user's own, writable by no one else)")
    serve.add_argument("--metrics-port", default=str(defaults.metrics_port),
                       help="Prometheus endpoint PORT or HOST:PORT on loopback by default; 0 disables (%(default)s)")
    serve.add_argument("--workers", type=int, default=defaults.workers, help="decision processes (%(default)s)")
    serve.add_argument("--worker-ports", type=_positive_int, metavar="BASE",
                       help="worker i also serves decisions on the --listen host at port BASE+i, besides "
                            "the shared port: a client holding one connection per address (gRPC's "
                            "round_robin over ipv4:HOST:BASE,HOST:BASE+1,...) spreads its calls over every "
                            "worker, where the shared port puts each connection on one worker")
    serve.add_argument("--threads-per-worker", type=_positive_int, default=defaults.threads_per_worker,
                       help="calls a worker decides at once (%(default)s); more threads only contend for "
                            "its GIL, so add workers instead. Further calls wait their turn, up to 128 per "
                            "thread, then get RESOURCE_EXHAUSTED; an open health Watch holds a thread")
    serve.add_argument("--demo-hosts", type=int, default=defaults.demo_hosts,
                       help="demo fleet size, with --demo (%(default)s)")
    serve.add_argument("--demo-seed", type=int, default=defaults.demo_seed, help="demo fleet seed (%(default)s)")
    serve.add_argument("--max-snapshot-age", type=_positive_float, metavar="SECONDS",
                       help="health reports NOT_SERVING when no write has arrived for this long (default: "
                            "no limit)")
    serve.add_argument("--orphan-grace", type=_non_negative_float, default=defaults.orphan_grace_s,
                       metavar="SECONDS", help="workers of a supervisor that died keep answering from their last "
                                               "snapshot this long (%(default)s)")
    serve.add_argument("--snapshot-verify-interval", type=_positive_float, metavar="SECONDS",
                       default=defaults.snapshot_verify_interval_s,
                       help="each worker verifies its snapshot's checksum again this often (~10 ms at 100,000 "
                            "hosts); a damaged one is NOT_SERVING and answers UNAVAILABLE until a newer generation "
                            "(%(default)s)")
    limits = defaults.limits
    serve.add_argument("--max-instances", type=_positive_int, default=limits.max_instances,
                       help="largest num_instances of one SelectDestinations (%(default)s)")
    serve.add_argument("--max-check-hosts", type=_positive_int, default=limits.max_check_hosts,
                       help="most hosts one CheckDestination may name (%(default)s)")
    serve.add_argument("--max-generation-wait", type=_non_negative_float, default=limits.max_generation_wait_s,
                       metavar="SECONDS", help="longest a call waits for its min_generation before "
                                               "FAILED_PRECONDITION (%(default)s)")
    serve.add_argument("--max-waiting-calls", type=_positive_int, metavar="N",
                       help="calls one worker lets wait for a generation at once; more are FAILED_PRECONDITION "
                            "at once (default: one fewer than --threads-per-worker, at least 1)")
    security = serve.add_argument_group("security", "who may call (README: Security)")
    security.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS on the decision port (and on a TCP --state-listen)")
    security.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", metavar="FILE",
                          help="PEM CA certificates: clients must present a certificate they signed (mutual "
                               "TLS); its subject alternative names (else common name) identify the caller")
    security.add_argument("--tokens-file", metavar="FILE",
                          help="bearer tokens, one 'TOKEN IDENTITY' per line (# comments); a caller sends "
                               "'authorization: Bearer TOKEN'")
    security.add_argument("--decision-callers", type=_names, metavar="IDENTITY,...",
                          help="identities that may call PlacementCheck (default: every authenticated caller; "
                               "with neither --tokens-file nor --tls-client-ca, every caller)")
    security.add_argument("--state-writers", type=_names, metavar="IDENTITY,...",
                          help="identities that may call FleetState when --state-listen is HOST:PORT (required "
                               "then)")
    security.add_argument("--state-allow-uid", type=_uids, metavar="UID,...",
                          help="users (uid or name) that may connect to a unix --state-listen, checked with "
                               "SO_PEERCRED (default: this user and root)")
    logs = serve.add_argument_group("logs", "JSON lines of decisions and of fleet writes "
                                            "(README: Decision log and audit log)")
    logs.add_argument("--decision-log", metavar="PATH|-",
                      help="append a JSON line per decision to PATH (- for standard output): its id, the caller's "
                           "x-openstack-request-id, the request's digest, generation, profile, outcome and the "
                           "rules refusing each host")
    logs.add_argument("--decision-log-sample", type=_fraction, default=1.0, metavar="FRACTION",
                      help="share of decisions logged (%(default)s)")
    logs.add_argument("--decision-log-rate", type=_non_negative_float, default=1000.0, metavar="LINES",
                      help="most decision lines a second per worker; 0: no limit (%(default)s)")
    logs.add_argument("--audit-log", metavar="PATH|-",
                      help="append a JSON line per FleetState write to PATH (- for standard output): when, who "
                           "(the state socket caller's uid), what, and the generation it made")
    serve.add_argument("--grace", type=float, default=defaults.grace_s,
                       help="seconds in-flight calls may take to finish at shutdown (%(default)s)")
    serve.add_argument("--log-level", default=defaults.log_level,
                       choices=("debug", "info", "warning", "error"), help="(%(default)s)")
    serve.set_defaults(handler=_serve)

    def decision_command(name: str, help_text: str):
        command = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("--target", default=decision_target,
                             help=f"decision address (${DECISION_TARGET_ENV}, else %(default)s)")
        command.add_argument("--request-json", help="a request in the fleet file's request shape; flags add to it")
        command.add_argument("--vcpus", type=int, help="VCPU requested")
        command.add_argument("--ram-mb", type=int, help="MEMORY_MB requested")
        command.add_argument("--disk-gb", type=int, help="DISK_GB requested")
        command.add_argument("--resource", type=_resource, action="append", default=[], metavar="CLASS=N",
                             help="any resource class requested (repeatable)")
        command.add_argument("--operation", choices=OPERATIONS, help="default: boot")
        command.add_argument("--source-host", help="current host (moves)")
        command.add_argument("--instance-uuid", help="instance being moved")
        command.add_argument("--az", help="availability zone requested")
        command.add_argument("--required-trait", action="append", default=[], metavar="TRAIT")
        command.add_argument("--forbidden-trait", action="append", default=[], metavar="TRAIT")
        command.add_argument("--profile", help="configuration profile (default: the sidecar's default)")
        command.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (%(default)s)")
        command.add_argument("--json", action="store_true", help="print the response as JSON")
        _add_credentials(command)
        return command

    check = decision_command("check", "may the workload go to these hosts? every reason if not")
    check.add_argument("--host", action="append", required=True, help="candidate host (repeatable)")
    check.add_argument("--server", metavar="UUID",
                       help="a real server: its flavor, image, project, zone, group and host read from Nova "
                            "(give --operation; docs/openstack-feed.md); flags add to it")
    check.add_argument("--flavor", metavar="NAME", help="with --server and --operation resize: the new flavor")
    check.add_argument("--os-cloud", help="with --server: cloud name in clouds.yaml (default: $OS_CLOUD)")
    check.set_defaults(handler=_check)

    select = decision_command("select", "rank hosts for the workload")
    select.add_argument("--num-instances", type=int, help="instances to place (default 1)")
    select.add_argument("--max-alternates", type=int, help="alternates per instance (default: the profile's)")
    select.set_defaults(handler=_select)

    load = commands.add_parser("load", help="replace the sidecar's fleet with a fleet file")
    load.add_argument("fleet", metavar="FLEET.json")
    load.add_argument("--state", default=state_target,
                          help=f"state address (${STATE_TARGET_ENV}, else %(default)s)")
    load.add_argument("--allow-empty", action="store_true",
                      help="accept a file without hosts (it removes every host)")
    load.add_argument("--timeout", type=float, default=60.0, help="seconds (%(default)s)")
    _add_credentials(load)
    load.set_defaults(handler=_load)

    status = commands.add_parser("status", help="the snapshot's generation, size and age")
    status.add_argument("--state", default=state_target,
                          help=f"state address (${STATE_TARGET_ENV}, else %(default)s)")
    status.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (%(default)s)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    _add_credentials(status)
    status.set_defaults(handler=_status)

    from placecheck_server.openstack_feed import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL_S, DEFAULT_MAX_BACKOFF_S

    sync = commands.add_parser("sync", help="keep the sidecar's fleet equal to a source")
    sources = sync.add_subparsers(dest="source", required=True)
    openstack = sources.add_parser(
        "openstack", help="from OpenStack Placement and Nova: a full sync, then polls (docs/openstack-feed.md)")
    openstack.add_argument("--os-cloud", help="cloud name in clouds.yaml (default: $OS_CLOUD, else the OS_* "
                                              "environment variables)")
    openstack.add_argument("--state", default=state_target,
                          help=f"state address (${STATE_TARGET_ENV}, else %(default)s)")
    openstack.add_argument("--interval", type=_positive_float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                           help="between polls (%(default)s)")
    openstack.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY,
                           help="providers read from Placement at once (%(default)s)")
    openstack.add_argument("--max-backoff", type=_positive_float, default=DEFAULT_MAX_BACKOFF_S, metavar="SECONDS",
                           help="longest wait between retries while a sync keeps failing (%(default)s)")
    openstack.add_argument("--metrics-port", default="0",
                           help="the feeder's Prometheus endpoint PORT or HOST:PORT (loopback by default); "
                                "0 disables (%(default)s)")
    openstack.add_argument("--without-nova", action="store_true",
                           help="Placement only: hosts count as enabled and up, aggregates have no metadata")
    openstack.add_argument("--once", action="store_true", help="one full sync, then exit (0, or 2 if it failed)")
    openstack.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                           help="(%(default)s)")
    openstack.set_defaults(handler=_sync_openstack)
    return parser


def _report_rpc_error(error) -> None:
    from placecheck import bad_request_violations

    message = error.details()
    print(f"placecheck: {error.code().name}: {message}", file=sys.stderr)
    for field, description in bad_request_violations(error):
        if f"{field}: {description}" not in message:  # an InvalidField's message is its one violation
            print(f"  {field}: {description}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import grpc

    from placecheck_engine.model import InvalidField

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except grpc.RpcError as error:
        _report_rpc_error(error)
    except (OSError, ValueError) as error:  # unreadable or invalid files (InvalidField is a ValueError)
        detail = f"{error.field}: {error.description}" if isinstance(error, InvalidField) else str(error)
        print(f"placecheck: {detail}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
