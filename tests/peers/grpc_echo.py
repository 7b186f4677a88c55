"""A real gRPC server for the conformance tests of proxy-wasm gRPC calls and streams.

    .venv/bin/python tests/peers/grpc_echo.py

Binds 127.0.0.1:0 (plaintext HTTP/2), prints `PORT <n>` on stdout and serves until its parent
process dies (polled) or for at most 10 minutes. It also binds a silent port, printed next as
`SILENT <m>`: a listener that accepts connections, reads whatever comes and never answers (a
gRPC server that hangs, so that the client's own deadline decides, never the server's). Messages are raw bytes: no protobuf, the
request deserializer and response serializer are the identity, so a module sends and receives
plain text. Started by `meshward_tests::grpc::GrpcEcho::start()` (tests/src/grpc.rs).

Service `meshward.test.Echo`:

- `Unary` (unary-unary): answers the request bytes. Client metadata steers it:
  `x-echo-status: <code>[:<message>]` aborts with that gRPC status (a trailers-only answer);
  `x-echo-sleep-ms: <n>` sleeps first; `x-echo-metadata: 1` answers the received invocation
  metadata as sorted `name=value` lines, plus `deadline=<ms>` (the client's `grpc-timeout`, as the
  time left when the call arrived, rounded to 100 ms; `none` without one), since gRPC takes
  `grpc-timeout` out of the metadata. On success it sends initial metadata `x-echo-initial: yes`
  and trailing metadata `x-echo-trailer: done`.
- `ServerStream` (unary-stream): the request is a decimal `n`: `n` messages `msg-0`…`msg-<n-1>`,
  then OK with trailing metadata `x-echo-trailer: done`; the same `x-echo-status` (after the
  messages, when `x-echo-after: 1` is also sent; before any otherwise) and `x-echo-sleep-ms`.
- `Bidi` (stream-stream): each client message gets one reply, its bytes upper-cased; a message
  `fail` aborts with INVALID_ARGUMENT (3) "fail requested"; the client's half-close ends it OK.
- `ClientStream` (stream-unary): answers all messages joined with `+` at the client's half-close.

Every call sends initial metadata `x-echo-initial: yes` before its first message and trailing
metadata `x-echo-trailer: done` when it ends OK.
"""

import os
import socket
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "meshward.test.Echo"
LIFETIME_S = 600

CODES = {c.value[0]: c for c in grpc.StatusCode}


def identity(b):
    return b


def metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


def steer(context, md):
    """`x-echo-sleep-ms` then `x-echo-status`: aborts when asked to."""
    sleep = md.get("x-echo-sleep-ms")
    if sleep:
        time.sleep(int(sleep) / 1000.0)
    status = md.get("x-echo-status")
    if status and md.get("x-echo-after") != "1":
        abort(context, status)


def abort(context, spec):
    code, _, message = spec.partition(":")
    context.abort(CODES[int(code)], message)


def show_metadata(context):
    lines = sorted(
        f"{k}={v if isinstance(v, str) else v.decode('latin-1')}"
        for k, v in context.invocation_metadata()
    )
    left = context.time_remaining()
    lines.append("deadline=none" if left is None else f"deadline={round(left * 10) * 100}")
    return "\n".join(lines).encode()


def unary(request, context):
    md = metadata(context)
    steer(context, md)
    context.send_initial_metadata((("x-echo-initial", "yes"),))
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    if md.get("x-echo-metadata") == "1":
        return show_metadata(context)
    return request


def server_stream(request, context):
    md = metadata(context)
    steer(context, md)
    context.send_initial_metadata((("x-echo-initial", "yes"),))
    for i in range(int(request.decode() or "0")):
        yield f"msg-{i}".encode()
    if md.get("x-echo-status") and md.get("x-echo-after") == "1":
        abort(context, md["x-echo-status"])
    context.set_trailing_metadata((("x-echo-trailer", "done"),))


def bidi(requests, context):
    md = metadata(context)
    steer(context, md)
    context.send_initial_metadata((("x-echo-initial", "yes"),))
    for message in requests:
        if message == b"fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fail requested")
        yield message.upper()
    context.set_trailing_metadata((("x-echo-trailer", "done"),))


def client_stream(requests, context):
    md = metadata(context)
    steer(context, md)
    context.send_initial_metadata((("x-echo-initial", "yes"),))
    joined = b"+".join(requests)
    context.set_trailing_metadata((("x-echo-trailer", "done"),))
    return joined


def handlers():
    raw = dict(request_deserializer=identity, response_serializer=identity)
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **raw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **raw),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **raw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **raw),
        },
    )


def silent():
    """A listener that accepts and reads but never writes a byte; returns its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def drain(conn):
        with conn:
            while conn.recv(65536):
                pass

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def main():
    parent = os.getppid()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    print(f"SILENT {silent()}", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    # Stop with the parent (a test that crashed or was killed) or after LIFETIME_S at most.
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    server.stop(grace=None)
    sys.exit(0)


if __name__ == "__main__":
    threading.current_thread().name = "grpc_echo"
    main()
