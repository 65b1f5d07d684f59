"""Run inside a lab namespace by the server tests: speak raw bytes to a test-worm server and print replies.

python -m tests.testworm.wire_probe ADDR PORT KEYFILE   → one JSON object on stdout
"""

from __future__ import annotations

import json
import socket
import sys
import time

from testworm.client import read_line
from testworm.errors import ProtocolError
from testworm.protocol import decode_reply, encode_request, load_key


def exchange(host: str, port: int, data: bytes, *, close_write: bool = True) -> str:
    with socket.create_connection((host, port), timeout=5) as s:
        try:
            s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
            return read_line(s).decode("ascii", "replace").strip()
        except (OSError, ProtocolError) as exc:  # the server may close without a reply
            return f"<{type(exc).__name__}>"


def main() -> None:
    host, port, key = sys.argv[1], int(sys.argv[2]), load_key(sys.argv[3])
    out: dict = {}
    # a valid request, then the very same bytes again (a replay)
    line, nonce = encode_request(key, "status", to=f"{host}:{port}")
    out["first"] = decode_reply(key, nonce, exchange(host, port, line).encode() + b"\n")
    out["replayed"] = exchange(host, port, line)
    # a stale one (captured two minutes ago), and one addressed to another host
    old, _ = encode_request(key, "trigger", to=f"{host}:{port}", ts=time.time() - 120, params={"rate": 1})
    out["stale"] = exchange(host, port, old)
    other, _ = encode_request(key, "trigger", to=f"198.18.201.99:{port}", params={"rate": 1})
    out["wrong_host"] = exchange(host, port, other)
    # junk of every sort
    out["http"] = exchange(host, port, b"GET / HTTP/1.0\r\n\r\n")
    out["binary"] = exchange(host, port, bytes(range(256)) + b"\n")
    # past the 16 KiB limit, but all of it read by the server before it replies: no reset races the reply
    out["oversized"] = exchange(host, port, b"TWRM1 " + b"A" * 17000, close_write=False)
    out["no_newline"] = exchange(host, port, b"TWRM1 abc def")
    # a slow client holding a connection open does not block anyone else
    slow = socket.create_connection((host, port), timeout=5)
    slow.sendall(b"TWRM1 ")
    line, nonce = encode_request(key, "status", to=f"{host}:{port}")
    t = time.monotonic()
    out["while_slow"] = decode_reply(key, nonce, exchange(host, port, line).encode() + b"\n")["ok"]
    out["while_slow_s"] = time.monotonic() - t
    slow.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
