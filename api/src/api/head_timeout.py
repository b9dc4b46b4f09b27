"""A bound on the time a client may take to send a request head.

uvicorn waits for a request's line and headers as long as the client keeps
the connection open: a client that sends them a byte at a time, or never
finishes them ("slowloris"), holds a connection (and a file descriptor)
forever, and enough of them exhaust the server. Its keep-alive timeout only
covers a connection that sends nothing at all after a response, and any byte
cancels it.

`head_timeout_protocol(seconds)` is uvicorn's own HTTP/1.1 protocol (the one
its "auto" setting picks: httptools when installed, else h11) with one more
timer: it starts when the connection is ready for a request head (when it
opens, and when a response completes with no further request already
parsed), is not reset by incoming bytes, and stops when the head is complete
(uvicorn then starts a request cycle). When it fires, the connection is
closed, after a 408 answer if part of a head had arrived.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0

_TIMEOUT_MESSAGE = b"request head not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TIMEOUT_MESSAGE)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _TIMEOUT_MESSAGE
)


class HeadTimeout(asyncio.Protocol):
    """Mixin for uvicorn's HTTP/1.1 protocols (listed before one of them).

    It relies on what both of them have: `loop`, `transport`, `cycle` (the
    current request's cycle, replaced when a new head has been parsed, with
    `response_complete`), and `on_response_complete()`.
    """

    head_timeout: float = DEFAULT_HEAD_TIMEOUT_SECONDS

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    _head_timer: asyncio.TimerHandle | None = None
    _head_cycle: Any = None  # the cycle that was current when the timer started
    _head_bytes: int = 0  # bytes received since then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        # A new request cycle means its head is complete; an upgraded
        # connection is no longer this protocol's to time.
        head_done = self.cycle is not self._head_cycle
        if head_done or self.transport.get_protocol() is not self:
            self._stop_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # both protocols define it
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_cycle = self.cycle
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # A 408 only answers a head; bytes that are the rest of a body the app
        # already answered (an early 413) get no second response.
        unread_body = self.cycle is not None and getattr(self.cycle, "more_body", False)
        if self._head_bytes and not unread_body:
            peer = self.transport.get_extra_info("peername")
            logger.warning(
                "Closing a connection from %s: its request head was not complete within %g s "
                "(%d bytes received)",
                peer, self.head_timeout, self._head_bytes,
            )
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def _base_protocol() -> type[asyncio.Protocol]:
    """The protocol uvicorn's "auto" setting would use."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return H11Protocol
    return HttpToolsProtocol


def head_timeout_protocol(
    seconds: float = DEFAULT_HEAD_TIMEOUT_SECONDS, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class (`base`, by default the one "auto"
    picks), closing connections whose request head takes longer than
    `seconds`; for `uvicorn.Config(http=...)`."""
    if seconds <= 0:
        raise ValueError(f"the request head timeout must be positive, not {seconds}")
    base = base or _base_protocol()
    return type(
        f"HeadTimeout{base.__name__}",
        (HeadTimeout, base),
        {"head_timeout": seconds, "__module__": __name__},
    )
