"""Fault injection for S3: an HTTP-aware TCP proxy between fauna and the embedded S3 server.

Stdlib only (sockets and threads). It reads each HTTP/1.1 request (keep-alive, Content-Length
or chunked bodies, `Expect: 100-continue`), decides what to do with it, and either forwards
it to the real server or injects a fault. Controls can be switched at any moment from the
test, also while requests are in flight.

Use it through the `faulty_s3` fixture (tests/conftest.py): S3_ENDPOINT_URL points at the
proxy, a fresh bucket exists, and `faulty_s3.proxy` holds the controls:

    def test_survives_flaky_s3(faulty_s3):
        faulty_s3.proxy.fail_every(3, SLOW_DOWN)      # every 3rd request: 503 SlowDown
        storage.write_text(faulty_s3.uri("a.txt"), "x")
        faulty_s3.proxy.always(STALL)                 # accept, never answer
        ...
        faulty_s3.proxy.reset()                       # healthy again
        assert faulty_s3.proxy.faults > 0

Or on its own: `with FaultProxy("http://127.0.0.1:5000") as proxy: ... proxy.endpoint`.

Faults (constants of this module):
    DROP        read the request, then reset the connection without an answer
    SLOW_DOWN   answer 503 SlowDown (an S3 XML error body)
    INTERNAL    answer 500 InternalError (an S3 XML error body)
    STALL       read the request and never answer (until the client gives up or the proxy stops)
    LOST_REPLY  forward the request (the server acts on it), then reset the connection before
                the reply: "did my write land?"

Controls (thread-safe; each returns the proxy, so they chain):
    reset()                    pass everything through: no faults, no latency, no filter
    always(fault)              every request gets `fault`
    fail_every(n, fault)       every n-th request from now on (n, 2n, ...) gets `fault`
    fail_next(count, fault)    the next `count` requests get `fault`, then pass again
    cut_after(n)               n more requests pass; every later one is dropped (DROP)
    latency(seconds)           delay every request by `seconds` before handling it
    only(pattern)              faults hit only requests whose "METHOD /path?query" matches
                               the regular expression (e.g. r"^PUT .*/champion"); None: all
    then(fault)                once a fault has been injected, every later request gets
                               `fault`, whatever the filter (the server goes down right after)
    strip_conditions(on=True)  forward writes without their If-Match / If-None-Match headers:
                               a store that accepts the conditions and ignores them

Counters: `requests` (requests seen), `faults` (faults injected), `history` (a list of
(method, path, action) per request, action "pass" or the fault).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

PASS = "pass"
DROP = "drop"
SLOW_DOWN = "slow-down"
INTERNAL = "internal"
STALL = "stall"
LOST_REPLY = "lost-reply"
FAULTS = (DROP, SLOW_DOWN, INTERNAL, STALL, LOST_REPLY)

_ERRORS = {
    SLOW_DOWN: (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
    INTERNAL: (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
}
_NO_BODY_STATUS = (204, 304)


@dataclass
class _Request:
    method: str
    target: str
    head: bytes  # request line + headers (Expect removed), ending in the blank line
    body: bytes  # as received (chunk framing kept)


class _Closed(Exception):
    """The peer closed the connection between or inside messages."""


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that forwards HTTP requests to `upstream` or injects faults."""

    def __init__(self, upstream: str):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.requests = 0
        self.faults = 0
        self.history: list[tuple[str, str, str]] = []
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()
        return self

    @property
    def endpoint(self) -> str:
        assert self._listener is not None, "start() the proxy first"
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # wakes the threads blocked reading them
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- controls ----------------------------------------------------------------------

    def reset(self) -> FaultProxy:
        with self._lock:
            self._always: str | None = None
            self._every: tuple[int, str] | None = None
            self._every_seen = 0
            self._next: list[str] = []
            self._cut_at: int | None = None
            self._matched = 0
            self._latency = 0.0
            self._only: re.Pattern[str] | None = None
            self._then: str | None = None
            self._down: str | None = None
            self._strip = False
        return self

    def always(self, fault: str) -> FaultProxy:
        _check(fault)
        with self._lock:
            self._always = fault
        return self

    def fail_every(self, n: int, fault: str = SLOW_DOWN) -> FaultProxy:
        _check(fault)
        if n < 1:
            raise ValueError("fail_every needs n >= 1")
        with self._lock:
            self._every, self._every_seen = (n, fault), 0
        return self

    def fail_next(self, count: int = 1, fault: str = DROP) -> FaultProxy:
        _check(fault)
        with self._lock:
            self._next = [fault] * count
        return self

    def cut_after(self, n: int) -> FaultProxy:
        with self._lock:
            self._cut_at = self._matched + n
        return self

    def latency(self, seconds: float) -> FaultProxy:
        with self._lock:
            self._latency = float(seconds)
        return self

    def only(self, pattern: str | None) -> FaultProxy:
        with self._lock:
            self._only = re.compile(pattern) if pattern else None
        return self

    def then(self, fault: str) -> FaultProxy:
        _check(fault)
        with self._lock:
            self._then = fault
        return self

    def strip_conditions(self, on: bool = True) -> FaultProxy:
        with self._lock:
            self._strip = on
        return self

    # -- the decision ------------------------------------------------------------------

    def _decide(self, request: _Request) -> tuple[str, float]:
        with self._lock:
            self.requests += 1
            action = PASS
            if self._down is not None:
                action = self._down
            elif self._only is None or self._only.search(f"{request.method} {request.target}"):
                action = self._next_fault()
            if action != PASS:
                self.faults += 1
                self._down = self._then
            self.history.append((request.method, request.target, action))
            return action, self._latency

    def _next_fault(self) -> str:
        """Called under the lock for a request the filter lets through."""
        self._matched += 1
        if self._cut_at is not None and self._matched > self._cut_at:
            return DROP
        if self._next:
            return self._next.pop(0)
        if self._always is not None:
            return self._always
        if self._every is not None:
            self._every_seen += 1
            n, fault = self._every
            if self._every_seen % n == 0:
                return fault
        return PASS

    # -- connections -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._track(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _serve(self, conn: socket.socket) -> None:
        upstream: _Upstream | None = None
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader, conn)
                action, delay = self._decide(request)
                if delay:
                    time.sleep(delay)
                if action in (PASS, LOST_REPLY):
                    if self._strip:
                        request = _without_conditions(request)
                    upstream, reply, keep_alive = self._forward(upstream, request)
                    if action == LOST_REPLY:
                        _reset(conn)
                        return
                    conn.sendall(reply)
                    if not keep_alive:
                        return
                elif action in _ERRORS:
                    conn.sendall(_error_reply(action, request))
                elif action == STALL:
                    self._stall(conn)
                    return
                else:  # DROP
                    _reset(conn)
                    return
        except (_Closed, OSError, ValueError):
            return
        finally:
            reader.close()
            self._release(conn)
            if upstream is not None:
                upstream.close(self)

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)

    def _forward(
        self, upstream: _Upstream | None, request: _Request
    ) -> tuple[_Upstream | None, bytes, bool]:
        """Send the request upstream (reconnecting once if a kept-alive socket went stale)."""
        for attempt in (1, 2):
            if upstream is None:
                upstream = _Upstream(socket.create_connection(self.upstream))
                self._track(upstream.sock)
            try:
                upstream.sock.sendall(request.head + request.body)
                reply, keep_alive = _read_response(upstream.reader, request.method)
            except (_Closed, OSError):
                upstream.close(self)
                upstream = None
                if attempt == 2:
                    raise
                continue
            if not keep_alive:
                upstream.close(self)
                upstream = None
            return upstream, reply, keep_alive
        raise AssertionError("unreachable")

    def _stall(self, conn: socket.socket) -> None:
        """Hold the connection open without answering until the client leaves or we stop."""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return


class _Upstream:
    """One kept-alive connection to the real server, with its buffered reader."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self, proxy: FaultProxy) -> None:
        self.reader.close()
        proxy._release(self.sock)


@dataclass
class FaultyS3:
    """What the `faulty_s3` fixture yields: the proxy, a fresh bucket, the real endpoint."""

    proxy: FaultProxy
    bucket: str
    upstream: str  # the embedded server itself, for checks that must bypass the faults

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


# -- HTTP framing --------------------------------------------------------------------------


def _check(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")


def _read_line(reader) -> bytes:
    line = reader.readline(65537)
    if not line:
        raise _Closed()
    return line


def _read_head(reader) -> list[bytes]:
    lines = [_read_line(reader)]
    while lines[-1] not in (b"\r\n", b"\n"):
        lines.append(_read_line(reader))
    return lines


def _header(lines: list[bytes], name: bytes) -> bytes | None:
    prefix = name.lower() + b":"
    for line in lines[1:]:
        if line.lower().startswith(prefix):
            return line.split(b":", 1)[1].strip()
    return None


def _read_exact(reader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise _Closed()
    return data


def _read_chunked(reader) -> bytes:
    """A chunked body, framing included, up to and including the trailer's blank line."""
    parts = []
    while True:
        size_line = _read_line(reader)
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailer = _read_line(reader)
            parts.append(trailer)
            while trailer not in (b"\r\n", b"\n"):
                trailer = _read_line(reader)
                parts.append(trailer)
            return b"".join(parts)
        parts.append(_read_exact(reader, size + 2))


def _read_body(reader, lines: list[bytes]) -> bytes:
    if (_header(lines, b"transfer-encoding") or b"").lower() == b"chunked":
        return _read_chunked(reader)
    length = _header(lines, b"content-length")
    return _read_exact(reader, int(length)) if length else b""


def _read_request(reader, conn: socket.socket) -> _Request:
    lines = _read_head(reader)
    method, target = lines[0].split(b" ")[:2]
    if (_header(lines, b"expect") or b"").lower() == b"100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        lines = [line for line in lines if not line.lower().startswith(b"expect:")]
    body = _read_body(reader, lines)
    return _Request(method.decode(), target.decode(), b"".join(lines), body)


_CONDITIONS = (b"if-match:", b"if-none-match:")


def _without_conditions(request: _Request) -> _Request:
    """The request without its conditional headers (what a store that ignores them sees)."""
    lines = request.head.splitlines(keepends=True)
    kept = [line for line in lines if not line.lower().startswith(_CONDITIONS)]
    return _Request(request.method, request.target, b"".join(kept), request.body)


def _read_response(reader, method: str) -> tuple[bytes, bool]:
    """One whole response (after any 1xx) and whether the connection stays open."""
    while True:
        lines = _read_head(reader)
        status = int(lines[0].split(b" ")[1])
        if status >= 200:
            break
    connection = (_header(lines, b"connection") or b"").lower()
    keep_alive = lines[0].startswith(b"HTTP/1.1") and connection != b"close"
    if method == "HEAD" or status in _NO_BODY_STATUS:
        body = b""
    elif _header(lines, b"transfer-encoding") or _header(lines, b"content-length"):
        body = _read_body(reader, lines)
    else:  # delimited by the end of the connection
        body, keep_alive = reader.read(), False
    return b"".join(lines) + body, keep_alive


def _error_reply(fault: str, request: _Request) -> bytes:
    status, reason, code, message = _ERRORS[fault]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.target.split('?')[0]}</Resource>"
        "<RequestId>fauna-fault-proxy</RequestId></Error>"
    ).encode()
    payload = b"" if request.method == "HEAD" else body
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "x-amz-request-id: fauna-fault-proxy\r\n\r\n"
    ).encode()
    return head + payload


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (what a crashed server or a cut network looks like)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
