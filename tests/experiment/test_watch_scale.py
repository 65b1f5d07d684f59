"""The watch over a 200-host lab, without root: places whose channel opening fails when more than the fan-out's
bound are open at once (as a loaded sshd's confirmations time out). A poll everywhere, the stop of every worm
server and the tails of the dead each reach every host and never exceed the bound; a host that truly cannot be
reached makes the trial an error that names it."""

from __future__ import annotations

import threading
import time

import paramiko
import pytest

from orchestrator.errors import AccessError
from orchestrator.experiment.record import TrialRecord
from orchestrator.experiment.trial import guarded, stop_all
from orchestrator.experiment.watch import Watch, service
from orchestrator.lab import ssh
from orchestrator.lab.fanout import MAX_FANOUT
from orchestrator.lab.ssh import Access
from orchestrator.localrun import Result

HOSTS = [f"blade{i}" for i in range(1, 201)]


class Channels:
    """What one orchestrator may hold open at once before a channel fails to open."""

    def __init__(self, capacity: int):
        self.capacity, self.now, self.peak = capacity, 0, 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            if self.now > self.capacity:
                self.now -= 1
                raise paramiko.SSHException("Timeout opening channel.")
        time.sleep(0.01)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


class Place:
    """A host: each round trip holds one channel; its worm server has died (exit 1) if `dead`."""

    def __init__(self, label: str, channels: Channels, dead: bool = False):
        self.label, self.channels, self.dead = label, channels, dead
        self.asked = self.stopped = 0

    def sh(self, script, timeout=60.0):
        with self.channels:
            self.asked += 1
            out = []
            for line in script.splitlines():           # "echo '@@wt-watch w3'; cat …/worm-server.exit …"
                mark = line.split("'")[1] if line.startswith("echo '") else None
                if mark:
                    out.append(mark)
                    if self.dead and "worm-server.exit" in line:
                        out.append("1")
            return Result(("sh",), 0, "\n".join(out) + "\n", "", 0.0, self.label)

    def stop(self, name, *, signal="TERM", timeout=10.0):
        with self.channels:
            self.stopped += 1
            return {"name": name, "stopped": True, "exit": 0}


def lab(dead=()) -> tuple[Watch, dict[str, Place], Channels]:
    ch = Channels(MAX_FANOUT)
    places = {h: Place(h, ch, dead=h in dead) for h in HOSTS}
    w = Watch(places)
    for h in HOSTS:
        w.add(service(h, f"/p/{h}", "worm-server", "the worm server"))
    return w, places, ch


def test_a_poll_everywhere_reaches_all_200_hosts_within_the_bound():
    w, places, ch = lab()
    deaths, out = w.poll(everywhere=True)
    assert deaths == [] and sorted(out) == sorted(HOSTS)
    assert all(p.asked == 1 for p in places.values()) and MAX_FANOUT // 2 < ch.peak <= MAX_FANOUT


def test_a_poll_with_every_host_pending_and_the_tails_of_the_dead_stay_within_the_bound():
    w, places, ch = lab(dead={"blade7", "blade150"})
    deaths, out = w.poll({h: {"inf": "true"} for h in HOSTS})
    assert sorted(out) == sorted(HOSTS) and ch.peak <= MAX_FANOUT
    assert [d.reason for d in deaths] == [
        "the worm server on blade7 exited with status 1 mid-trial; its log is empty",
        "the worm server on blade150 exited with status 1 mid-trial; its log is empty"]


def test_stopping_every_worm_server_reaches_all_200_within_the_bound():
    w, places, ch = lab()
    assert stop_all(w) == []
    assert all(p.stopped == 1 for p in places.values()) and MAX_FANOUT // 2 < ch.peak <= MAX_FANOUT


class Transport:
    """A host's SSH connection whose first `misses` channel openings time out."""

    def __init__(self, misses: int, chan):
        self.misses, self.chan, self.opened = misses, chan, 0

    def open_session(self, timeout=None):
        self.opened += 1
        if self.opened <= self.misses:
            raise paramiko.SSHException("Timeout opening channel.")
        return self.chan


class Chan:
    status_event = threading.Event()
    eof_received, closed = True, False

    def exec_command(self, cmd): pass
    def shutdown_write(self): pass
    def close(self): pass
    def exit_status_ready(self): return True
    def recv_exit_status(self): return 0
    def recv_ready(self): return False
    def recv_stderr_ready(self): return False
    def recv(self, n): return b""
    def recv_stderr(self, n): return b""


def access(misses: int) -> tuple[Access, list]:
    acc = Access.__new__(Access)            # no lab: only the channel's opening is under test
    acc.connect_timeout, acc._clients, acc._lock = 0.01, {}, threading.Lock()
    transport = Transport(misses, Chan())
    connects: list = []

    class Client:
        def get_transport(self):
            return transport

        def close(self):
            pass

    def connect(host, timeout=None):
        connects.append(host)
        return acc._clients.setdefault(host, Client())
    acc.connect = connect
    acc.address = lambda host: "198.18.1.7"
    return acc, connects


def test_a_channel_that_times_out_is_asked_again_on_a_new_connection():
    acc, connects = access(misses=ssh.CHANNEL_TRIES - 1)
    assert acc.run("blade7", ["true"]).exit_code == 0
    assert connects == ["blade7"] * ssh.CHANNEL_TRIES


def test_a_host_whose_channels_never_open_is_an_error_naming_it():
    acc, _ = access(misses=ssh.CHANNEL_TRIES)
    with pytest.raises(AccessError) as err:
        acc.run("blade7", ["true"])
    assert err.value.message == ("blade7 (198.18.1.7): no SSH channel opened in 3 tries of 0.01 s each "
                                 "(last: Timeout opening channel)")


def test_the_trial_error_names_the_host_that_cannot_be_reached():
    acc, _ = access(misses=99)

    class Unreachable:
        label = "blade7"

        def sh(self, script, timeout=60.0):
            return acc.run("blade7", ["sh", "-c", script], timeout=timeout)

        def stop(self, name, **kw):
            return {"running": True}
    w = Watch({"blade7": Unreachable()})
    w.add(service("blade7", "/p", "worm-server", "the worm server"))
    rec = TrialRecord("t", 0, "tcp", 20, 0, "fresh", [], None, None, 0.0)
    guarded(rec, lambda: w.poll(everywhere=True), w, lambda: None)
    assert rec.status == "error" and rec.reason is not None
    assert rec.reason.startswith("blade7 (198.18.1.7): no SSH channel opened in 3 tries")
