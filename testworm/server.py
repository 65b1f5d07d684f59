"""The test-worm server: a stream-socket server that a plain connect finds, and that an authenticated
trigger turns into a scanner on this host (a `python -m testworm scan` child with generation + 1 bounds).

States: idle → (trigger) scanning → (scanner ends) done; kill → killed (the scanner gets SIGUSR1 and stops
with reason `killed`; triggers are refused); revive → idle again. A host is infected once: triggers are
refused while scanning or done. Every input is bounded (size, time, connections) and no input crashes it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import params as P
from .addrs import AddressSet
from .errors import ProtocolError, UsageError, WormError
from .eventlog import EventLog, last_event
from .interlocks import OVERRIDE_FLAG, check_allow, check_environment, check_lab_ranges
from .protocol import DEFAULT_WINDOW_S, MAX_MESSAGE, NonceCache, decode_request, encode_error, encode_reply
from .scanner import PR_SET_PDEATHSIG, prctl

MAX_CONNS = 128
CONN_TIMEOUT_S = 2.0
KILL_GRACE_S = 5.0
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def params_argv(d: dict[str, Any]) -> list[str]:
    """Command-line options that make `scan` resolve to exactly these (already validated) parameters."""
    argv: list[str] = []
    for key, v in d.items():
        if v is None or v == [] or key in ("lab_ranges",):
            continue
        opt = P.option_name(key)
        if isinstance(v, list) and key != "local_weights":
            argv += [opt, *map(str, v)]
        elif key == "local_weights":
            argv += [opt, ",".join(repr(float(w)) for w in v)]
        else:
            argv += [opt, repr(v) if isinstance(v, float) else str(v)]
    return argv


@dataclass
class Conn:
    sock: socket.socket
    peer: str
    local: str
    deadline: float
    buf: bytes = b""


@dataclass
class State:
    state: str = "idle"
    generation: int | None = None
    scanner: subprocess.Popen | None = None
    kill_deadline: float | None = None
    scans: int = 0
    log: str | None = None
    last_exit: int | None = None
    last_error: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {
        "probes": 0, "accepted": 0, "refused": 0, "malformed": 0, "timeouts": 0, "busy": 0})


class Server:
    def __init__(self, host: str, port: int, *, key: bytes, key_path: str, state_dir: str, allow: AddressSet,
                 lab: AddressSet, max_generations: int, window_s: float = DEFAULT_WINDOW_S,
                 override: bool = False):
        check_lab_ranges(lab)
        check_allow(allow, lab)
        self.overridden = check_environment(lab, override=override)
        self.host, self.port, self.key, self.key_path = host, port, key, key_path
        self.state_dir, self.allow, self.lab, self.override = state_dir, allow, lab, override
        self.max_generations = max_generations
        self.nonces = NonceCache(window_s)
        self.st = State()
        self.stopping: str | None = None
        os.makedirs(state_dir, exist_ok=True)
        self.log = EventLog(os.path.join(state_dir, "server.jsonl"))
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.lsock.bind((host, port))
        except OSError as exc:
            self.lsock.close()
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, selectors.EVENT_READ)

    # ------------------------------------------------------------ status and replies

    def status(self) -> dict[str, Any]:
        st = self.st
        last_stop = None
        if st.log and (st.scanner is None or st.scanner.poll() is not None):
            stop = last_event(st.log, "stop")
            last_stop = {k: stop[k] for k in ("reason", "attempts", "error") if k in stop} if stop else None
        return {"state": st.state, "generation": st.generation, "max_generations": self.max_generations,
                "scanner_pid": st.scanner.pid if st.scanner and st.scanner.poll() is None else None,
                "scans": st.scans, "log": st.log, "last_exit": st.last_exit, "last_stop": last_stop,
                "last_error": st.last_error,
                "counts": dict(st.counts), "pid": os.getpid(), "listen": f"{self.host}:{self.port}"}

    def handle_line(self, line: bytes, conn: Conn) -> bytes:
        try:
            req = decode_request(self.key, line, local=conn.local, nonces=self.nonces)
        except ProtocolError as exc:
            key = "malformed" if exc.reason in ("malformed", "oversized", "bad-request") else "refused"
            self.st.counts[key] += 1
            self.log.event("refused", peer=conn.peer, reason=exc.reason, detail=str(exc))
            return encode_error(exc.reason)
        ok, error = True, None
        if req.cmd == "trigger":
            ok, error = self.trigger(req.generation, req.params)
        elif req.cmd == "kill":
            self.kill()
        elif req.cmd == "revive":
            if self.st.state == "scanning":
                ok, error = False, "scanning: kill it first"
            else:
                self.st.state, self.st.generation = "idle", None
        self.st.counts["accepted" if ok else "refused"] += 1
        self.log.event("request", peer=conn.peer, cmd=req.cmd, generation=req.generation, ok=ok, error=error)
        body = {"ok": ok, "cmd": req.cmd, "state": self.status()}
        if error:
            body["error"] = error
        return encode_reply(self.key, req.nonce, body)

    # ------------------------------------------------------------ commands

    def trigger(self, generation: int, wire: dict[str, Any]) -> tuple[bool, str | None]:
        st = self.st
        if st.state == "killed":
            return False, "killed: revive first"
        if st.state in ("scanning", "done"):
            return False, f"already infected (generation {st.generation})"
        if generation > self.max_generations:
            return False, f"generation {generation} beyond this server's bound {self.max_generations}"
        raw = {k: v for k, v in wire.items() if k not in ("generation", "lab_ranges")}
        raw["generation"] = generation
        raw["lab_ranges"] = self.lab.cidrs()
        raw.setdefault("port", self.port)
        raw.setdefault("allow", self.allow.cidrs())
        mg = raw.get("max_generations", self.max_generations)
        raw["max_generations"] = min(mg, self.max_generations) if isinstance(mg, int) else mg
        try:
            p = P.resolve(raw)
            if not p.allow.issubset(self.allow):
                raise UsageError(f"allow-list {', '.join(p.allow.cidrs())} is wider than this server's")
        except WormError as exc:
            return False, f"bad params: {exc}"
        st.scans += 1
        log = os.path.join(self.state_dir, f"scan-{st.scans:03d}-gen{generation}.jsonl")
        argv = [sys.executable, "-m", "testworm", "scan", *params_argv(p.to_dict()),
                "--log", log, "--key", self.key_path]
        if self.override:
            argv.append(OVERRIDE_FLAG)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [PACKAGE_PARENT, *filter(None, [os.environ.get("PYTHONPATH")])])}
        errf = open(os.path.join(self.state_dir, f"scan-{st.scans:03d}.stderr"), "wb")
        try:
            st.scanner = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=env,
                                          preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
        except OSError as exc:
            return False, f"cannot start the scanner: {exc}"
        finally:
            errf.close()
        st.state, st.generation, st.log, st.last_exit, st.last_error = "scanning", generation, log, None, None
        self.log.event("scan_start", pid=st.scanner.pid, generation=generation, log=log)
        return True, None

    def kill(self) -> None:
        st = self.st
        if st.scanner is not None and st.scanner.poll() is None:
            st.scanner.send_signal(signal.SIGUSR1)
            st.kill_deadline = time.monotonic() + KILL_GRACE_S
        st.state = "killed"

    def reap(self) -> None:
        st = self.st
        p = st.scanner
        if p is None:
            return
        rc = p.poll()
        if rc is None:
            if st.kill_deadline is not None and time.monotonic() > st.kill_deadline:
                p.kill()
            return
        st.scanner, st.kill_deadline, st.last_exit = None, None, rc
        if st.state == "scanning":
            st.state = "done"
        if rc != 0:  # the scanner's own one-line reason (an interlock, bad input, a crash)
            try:
                with open(os.path.join(self.state_dir, f"scan-{st.scans:03d}.stderr"), errors="replace") as fh:
                    lines = [ln.strip() for ln in fh.read(65536).splitlines() if ln.strip()]
                st.last_error = lines[-1] if lines else f"exit {rc}"
            except OSError:
                st.last_error = f"exit {rc}"
        self.log.event("scan_exit", pid=p.pid, returncode=rc, state=st.state, error=st.last_error)

    # ------------------------------------------------------------ the loop

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.conns) >= MAX_CONNS:
                self.st.counts["busy"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            try:
                local = "{}:{}".format(*sock.getsockname())
            except OSError:
                sock.close()
                continue
            self.conns[sock.fileno()] = Conn(sock, f"{peer[0]}:{peer[1]}", local, time.monotonic() + CONN_TIMEOUT_S)
            self.sel.register(sock, selectors.EVENT_READ)

    def _close(self, conn: Conn, reply: bytes | None = None) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reply:
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(reply)
            except OSError:
                pass
        conn.sock.close()

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.buf:
                self.st.counts["malformed"] += 1
                self.log.event("refused", peer=conn.peer, reason="malformed", detail="no newline before EOF")
            else:
                self.st.counts["probes"] += 1  # a plain connect: that is how a scanner finds us
            self._close(conn)
            return
        conn.buf += data
        if b"\n" in conn.buf:
            line = conn.buf[:conn.buf.index(b"\n") + 1]
            self._close(conn, self.handle_line(line, conn))
        elif len(conn.buf) > MAX_MESSAGE:
            self.st.counts["malformed"] += 1
            self.log.event("refused", peer=conn.peer, reason="oversized", detail=f">{MAX_MESSAGE} bytes")
            self._close(conn, encode_error("oversized"))

    def serve(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: setattr(self, "stopping", signal.Signals(s).name))
        self.log.event("listening", listen=f"{self.host}:{self.port}", pid=os.getpid(),
                       allow=self.allow.cidrs(), lab_ranges=self.lab.cidrs(),
                       max_generations=self.max_generations, override=self.overridden)
        print(f"testworm server listening on {self.host}:{self.port}", flush=True)
        try:
            while not self.stopping:
                for skey, _ in self.sel.select(timeout=0.1):
                    if skey.fileobj is self.lsock:
                        self._accept()
                    else:
                        conn = self.conns.get(skey.fd)
                        if conn is not None:
                            try:
                                self._readable(conn)
                            except Exception as exc:  # never crash on input
                                self.log.event("error", peer=conn.peer, detail=f"{type(exc).__name__}: {exc}")
                                self._close(conn, encode_error("error"))
                now = time.monotonic()
                for conn in [c for c in self.conns.values() if c.deadline < now]:
                    self.st.counts["timeouts"] += 1
                    self._close(conn, encode_error("timeout") if conn.buf else None)
                self.reap()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        p = self.st.scanner
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for conn in list(self.conns.values()):
            self._close(conn)
        self.sel.close()
        self.lsock.close()
        self.log.event("stopped", reason=self.stopping or "error", status=json.loads(json.dumps(self.status())))
        self.log.close()
