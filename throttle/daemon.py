"""The NFQUEUE daemon: puts the core between the kernel and the wire, in host mode (OUTPUT) or gateway mode
(FORWARD), holds queued packets until the core releases (accept) or blocks (drop) them, and writes the
JSON-lines event log. Runs on Python 3 plus NetfilterQueue only.

Loop: one select() over the queue's netlink socket, the control socket and a signal wake-up fd, with the
timeout set to the core's next release; packets are read in bounded batches so neither releases, control
requests nor SIGTERM wait behind a flood (every submit also releases whatever fell due first).
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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import control, rules
from .core import ConfigError, Event, Request, Throttle, ThrottleConfig, ThrottleError

if TYPE_CHECKING:
    from netfilterqueue import NetfilterQueue  # imported when the daemon starts: it needs the C library

_UNPACK_PORTS = struct.Struct("!HH").unpack_from
_inet_ntoa = socket.inet_ntoa
_encode_str = json.encoder.encode_basestring_ascii


class DaemonError(ThrottleError):
    """The daemon cannot start or run (permission, queue already bound, binding missing, …)."""


@dataclass(frozen=True)
class DaemonOptions:
    mode: str                               # host | gateway | wire
    queue_num: int = 0
    events: str | None = None               # JSON-lines path, "-" for stdout, None for no log
    control: str = control.DEFAULT_CONTROL
    protocols: tuple[str, ...] = ("tcp", "udp")
    interface: str | None = None            # host: -o IF, gateway: -i IF
    fail_closed: bool = False               # no --queue-bypass: packets drop while no daemon listens
    max_len: int = 65536                    # kernel queue length (NetfilterQueue's default 1024 drops)
    sock_len: int = 8 * 1024 * 1024         # netlink receive buffer (bytes, SO_RCVBUFFORCE)
    batch: int = 512                        # packets read per select() wake-up
    copy_range: int = 128                   # bytes of each packet copied to user space (headers)

    def validate(self) -> None:
        """Raise ConfigError for an invalid option (before anything is acquired)."""
        if self.mode not in rules.HOOKS:
            raise ConfigError(f"unknown mode {self.mode!r}; known: host, gateway, wire")
        if self.mode == "wire" and not self.interface:
            raise ConfigError("wire mode needs --interface: the bridge port the host's frames enter by "
                              "(a VM's tap, or a namespace host's switch-side veth)")
        if isinstance(self.queue_num, bool) or not 0 <= self.queue_num <= 65535:
            raise ConfigError(f"queue number must be in 0..65535, got {self.queue_num}")
        if not self.protocols or any(p not in ("tcp", "udp") for p in self.protocols):
            raise ConfigError(f"protocols must be a non-empty subset of tcp,udp, got {','.join(self.protocols)}")
        if len(set(self.protocols)) != len(self.protocols):
            raise ConfigError("a protocol is listed twice")
        if self.interface is not None and not (0 < len(self.interface) < 16 and " " not in self.interface):
            raise ConfigError(f"bad interface name {self.interface!r}")


def parse_packet(b: bytes) -> tuple[str, str, int, int, str] | str:
    """(src, dst, sport, dport, proto) of an IPv4 TCP SYN (without ACK) or UDP packet, else why not."""
    if len(b) < 20 or b[0] >> 4 != 4:
        return "not-ipv4"
    ihl = (b[0] & 15) * 4
    proto = b[9]
    if proto == 6:
        if len(b) < ihl + 14:
            return "short"
        if b[ihl + 13] & 0x12 != 0x02:
            return "not-syn"
        name = "tcp"
    elif proto == 17:
        if len(b) < ihl + 4:
            return "short"
        name = "udp"
    else:
        return "other-protocol"
    sport, dport = _UNPACK_PORTS(b, ihl)
    return _inet_ntoa(b[12:16]), _inet_ntoa(b[16:20]), sport, dport, name


def has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    return os.geteuid() == 0


def kernel_queue_stats(queue_num: int) -> dict[str, int] | None:
    """This namespace's counters for one NFQUEUE (queue_dropped: kernel queue full; user_dropped: netlink
    buffer overrun; id_sequence: packets ever queued)."""
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 8 and int(f[0]) == queue_num:
                    return {"portid": int(f[1]), "queue_total": int(f[2]), "queue_dropped": int(f[5]),
                            "user_dropped": int(f[6]), "id_sequence": int(f[7])}
    except (OSError, ValueError):
        pass
    return None


class _Yield(Exception):
    """Raised by the packet callback after a batch: NetfilterQueue.run() propagates it, and we are back in
    our loop (the packet that raised already has its verdict)."""


def _jstr(v: str | None) -> str:
    return "null" if v is None else _encode_str(v)


def _jnum(v: float | int | None) -> str:
    return "null" if v is None else repr(v)


def state_line(core: Throttle, config: ThrottleConfig, why: str, now: float, wall: float) -> dict[str, Any]:
    """The `state` line: what the mechanism holds at a moment the runner names (`why`: e.g. `worm` just
    before the worm is triggered) — per source its working set and the state that makes (fresh, partial,
    full: as `initial_state` says of the configured start), and its queue. A source the throttle has not
    seen holds the configured initial working set: `default`."""
    n = config.working_set_size

    def state(ws: list) -> str:
        return "fresh" if not ws else "full" if len(ws) >= n else "partial"
    sources = {src: {"working_set": st["working_set"], "state": state(st["working_set"]),
                     "queue_len": st["queue_len"], "blocked": st["blocked"]}
               for src, st in core.status().items()}
    default = list(config.initial_working_set)
    return {"event": "state", "t_mono": now, "t_wall": wall, "why": why, "sources": sources,
            "default": {"working_set": default, "state": state(default)}}


def event_line(e: Event, now: float, wall: float) -> str:
    """One decision as a JSON line (hand-built: json.dumps costs more than the decision itself)."""
    due = f',"due_mono":{e.t!r}' if e.event == "released" else ""
    return (f'{{"event":"{e.event}","t_mono":{now!r},"t_wall":{wall!r},"src":{_jstr(e.src)},'
            f'"dst":{_jstr(e.dst)},"sport":{_jnum(e.sport)},"dport":{_jnum(e.dport)},"proto":{_jstr(e.proto)},'
            f'"queue_len":{e.queue_len},"reason":{_jstr(e.reason)}{due}}}\n')


class EventLog:
    """JSON lines, one write(2) per line (an unbuffered append: nothing finished is lost to a SIGKILL)."""

    def __init__(self, path: str | None):
        self.path = path
        self.created = False
        self.fd: int | None = None
        if path is None:
            return
        if path == "-":
            self.fd = sys.stdout.fileno()
            return
        self.created = not os.path.exists(path)
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DaemonError(f"cannot open event log {path}: {exc.strerror}") from None

    def write(self, obj: dict[str, Any]) -> None:
        self.line(json.dumps(obj, separators=(",", ":")) + "\n")

    def line(self, text: str) -> None:
        if self.fd is not None:
            os.write(self.fd, text.encode())

    def close(self, discard: bool = False) -> None:
        if self.fd is not None and self.path is not None and self.path != "-":
            os.close(self.fd)
            if discard and self.created and os.path.getsize(self.path) == 0:
                os.unlink(self.path)
        self.fd = None


_ACCEPT = frozenset(("passed", "released"))
_DROP = frozenset(("dropped", "blocked"))


class Daemon:
    def __init__(self, config: ThrottleConfig, opts: DaemonOptions):
        opts.validate()
        self.opts = opts
        self.config = config
        self.core = Throttle(config)
        self.ignored: dict[str, int] = {}
        self._stop: str | None = None
        self._stopping = False
        self._nfq: NetfilterQueue | None = None
        self._ctl: socket.socket | None = None
        self._clients: dict[socket.socket, tuple[bytes, float]] = {}
        self._log: EventLog | None = None
        self._rules_installed = False
        self._wake_r: socket.socket | None = None      # the loop's wake-up pair (signals write to _wake_w)
        self._wake_w: socket.socket | None = None
        self._fd: int | None = None
        self._budget = 0
        self.started_mono = time.monotonic()
        self.rcvbuf: int | None = None

    # ---- start / stop --------------------------------------------------------------------------------
    def start(self) -> None:
        """Acquire everything in order; on any failure release what was acquired and raise DaemonError."""
        try:
            self._start()
        except BaseException as exc:
            problems = self._teardown(discard_log=True)
            if problems and isinstance(exc, ThrottleError):
                raise DaemonError(f"{exc}; cleaning up also failed: {problems[0]}") from None
            raise

    def _start(self) -> None:
        o = self.opts
        if not has_cap_net_admin():
            raise DaemonError("the throttle needs CAP_NET_ADMIN (run it as root) to bind an NFQUEUE and "
                              "install iptables rules")
        try:
            from netfilterqueue import COPY_PACKET, NetfilterQueue
        except ImportError:
            raise DaemonError("the NetfilterQueue binding is not installed (pip install NetfilterQueue; "
                              "it needs libnetfilter-queue)") from None
        rules.check_tools()
        self._ctl = control.listen(o.control)
        self._log = EventLog(o.events)
        try:
            nfq = NetfilterQueue()
        except OSError as exc:
            raise DaemonError(f"cannot open NFQUEUE: {exc}") from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                nfq.bind(o.queue_num, self._on_packet, max_len=o.max_len, mode=COPY_PACKET,
                         range=o.copy_range, sock_len=o.sock_len)
            except OSError:
                raise DaemonError(f"cannot bind NFQUEUE {o.queue_num}: it is already bound by another "
                                  "process in this network namespace (choose another --queue-num)") from None
        self._nfq = nfq
        self._fd = nfq.get_fd()
        with socket.socket(fileno=os.dup(self._fd)) as nl:
            self.rcvbuf = nl.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        for w in caught:
            print(f"throttle: warning: {w.message}", file=sys.stderr)
        self._wake_r, self._wake_w = wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        spec = rules.RuleSpec(o.mode, o.queue_num, o.protocols, o.interface, o.fail_closed, os.getpid())
        try:
            stale = rules.install(spec)
        except rules.RulesOwnedError:
            raise                             # another live daemon's rules: leave them alone
        except BaseException:
            self._rules_installed = True      # nothing of ours may stay behind, stale or half-made
            raise
        self._rules_installed = True
        now = time.monotonic()
        self.started_mono = now
        if self.config.release_clock == "free":
            self.config = replace(self.config, clock_origin_s=now)
            self.core = Throttle(self.config)
        self._log.write({"event": "config", "t_mono": now, "t_wall": time.time(), "mode": o.mode,
                         **self.config.to_dict(), "protocols": list(o.protocols), "queue_num": o.queue_num,
                         "hook": rules.HOOKS[o.mode], "interface": o.interface, "fail_closed": o.fail_closed,
                         "pid": os.getpid(), "stale_rules_replaced": len(stale), "max_len": o.max_len,
                         "rcvbuf": self.rcvbuf})

    def _teardown(self, discard_log: bool = False) -> list[str]:
        problems = []
        if self._rules_installed:
            try:
                rules.remove()
            except ThrottleError as exc:
                problems.append(str(exc))
            self._rules_installed = False
        if self._nfq is not None:
            now = time.monotonic()
            self._stopping = True
            for _ in range(1000):           # drop what is still waiting in the socket (bounded)
                self._budget = self.opts.batch
                try:
                    self._nfq.run(block=False)
                    break
                except _Yield:
                    continue
                except OSError:
                    break
            self._apply(self.core.drop_all(now, "shutdown"), now)
            self._nfq.unbind()
            self._nfq = None
        for s in (self._wake_r, self._wake_w, *self._clients):
            if s is not None:
                s.close()
        self._clients.clear()
        if self._ctl is not None:
            self._ctl.close()
            if not self.opts.control.startswith("@"):
                try:
                    os.unlink(self.opts.control)
                except OSError:
                    pass
            self._ctl = None
        if self._log is not None:
            if not discard_log:
                self._log.write({"event": "stop", "t_mono": time.monotonic(), "t_wall": time.time(),
                                 "reason": self._stop or "error", "counts": dict(self.core.counts)})
            self._log.close(discard=discard_log)
            self._log = None
        return problems

    def request_stop(self, reason: str) -> None:
        self._stop = reason
        self._budget = 0

    # ---- packets -------------------------------------------------------------------------------------
    def _on_packet(self, pkt) -> None:
        now = time.monotonic()
        if self._stopping:                  # shutting down: nothing new leaves, but say what was dropped
            parsed = parse_packet(pkt.get_payload())
            if isinstance(parsed, str):
                pkt.drop()
            else:
                src, dst, sport, dport, proto = parsed
                self._apply([Event("dropped", now, src, dst, sport, dport, proto, 0, "shutdown", pkt)], now)
        else:
            parsed = parse_packet(pkt.get_payload())
            if isinstance(parsed, str):
                self.ignored[parsed] = self.ignored.get(parsed, 0) + 1
                pkt.accept()
            else:
                src, dst, sport, dport, proto = parsed
                self._apply(self.core.submit(Request(src, dst, sport, dport, proto, pkt), now).events, now)
        self._budget -= 1
        if self._budget <= 0:
            raise _Yield

    def _apply(self, events: list[Event], now: float) -> None:
        for e in events:
            p = e.ref
            if p is not None:
                if e.event in _ACCEPT:
                    p.accept()
                elif e.event in _DROP:
                    p.drop()
        log = self._log
        if log is None or log.fd is None:
            return
        wall = time.time()
        for e in events:
            log.line(event_line(e, now, wall))

    # ---- control -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        o = self.opts
        return {"mode": o.mode, "pid": os.getpid(), "queue_num": o.queue_num, "hook": rules.HOOKS[o.mode],
                "protocols": list(o.protocols), "config": self.config.to_dict(),
                "t_mono": time.monotonic(), "uptime_s": time.monotonic() - self.started_mono,
                "sources": self.core.status(), "counts": dict(self.core.counts), "ignored": dict(self.ignored),
                "kernel_queue": kernel_queue_stats(o.queue_num), "rcvbuf": self.rcvbuf}

    def _handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd = req.get("cmd")
        now = time.monotonic()
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            self._apply(self.core.advance(now), now)
            return {"ok": True, "status": self.status()}
        if cmd == "reset":
            src = req.get("src")
            if src is not None and not isinstance(src, str):
                return {"ok": False, "error": "src must be an address or null"}
            events = self.core.reset(src, now)
            self._apply(events, now)
            return {"ok": True, "dropped": sum(e.event == "dropped" for e in events), "src": src}
        if cmd == "mark":
            why = req.get("why")
            if not isinstance(why, str) or not why or len(why) > 200:
                return {"ok": False, "error": "why must be a short non-empty string"}
            self._apply(self.core.advance(now), now)
            line = state_line(self.core, self.config, why, now, time.time())
            if self._log is not None:
                self._log.write(line)
            return {"ok": True, "state": line}
        return {"ok": False, "error": f"unknown command {cmd!r}; known: status, reset, mark, ping"}

    def _accept_clients(self) -> None:
        assert self._ctl is not None
        for _ in range(16):
            try:
                c, _ = self._ctl.accept()
            except (BlockingIOError, InterruptedError):
                return
            c.setblocking(False)
            self._clients[c] = (b"", time.monotonic() + 5.0)

    def _serve(self, c: socket.socket) -> None:
        buf, deadline = self._clients[c]
        try:
            chunk = c.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if chunk and b"\n" not in buf and len(buf) < control.MAX_REQUEST:
            self._clients[c] = (buf, deadline)
            return
        del self._clients[c]
        try:
            try:
                reply = self._handle(json.loads(buf.split(b"\n", 1)[0]))
            except ValueError:
                reply = {"ok": False, "error": "request is not JSON"}
            c.settimeout(1.0)
            c.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        finally:
            c.close()

    # ---- loop ----------------------------------------------------------------------------------------
    def loop(self) -> None:
        assert self._fd is not None and self._ctl is not None and self._nfq is not None and self._wake_r is not None
        nl, ctl, wake, nfq = self._fd, self._ctl, self._wake_r, self._nfq
        core, opts = self.core, self.opts
        while self._stop is None:
            due = core.next_due()
            now = time.monotonic()
            timeout = 1.0 if due is None else min(1.0, max(0.0, due - now))
            if timeout > 0.002:
                # select()'s kernel slack is 0.1 % of the timeout (1 ms for 1 s): wake a little early,
                # then sleep the short rest, whose slack is negligible.
                timeout -= timeout / 400 + 0.0002
            watched: list[int | socket.socket] = [nl, ctl, wake, *self._clients]
            r, _, _ = select.select(watched, [], [], timeout)
            now = time.monotonic()
            due = core.next_due()
            if due is not None and due <= now:
                self._apply(core.advance(now), now)
            if nl in r:
                self._budget = opts.batch
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
                self._accept_clients()
            for c in [c for c in self._clients if c in r]:
                self._serve(c)
            if self._clients:
                for c, (_, deadline) in list(self._clients.items()):
                    if deadline < now:
                        del self._clients[c]
                        c.close()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop cleanly. Returns the exit status."""
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):     # before start(): a signal while starting still cleans up
            old[sig] = signal.signal(sig, lambda n, f: self.request_stop(signal.Signals(n).name))
        try:
            self.start()
        except BaseException:
            for sig, h in old.items():
                signal.signal(sig, h)
            raise
        assert self._wake_w is not None         # start() made it, or raised
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        status = 0
        try:
            self.loop()
        except Exception as exc:        # a bug or the kernel refusing a verdict: stop cleanly, say why
            self._stop = f"error: {exc!r}"
            print(f"throttle: error: {exc!r}", file=sys.stderr)
            status = 1
        finally:
            signal.set_wakeup_fd(old_wakeup)
            problems = self._teardown()
            for sig, h in old.items():
                signal.signal(sig, h)
        for p in problems:
            print(f"throttle: error while stopping: {p}", file=sys.stderr)
            status = 1
        return status
