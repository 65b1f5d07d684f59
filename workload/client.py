"""`run`: one benign session — the schedule's connections opened on time and logged, one `conn` line each.

The pacing is testworm's (`pacing.run_loop`: absolute due times, a late connection goes out as soon as possible
and does not delay the ones after it, at most `max_in_flight` at once) and so is the waiting
(`drivers.coarse`/`sleep_until`). Every destination passes testworm's `TargetGuard` (the allow-list) before its
socket is created, and the environment interlocks run before the first socket exists.

TCP: `connect()` (non-blocking) → established (epoll, SO_ERROR) → `GET /wl/<i>` → the answer read to EOF.
UDP: a connected datagram socket per connection (its own source port, so the first datagram of each flow is
one connection start on the wire) → `WLQ1 <i>` → the answer datagram. Outcomes: `ok`, `refused` (RST, or ICMP
port unreachable on UDP), `reset` (RST after the handshake), `timeout` (no connection or no answer within
`timeout_s`; `stage` says which), `unreachable` (with `errno`), `bad_answer`.

Log line (docs/workload.md): `t_mono`/`t_wall` = when connect() (TCP) or send() (UDP) was called; `due_mono`
and `due_wall` = when the schedule wanted it; `t_established_mono`, `t_answer_mono` (first answer byte),
`t_done_mono`; addresses and ports; `outcome`.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import resource
import select
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from testworm.addrs import ip_int
from testworm.drivers import coarse, sleep_until
from testworm.eventlog import EventLog
from testworm.interlocks import TargetGuard, check_environment
from testworm.pacing import run_loop

from .params import Scope
from .schedule import Conn, fingerprint

MAX_ANSWER_READ = 4 << 20
_mono, _wall = time.monotonic, time.time
_IN, _OUT, _ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
OUTCOME_BY_ERRNO = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout", errno.ECONNRESET: "reset"}


@dataclass
class Flow:
    c: Conn
    sock: socket.socket
    due: float
    t0: float
    tw: float
    deadline: float
    src: str = ""
    sport: int = 0
    t_est: float | None = None
    t_answer: float | None = None
    head: bytes = b""
    got: int = 0
    done: bool = False


def request(c: Conn) -> bytes:
    if c.protocol == "udp":
        return f"WLQ1 {c.i} wl{c.i}.lab\n".encode()
    return f"GET /wl/{c.i} HTTP/1.0\r\nHost: {c.addr}\r\n\r\n".encode()


def answer_ok(c: Conn, head: bytes) -> bool:
    if c.protocol == "udp":
        return head.startswith(f"WLA1 {c.i} ".encode())
    return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


class Driver:
    """The I/O engine under testworm's `run_loop`: launch(i), wait(until), abort(), in_flight."""

    def __init__(self, conns: Sequence[Conn], log: EventLog, timeout_s: float):
        self.conns, self.log, self.timeout = conns, log, timeout_s
        self.ep = select.epoll()
        self.flows: dict[int, Flow] = {}
        self.heap: list[tuple[float, int, Flow]] = []
        self.outcomes: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self.flows)

    def launch(self, i: int, dst: int, due: float) -> None:
        c = self.conns[i]
        tcp = c.protocol == "tcp"
        s = socket.socket(socket.AF_INET, (socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) | socket.SOCK_NONBLOCK)
        err = 0
        if tcp:
            t0, tw = _mono(), _wall()
            err = s.connect_ex((c.addr, c.port))
        else:
            err = s.connect_ex((c.addr, c.port))  # a route look-up: nothing is sent
            t0, tw = _mono(), _wall()
            if not err:
                try:
                    s.send(request(c))
                except OSError as exc:
                    err = exc.errno or errno.EIO
        f = Flow(c, s, due, t0, tw, t0 + self.timeout)
        try:
            f.src, f.sport = s.getsockname()[:2]
        except OSError:
            pass
        if err not in (0, errno.EINPROGRESS):
            self._finish(f, OUTCOME_BY_ERRNO.get(err, "unreachable"), err=err)
            s.close()
            return
        self.flows[s.fileno()] = f
        self.ep.register(s.fileno(), (_OUT if tcp else _IN) | _ERR)
        heapq.heappush(self.heap, (f.deadline, i, f))

    def wait(self, until: float) -> None:
        """One turn: write the finished lines, block until `until` or the next timeout (coarse epoll, then a
        precise final approach), handle what completed, expire what timed out. run_loop calls it again."""
        self.log.flush()
        nxt = min(until, self.heap[0][0]) if self.heap else until
        t = nxt - _mono()
        block = coarse(t) if t > 0 else 0.0
        if block is None:
            sleep_until(nxt)
            block = 0.0
        for fd, ev in self.ep.poll(block, 256):
            f = self.flows.get(fd)
            if f is not None:
                self._event(f, ev)
        self._expire(_mono())

    def _event(self, f: Flow, ev: int) -> None:
        s, c = f.sock, f.c
        if c.protocol == "tcp" and f.t_est is None:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._end(f, OUTCOME_BY_ERRNO.get(err, "unreachable"), err=err)
                return
            f.t_est = _mono()
            try:
                s.send(request(c))
            except OSError as exc:
                self._end(f, OUTCOME_BY_ERRNO.get(exc.errno, "unreachable"), err=exc.errno or 0)
                return
            self.ep.modify(s.fileno(), _IN | _ERR)
            return
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(f, OUTCOME_BY_ERRNO.get(exc.errno, "unreachable"), err=exc.errno or 0)
            return
        if data and f.t_answer is None:
            f.t_answer = _mono()
        if len(f.head) < 64:
            f.head += data[:64 - len(f.head)]
        f.got += len(data)
        if c.protocol == "udp" or not data or f.got > MAX_ANSWER_READ:
            self._end(f, "ok" if answer_ok(c, f.head) else "bad_answer")

    def _expire(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            _, _, f = heapq.heappop(self.heap)
            if not f.done:
                self._end(f, "timeout", stage="answer" if f.t_est is not None or f.c.protocol == "udp"
                          else "connect")

    def _end(self, f: Flow, outcome: str, **extra) -> None:
        self.flows.pop(f.sock.fileno(), None)
        try:
            self.ep.unregister(f.sock.fileno())
        except (OSError, ValueError):
            pass
        f.sock.close()
        self._finish(f, outcome, **extra)

    def _finish(self, f: Flow, outcome: str, err: int = 0, **extra) -> None:
        f.done = True
        c = f.c
        rec = {"event": "conn", "t_mono": f.t0, "t_wall": f.tw, "i": c.i, "t_sched": c.t, "page": c.page,
               "server": c.server, "due_mono": f.due, "due_wall": f.due + (f.tw - f.t0),
               "t_established_mono": f.t_est, "t_answer_mono": f.t_answer, "t_done_mono": _mono(),
               "src": f.src, "sport": f.sport, "dst": c.addr, "dport": c.port, "protocol": c.protocol,
               "outcome": outcome, "bytes": f.got}
        if c.miss:
            rec["miss"] = True
        if err and outcome == "unreachable":
            rec["errno"] = errno.errorcode.get(err, str(err))
        rec.update(extra)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.log.add(json.dumps(rec) + "\n")

    def abort(self) -> None:
        for f in list(self.flows.values()):
            self._end(f, "timeout", aborted=True,
                      stage="answer" if f.t_est is not None or f.c.protocol == "udp" else "connect")
        self.log.flush()


class _Due:
    """testworm's run_loop asks a schedule for `start` and `due(i)`."""

    def __init__(self, start: float, conns: Sequence[Conn]):
        self.start, self.conns = start, conns

    def due(self, i: int) -> float:
        return self.start + self.conns[i].t if i < len(self.conns) else float("inf")


def run_session(conns: Sequence[Conn], scope: Scope, log_path: str, *, timeout_s: float = 10.0,
                max_in_flight: int = 256, lifetime_s: float | None = None, params: dict | None = None,
                override: bool = False, lead_s: float = 0.05) -> tuple[str, dict[str, int]]:
    """Run the schedule; return (stop reason, outcome counts). Reasons: `done`, `lifetime`, `signal`."""
    guard = TargetGuard(scope.allow)
    for c in conns:  # every destination is checked once up front (exit 2 before anything starts) …
        guard(ip_int(c.addr))
    problems = check_environment(scope.lab, override=override)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max_in_flight + 64 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_in_flight + 64, hard))
    span = conns[-1].t if conns else 0.0
    lifetime = lifetime_s if lifetime_s is not None else span + timeout_s + 1.0
    log = EventLog(log_path)
    stopping: list[str] = []
    old = {s: signal.signal(s, lambda *_: stopping.append("signal")) for s in (signal.SIGTERM, signal.SIGINT)}
    drv = Driver(conns, log, timeout_s)
    start = _mono() + lead_s
    log.event("start", pid=os.getpid(), start_mono=start, start_wall=start + (_wall() - _mono()),
              connections=len(conns), fingerprint=fingerprint(conns), override=problems,
              params={**(params or {}), "allow": scope.allow.cidrs(), "lab_ranges": scope.lab.cidrs(),
                      "timeout_s": timeout_s, "max_in_flight": max_in_flight, "lifetime_s": lifetime})
    reason = "error"
    try:
        if conns:  # … and each again by run_loop immediately before its socket is created
            reason, _ = run_loop(drv, (ip_int(c.addr) for c in conns), _Due(start, conns),
                                 max_attempts=len(conns), lifetime_s=lifetime, max_in_flight=max_in_flight,
                                 clock=_mono, guard=guard, stop=lambda: stopping[0] if stopping else None)
        else:
            reason = "max_attempts"
        reason = "done" if reason in ("max_attempts", "targets_exhausted") else reason
    finally:
        drv.log.flush()
        log.event("stop", reason=reason, launched=sum(drv.outcomes.values()), outcomes=drv.outcomes)
        log.close()
        for s, h in old.items():
            signal.signal(s, h)
    return reason, drv.outcomes
