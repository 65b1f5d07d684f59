"""A remote hypervisor's URI, without one: the ssh commands it gives, the URI handed to libvirt, the relay that
reaches the far side's admin LAN. No daemon, no root."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ProviderError
from orchestrator.providers.libvirt import hypervisor
from orchestrator.providers.libvirt.guests import _RELAY, _relay_argv

PINNED = "qemu+ssh://root@hv.example:2222/system?keyfile=/k/id&known_hosts=/k/kh"


def test_keyfile_and_known_hosts_of_the_uri_reach_our_ssh_commands():
    hv = hypervisor.Hypervisor(PINNED)
    assert hv.remote
    assert hv.ssh == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-i", "/k/id", "-o",
                      "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=/k/kh", "-o", "StrictHostKeyChecking=yes",
                      "-p", "2222", "root@hv.example"]
    argv = hv.argv(["ip", "netns", "exec", "wt.x.admin-server", "sh", "-c", "echo 'a b'"])
    assert argv[-2] == "--" and shlex.split(argv[-1])[-1] == "echo 'a b'"     # quoted once for the far shell


def test_a_plain_remote_uri_adds_nothing_and_a_local_one_runs_here():
    assert hypervisor.Hypervisor("qemu+ssh://hv/system").ssh == ["ssh", "-o", "BatchMode=yes", "-o",
                                                                 "ConnectTimeout=10", "hv"]
    local = hypervisor.Hypervisor("qemu:///system")
    assert not local.remote and local.argv(["ip", "link"]) == ["ip", "link"]


def test_a_pinned_known_hosts_reaches_libvirts_ssh_through_a_wrapper(tmp_path):
    # libvirt's ssh transport ignores known_hosts= (it checks ~/.ssh/known_hosts): command= names a wrapper
    root = tmp_path / "w"
    uri = hypervisor.libvirt_uri(PINNED, root)
    assert uri.startswith(PINNED + "&command=" + str(root) + "/ssh-")
    wrapper = Path(uri.split("command=")[1])
    assert wrapper.read_text().splitlines()[-1] == ('exec ssh -o UserKnownHostsFile=/k/kh -o StrictHostKeyChecking=yes '
                                                    '-o BatchMode=yes "$@"')
    assert os.access(wrapper, os.X_OK) and root.stat().st_mode & 0o077 == 0
    assert hypervisor.libvirt_uri(PINNED, root) == uri          # the same file, written once
    for other in ("qemu+ssh://root@hv/system", "qemu+ssh://hv/system?keyfile=/k", "qemu:///system",
                  "test:///default", "qemu+ssh://hv/system?known_hosts=/k&command=/bin/myssh"):
        assert hypervisor.libvirt_uri(other, root) == other


def test_a_wrapper_directory_open_to_others_is_refused(tmp_path):
    root = tmp_path / "w"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    with pytest.raises(ProviderError, match="not a private directory"):
        hypervisor.libvirt_uri(PINNED, root)


def test_the_relay_is_one_argument_that_ssh_tokens_leave_alone():
    assert not set(_RELAY) & set("%\n\\")
    assert _relay_argv("%h", "%p", 10.0) == ["python3", "-c", _RELAY, "%h", "%p", "10"]


def test_the_relay_carries_bytes_both_ways(tmp_path):
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo():
        c, _ = srv.accept()
        with c:
            while (d := c.recv(1024)):
                c.sendall(d.upper())

    threading.Thread(target=echo, daemon=True).start()
    # as a ProxyCommand would run it: through a shell, the answer 2 s after the connect timeout (1 s) went by
    cmd = shlex.join([sys.executable, "-c", _RELAY, "127.0.0.1", str(port), "1"])
    cp = subprocess.run(["sh", "-c", f"(sleep 2; printf 'hello relay') | {cmd}"], capture_output=True, timeout=20,
                        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"})
    srv.close()
    assert cp.returncode == 0 and cp.stdout == b"HELLO RELAY", cp.stderr
