"""A server-sent events client for tests: reads `GET /api/events` on a thread
and keeps every event, so a test can wait for the one it expects."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.waiting import wait_for


@dataclass
class Event:
    kind: str
    data: dict[str, Any]
    id: str | None = None


@dataclass
class EventReader:
    """`with EventReader(base_url, token) as events: ...`, then `events.wait(...)`."""

    base_url: str
    token: str
    last_event_id: str | None = None
    events: list[Event] = field(default_factory=list)
    status_code: int | None = None
    ended: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: httpx.Client | None = None
    _thread: threading.Thread | None = None
    _opened: threading.Event = field(default_factory=threading.Event)
    _socket: socket.socket | None = None

    def __enter__(self) -> EventReader:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        self._client = httpx.Client(base_url=self.base_url, headers=headers,
                                    timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._opened.wait(60), "GET /api/events did not answer within 60 s"
        return self

    def __exit__(self, *_exc: object) -> None:
        # Closing the client does not wake a thread blocked in recv(): shutting
        # the socket down does, at once (a stream may be quiet for a long time).
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the events reader did not stop"

    def _read(self) -> None:
        assert self._client is not None
        try:
            with self._client.stream("GET", "/api/events") as response:
                stream = response.extensions.get("network_stream")
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                self.status_code = response.status_code
                self._opened.set()
                self._parse(response.iter_lines())
        except (httpx.HTTPError, RuntimeError):  # closed by __exit__
            pass
        finally:
            self.ended = True
            self._opened.set()

    def _parse(self, lines: Any) -> None:
        kind, data, event_id = "message", "", None
        for line in lines:
            if line == "":
                if data:
                    with self._lock:
                        self.events.append(Event(kind, json.loads(data), event_id))
                kind, data, event_id = "message", "", None
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "data":
                    data += value
                elif name == "id":
                    event_id = value

    def seen(self, kind: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if kind is None or e.kind == kind]

    def wait(self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda _: True,
             timeout: float = 60.0) -> Event:
        """The first `kind` event whose data `match`es, waiting up to `timeout`."""
        def found() -> Event | None:
            return next((e for e in self.seen(kind) if match(e.data)), None)

        return wait_for(found, timeout, what=f"a {kind!r} event that matches")
