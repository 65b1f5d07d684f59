"""The daemon's control channel: a unix stream socket, one JSON request line in, one JSON reply line out.

The default address is the abstract socket `@wtb-throttle`. Abstract unix sockets belong to a network
namespace, so every namespace (lab host) has its own, `python -m throttle status` run in the same namespace
finds its daemon without a path, and nothing is left on disk when a daemon is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from .core import ThrottleError

DEFAULT_CONTROL = "@wtb-throttle"
MAX_REQUEST = 64 * 1024


class ControlError(ThrottleError):
    """The daemon could not be reached or refused a request."""


def sockaddr(address: str) -> str | bytes:
    """`@name` is an abstract socket (this network namespace only); anything else a filesystem path."""
    if not address:
        raise ControlError("empty control socket address")
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def listen(address: str, what: str = "throttle daemon") -> socket.socket:
    """Bind and listen; a stale filesystem socket (nobody listening) is replaced, a live one refused.
    `what` names the daemon in messages (other mechanisms reuse this channel)."""
    addr = sockaddr(address)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if isinstance(addr, str) and os.path.exists(addr):
            try:
                request(address, {"cmd": "ping"}, timeout=1.0, what=what)
            except ControlError:
                os.unlink(addr)
            else:
                raise ControlError(f"another {what} is listening on control socket {address}")
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                raise ControlError(f"control socket {address} is in use: another {what} runs in this "
                                   "network namespace (stop it, or give --control another address)") from None
            raise ControlError(f"cannot bind control socket {address}: {exc.strerror}") from None
        s.listen(16)
        s.setblocking(False)
        return s
    except BaseException:
        s.close()
        raise


def request(address: str, req: dict[str, Any], timeout: float = 5.0,
            what: str = "throttle daemon") -> dict[str, Any]:
    """Send one request to the daemon and return its reply (raises ControlError on failure)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(sockaddr(address))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no {what} is listening on {address} in this network namespace") \
                from None
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        raise ControlError(f"talking to the {what} on {address}: {exc}") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"the daemon on {address} sent no valid reply") from None
    if not reply.get("ok"):
        raise ControlError(f"the daemon refused: {reply.get('error', 'unknown error')}")
    return reply
