"""The real HTTP API on a free port, served by uvicorn in a background thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from src.api.server import make_server

# Bounds a failure only: a busy machine may take seconds to start uvicorn.
START_TIMEOUT = 60.0


@contextmanager
def running_api(app: FastAPI) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a port the OS picks); yields the base URL."""
    server = make_server(app, "127.0.0.1", 0)
    # uvicorn's logging config writes its errors to the stderr of the moment,
    # which under pytest is one test's capture: send them to the root logger
    # instead, where each test's captured log shows them (tracebacks of a 500).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started serving")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {START_TIMEOUT} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
