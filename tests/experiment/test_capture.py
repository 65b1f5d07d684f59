"""The sniffer's capture: tcpdump's statistics, the canary, complete files, and loud failures."""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.analysis.attempts import extract_attempts
from orchestrator.analysis.pcap import read_capture
from orchestrator.errors import CaptureError
from orchestrator.experiment.capture import Capture, parse_counts
from orchestrator.lab import lifecycle
from orchestrator.lab.programs import LabHosts
from orchestrator.lab.provision import provision_lab
from orchestrator.lab.ssh import Access
from orchestrator.labfile.load import load_lab
from orchestrator.providers.state import StateStore

LABS = Path(__file__).resolve().parents[2] / "labs"

TCPDUMP_END = """tcpdump: listening on exp0, link-type EN10MB (Ethernet), snapshot length 128 bytes
1204 packets captured
1210 packets received by filter
6 packets dropped by kernel
"""


def test_parse_counts_reads_tcpdumps_closing_lines():
    assert parse_counts(TCPDUMP_END) == {"captured": 1204, "received": 1210, "dropped": 6, "if_dropped": -1}
    assert parse_counts("tcpdump: listening on exp0\n")["captured"] == -1


class FakeHosts:
    """Stands in for LabHosts: the sniffer's log says what tcpdump said."""

    def __init__(self, log: str, forced: bool = False):
        self.lab = load_lab(LABS / "stopping-speed.yaml", machine_routes=[])
        self.log, self.forced = log, forced

    def prefix(self, host):
        return "/opt/testbed"

    def stop(self, host, name, **kw):
        return {"stopped": True, "forced": self.forced}

    def read(self, host, path, tail=None):
        return self.log


def test_dropped_packets_fail_loudly():
    cap = Capture(FakeHosts(TCPDUMP_END), segment="experimental.blades", name="t1")
    with pytest.raises(CaptureError, match="lost packets: 6 dropped by the kernel, -1 by the interface, of 1210"):
        cap.stop()
    stats = cap.stop(check=False)
    assert (stats.captured, stats.received, stats.dropped) == (1204, 1210, 6)


def test_an_unfinished_or_killed_capture_fails_loudly():
    with pytest.raises(CaptureError, match="reported no statistics"):
        Capture(FakeHosts("tcpdump: listening on exp0\n"), segment="experimental.blades", name="t").stop()
    # unchecked (a trial judges it once its files are safe), the stats still say why they cannot be trusted
    stats = Capture(FakeHosts("tcpdump: listening on exp0\n"), segment="experimental.blades", name="t").stop(check=False)
    assert (stats.captured, stats.sniffer) == (-1, "sniffer")
    assert stats.problem() == "tcpdump on sniffer reported no statistics: the capture is incomplete"
    ok_counts = "5 packets captured\n5 packets received by filter\n0 packets dropped by kernel\n"
    with pytest.raises(CaptureError, match="had to be killed"):
        Capture(FakeHosts(ok_counts, forced=True), segment="experimental.blades", name="t").stop()


def test_a_capture_needs_a_sniffer_port_on_the_segment():
    with pytest.raises(CaptureError, match="the sniffer sniffer has no passive port on admin"):
        Capture(FakeHosts(""), segment="admin", name="t")


@pytest.mark.root
def test_real_capture_on_the_mirror_port(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    store = StateStore(tmp_path / "state")
    name = f"c{secrets.token_hex(3)}"
    try:
        lab = lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
        with Access(name, store) as acc:
            acc.wait_reachable(timeout=20)
            provision_lab(name, roles=["common", "sniffer", "gateway"], store=store)
            hosts = LabHosts(acc)
            cap = Capture(hosts, segment="experimental.blades", name="trial-7")
            gw = lab.host("gateway").ip("experimental.blades")
            cap.start("injector", gw)
            assert cap.canary["src"] == "injector" and cap.canary["sent"] >= 1 and "seen_after_s" in cap.canary
            code = ("import socket,time\nfor i in range(40):\n s=socket.socket(); s.setblocking(False)\n"
                    " s.connect_ex(('198.18.9.%d' % (20+i), 80)); time.sleep(0.002)\n"
                    "for i in range(15):\n u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                    " u.sendto(b'x',('198.18.9.%d' % (100+i), 1434))\n")
            acc.run("blade", ["python3", "-c", code], check=True)
            time.sleep(0.3)
            stats = cap.stop()
            assert stats.dropped == 0 and stats.captured == stats.received > 0
            local = cap.fetch(tmp_path / "trial-7.pcap")
        at = extract_attempts(read_capture(local))
        blade = int(ipaddress.IPv4Address(lab.host("blade").ip("experimental.blades")))
        mine = at.select(at.src == blade)
        assert int((mine.proto == 6).sum()) == 40            # every SYN, once
        assert int(((mine.proto == 17) & mine.attempt).sum()) == 15
        assert np.all(np.diff(mine.ts) >= 0)
        if shutil.which("tshark"):
            out = subprocess.run(["tshark", "-r", str(local), "-Y",
                                  f"tcp.flags.syn==1 && tcp.flags.ack==0 && ip.src=={lab.host('blade').ip('experimental.blades')}",
                                  "-T", "fields", "-e", "frame.number"], capture_output=True, text=True).stdout
            assert len(out.split()) == 40
    finally:
        lifecycle.down_all(store=store)
