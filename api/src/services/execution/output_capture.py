"""What an execution writes back, read with bounds by the process that
forked it: its outcome, up to a cap, and each stream's last part.

An execution's stdout and stderr are pipes of their own (never the worker's,
so never the platform's log). The runner reads them while it waits for the
outcome and keeps the last `BIFROST_EXECUTION_OUTPUT_BYTES` of each, which go
into the execution's record; what came before is counted, not kept. Its
outcome comes on a pipe of its own too; more than the cap is not read.
"""

from __future__ import annotations

import contextlib
import os
import select

from src.services.execution.processes import READ_CHUNK, drain


class OutputTail:
    """The last `keep` bytes an execution wrote to one stream, and how many came
    in all: a workflow that prints 200 MB costs `keep` bytes of memory."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.tail = bytearray()
        self.total = 0

    def read(self, fd: int) -> bool:
        """Take what is there now; False at end of file."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        self.total += len(chunk)
        self.tail += chunk
        if len(self.tail) > self.keep:
            del self.tail[: len(self.tail) - self.keep]
        return bool(chunk)

    def drain(self, fd: int, most_reads: int = 64) -> None:
        """Take what is buffered now, without waiting for more (and without
        following a writer that keeps writing past `most_reads` reads)."""
        with contextlib.suppress(OSError):
            for _ in range(most_reads):
                if not select.select([fd], [], [], 0)[0] or not self.read(fd):
                    return

    def text(self) -> str:
        """The tail as text, saying how much came before it."""
        kept = self.tail.decode("utf-8", errors="replace")
        dropped = self.total - len(self.tail)
        return f"[{dropped} earlier bytes not kept]\n{kept}" if dropped else kept


class OutcomeReader:
    """The bytes an execution writes to its result pipe, up to a cap."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap = fd, cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.complete = False  # end of file after some bytes: the whole outcome

    def read(self) -> None:
        chunk = os.read(self.fd, READ_CHUNK)
        if not chunk:
            self.eof = True
            self.complete = self.size > 0
            return
        self.size += len(chunk)
        self.chunks.append(chunk)

    def drain(self) -> None:
        if not self.eof:
            chunk = drain(self.fd, self.cap - self.size)
            self.size += len(chunk)
            self.chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)
