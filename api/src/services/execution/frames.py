"""Length-prefixed frames over a stream socket: how a worker and its
execution template talk (see `template.py`), and how an execution asks for
workspace files (see `workspace_requests.py`)."""

from __future__ import annotations

import socket
import struct

_HEADER = struct.Struct("!Q")

# The first byte of a frame a template sends while an execution runs: what
# follows is the execution's workspace request, or its outcome.
WORKSPACE_REQUEST = b"r"
OUTCOME = b"o"


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)) + data)


class FrameTooLarge(ValueError):
    """A frame longer than its reader takes."""


def recv_frame(sock: socket.socket, max_size: int | None = None) -> bytes | None:
    """One frame; None at end of file. FrameTooLarge for one over `max_size`
    (for a peer that is not trusted), read no further."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if max_size is not None and size > max_size:
        raise FrameTooLarge(f"a frame of {size} bytes, over the {max_size} taken")
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
