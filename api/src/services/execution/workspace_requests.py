"""An execution asks its worker for the workspace files it was not given.

The worker reads ahead the index and the files an order's module loads
(`virtual_import.prefetch_workspace`); anything else the execution imports
(a helper module, a name computed at run time) it asks for while it runs.
Its process holds no way into Redis, so the question travels as frames:
execution -> template (a socket pair per execution) -> worker (the
template's socket), and the answer back the same way. The worker reads the
module cache with its own connection, which checks each file's seal
(`module_seal.py`), so an execution gets only what the platform cached.

A request is JSON, `{"index": true}` or `{"file": path}`; an answer is JSON,
`{"index": [paths]}` or `{"file": text | null}`, or `{"error": reason}`.
The execution is not trusted: its requests are bounded in size, and a path
that is not a workspace path is answered with an error, never read.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from src.core.module_cache import CachedFileRefused
from src.core.module_seal import SealKeyUnknown
from src.foundation.workspace_paths import InvalidPath, validate_path
from src.services.execution.frames import FrameTooLarge, recv_frame, send_frame

logger = logging.getLogger(__name__)

# The largest request an execution may send: a workspace path and its JSON.
MAX_REQUEST_BYTES = 4096

# Answers an execution's request by its deadline: the worker's answer,
# relayed by the template (`template.py`), or `answer_here`.
WorkspaceReader = Callable[[bytes, float], bytes]


class WorkspaceUnavailable(ImportError):
    """The worker could not answer for the workspace."""


class AskTheWorker:
    """An execution's `WorkspaceSource`: each question is a frame on its
    socket, answered by its worker."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def index(self) -> list[str]:
        answer = self._ask({"index": True})
        paths = answer.get("index")
        if not isinstance(paths, list):
            raise WorkspaceUnavailable(f"the workspace index is unavailable: {_reason(answer)}")
        return [str(path) for path in paths]

    def file(self, path: str) -> str | None:
        answer = self._ask({"file": path})
        if "file" not in answer:
            raise WorkspaceUnavailable(f"workspace file {path} is unavailable: "
                                       f"{_reason(answer)}")
        text = answer["file"]
        return text if isinstance(text, str) else None

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            send_frame(self.sock, json.dumps(request).encode())
            frame = recv_frame(self.sock)
        except OSError as exc:  # user code closed the socket, say
            raise WorkspaceUnavailable(f"the worker cannot be asked: {exc}") from exc
        if frame is None:
            raise WorkspaceUnavailable("the worker is gone")
        answer = json.loads(frame)
        return answer if isinstance(answer, dict) else {}


def _reason(answer: dict[str, Any]) -> str:
    return str(answer.get("error") or "no answer")


def answer_waiting_request(asks: socket.socket, read: WorkspaceReader,
                              deadline: float) -> str | None:
    """Answer the request waiting on `asks`: None once answered, "" when the
    child closed its end, else why the execution must be stopped (a request
    too large, or one it did not finish sending, or an answer it would not
    take, by its deadline)."""
    asks.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        request = recv_frame(asks, MAX_REQUEST_BYTES)
        if request is None:
            return ""
        send_frame(asks, read(request, deadline))
    except FrameTooLarge as exc:
        return f"WorkspaceRequestRefused: the execution sent {exc}"
    except (TimeoutError, OSError) as exc:
        return f"WorkspaceRequestRefused: the execution's workspace request failed: {exc}"
    return None


def answer_here(request: bytes, deadline: float) -> bytes:
    """A `WorkspaceReader` for a process that reads the module cache itself."""
    return answer_request(request)


def answer_request(request: bytes) -> bytes:
    """The worker's answer to an execution's request, as JSON bytes; never
    raises (a request it cannot take is answered with an error)."""
    try:
        asked = json.loads(request)
    except ValueError:
        asked = None
    if not isinstance(asked, dict):
        return _error("a request must be a JSON object")
    try:
        if asked.get("index") is True:
            return json.dumps({"index": sorted(_module_cache().index_sync(from_store=False))
                               }).encode()
        path = asked.get("file")
        if not isinstance(path, str):
            return _error('a request is {"index": true} or {"file": path}')
        validate_path(path)
        return json.dumps({"file": _module_cache().read_file_sync(path, from_store=False)
                           }).encode()
    except InvalidPath as exc:
        return _error(str(exc))
    except (CachedFileRefused, SealKeyUnknown) as exc:
        return _error(str(exc))
    except Exception as exc:  # Redis away: the import fails, the worker goes on
        logger.warning("Could not answer an execution's workspace request: %s", exc)
        return _error(f"the module cache did not answer ({type(exc).__name__})")


def unavailable(reason: str) -> bytes:
    """The answer when the worker could not be asked."""
    return _error(reason)


def _error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


def _module_cache() -> Any:
    """Imported on first use, in the worker only (see `virtual_import`)."""
    from src.core import module_cache

    return module_cache
