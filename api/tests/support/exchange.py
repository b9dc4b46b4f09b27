"""Files a test shares with the executions it starts, over HTTP on the loopback.

Executions cannot write anywhere the test can read (their scratch dir is
removed after them and their /dev/shm is their own), so a test that needs a
sign from a running workflow ("started", one line per run) or gives one
("release") serves them here: a ThreadingHTTPServer in a thread, holding
files in memory by name. `exchange / "runs.log"` is an `ExchangePath`: the
test uses it like a `pathlib.Path` (exists, touch, unlink, read_text,
mkdir, iterdir), and passes `str()` of it, its URL, to the workflow, which uses
`exchange_client.py`: POST appends (an empty POST touches), HEAD/GET read,
404 when absent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.loopback_http import QuietHandler, serving

# The client functions as source text, for workflows an e2e test uploads.
CLIENT_SOURCE = (Path(__file__).parent / "exchange_client.py").read_text()


class Exchange:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.url = ""

    def __truediv__(self, name: str) -> ExchangePath:
        return ExchangePath(self, name)

    def append(self, name: str, data: bytes) -> None:
        with self.lock:
            self.files[name] = self.files.get(name, b"") + data

    def read(self, name: str) -> bytes | None:
        with self.lock:
            return self.files.get(name)

    def delete(self, name: str) -> None:
        with self.lock:
            self.files.pop(name, None)

    def names(self, prefix: str) -> list[str]:
        with self.lock:
            return sorted(name for name in self.files if name.startswith(prefix))


class ExchangePath:
    """One file (or, by its name as a prefix, a directory) of an `Exchange`."""

    def __init__(self, exchange: Exchange, name: str) -> None:
        self.exchange, self.name = exchange, name

    def __truediv__(self, name: str) -> ExchangePath:
        return ExchangePath(self.exchange, f"{self.name}/{name}")

    def __str__(self) -> str:
        return f"{self.exchange.url}/{self.name}"

    def exists(self) -> bool:
        return self.exchange.read(self.name) is not None

    def touch(self) -> None:
        self.exchange.append(self.name, b"")

    def read_text(self) -> str:
        data = self.exchange.read(self.name)
        if data is None:
            raise FileNotFoundError(str(self))
        return data.decode()

    def unlink(self) -> None:
        self.exchange.delete(self.name)

    def mkdir(self) -> None:
        """Nothing to make: a name with this prefix is in the directory."""

    def iterdir(self) -> list[ExchangePath]:
        return [ExchangePath(self.exchange, name)
                for name in self.exchange.names(self.name + "/")]


@contextmanager
def serve_exchange() -> Iterator[Exchange]:
    exchange = Exchange()

    class Handler(QuietHandler):
        def _name(self) -> str:
            return self.path.lstrip("/")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            exchange.append(self._name(), self.rfile.read(length))
            self._answer(200, b"")

        def do_GET(self) -> None:
            data = exchange.read(self._name())
            self._answer(404, b"") if data is None else self._answer(200, data)

        def do_HEAD(self) -> None:
            self._answer(404 if exchange.read(self._name()) is None else 200, b"")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    with serving(Handler, "exchange") as base:
        exchange.url = base
        yield exchange
