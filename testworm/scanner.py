"""One scan, start to stop: interlocks, own address, target generator, driver, the loop, the log's start and
stop records, signals (SIGUSR1 = killed, SIGTERM/SIGINT = signal) and the infection worker, which hands a
connected socket's peer a trigger with generation + 1 (nothing is copied and nothing exploited: the peer is
only "infected" if it already runs the test-worm server and accepts the authenticated trigger).
"""

from __future__ import annotations

import ctypes
import os
import queue
import resource
import signal
import socket
import threading
import time
from typing import Any

from .addrs import ip_int, ip_str
from .client import read_line
from .drivers import TcpDriver, UdpDriver
from .errors import InterlockError, ProtocolError, UsageError
from .eventlog import EventLog
from .interlocks import TargetGuard, check_environment
from .pacing import Schedule, run_loop
from .params import ScanParams
from .protocol import decode_reply, encode_request
from .strategies import derive_seed, make_targets

MAX_INFECTIONS = 1024  # distinct peers one scanner will trigger
INFECT_TIMEOUT_S = 3.0
PR_SET_PDEATHSIG, PR_SET_TIMERSLACK = 1, 29


def prctl(option: int, arg: int) -> bool:
    """Best-effort Linux prctl (stdlib ctypes); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def wire_params(p: ScanParams) -> dict[str, Any]:
    """The params a trigger carries: everything but what the receiving server decides for itself."""
    d = p.to_dict()
    for k in ("generation", "lab_ranges"):
        d.pop(k)
    return d


def own_address(p: ScanParams, source: str | None) -> int:
    """This host's address towards the targets: --source, or the kernel's route choice for the first target
    (a UDP connect() is a route look-up and sends nothing)."""
    if source is not None:
        return ip_int(source)
    first = p.hit_list[0] if p.strategy == "hit-list" else p.targets.nth(0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((ip_str(first), p.port))
        return ip_int(s.getsockname()[0])
    except OSError as exc:
        raise UsageError(f"no route from this host to the targets ({ip_str(first)}: {exc.strerror})") from None
    finally:
        s.close()


class Infector:
    """A worker thread that sends one trigger (generation + 1) over each connected scan socket it is offered."""

    def __init__(self, key: bytes, p: ScanParams, own: int, log: EventLog):
        self.key, self.p, self.own, self.log = key, p, own, log
        self.seen: set[int] = set()
        self.closing = False
        self.q: queue.Queue = queue.Queue(maxsize=256)
        self.thread = threading.Thread(target=self._run, name="testworm-infector", daemon=True)
        self.thread.start()

    def offer(self, sock: socket.socket, dst: int) -> bool:
        if dst == self.own or dst in self.seen or len(self.seen) >= MAX_INFECTIONS:
            return False
        try:
            self.q.put_nowait((sock, dst))
        except queue.Full:
            return False
        self.seen.add(dst)
        return True

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.closing:  # the scan has ended: drop what is left, do not start new exchanges
                item[0].close()
                continue
            self._infect(*item)

    def _infect(self, sock: socket.socket, dst: int) -> None:
        gen = self.p.generation + 1
        dst_s = ip_str(dst)
        params = {**wire_params(self.p), "seed": derive_seed(self.p.seed, dst_s)}
        ok, detail = False, ""
        try:
            line, nonce = encode_request(self.key, "trigger", to=f"{dst_s}:{self.p.port}", generation=gen,
                                         params=params)
            sock.setblocking(True)
            sock.settimeout(INFECT_TIMEOUT_S)
            sock.sendall(line)
            body = decode_reply(self.key, nonce, read_line(sock))
            ok = body.get("ok") is True
            detail = str(body.get("error") or (body.get("state") or {}).get("state", ""))
        except (OSError, ProtocolError, UsageError) as exc:
            detail = str(exc) or type(exc).__name__
        finally:
            sock.close()
        self.log.event("infect", dst=dst_s, dport=self.p.port, generation=gen, ok=ok, reply=detail)

    def close(self, drain: bool, timeout: float = 5.0) -> None:
        """Finish the triggers already queued (drain, within `timeout`) or only the one under way."""
        self.closing = not drain
        try:
            self.q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.thread.join(timeout)
        self.closing = True


class _Stop:
    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason

    def handler(self, reason: str):
        def h(signum: int, frame: object) -> None:
            self.reason = self.reason or reason
        return h


def run_scan(p: ScanParams, log_path: str, *, key: bytes | None = None, source: str | None = None,
             override: bool = False) -> tuple[str, int]:
    """Run one scan to its end; return (stop reason, attempts). Raises InterlockError/UsageError when
    refused before anything was sent (no log is written then)."""
    overridden = check_environment(p.lab_ranges, override=override)
    own = own_address(p, source)
    targets = make_targets(p.strategy, p.targets, seed=p.seed, own=own, start=p.start, hits=p.hit_list,
                           weights=p.local_weights)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = p.max_in_flight + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY
                                                    else need, hard))
    prctl(PR_SET_TIMERSLACK, 1)  # wake from sleeps within ~µs, not the default 50 µs

    stop = _Stop()
    for sig, why in ((signal.SIGUSR1, "killed"), (signal.SIGTERM, "signal"), (signal.SIGINT, "signal")):
        signal.signal(sig, stop.handler(why))
    infecting = key is not None and p.protocol == "tcp" and p.generation < p.max_generations
    log = EventLog(log_path)
    infector = Infector(key, p, own, log) if infecting and key is not None else None
    log.event("start", pid=os.getpid(), generation=p.generation,
              params={**p.to_dict(), "source": ip_str(own), "infect": infecting, "override": overridden})
    if p.protocol == "tcp":
        driver: TcpDriver | UdpDriver = TcpDriver(p.port, p.connect_timeout_s, log, p.generation,
                                                  infector.offer if infector else None, rate=p.rate)
    else:
        driver = UdpDriver(p.port, p.udp_size, log, p.generation, ip_str(own), rate=p.rate)
    reason, n, extra = "error", 0, {}
    try:
        reason, n = run_loop(driver, targets, Schedule(time.monotonic(), p.rate, p.burst),
                             max_attempts=p.max_attempts, lifetime_s=p.lifetime_s, max_in_flight=p.max_in_flight,
                             clock=time.monotonic, guard=TargetGuard(p.allow), stop=stop)
    except Exception as exc:  # the stop record says why; the CLI turns it into one line and an exit code
        extra = {"error": str(exc) if isinstance(exc, InterlockError) else f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        driver.close()
        if infector:  # a scan that ran its course finishes its triggers; a stopped one does not
            infector.close(drain=reason in ("max_attempts", "targets_exhausted"))
        log.event("stop", reason=reason, attempts=n, **extra)
        log.close()
    return reason, n
