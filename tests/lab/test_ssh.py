"""Access.run's reading of an SSH channel, without SSH: a fake channel that delivers what sshd may send in
any order (the exit status before the last of the output — seen on emulated VMs as an empty `ls`)."""

from __future__ import annotations

import time

from orchestrator.lab import ssh
from orchestrator.lab.ssh import Access


class Chan:
    """The exit status is there at once; the output arrives `late` seconds later, then EOF (or never)."""

    def __init__(self, out: bytes, late: float, eof: bool = True):
        self.t0, self.out, self.late, self.eof = time.monotonic(), out, late, eof
        self.closed = False

    def _due(self) -> bool:
        return time.monotonic() - self.t0 >= self.late

    def exec_command(self, cmd): pass
    def shutdown_write(self): pass
    def close(self): self.closed = True
    def exit_status_ready(self): return True
    def recv_exit_status(self): return 0
    def recv_ready(self): return bool(self.out) and self._due()
    def recv_stderr_ready(self): return False
    def recv_stderr(self, n): return b""

    def recv(self, n):
        data, self.out = self.out, b""
        return data

    @property
    def eof_received(self):
        return self.eof and not self.out and self._due()


def access_with(chan) -> Access:
    acc = Access.__new__(Access)            # no lab: only run()'s reading is under test
    acc.connect_timeout = 1.0
    transport = type("T", (), {"open_session": lambda self, timeout=None: chan})()
    client = type("C", (), {"get_transport": lambda self: transport})()
    acc.connect = lambda host, timeout=None: client
    return acc


def test_output_that_comes_after_the_exit_status_is_not_lost():
    res = access_with(Chan(b"scan-001-gen0.jsonl\nserver.jsonl\n", late=0.05)).run("blade", ["ls", "/x"])
    assert (res.exit_code, res.stdout) == (0, "scan-001-gen0.jsonl\nserver.jsonl\n")


def test_a_command_whose_output_never_ends_is_not_waited_for_long(monkeypatch):
    monkeypatch.setattr(ssh, "EOF_WAIT_S", 0.1)
    started = time.monotonic()
    res = access_with(Chan(b"", late=0.0, eof=False)).run("blade", ["true"])
    assert res.exit_code == 0 and res.stdout == "" and time.monotonic() - started < 1.0
