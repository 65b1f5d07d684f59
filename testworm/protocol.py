"""The trigger protocol on the wire: HMAC-authenticated one-line requests and replies, replay protection.

Request  `TWRM1 <payload> <mac>\\n`   payload = base64url(JSON), mac = base64url(HMAC-SHA256(key,
         "testworm/1 request\\n" + payload JSON bytes)). JSON: {"v": 1, "cmd", "nonce" (32 hex), "ts" (wall
         seconds), "to" ("ADDR:PORT" the request is meant for), "generation", "params"}.
Reply    `TWRM1R <payload> <mac>\\n`  mac over "testworm/1 reply\\n" + request nonce + payload JSON bytes;
         or `TWRM1E <reason>\\n`, unauthenticated, for requests refused before the MAC was proven.
The MAC is checked before the JSON is parsed; a request is accepted once: within ±window of the server's
clock, addressed to this server ("to"), with a nonce not seen before (kept for the window, bounded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError, UsageError

MAGIC_REQ, MAGIC_REP, MAGIC_ERR = b"TWRM1", b"TWRM1R", b"TWRM1E"
MAX_MESSAGE = 16384  # bytes of one line, newline included
MIN_KEY = 16
COMMANDS = ("trigger", "kill", "revive", "status")
REQ_CONTEXT = b"testworm/1 request\n"
REP_CONTEXT = b"testworm/1 reply\n"
REQ_KEYS = {"v", "cmd", "nonce", "ts", "to", "generation", "params"}
DEFAULT_WINDOW_S = 60.0
NONCE_CAP = 100_000


def load_key(path: str) -> bytes:
    """The lab key: the file's bytes without surrounding whitespace, at least 16 bytes."""
    try:
        with open(path, "rb") as fh:
            key = fh.read(1 << 16).strip()
    except OSError as exc:
        raise UsageError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY:
        raise UsageError(f"key file {path} holds {len(key)} bytes; a lab key needs at least {MIN_KEY}")
    return key


def _b64e(b: bytes) -> bytes:
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def _b64d(b: bytes) -> bytes:
    return base64.b64decode(b + b"=" * (-len(b) % 4), altchars=b"-_", validate=True)


def _mac(key: bytes, context: bytes, data: bytes) -> bytes:
    return hmac.new(key, context + data, hashlib.sha256).digest()


@dataclass(frozen=True)
class Request:
    cmd: str
    nonce: str
    ts: float
    to: str
    generation: int
    params: dict[str, Any] = field(default_factory=dict)


def encode_request(key: bytes, cmd: str, *, to: str, generation: int = 0, params: dict | None = None,
                   nonce: str | None = None, ts: float | None = None) -> tuple[bytes, str]:
    """(the request line, its nonce)."""
    nonce = nonce or secrets.token_hex(16)
    body = {"v": 1, "cmd": cmd, "nonce": nonce, "ts": time.time() if ts is None else ts, "to": to,
            "generation": generation, "params": params or {}}
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    line = b" ".join((MAGIC_REQ, _b64e(data), _b64e(_mac(key, REQ_CONTEXT, data)))) + b"\n"
    if len(line) > MAX_MESSAGE:
        raise UsageError(f"request would be {len(line)} bytes (at most {MAX_MESSAGE})")
    return line, nonce


class NonceCache:
    """Nonces of accepted requests, each kept while its timestamp is inside the window; bounded in size."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, cap: int = NONCE_CAP):
        self.window_s, self.cap = window_s, cap
        self._seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, ts: float, now: float) -> bool:
        """Remember nonce; False when it was already seen (a replay)."""
        if nonce in self._seen:
            return False
        if len(self._seen) >= self.cap:
            horizon = now - self.window_s
            self._seen = {n: t for n, t in self._seen.items() if t >= horizon}
            if len(self._seen) >= self.cap:
                raise ProtocolError("busy", "too many recent triggers to remember")
        self._seen[nonce] = ts
        return True


def split_line(line: bytes, magic: bytes, fields: int) -> list[bytes]:
    if len(line) > MAX_MESSAGE:
        raise ProtocolError("oversized", f"{len(line)} bytes")
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != fields or parts[0] != magic:
        raise ProtocolError("malformed", "not a testworm message")
    return parts


def decode_request(key: bytes, line: bytes, *, local: str, nonces: NonceCache, now: float | None = None,
                   window_s: float | None = None) -> Request:
    """Authenticate and parse one request line, or raise ProtocolError(reason) — reasons: oversized,
    malformed, bad-mac, bad-request, stale, wrong-host, replay, busy."""
    now = time.time() if now is None else now
    window_s = nonces.window_s if window_s is None else window_s
    _, payload, mac = split_line(line, MAGIC_REQ, 3)
    try:
        data, mac = _b64d(payload), _b64d(mac)
    except (binascii.Error, ValueError):
        raise ProtocolError("malformed", "bad base64") from None
    if not hmac.compare_digest(mac, _mac(key, REQ_CONTEXT, data)):
        raise ProtocolError("bad-mac", "wrong key or tampered message")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad-request", "payload is not JSON") from None
    if not isinstance(body, dict) or set(body) != REQ_KEYS or body["v"] != 1:
        raise ProtocolError("bad-request", "unexpected fields or version")
    cmd, nonce, ts, to, gen, params = (body[k] for k in ("cmd", "nonce", "ts", "to", "generation", "params"))
    if cmd not in COMMANDS:
        raise ProtocolError("bad-request", f"unknown command {cmd!r}")
    if not (isinstance(nonce, str) and len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce)):
        raise ProtocolError("bad-request", "bad nonce")
    try:
        ts = float(ts) if not isinstance(ts, bool) and isinstance(ts, int | float) else math.nan
    except OverflowError:
        ts = math.nan
    if not math.isfinite(ts):
        raise ProtocolError("bad-request", "bad timestamp")
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 0:
        raise ProtocolError("bad-request", "bad generation")
    if not isinstance(params, dict) or not isinstance(to, str):
        raise ProtocolError("bad-request", "bad params or destination")
    if abs(now - ts) > window_s:
        raise ProtocolError("stale", f"timestamp {now - ts:+.1f} s from this server's clock")
    if to != local:
        raise ProtocolError("wrong-host", f"meant for {to}, this is {local}")
    if not nonces.add(nonce, ts, now):
        raise ProtocolError("replay", "nonce already used")
    return Request(cmd, nonce, ts, to, gen, params)


def encode_reply(key: bytes, nonce: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return b" ".join((MAGIC_REP, _b64e(data), _b64e(_mac(key, REP_CONTEXT, nonce.encode() + data)))) + b"\n"


def encode_error(reason: str) -> bytes:
    return MAGIC_ERR + b" " + reason.encode()[:64] + b"\n"


def decode_reply(key: bytes, nonce: str, line: bytes) -> dict[str, Any]:
    """A verified reply body; an unauthenticated refusal becomes {"ok": False, "error": reason,
    "authenticated": False}. ProtocolError when the reply is neither."""
    if line.startswith(MAGIC_ERR + b" "):
        reason = line[len(MAGIC_ERR) + 1:].strip()[:64].decode("ascii", "replace")
        return {"ok": False, "error": reason, "authenticated": False}
    _, payload, mac = split_line(line, MAGIC_REP, 3)
    try:
        data, mac = _b64d(payload), _b64d(mac)
    except (binascii.Error, ValueError):
        raise ProtocolError("malformed", "bad base64 in reply") from None
    if not hmac.compare_digest(mac, _mac(key, REP_CONTEXT, nonce.encode() + data)):
        raise ProtocolError("bad-mac", "reply not authenticated by the lab key")
    try:
        body = json.loads(data)
    except ValueError:
        raise ProtocolError("malformed", "reply payload is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "reply payload is not an object")
    body["authenticated"] = True
    return body


def new_key() -> bytes:
    """A fresh lab key (hex text), for `python -m testworm keygen`."""
    return secrets.token_hex(32).encode()


def write_key(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(new_key() + b"\n")
