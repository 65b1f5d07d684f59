"""The I/O engines under the scan loop: a TCP connect scanner on non-blocking sockets and epoll, and a UDP
sender (one datagram per target). Each logs one `attempt` line per target when its outcome is known.

Precise waiting, in two phases. Coarse: epoll (TCP) or sleep (UDP) until a margin before the next due time;
the margin is 1.5 ms (epoll rounds timeouts up to whole ms) or a quarter of the wait, whichever is larger,
because on a busy VM a long sleep sometimes overshoots by milliseconds. Final approach (≤ 2.5 ms): sleep
(nanosleep; the scanner lowers the timer slack) until 100 µs before, then spin: a wake-up from sleep is late
by ~40-90 µs here, a spin by ~1 µs. Above 1,000 attempts/s there is no spin (see SPIN_MAX_RATE). Waits are
capped at 50 ms so that stop signals are noticed promptly.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections import deque
from collections.abc import Callable

from .addrs import ip_str
from .eventlog import EventLog

MAX_WAIT_S = 0.05
POLL_MARGIN_S = 0.0015
SPIN_S = 0.0001
# Above this rate the final approach sleeps instead of spinning: attempts are < 1 ms apart, a spin would eat
# most of a core (a throttle under test may share it), and late wake-ups only batch attempts that fell due
# together — the schedule stays absolute, so the rate does not change.
SPIN_MAX_RATE = 1000.0

# ECONNRESET can only follow an established connection (a reset SYN gives ECONNREFUSED): it connected.
OUTCOME_BY_ERRNO = {0: "connected", errno.ECONNRESET: "connected", errno.ECONNREFUSED: "refused",
                    errno.ETIMEDOUT: "timeout"}

_mono, _wall, _sleep = time.monotonic, time.time, time.sleep
_EPOLLOUT = select.EPOLLOUT
_SOCK_TCP = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# an attempt in flight: (sock, i, dst, t0, tw, due, src, sport), the arguments of TcpDriver._finish before err
_Flight = tuple[socket.socket, int, int, float, float, float, str, int]


def coarse(t: float) -> float | None:
    """How long to block in the coarse phase of a wait of t seconds; None: go to the final approach."""
    if t <= POLL_MARGIN_S + 0.001:
        return None
    return min(MAX_WAIT_S, t - max(POLL_MARGIN_S, 0.25 * t))


def sleep_until(until: float, spin: float = SPIN_S) -> None:
    """Sleep until `spin` before `until`, then spin to it."""
    t = until - _mono()
    if t > spin:
        _sleep(t - spin)
    while _mono() < until:
        pass


def _attempt_line(i: int, t0: float, tw: float, due: float, done: float, src: str, sport: int, dst: str,
                  dport: int, protocol: str, outcome: str, gen: int, err: int = 0, aborted: bool = False) -> str:
    extra = ""
    if err and outcome == "unreachable":
        extra += f', "errno": "{errno.errorcode.get(err, err)}"'
    if aborted:
        extra += ', "aborted": true'
    return (f'{{"event": "attempt", "i": {i}, "t_mono": {t0!r}, "t_wall": {tw!r}, "due_mono": {due!r}, '
            f'"t_done_mono": {done!r}, "src": "{src}", "sport": {sport}, "dst": "{dst}", "dport": {dport}, '
            f'"protocol": "{protocol}", "outcome": "{outcome}", "generation": {gen}{extra}}}\n')


class TcpDriver:
    """Connect scanning: socket → connect_ex (EINPROGRESS) → epoll for writability → SO_ERROR → close.

    `on_connected(sock, dst)` may take over a connected socket (the infection worker); it returns True
    when it did, and then owns it.
    """

    def __init__(self, port: int, connect_timeout_s: float, log: EventLog, generation: int,
                 on_connected: Callable[[socket.socket, int], bool] | None = None, rate: float = 1.0):
        self.port, self.timeout, self.log, self.gen = port, connect_timeout_s, log, generation
        self.spin = SPIN_S if rate <= SPIN_MAX_RATE else 0.0
        self.on_connected = on_connected
        self.ep = select.epoll()
        self.flight: dict[int, _Flight] = {}  # by socket fd
        self.deadlines: deque[tuple[float, int, int]] = deque()  # (deadline, fd, i), in launch order
        # The next attempt's socket, made before the final approach: after a sleep, socket() takes ~40 µs
        # (cold caches) against ~4 µs hot, and that would be added to every attempt's start time.
        self.spare: socket.socket | None = None

    @property
    def in_flight(self) -> int:
        return len(self.flight)

    def launch(self, i: int, dst: int, due: float) -> None:
        s, self.spare = self.spare or socket.socket(socket.AF_INET, _SOCK_TCP), None
        dst_s = ip_str(dst)
        tw = _wall()
        t0 = _mono()
        err = s.connect_ex((dst_s, self.port))
        if err == errno.EINPROGRESS:
            src, sport = s.getsockname()
            fd = s.fileno()
            self.ep.register(fd, _EPOLLOUT)
            self.flight[fd] = (s, i, dst, t0, tw, due, src, sport)
            self.deadlines.append((t0 + self.timeout, fd, i))
            return
        try:
            src, sport = s.getsockname()
        except OSError:
            src, sport = "0.0.0.0", 0
        self._finish(s, i, dst, t0, tw, due, src, sport, err)

    def _finish(self, s: socket.socket, i: int, dst: int, t0: float, tw: float, due: float, src: str,
                sport: int, err: int, outcome: str | None = None, aborted: bool = False) -> None:
        done = _mono()
        if outcome is None:
            outcome = OUTCOME_BY_ERRNO.get(err, "unreachable")
        kept = outcome == "connected" and self.on_connected is not None and self.on_connected(s, dst)
        if not kept:
            s.close()
        self.log.add(_attempt_line(i, t0, tw, due, done, src, sport, ip_str(dst), self.port, "tcp", outcome,
                                   self.gen, err, aborted))

    def _head_deadline(self) -> float | None:
        dl, flight = self.deadlines, self.flight
        while dl:
            _, fd, i = dl[0]
            rec = flight.get(fd)
            if rec is not None and rec[1] == i:
                return dl[0][0]
            dl.popleft()  # that attempt already finished
        return None

    def wait(self, until: float) -> None:
        now = _mono()
        head = self._head_deadline()
        t = min(until, head) - now if head is not None else until - now
        block = coarse(t)
        events = self.ep.poll(block or 0)
        flight, unregister = self.flight, self.ep.unregister
        for fd, _ev in events:
            rec = flight.pop(fd, None)
            if rec is None:
                continue
            s = rec[0]
            unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._finish(s, *rec[1:], err)
        if head is not None:
            self._expire(_mono())
        self.log.flush()  # before the final approach, so that writing never delays a launch
        if block is None and not events and t > 0:
            if self.spare is None:
                self.spare = socket.socket(socket.AF_INET, _SOCK_TCP)
            sleep_until(now + t, self.spin)

    def _expire(self, now: float) -> None:
        dl, flight = self.deadlines, self.flight
        while dl and dl[0][0] <= now:
            _, fd, i = dl.popleft()
            rec = flight.get(fd)
            if rec is None or rec[1] != i:
                continue
            del flight[fd]
            self.ep.unregister(fd)
            self._finish(*rec, errno.ETIMEDOUT, "timeout")

    def abort(self) -> None:
        for fd, rec in list(self.flight.items()):
            self.ep.unregister(fd)
            self._finish(*rec, errno.ETIMEDOUT, "timeout", aborted=True)
        self.flight.clear()
        self.deadlines.clear()
        self.log.flush()

    def close(self) -> None:
        self.abort()
        if self.spare is not None:
            self.spare.close()
        self.ep.close()


class UdpDriver:
    """One datagram per target from one socket (as Slammer did): outcome `sent`, or `unreachable` when the
    kernel refuses it at once (no route, EACCES for a broadcast address, …). ICMP errors are not awaited."""

    def __init__(self, port: int, size: int, log: EventLog, generation: int, src: str, rate: float = 1.0):
        self.port, self.log, self.gen, self.src = port, log, generation, src
        self.spin = SPIN_S if rate <= SPIN_MAX_RATE else 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.sport = self.sock.getsockname()[1]
        self.payload = (b"testworm benign probe generation %d " % generation).ljust(size, b".")[:size]

    in_flight = 0

    def launch(self, i: int, dst: int, due: float) -> None:
        dst_s = ip_str(dst)
        addr = (dst_s, self.port)
        tw = _wall()
        t0 = _mono()
        err = 0
        try:
            self.sock.sendto(self.payload, addr)
        except BlockingIOError:  # send buffer full: wait briefly for room, once
            select.select([], [self.sock], [], MAX_WAIT_S)
            try:
                self.sock.sendto(self.payload, addr)
            except OSError as exc:
                err = exc.errno or errno.EIO
        except OSError as exc:
            err = exc.errno or errno.EIO
        done = _mono()
        self.log.add(_attempt_line(i, t0, tw, due, done, self.src, self.sport, dst_s, self.port, "udp",
                                   "unreachable" if err else "sent", self.gen, err))

    def wait(self, until: float) -> None:
        self.log.flush()
        block = coarse(until - _mono())
        if block is None:
            sleep_until(until, self.spin)
        else:
            _sleep(block)

    def abort(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self.log.flush()
        self.sock.close()
