"""A bare grpcio unary server: the floor a placecheck call is measured against.

It answers each call with a reply of the size the request asks for (the first
four bytes, little-endian), with no protobuf and no work, on the same grpcio and
the same server shape (sync server, thread pool) as placecheck's workers. Run as
`python -m bench.echo_server`; it prints the port it bound, then serves until
its stdin closes.
"""
from __future__ import annotations

import argparse
import functools
import sys
from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Call"
SIZE_PREFIX_BYTES = 4


def echo_request(request_bytes: int, reply_bytes: int) -> bytes:
    """A request of `request_bytes` bytes asking for a reply of `reply_bytes` bytes."""
    prefix = reply_bytes.to_bytes(SIZE_PREFIX_BYTES, "little")
    return prefix + b"\x01" * max(0, request_bytes - SIZE_PREFIX_BYTES)


@functools.cache
def _reply(size: int) -> bytes:
    return b"\x01" * size


def _call(request: bytes, context) -> bytes:
    return _reply(int.from_bytes(request[:SIZE_PREFIX_BYTES], "little"))


def start(listen: str, threads: int) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    # No serializers: the handler sees and returns raw bytes.
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(_call)})])
    port = server.add_insecure_port(listen)
    server.start()
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    server, port = start(args.listen, args.threads)
    print(port, flush=True)
    sys.stdin.read()  # the parent closes our stdin to stop us
    server.stop(0)


if __name__ == "__main__":
    main()
