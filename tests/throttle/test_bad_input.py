"""Bad input to the daemon: one clear error line, a non-zero exit, and no rule left behind.

Run inside MiniLab namespaces even where the daemon should refuse before touching anything, so that a bug
could never install rules in the machine's own namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.minilab import MiniLab
from tests.throttle.netlab import REPO, Daemon, need_tools, run_daemon_once, throttle_rules

pytestmark = pytest.mark.root


@pytest.fixture
def lab():
    need_tools("iptables", "iptables-restore")
    with MiniLab({"a": ["lan1"]}) as lab:
        yield lab


def one_error(r, status: int, text: str) -> None:
    assert r.returncode == status, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args, text", [
    (["--working-set", "0"], "working_set_size must be >= 1, got 0"),
    (["--period", "0"], "release_period_s must be a finite number > 0, got 0.0"),
    (["--period", "-1"], "release_period_s must be a finite number > 0"),
    (["--limit", "-1"], "delay_queue_limit must be >= 0, got -1"),
    (["--policy", "sessions"], "unknown policy 'sessions'; known: packets, connections"),
    (["--release-clock", "cron"], "unknown release_clock 'cron'"),
    (["--initial-working-set", "198.18.0.300"], "not an IPv4 address: '198.18.0.300'"),
    (["--protocols", "tcp,icmp"], "protocols must be a non-empty subset of tcp,udp"),
    (["--queue-num", "70000"], "queue number must be in 0..65535"),
])
def test_invalid_parameters(lab, tmp_path, args, text):
    r = run_daemon_once(lab, "a", "--mode", "host", "--events", str(tmp_path / "ev"), *args)
    one_error(r, 2, text)
    assert throttle_rules(lab, "a") == [] and not (tmp_path / "ev").exists()


def test_unknown_mode(lab):
    one_error(run_daemon_once(lab, "a", "--mode", "bridge"), 2, "unknown mode 'bridge'; known: host, gateway, wire")


def test_missing_permission(lab, tmp_path):
    # root, but without CAP_NET_ADMIN
    r = subprocess.run(["ip", "netns", "exec", lab.ns("a"), "setpriv", "--bounding-set", "-net_admin",
                        "--inh-caps", "-net_admin", sys.executable, "-m", "throttle", "run", "--mode", "host",
                        "--events", str(tmp_path / "ev")], cwd=REPO, capture_output=True, text=True, timeout=30)
    one_error(r, 1, "needs CAP_NET_ADMIN (run it as root)")
    assert throttle_rules(lab, "a") == [] and not (tmp_path / "ev").exists()


def test_iptables_failure_leaves_no_rule(lab, tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "iptables-restore").write_text("#!/bin/sh\necho 'iptables-restore: line 3 failed' >&2\nexit 1\n")
    (stub / "iptables-restore").chmod(0o755)
    real = shutil.which("iptables")
    assert real
    r = run_daemon_once(lab, "a", "--mode", "host", "--events", str(tmp_path / "ev"),
                        env={"PATH": f"{stub}:/usr/sbin:/usr/bin:/sbin:/bin"})
    one_error(r, 1, "installing the throttle's iptables rules failed (exit 1): iptables-restore: line 3 failed")
    assert throttle_rules(lab, "a") == [] and not (tmp_path / "ev").exists()


def test_unwritable_event_log(lab, tmp_path):
    r = run_daemon_once(lab, "a", "--mode", "host", "--events", str(tmp_path / "missing" / "ev"))
    one_error(r, 1, "cannot open event log")
    assert throttle_rules(lab, "a") == []


def test_second_daemon_is_refused_and_the_first_keeps_its_rules(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev1", "--mode", "host", "--queue-num", "3", "--control", "@t1")
    d.wait_ready()
    rules = throttle_rules(lab, "a")
    assert len(rules) == 4
    # same queue number
    r = run_daemon_once(lab, "a", "--mode", "host", "--queue-num", "3", "--control", "@t2",
                        "--events", str(tmp_path / "ev2"))
    one_error(r, 1, "cannot bind NFQUEUE 3: it is already bound by another process in this network namespace")
    # same control socket
    r = run_daemon_once(lab, "a", "--mode", "host", "--queue-num", "4", "--control", "@t1")
    one_error(r, 1, "control socket @t1 is in use")
    # everything different: the rules belong to a live daemon
    r = run_daemon_once(lab, "a", "--mode", "gateway", "--queue-num", "5", "--control", "@t3")
    one_error(r, 1, f"another throttle daemon (pid {d.p.pid}) is running in this network namespace")
    assert throttle_rules(lab, "a") == rules and not (tmp_path / "ev2").exists()
    assert d.p.poll() is None
    assert d.stop() == 0
    assert throttle_rules(lab, "a") == []
