"""`serve`: the population of servers the benign workload talks to, in one single-threaded process.

TCP (HTTP-like): the client sends `GET /wl/<i> HTTP/1.0\\r\\nHost: <addr>\\r\\n\\r\\n`; the server answers
`HTTP/1.0 200 OK` with `Content-Length: <answer_bytes>` and that many bytes, then closes. A request that is not
`GET …` gets `HTTP/1.0 400 Bad Request`. UDP (DNS-like): a datagram `WLQ1 <i> <name>` is answered
`WLA1 <i> <pad>` (answer_bytes long); anything else `WLE1 bad-request`.

Every request is logged (JSON lines: `listening`, `request`, `bad_request`, `busy`, `stopped`). Everything is
bounded: 4 KiB and 5 s per request, `max_clients` TCP connections at once (more are closed at once and logged
`busy`), and the process's `lifetime_s`. Listening addresses must lie inside the lab ranges, peers outside
them are ignored, and the testworm environment interlocks run before any socket exists.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass

from testworm.addrs import AddressSet, ip_int
from testworm.errors import InterlockError, WormError
from testworm.eventlog import EventLog
from testworm.interlocks import check_environment

MAX_REQUEST = 4096
REQUEST_TIMEOUT_S = 5.0
_mono = time.monotonic


@dataclass
class _Client:
    sock: socket.socket
    peer: tuple[str, int]
    local: tuple[str, int]
    deadline: float
    buf: bytes = b""
    out: bytes = b""
    sent: int = 0


@dataclass
class Counts:
    tcp: int = 0
    udp: int = 0
    bad: int = 0
    busy: int = 0
    timeouts: int = 0
    outside: int = 0


def parse_http(buf: bytes) -> int | None | bool:
    """The connection index of a complete `GET /wl/<i>` request (None if the path carries none), False when
    the request is not a GET, True when it is not complete yet."""
    if b"\r\n\r\n" not in buf:
        return True
    first = buf.split(b"\r\n", 1)[0].split()
    if len(first) != 3 or first[0] != b"GET" or not first[2].startswith(b"HTTP/"):
        return False
    tail = first[1].rsplit(b"/", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) < 12 else None


def udp_answer(data: bytes, answer_bytes: int) -> tuple[bytes, int | None, bool]:
    """(answer datagram, connection index, ok) for one request datagram."""
    f = data.split()
    if len(f) >= 2 and f[0] == b"WLQ1" and f[1].isdigit() and len(f[1]) < 12:
        head = b"WLA1 " + f[1] + b" "
        return head + b"a" * max(0, answer_bytes - len(head) - 1) + b"\n", int(f[1]), True
    return b"WLE1 bad-request\n", None, False


def http_answer(conn: int | None | bool, answer_bytes: int) -> bytes:
    if conn is False:
        return b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    return (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % answer_bytes) + b"w" * answer_bytes


class Server:
    def __init__(self, tcp: list[tuple[str, int]], udp: list[tuple[str, int]], *, log: str, lab: AddressSet,
                 answer_bytes: int = 512, max_clients: int = 512, lifetime_s: float = 3600.0,
                 override: bool = False):
        for host, _ in tcp + udp:
            if ip_int(host) not in lab:
                raise InterlockError(f"{host} is outside the lab ranges {', '.join(lab.cidrs())}")
        self.override = check_environment(lab, override=override)
        self.tcp, self.udp, self.lab = tcp, udp, lab
        self.answer_bytes, self.max_clients, self.lifetime_s = answer_bytes, max_clients, lifetime_s
        self.log = EventLog(log)
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.counts = Counts()
        self.stop_reason: str | None = None

    def _stop(self, signum, _frame) -> None:
        self.stop_reason = "signal"

    def serve(self) -> str:
        socks = []
        try:
            for host, port in self.tcp:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(1024)
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, ("listen", (host, port)))
                socks.append(s)
            for host, port in self.udp:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((host, port))
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, ("udp", (host, port)))
                socks.append(s)
        except OSError as exc:
            s.close()
            for x in socks:
                x.close()
            self.log.event("stopped", reason="error", error=f"cannot listen: {exc.strerror}")
            self.log.close()
            raise WormError(f"cannot listen: {exc.strerror}") from None
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.log.event("listening", tcp=[f"{h}:{p}" for h, p in self.tcp], udp=[f"{h}:{p}" for h, p in self.udp],
                       answer_bytes=self.answer_bytes, max_clients=self.max_clients, lifetime_s=self.lifetime_s,
                       override=self.override, pid=os.getpid())
        end = _mono() + self.lifetime_s
        try:
            while self.stop_reason is None:
                now = _mono()
                if now >= end:
                    self.stop_reason = "lifetime"
                    break
                for key, ev in self.sel.select(timeout=min(0.5, end - now)):
                    kind, what = key.data  # a listening address, or a client
                    if kind == "listen":
                        self._accept(key.fileobj, what)
                    elif kind == "udp":
                        self._datagram(key.fileobj, what)
                    else:
                        self._client(what, ev)
                self._expire(_mono())
                self.log.flush()
        finally:
            for c in list(self.clients.values()):
                self._close(c)
            for s in socks:
                s.close()
            c = self.counts
            self.log.event("stopped", reason=self.stop_reason, tcp=c.tcp, udp=c.udp, bad=c.bad, busy=c.busy,
                           timeouts=c.timeouts, outside=c.outside)
            self.log.close()
        return self.stop_reason or "error"

    def _inside(self, peer: str) -> bool:
        if ip_int(peer) in self.lab:
            return True
        self.counts.outside += 1
        return False

    def _accept(self, ls: socket.socket, local: tuple[str, int]) -> None:
        for _ in range(64):
            try:
                s, peer = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not self._inside(peer[0]):
                s.close()
                continue
            if len(self.clients) >= self.max_clients:
                self.counts.busy += 1
                self._rec("busy", "tcp", peer, local, None)
                s.close()
                continue
            s.setblocking(False)
            c = _Client(s, peer, local, _mono() + REQUEST_TIMEOUT_S)
            self.clients[s.fileno()] = c
            self.sel.register(s, selectors.EVENT_READ, ("client", c))

    def _client(self, c: _Client, ev: int) -> None:
        try:
            if c.out:
                c.sent += c.sock.send(c.out[c.sent:])
                if c.sent >= len(c.out):
                    self._close(c)
                return
            data = c.sock.recv(MAX_REQUEST + 1 - len(c.buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.buf += data
        parsed = parse_http(c.buf)
        if parsed is True and data and len(c.buf) <= MAX_REQUEST:
            return
        if parsed is True:  # closed before the request was complete, or too long
            self.counts.bad += 1
            self._rec("bad_request", "tcp", c.peer, c.local, None, why="oversized" if data else "incomplete")
            self._close(c)
            return
        if parsed is False:
            self.counts.bad += 1
            self._rec("bad_request", "tcp", c.peer, c.local, None, why="not a GET")
        else:
            self.counts.tcp += 1
            self._rec("request", "tcp", c.peer, c.local, parsed, bytes_in=len(c.buf))
        c.out = http_answer(parsed, self.answer_bytes)
        self.sel.modify(c.sock, selectors.EVENT_WRITE, ("client", c))
        self._client(c, selectors.EVENT_WRITE)

    def _datagram(self, s: socket.socket, local: tuple[str, int]) -> None:
        for _ in range(256):
            try:
                data, peer = s.recvfrom(MAX_REQUEST)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    continue
                return
            if not self._inside(peer[0]):
                continue
            answer, conn, ok = udp_answer(data, self.answer_bytes)
            if ok:
                self.counts.udp += 1
                self._rec("request", "udp", peer, local, conn, bytes_in=len(data))
            else:
                self.counts.bad += 1
                self._rec("bad_request", "udp", peer, local, None, why="not WLQ1")
            try:
                s.sendto(answer, peer)
            except OSError:
                pass

    def _expire(self, now: float) -> None:
        for c in [c for c in self.clients.values() if c.deadline <= now]:
            self.counts.timeouts += 1
            self._rec("bad_request", "tcp", c.peer, c.local, None, why="timeout")
            self._close(c)

    def _close(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _rec(self, event: str, proto: str, peer, local, conn, **more) -> None:
        self.log.event(event, protocol=proto, src=peer[0], sport=peer[1], dst=local[0], dport=local[1],
                       conn=conn, **more)
