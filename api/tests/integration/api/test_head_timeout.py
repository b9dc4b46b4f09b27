"""The request-head timeout, with real sockets against the real server.

A client that does not finish a request's line and headers within the bound
(it sends half of them, trickles them a byte at a time, or sends nothing) is
disconnected at the bound, with a 408 when part of a head had arrived; a
normal client, a keep-alive client between requests and a client slow to
send its body (the head was complete) are served as before. Both uvicorn
HTTP/1.1 implementations are covered: the one `make_server` uses and h11.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from src.api.app import create_app
from src.api.head_timeout import head_timeout_protocol
from src.api.server import make_server

BOUND = 0.5
# How late after the bound a disconnect may still come. It only bounds a
# failure (a connection the server never closes would stay open for ever):
# on a busy machine the server's loop may run seconds late.
SLACK = 20.0
# How long a connection must stay quiet past the bound to show that no timer
# closes it (a slow body): the one wait here a passing test pays for.
QUIET = BOUND + 1.5
START_TIMEOUT = 60.0
TOKEN = "head-timeout-token"

HEALTH = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"


@contextmanager
def running(server: uvicorn.Server) -> Iterator[int]:
    """Serve in a background thread; yields the port."""
    thread = threading.Thread(target=server.run, name="uvicorn-head-timeout", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive(), "uvicorn exited before it started serving"
        assert time.monotonic() < deadline, f"uvicorn did not start within {START_TIMEOUT} s"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)


def h11_server(bound: float) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=0,
        http=head_timeout_protocol(bound, base=H11Protocol),
        ws="none",
        log_level="warning",
    )
    return uvicorn.Server(config)


@pytest.fixture(params=["make_server", "h11"])
def port(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, sqlite_system: str
) -> Iterator[int]:
    """The server under test; GET /health answers 200 there (its Redis and store are up)."""
    from src.foundation.settings import get_settings

    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    get_settings.cache_clear()
    if request.param == "make_server":
        server = make_server(create_app(), "127.0.0.1", 0, head_timeout=BOUND)
    else:
        server = h11_server(BOUND)
    with running(server) as bound_port:
        yield bound_port


def connect(port: int) -> socket.socket:
    """A connection to the server. Take the start of a bound before calling
    this: the server's timer starts when it accepts, never before the connect."""
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND + SLACK + 5)


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails
    if it is still open at `deadline`."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still connected; received so far: {received[:200]!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


class Responses:
    """Responses read one at a time from a kept-alive connection (two
    pipelined answers may arrive in one read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        assert chunk, f"closed mid-response: {self.buffer!r}"
        self.buffer += chunk

    def next(self) -> bytes:
        deadline = time.monotonic() + 60
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            self._fill(deadline)
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def assert_cut_at_the_bound(sock: socket.socket, started: float) -> bytes:
    received = read_until_closed(sock, started + BOUND + SLACK)
    elapsed = time.monotonic() - started
    assert elapsed >= BOUND * 0.9, f"closed after {elapsed:.2f} s, before the bound"
    return received


def test_half_a_request_line_is_disconnected_at_the_bound(port: int) -> None:
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"GET /heal")
        received = assert_cut_at_the_bound(sock, started)
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_headers_never_finished_are_disconnected_at_the_bound(port: int) -> None:
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        received = assert_cut_at_the_bound(sock, started)
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_a_trickled_head_is_disconnected_although_bytes_keep_coming(port: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    started = time.monotonic()
    with connect(port) as sock:
        sent = 0
        try:
            for byte in request:  # a byte every 50 ms: the head would take 12 s
                if time.monotonic() > started + BOUND + SLACK:
                    break
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)  # the slow client's own pace
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first: what this test expects
        elapsed = time.monotonic() - started
        assert sent < len(request), "the whole head went through"
        assert BOUND * 0.9 <= elapsed <= BOUND + SLACK, elapsed
        read_until_closed(sock, time.monotonic() + SLACK)


def test_a_silent_connection_is_closed_at_the_bound_without_an_answer(port: int) -> None:
    started = time.monotonic()
    with connect(port) as sock:
        received = assert_cut_at_the_bound(sock, started)
    assert received == b""


def test_a_normal_client_is_served_and_kept_alive(port: int) -> None:
    with connect(port) as sock:
        responses = Responses(sock)
        for _ in range(3):
            sock.sendall(HEALTH)
            assert responses.next().startswith(b"HTTP/1.1 200 ")
        # Pipelined: two heads at once, two answers. The clock for the next
        # head starts again once the last answer is complete, so after `started`.
        started = time.monotonic()
        sock.sendall(HEALTH + HEALTH)
        assert responses.next().startswith(b"HTTP/1.1 200 ")
        assert responses.next().startswith(b"HTTP/1.1 200 ")
        assert responses.buffer == b""
        # After an answer the clock runs again for the next head.
        sock.sendall(b"GET /hea")
        received = assert_cut_at_the_bound(sock, started)
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_a_slow_body_is_not_cut_by_the_head_timeout(port: int) -> None:
    """The bound is on the head; once it is complete the request is the app's."""
    body = b'{"package": '
    head = (
        b"POST /api/packages/install HTTP/1.1\r\nHost: test\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with connect(port) as sock:
        sock.sendall(head)
        # Nothing may come back while the body is outstanding: a recv that
        # times out well after the bound proves the connection stayed (and
        # the answer to the body, below, that it is still open).
        sock.settimeout(QUIET)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.sendall(body)
        answer = Responses(sock).next()
    assert answer.startswith(b"HTTP/1.1 422 "), answer
    assert b"JSON decode error" in answer


def test_the_bound_must_be_positive() -> None:
    assert issubclass(head_timeout_protocol(), asyncio.Protocol)
    with pytest.raises(ValueError, match="must be positive"):
        head_timeout_protocol(0)
