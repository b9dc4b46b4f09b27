"""A package index of a test's own over HTTP: a simple index (PEP 503) of
every file of a wheelhouse, with its sha256 (so that locks get hashes, as
from PyPI), which counts each file's downloads. Downloads can be held (a
slow index), and the index stopped and started again on the same port (an
index that goes away while the fleet runs)."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from tests.support.loopback_http import QuietHandler


class PackageIndex:
    """Serves `wheelhouse` at `url` (a find-links page) while started."""

    def __init__(self, wheelhouse: Path) -> None:
        self.wheelhouse = wheelhouse
        self.downloads: Counter[str] = Counter()
        self.bytes_served = 0
        self.asked = threading.Event()  # set by the first download asked for
        self._open = threading.Event()  # cleared: downloads wait (`hold`)
        self._open.set()
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
            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                """No `Accept-Ranges`: installers download a file whole, or not at all."""
                path = unquote(self.path.split("?")[0])
                data = index.answer(path, counted=body)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream"
                                 if path.startswith("/files/") else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="package-index", daemon=True)
        self._thread.start()
        return self

    def hold(self) -> None:
        """Make every download wait (the page still answers) until `release`."""
        self.asked.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(10)
            self._server = None

    def answer(self, path: str, counted: bool) -> bytes | None:
        """`/simple/`, `/simple/<project>/`, or `/files/<name>` (a download)."""
        files = sorted(p for p in self.wheelhouse.iterdir() if p.is_file()
                       and p.name.endswith((".whl", ".tar.gz", ".zip")))
        if path == "/simple/":
            return _page(f'<a href="{project}/">{project}</a>'
                         for project in sorted({_project(p.name) for p in files}))
        if path.startswith("/simple/"):
            project = path.removeprefix("/simple/").strip("/")
            return _page(f'<a href="/files/{p.name}#sha256={_sha256(p)}">{p.name}</a>'
                         for p in files if _project(p.name) == project) if project else None
        name = path.removeprefix("/files/")
        if not path.startswith("/files/") or "/" in name or not (self.wheelhouse / name).is_file():
            return None
        data = (self.wheelhouse / name).read_bytes()
        if counted:
            self.asked.set()
            self._open.wait(300)
            with self._lock:
                self.downloads[name] += 1
                self.bytes_served += len(data)
        return data

    def env(self) -> dict[str, str]:
        """What points pip and uv at it, and at nothing else."""
        return {"PIP_INDEX_URL": f"{self.url}simple/", "PIP_NO_INDEX": "0",
                "PIP_FIND_LINKS": ""}

    def __enter__(self) -> PackageIndex:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _page(links: Iterable[str]) -> bytes:
    return ("<html><body>\n" + "<br>\n".join(links) + "\n</body></html>").encode()


def _project(filename: str) -> str:
    if filename.endswith(".whl"):
        name = parse_wheel_filename(filename)[0]
    else:
        name = parse_sdist_filename(filename)[0]
    return canonicalize_name(name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
