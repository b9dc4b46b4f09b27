"""A package index of a test's own over HTTP: a find-links page listing every
file of a wheelhouse (with its sha256), which counts each file's downloads.
It can be stopped and started again on the same port (an index that goes
away while the fleet runs)."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.support.loopback_http import QuietHandler


class PackageIndex:
    """Serves `wheelhouse` at `url` (a find-links page) while started."""

    def __init__(self, wheelhouse: Path) -> None:
        self.wheelhouse = wheelhouse
        self.downloads: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> PackageIndex:
        index = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                name = unquote(self.path.split("?")[0].lstrip("/"))
                path = index.wheelhouse / name
                if not name:
                    body, kind = index.page(), "text/html"
                elif "/" not in name and path.is_file():
                    with index._lock:
                        index.downloads[name] += 1
                    body, kind = path.read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="package-index", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(10)
            self._server = None

    def page(self) -> bytes:
        links = [f'<a href="{path.name}#sha256={hashlib.sha256(path.read_bytes()).hexdigest()}">'
                 f"{path.name}</a><br>" for path in sorted(self.wheelhouse.iterdir())
                 if path.is_file()]
        return ("<html><body>" + "\n".join(links) + "</body></html>").encode()

    def env(self) -> dict[str, str]:
        """What points pip and uv at it, and at nothing else."""
        return {"PIP_FIND_LINKS": self.url, "PIP_NO_INDEX": "1"}

    def __enter__(self) -> PackageIndex:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
