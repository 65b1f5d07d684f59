"""The client side of the trigger protocol: `trigger`, `kill`, `revive` and `status` sent to one server."""

from __future__ import annotations

import socket
from typing import Any

from .addrs import ip_int, ip_str
from .errors import ProtocolError, UsageError
from .protocol import MAX_MESSAGE, decode_reply, encode_request


def parse_hostport(text: str) -> tuple[str, int]:
    """'198.18.201.2:7000' → ('198.18.201.2', 7000); names are not resolved (no DNS in a lab)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"expected ADDR:PORT, not {text!r}")
    return ip_str(ip_int(host)), int(port)


def read_line(sock: socket.socket, limit: int = MAX_MESSAGE) -> bytes:
    """One newline-terminated line (or what came before EOF), at most `limit` bytes."""
    buf = b""
    while b"\n" not in buf:
        if len(buf) > limit:
            raise ProtocolError("oversized", f"reply longer than {limit} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            if not buf:
                raise ProtocolError("malformed", "connection closed without a reply")
            break
        buf += chunk
    return buf[:buf.index(b"\n") + 1] if b"\n" in buf else buf


def send(host: str, port: int, key: bytes, cmd: str, *, generation: int = 0,
         params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Send one authenticated command; return the verified reply body (see protocol.decode_reply)."""
    line, nonce = encode_request(key, cmd, to=f"{host}:{port}", generation=generation, params=params)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(line)
        return decode_reply(key, nonce, read_line(s))
