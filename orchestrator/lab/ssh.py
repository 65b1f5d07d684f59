"""Reaching lab hosts over the admin LAN: the one SSH helper (paramiko) used everywhere.

Connections leave from where the provider says control traffic stands (the admin server's namespace, or the
hypervisor's admin address) — the machine's root namespace has no route into a lab. Host keys are pinned
from the lab's own known_hosts: an unknown or changed key is refused, never added. Every command returns
the one `Result` type.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import paramiko

from orchestrator.errors import AccessError
from orchestrator.lab.fanout import parallel as fan_out
from orchestrator.labfile.topology import Lab
from orchestrator.localrun import Result
from orchestrator.providers import get_provider
from orchestrator.providers.base import Provider
from orchestrator.providers.keys import lab_keys
from orchestrator.providers.state import StateStore

SSH_PORT = 22
USER = "root"
CHANNEL_TRIES = 3     # a session channel's opening, asked this often before the host counts as unreachable
IDLE_MIN_S, IDLE_MAX_S = 0.002, 0.05   # a running command's channel: looked at this often while it is silent
EOF_WAIT_S = 1.0      # after the exit status, wait this long at most for the rest of the output (EOF)
Output = Callable[[str, bytes], None]   # (stream "stdout"|"stderr", chunk)


class Access:
    """SSH to the hosts of one lab. Thread-safe; connections are cached per host and reused."""

    def __init__(self, lab_name: str, store: StateStore | None = None, provider: Provider | None = None,
                 connect_timeout: float = 10.0):
        self.store = store or StateStore()
        rec = self.store.require(lab_name)
        self.lab: Lab = rec.topology
        self.provider = provider or get_provider(rec.provider, self.store)
        self.keys = lab_keys(self.store, lab_name)
        self.connect_timeout = connect_timeout
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._lock = threading.Lock()
        self._pkey: paramiko.PKey | None = None

    # ------------------------------------------------------------ connections

    def address(self, host: str) -> str:
        try:
            h = self.lab.host(host)
        except KeyError:
            raise AccessError(f"lab '{self.lab.name}' has no host '{host}'") from None
        addr = h.ip("admin")
        if not addr:
            raise AccessError(f"{host} has no admin address, so it cannot be reached over SSH")
        return addr

    def _key(self) -> paramiko.PKey:
        if self._pkey is None:
            try:
                self._pkey = paramiko.Ed25519Key.from_private_key_file(str(self.keys.private_key))
            except (OSError, paramiko.SSHException) as exc:
                raise AccessError(f"cannot read the lab's SSH key {self.keys.private_key}: {exc}") from None
        return self._pkey

    def connect(self, host: str, timeout: float | None = None) -> paramiko.SSHClient:
        """A connected, authenticated client for `host` (cached); AccessError saying why not."""
        with self._lock:
            c = self._clients.get(host)
        transport = c.get_transport() if c is not None else None
        if c is not None and transport is not None and transport.is_active():
            return c
        addr = self.address(host)
        timeout = timeout or self.connect_timeout
        try:
            sock = self.provider.control_socket(self.lab.name, addr, SSH_PORT, timeout)
        except ConnectionRefusedError:
            if self.provider.wait_ready(self.lab.name):     # a lab just built: its sshds are starting
                return self.connect(host, timeout)
            raise AccessError(f"{host} ({addr}) refused the SSH connection: is its sshd running?",
                              hint=f"`testbed status {self.lab.name}` shows its processes; "
                                   f"`testbed power {self.lab.name} {host} on` starts its services again") from None
        except TimeoutError:
            raise AccessError(f"{host} ({addr}) did not answer on port {SSH_PORT} within {timeout:.0f} s") from None
        except OSError as exc:
            raise AccessError(f"cannot reach {host} ({addr}): {exc.strerror or exc}") from None
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.keys.known_hosts))   # the lab's own pinned keys, not ~/.ssh
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(addr, port=SSH_PORT, username=USER, pkey=self._key(), sock=sock, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False,
                           allow_agent=False)
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise AccessError(f"{host} ({addr}) presented a different host key than the lab generated "
                              f"(got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}): refusing to connect",
                              hint="if the host was rebuilt, run `testbed down` and `testbed up` again") from None
        except paramiko.AuthenticationException:
            sock.close()
            raise AccessError(f"{host} ({addr}) refused the lab's SSH key for {USER}") from None
        except paramiko.SSHException as exc:
            sock.close()
            if "not found in known_hosts" in str(exc):
                raise AccessError(f"{host} ({addr}) has no pinned host key in {self.keys.known_hosts}; "
                                  "refusing an unknown key") from None
            raise AccessError(f"SSH to {host} ({addr}) failed: {exc}") from None
        except OSError as exc:
            sock.close()
            raise AccessError(f"SSH to {host} ({addr}) failed: {exc.strerror or exc}") from None
        with self._lock:
            old = self._clients.pop(host, None)
            self._clients[host] = client
        if old is not None:
            old.close()
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()

    def __enter__(self) -> Access:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ commands

    def run(self, host: str, cmd: str | Sequence[str], *, timeout: float | None = 60.0, input: bytes | str | None = None,
            on_output: Output | None = None, check: bool = False) -> Result:
        """Run a command on `host`; output is collected (and streamed to on_output as it arrives).
        A command still running at the timeout is closed and reported as exit 124."""
        command = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = (command,) if isinstance(cmd, str) else tuple(cmd)
        started = time.monotonic()
        chan = self._channel(host)
        try:
            try:
                chan.exec_command(command)
            except paramiko.SSHException as exc:
                raise AccessError(f"{host}: the SSH channel refused the command: {exc}") from None
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            streams = (("stdout", chan.recv_ready, chan.recv, out), ("stderr", chan.recv_stderr_ready, chan.recv_stderr, err))
            deadline = None if timeout is None else started + timeout
            timed_out, exited, idle = False, None, IDLE_MIN_S
            while True:
                got = False
                for name, ready, recv, buf in streams:
                    while ready():
                        data = recv(65536)
                        buf += data
                        got = True
                        if on_output:
                            on_output(name, data)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    # sshd may send the exit status before the last of the output: that ends at EOF (bounded,
                    # for a command whose output a child it left behind still holds open)
                    exited = exited or time.monotonic()
                    if chan.eof_received or chan.closed or time.monotonic() - exited > EOF_WAIT_S:
                        break
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                if got:
                    idle = IDLE_MIN_S
                else:       # waits lengthen while nothing comes: hundreds of commands at once must not spin
                    if exited:
                        time.sleep(idle)
                    else:
                        chan.status_event.wait(idle)      # wakes at once when the exit status comes
                    idle = min(IDLE_MAX_S, idle * 2)
            code = 124 if timed_out else chan.recv_exit_status()
        finally:
            chan.close()
        res = Result(argv, code, out.decode(errors="replace"),
                     err.decode(errors="replace") + (f"\ntimed out after {timeout} s" if timed_out else ""),
                     time.monotonic() - started, host, timed_out)
        return res.check() if check else res

    def _channel(self, host: str) -> paramiko.Channel:
        """A new session channel to `host`. Opening one waits at most connect_timeout; a host too loaded to
        confirm it in time is asked again (CHANNEL_TRIES in all, on a new connection after the first miss),
        then AccessError naming the host."""
        why = ""
        for attempt in range(CHANNEL_TRIES):
            transport = self.connect(host).get_transport()
            if transport is None:          # connect() returns an active client; it closed in between
                why = "the SSH connection closed before the command could start"
                continue
            try:
                return transport.open_session(timeout=self.connect_timeout)
            except paramiko.SSHException as exc:
                why = str(exc).rstrip(".") or type(exc).__name__
                if attempt + 1 < CHANNEL_TRIES:
                    self._drop(host, transport)
        raise AccessError(f"{host} ({self.address(host)}): no SSH channel opened in {CHANNEL_TRIES} tries "
                          f"of {self.connect_timeout:g} s each (last: {why})",
                          hint="the host (or this machine) is overloaded, or its sshd is stuck")

    def _drop(self, host: str, transport) -> None:
        """Forget `host`'s connection if it is still the one that failed (a channel whose open timed out may
        still open later, on that connection only): the next command connects again."""
        with self._lock:
            c = self._clients.get(host)
            if c is None or c.get_transport() is not transport:
                return
            del self._clients[host]
        c.close()

    def run_many(self, hosts: Iterable[str], cmd: str | Sequence[str] | Callable[[str], str | Sequence[str]], *,
                 timeout: float | None = 60.0, parallel: int = 16) -> dict[str, Result]:
        """The same command (or cmd(host)) on many hosts in parallel; a host that cannot be reached gets exit
        255 with the reason in stderr, as ssh(1) reports it."""
        def one(h: str) -> tuple[str, Result]:
            c = cmd(h) if callable(cmd) else cmd
            try:
                return h, self.run(h, c, timeout=timeout)
            except AccessError as exc:
                return h, Result((str(c),), 255, "", str(exc), 0.0, h)
        return dict(fan_out([lambda h=h: one(h) for h in hosts], limit=parallel))

    # ------------------------------------------------------------ files

    def put(self, host: str, local: str | Path, remote: str, mode: int | None = None) -> None:
        try:
            with self.connect(host).open_sftp() as sftp:
                sftp.put(str(local), remote)
                if mode is not None:
                    sftp.chmod(remote, mode)
        except OSError as exc:
            raise AccessError(f"copying {local} to {host}:{remote} failed: {exc.strerror or exc}") from None

    def get(self, host: str, remote: str, local: str | Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.connect(host).open_sftp() as sftp:
                sftp.get(remote, str(local))
        except OSError as exc:
            raise AccessError(f"copying {host}:{remote} to {local} failed: {exc.strerror or exc}") from None

    # ------------------------------------------------------------ readiness

    def wait_reachable(self, hosts: Iterable[str] | None = None, timeout: float = 30.0,
                       progress: Callable[[int, int], None] | None = None) -> None:
        """Wait until every host accepts the lab's key (backoff 50 ms → 1 s); AccessError naming the stragglers."""
        hosts = self.provider.ssh_hosts(self.lab) if hosts is None else list(hosts)
        deadline = time.monotonic() + timeout
        pending = set(hosts)
        last: dict[str, str] = {}
        delay = 0.05
        while pending:
            def try_one(h: str) -> tuple[str, str | None]:
                try:
                    self.connect(h, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                    return h, None
                except AccessError as exc:
                    return h, exc.message
            for h, why in fan_out([lambda h=h: try_one(h) for h in sorted(pending)], limit=16):
                if why is None:
                    pending.discard(h)
                else:
                    last[h] = why
                    if "different host key" in why or "refused the lab's SSH key" in why:
                        raise AccessError(why)     # waiting will not fix these
            if progress:
                progress(len(hosts) - len(pending), len(hosts))
            if not pending:
                return
            if time.monotonic() + delay > deadline:
                worst = sorted(pending)
                raise AccessError(f"{len(worst)} host(s) not reachable over SSH after {timeout:.0f} s: "
                                  + "; ".join(last.get(h, h) for h in worst[:5]))
            time.sleep(delay)
            delay = min(1.0, delay * 2)


def exec_lab(lab: str, host: str, argv: Sequence[str], *, timeout: float | None = None,
             store: StateStore | None = None, capture: bool = False) -> Result:
    """`testbed exec --via ssh`: run argv on host over SSH from the admin server, streaming its output (or
    keeping it in the result, with `capture`)."""
    def stream(kind: str, data: bytes) -> None:
        out = sys.stdout.buffer if kind == "stdout" else sys.stderr.buffer
        out.write(data)
        out.flush()
    with Access(lab, store) as acc:
        return acc.run(host, argv, timeout=timeout, on_output=None if capture else stream)
