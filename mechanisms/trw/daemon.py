"""The TRW daemon: NFQUEUE on the SYNs a placement sends and the answers it gets back. A SYN from a blocked
source is dropped; every other packet is accepted at once (nothing is held), and the answers and timeouts
drive the core's walk. The event log, control socket, capability check and kernel-queue counters are the
throttle's (`throttle.daemon`, `throttle.control`), and so is the rule installation (`throttle.rules`).

Loop: select() over the queue's netlink socket, the control socket and a signal wake-up fd, with the timeout
set to the next first-contact deadline; packets are read in bounded batches.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

from throttle import control
from throttle import rules as iptables
from throttle.core import ThrottleError
from throttle.daemon import DaemonError, EventLog, has_cap_net_admin, kernel_queue_stats

from .core import ConfigError, Event, Trw, TrwConfig
from .rules import HOOKS, MODES, TAG, TrwRuleSpec

DEFAULT_CONTROL = "@wtb-trw"
_PORTS = struct.Struct("!HH").unpack_from
_ntoa = socket.inet_ntoa
_enc = json.encoder.encode_basestring_ascii
NF_LOCAL_OUT, NF_FORWARD = 3, 2
TESTED_HOOK = {"host": NF_LOCAL_OUT, "gateway": NF_FORWARD}


@dataclass(frozen=True)
class DaemonOptions:
    mode: str                                # host | gateway
    queue_num: int = 0
    events: str | None = None
    control: str = DEFAULT_CONTROL
    interface: str | None = None             # host only: -o IF / -i IF
    fail_closed: bool = False
    max_len: int = 65536
    sock_len: int = 8 * 1024 * 1024
    batch: int = 512
    copy_range: int = 128

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        if isinstance(self.queue_num, bool) or not 0 <= self.queue_num <= 65535:
            raise ConfigError(f"queue number must be in 0..65535, got {self.queue_num}")
        if self.interface is not None:
            if self.mode != "host":
                raise ConfigError("--interface is for host mode only (a gateway tests every forwarded SYN)")
            if not (0 < len(self.interface) < 16 and " " not in self.interface):
                raise ConfigError(f"bad interface name {self.interface!r}")


def parse_packet(b: bytes) -> tuple[str, str, str, int, int] | None:
    """(kind, scanner, remote, scanner_port, remote_port): kind `syn` for a SYN the scanner sends, else the
    answer it gets (`established`, `reset`, `unreachable`). None for anything else."""
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 15) * 4
    proto = b[9]
    if proto == 6:
        if len(b) < ihl + 14:
            return None
        flags = b[ihl + 13]
        sport, dport = _PORTS(b, ihl)
        src, dst = _ntoa(b[12:16]), _ntoa(b[16:20])
        if flags & 0x04:
            return "reset", dst, src, dport, sport
        if flags & 0x12 == 0x02:
            return "syn", src, dst, sport, dport
        if flags & 0x12 == 0x12:
            return "established", dst, src, dport, sport
        return None
    if proto == 1 and len(b) >= ihl + 8 + 20 and b[ihl] == 3:
        inner = ihl + 8
        iihl = (b[inner] & 15) * 4
        if b[inner + 9] != 6 or len(b) < inner + iihl + 4:
            return None
        sport, dport = _PORTS(b, inner + iihl)
        return "unreachable", _ntoa(b[inner + 12:inner + 16]), _ntoa(b[inner + 16:inner + 20]), sport, dport
    return None


def _s(v: str | None) -> str:
    return "null" if v is None else _enc(v)


def event_line(e: Event, now: float, wall: float) -> str:
    return (f'{{"event":"{e.event}","t_mono":{now!r},"t_wall":{wall!r},"src":{_s(e.src)},"dst":{_s(e.dst)},'
            f'"sport":{"null" if e.sport is None else e.sport},"dport":{"null" if e.dport is None else e.dport},'
            f'"proto":"tcp","reason":{_s(e.reason)},"llr":{e.llr!r}}}\n')


class _Yield(Exception):
    pass


class TrwDaemon:
    def __init__(self, config: TrwConfig, opts: DaemonOptions):
        opts.validate()
        self.config, self.opts = config, opts
        self.core = Trw(config)
        self._tested_hook = TESTED_HOOK[opts.mode]
        self._stop: str | None = None
        self._nfq: Any = None         # a NetfilterQueue once bound (the binding is imported late)
        self._fd: int | None = None
        self._ctl: socket.socket | None = None
        self._log: EventLog | None = None
        self._rules = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._budget = 0
        self.ignored = 0
        self.started_mono = time.monotonic()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self._teardown(discard_log=True)
            raise

    def _start(self) -> None:
        o = self.opts
        if not has_cap_net_admin():
            raise DaemonError("TRW needs CAP_NET_ADMIN (run it as root) to bind an NFQUEUE and install rules")
        try:
            from netfilterqueue import COPY_PACKET, NetfilterQueue
        except ImportError:
            raise DaemonError("the NetfilterQueue binding is not installed (pip install NetfilterQueue)") from None
        iptables.check_tools()
        self._ctl = control.listen(o.control, "TRW daemon")
        self._log = EventLog(o.events)
        nfq = NetfilterQueue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                nfq.bind(o.queue_num, self._on_packet, max_len=o.max_len, mode=COPY_PACKET, range=o.copy_range,
                         sock_len=o.sock_len)
            except OSError:
                raise DaemonError(f"cannot bind NFQUEUE {o.queue_num}: it is already bound in this network "
                                  "namespace (choose another --queue-num)") from None
        self._nfq, self._fd = nfq, nfq.get_fd()
        self._wake_r, self._wake_w = wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        spec = TrwRuleSpec(o.mode, o.queue_num, o.interface, o.fail_closed, os.getpid())
        try:
            stale = iptables.install(spec, TAG)
        except iptables.RulesOwnedError:
            raise
        except BaseException:
            self._rules = True
            raise
        self._rules = True
        now = time.monotonic()
        self.started_mono = now
        self._log.write({"event": "config", "t_mono": now, "t_wall": time.time(), "mechanism": "trw",
                         "mode": o.mode, **self.config.to_dict(), "protocols": ["tcp"],
                         "queue_num": o.queue_num, "hooks": list(HOOKS[o.mode]), "interface": o.interface,
                         "fail_closed": o.fail_closed, "pid": os.getpid(), "stale_rules_replaced": len(stale)})

    def _teardown(self, discard_log: bool = False) -> list[str]:
        problems = []
        if self._rules:
            try:
                iptables.remove(TAG)
            except ThrottleError as exc:
                problems.append(str(exc))
            self._rules = False
        if self._nfq is not None:
            self._nfq.unbind()
            self._nfq = None
        for s in (self._wake_r, self._wake_w, self._ctl):
            if s is not None:
                s.close()
        self._ctl = None
        if self._log is not None:
            if not discard_log:
                self._log.write({"event": "stop", "t_mono": time.monotonic(), "t_wall": time.time(),
                                 "reason": self._stop or "error", "counts": dict(self.core.counts)})
            self._log.close(discard=discard_log)
            self._log = None
        return problems

    def _on_packet(self, pkt) -> None:
        now = time.monotonic()
        p = parse_packet(pkt.get_payload())
        if p is None:
            self.ignored += 1
            pkt.accept()
        elif p[0] == "syn":
            if pkt.hook != self._tested_hook:       # the gateway's own, or an inbound SYN
                pkt.accept()
            else:
                d = self.core.syn(p[1], p[2], p[3], p[4], now)
                pkt.drop() if d.verdict == "drop" else pkt.accept()
                self._write(d.events, now)
        else:
            pkt.accept()
            self._write(self.core.answer(p[1], p[2], p[0], now, p[3], p[4]), now)
        self._budget -= 1
        if self._budget <= 0:
            raise _Yield

    def _write(self, events: list[Event], now: float) -> None:
        log = self._log
        if events and log is not None and log.fd is not None:
            wall = time.time()
            log.line("".join(event_line(e, now, wall) for e in events))

    def status(self) -> dict[str, Any]:
        o = self.opts
        return {"mechanism": "trw", "mode": o.mode, "pid": os.getpid(), "queue_num": o.queue_num,
                "config": self.config.to_dict(), "uptime_s": time.monotonic() - self.started_mono,
                "sources": self.core.status(), "counts": dict(self.core.counts), "ignored": self.ignored,
                "kernel_queue": kernel_queue_stats(o.queue_num)}

    def _handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd, now = req.get("cmd"), time.monotonic()
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            self._write(self.core.advance(now), now)
            return {"ok": True, "status": self.status()}
        if cmd == "reset":
            src = req.get("src")
            if src is not None and not isinstance(src, str):
                return {"ok": False, "error": "src must be an address or null"}
            self._write(self.core.reset(src, now), now)
            return {"ok": True, "dropped": 0, "src": src}
        return {"ok": False, "error": f"unknown command {cmd!r}; known: status, reset, ping"}

    def _serve(self) -> None:
        assert self._ctl is not None
        try:
            c, _ = self._ctl.accept()
        except OSError:
            return
        with c:
            deadline = time.monotonic() + 1.0       # a slow client costs the loop at most ~1 s
            try:
                buf = b""
                for _ in range(64):                  # bounded: at most 64 reads of a request line
                    c.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = c.recv(65536)
                    buf += chunk
                    if not chunk or b"\n" in buf or len(buf) >= control.MAX_REQUEST:
                        break
                try:
                    reply = self._handle(json.loads(buf.split(b"\n", 1)[0]))
                except ValueError:
                    reply = {"ok": False, "error": "request is not JSON"}
                c.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def loop(self) -> None:
        assert self._fd is not None and self._ctl is not None and self._nfq is not None and self._wake_r is not None
        nl, ctl, wake, nfq, core = self._fd, self._ctl, self._wake_r, self._nfq, self.core
        watched: list[Any] = [nl, ctl, wake]      # the queue's netlink fd, the control socket, the wake-up pipe
        while self._stop is None:
            due = core.next_due()
            timeout = 1.0 if due is None else min(1.0, max(0.0, due - time.monotonic()))
            r, _, _ = select.select(watched, [], [], timeout)
            now = time.monotonic()
            due = core.next_due()
            if due is not None and due <= now:
                self._write(core.advance(now), now)
            if nl in r:
                self._budget = self.opts.batch
                try:
                    nfq.run(block=False)
                except _Yield:
                    pass
            if wake in r:
                try:
                    wake.recv(4096)
                except OSError:
                    pass
            if ctl in r:
                self._serve()

    def run(self) -> int:
        old = {s: signal.signal(s, lambda n, f: self._stop_on(signal.Signals(n).name))
               for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
        except BaseException:
            for s, h in old.items():
                signal.signal(s, h)
            raise
        assert self._wake_w is not None
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        status = 0
        try:
            self.loop()
        except Exception as exc:
            self._stop = f"error: {exc!r}"
            print(f"trw: error: {exc!r}", file=sys.stderr)
            status = 1
        finally:
            signal.set_wakeup_fd(old_wakeup)
            problems = self._teardown()
            for s, h in old.items():
                signal.signal(s, h)
        for p in problems:
            print(f"trw: error while stopping: {p}", file=sys.stderr)
            status = 1
        return status

    def _stop_on(self, reason: str) -> None:
        self._stop = reason
        self._budget = 0
