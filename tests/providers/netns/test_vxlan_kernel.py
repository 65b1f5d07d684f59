"""The VXLAN plan applied on the kernel: two machines simulated as namespaces joined by a veth underlay —
hosts on both reach each other, the sniffer on one machine gets every frame of both exactly once, and the
underlay carries nothing but the lab's VXLAN between its two VTEPs (the kernel's counters and a capture on
the underlay, not the plan's word)."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.lab.audit_underlay import leak_filter
from orchestrator.providers.base import Underlay
from orchestrator.providers.netns import vxlan
from tests.providers.netns.test_vxlan import LAN, MIRROR

# ---------------------------------------------------------------- on the kernel

ECHO = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('198.18.250.2',7007));s.settimeout(10)\n"
        "for _ in range(5):\n d,a=s.recvfrom(100);s.sendto(d,a)\n")
ASK = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);n=0\n"
       "for i in range(5):\n"
       " for _ in range(10):\n"
       "  s.sendto(b'x%d'%i,('198.18.250.2',7007))\n"
       "  try:\n   s.recvfrom(100);n+=1;break\n"
       "  except OSError:time.sleep(0.2)\n"
       "print(n)\n")


def sh(*argv: str, input: str | None = None) -> str:
    cp = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, f"{' '.join(argv)}: {cp.stderr}"
    return cp.stdout


def tx_rx(ns: str, dev: str) -> tuple[int, int]:
    st = json.loads(sh("ip", "-n", ns, "-s", "-j", "link", "show", dev))[0]["stats64"]
    return st["tx"]["packets"], st["rx"]["packets"]


@pytest.mark.root
def test_two_machines_joined_by_vxlan(tmp_path):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    p = f"wtvx{secrets.token_hex(3)}"
    sw = [f"{p}.m0.sw", f"{p}.m1.sw"]
    ul = [f"{p}.m0.ul", f"{p}.m1.ul"]
    hosts = [f"{p}.h0", f"{p}.h1"]
    snf = f"{p}.snf"
    machines = [vxlan.Machine(i, sw[i], ul[i], "ul0", f"198.19.255.{i + 1}/30") for i in range(2)]
    made: list[str] = []
    cap = None
    try:
        for ns in [*sw, *ul, *hosts, snf]:
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0")
        sh("ip", "-n", ul[0], "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", ul[1])
        macs = {0: ["02:00:00:00:00:01"], 1: ["02:00:00:00:00:02"]}
        for i in range(2):
            lines = ["link add br0 type bridge stp_state 0 mcast_snooping 0", "link set br0 up",
                     f"link add p-h{i} type veth peer name eth0 netns {hosts[i]} address {macs[i][0]}",
                     f"link set p-h{i} master br0 up"]
            if i == 0:
                lines += [f"link add p-snf type veth peer name eth0 netns {snf}", "link set p-snf up"]
            sh("ip", "-n", sw[i], "-batch", "-", input="\n".join(lines) + "\n")
            sh("ip", "-n", hosts[i], "-batch", "-", input=f"addr add 198.18.250.{i + 1}/24 dev eth0\n"
               "link set eth0 up\nlink set lo up\n")
        sh("ip", "-n", snf, "link", "set", "eth0", "up")
        for m in machines:
            sh("ip", "-n", m.underlay_ns, "-batch", "-",
               input="\n".join(vxlan.underlay_lines(m, machines, [LAN], [MIRROR])) + "\n")
            sh("ip", "netns", "exec", m.underlay_ns, "nft", "-f", "-", input=vxlan.underlay_nft(m, machines))
        for m in machines:
            sh("ip", "-n", m.switch_ns, "-batch", "-", input="\n".join(vxlan.switch_lines(m, [LAN], [MIRROR])) + "\n")
            sh("bridge", "-n", m.switch_ns, "-batch", "-",
               input="\n".join(vxlan.fdb_lines(m, machines, [LAN, MIRROR], {100: macs})) + "\n")
            sh("tc", "-n", m.switch_ns, "-batch", "-",
               input="\n".join(vxlan.mirror_lines(m, 0, [f"p-h{m.index}"], "p-snf", MIRROR)) + "\n")
        # the underlay, watched from the first machine's underlay namespace while the lab talks
        pcap = tmp_path / "underlay.pcap"
        # -Z root: Debian's tcpdump would drop to its own user, who may not write into the test's directory
        cap = subprocess.Popen(["ip", "netns", "exec", ul[0], "timeout", "60", "tcpdump", "-Z", "root", "-i", "ul0",
                                "-nn", "-p", "--immediate-mode", "-U", "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        said, deadline = b"", time.monotonic() + 15      # listening, not a fixed sleep: the suite loads the machine
        while b"listening on" not in said and (left := deadline - time.monotonic()) > 0 \
                and select.select([cap.stderr], [], [], left)[0]:
            chunk = os.read(cap.stderr.fileno(), 4096)
            said += chunk
            if not chunk:
                break
        assert b"listening on" in said, said
        before = [tx_rx(hosts[0], "eth0"), tx_rx(hosts[1], "eth0"), tx_rx(snf, "eth0")]
        echo = subprocess.Popen(["ip", "netns", "exec", hosts[1], sys.executable, "-c", ECHO], stdout=subprocess.PIPE,
                                text=True)
        out = sh("ip", "netns", "exec", hosts[0], sys.executable, "-c", ASK)
        assert out.split() == ["5"] and echo.wait(timeout=15) == 0      # five datagrams there and back
        time.sleep(0.5)
        after = [tx_rx(hosts[0], "eth0"), tx_rx(hosts[1], "eth0"), tx_rx(snf, "eth0")]
        ul1_rx = tx_rx(ul[1], "ul0")[1]
        os.kill(cap.pid, signal.SIGINT)
        _, err = cap.communicate(timeout=10)
        cap = None
        assert " packets captured" in err, err
        sent = (after[0][0] - before[0][0]) + (after[1][0] - before[1][0])
        copied = after[2][1] - before[2][1]
        assert sent >= 10 and copied == sent, (sent, copied)     # every frame of both machines, exactly once

        def count(flt: str) -> int:
            r = subprocess.run(["tcpdump", "-r", str(pcap), "-nn", flt], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            return len(r.stdout.splitlines())

        under = Underlay(0, [], "ul0", ("198.19.255.1", "198.19.255.2"), "198.19.255.0/30")
        assert count(leak_filter(under)) == 0                        # no lab frame outside the VXLAN
        assert count("udp dst port 4789") >= 10, err                 # and the lab's traffic did cross it
        # nothing routed: the underlay namespaces know only their link's subnet and forward nothing
        for ns in ul:
            routes = json.loads(sh("ip", "-n", ns, "-j", "route", "show"))
            assert [r["dst"] for r in routes] == ["198.19.255.0/30"], routes
            assert sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
        # and the underlay namespace's own stack may send nothing but VXLAN to its peer. Its filter drops in
        # the output hook: a UDP send is refused there and then (EPERM), while a TCP connect is not — the
        # kernel's tcp_connect() ignores the SYN's transmit error and retransmits it until the connect times
        # out, which is what this test's first run met. So: UDP refused at once, TCP never answered, and
        # neither on the wire.
        probe = subprocess.run(["ip", "netns", "exec", ul[0], sys.executable, "-c",
                                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
                                "('198.19.255.2', 22))"], capture_output=True, text=True, timeout=10)
        assert probe.returncode != 0 and "Operation not permitted" in probe.stderr, probe.stderr
        tcp = subprocess.run(["ip", "netns", "exec", ul[0], sys.executable, "-c",
                              "import socket; socket.create_connection(('198.19.255.2', 22), 1.5)"],
                             capture_output=True, text=True, timeout=10)
        assert tcp.returncode != 0 and "timed out" in tcp.stderr, tcp.stderr
        assert tx_rx(ul[1], "ul0")[1] == ul1_rx, "the underlay namespace's own stack sent to its peer"
    finally:
        if cap is not None:
            os.kill(cap.pid, signal.SIGKILL)
            cap.wait(timeout=10)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    left = sh("ip", "netns", "list")
    assert p not in left
