"""A real HTTP webhook receiver for the alert tests: a ThreadingHTTPServer on
a free port in a thread, recording every POST's JSON body; it can answer 500
to the first `fail_first` POSTs (recorded too, as `refused`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.loopback_http import QuietHandler, serving


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []  # bodies answered 200
        self.refused: list[dict[str, Any]] = []  # bodies answered 500
        self.lock = threading.Lock()
        self.url = ""

    def take(self, body: dict[str, Any]) -> int:
        with self.lock:
            if len(self.refused) < self.fail_first:
                self.refused.append(body)
                return 500
            self.received.append(body)
            return 200

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


@contextmanager
def webhook_receiver(fail_first: int = 0, path: str = "/hook?token=s3cret") -> Iterator[Receiver]:
    receiver = Receiver(fail_first)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                body = {"unparsable": True}
            status = receiver.take(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler, "webhook-receiver") as base:
        receiver.url = f"{base}{path}"
        yield receiver
