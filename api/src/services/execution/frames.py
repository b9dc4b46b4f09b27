"""Length-prefixed frames over a stream socket: how a worker and its
execution template talk (see `template.py`)."""

from __future__ import annotations

import socket
import struct

_HEADER = struct.Struct("!Q")


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> bytes | None:
    """One frame; None at end of file."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
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
