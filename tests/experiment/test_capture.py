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
from orchestrator.experiment.capture import Capture, end_marker, parse_counts
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
            assert stats.end_seen_s is not None and cap.canary["end"]["src"] == "gateway"
            local = cap.fetch(tmp_path / "trial-7.pcap")
        at = extract_attempts(read_capture(local))
        blade = int(ipaddress.IPv4Address(lab.host("blade").ip("experimental.blades")))
        mine = at.select(at.src == blade)
        assert int((mine.proto == 6).sum()) == 40            # every SYN, once
        assert int(((mine.proto == 17) & mine.attempt).sum()) == 15
        assert np.all(np.diff(mine.ts) >= 0)
        marker = at.select((at.dst == int(ipaddress.IPv4Address("198.18.8.255"))) & (at.dport == 9))
        assert len(marker) >= 1 and marker.ts.min() > mine.ts.max()    # the end marker: last, from the gateway
        if shutil.which("tshark"):
            out = subprocess.run(["tshark", "-r", str(local), "-Y",
                                  f"tcp.flags.syn==1 && tcp.flags.ack==0 && ip.src=={lab.host('blade').ip('experimental.blades')}",
                                  "-T", "fields", "-e", "frame.number"], capture_output=True, text=True).stdout
            assert len(out.split()) == 40
    finally:
        lifecycle.down_all(store=store)


class FakeAccess:
    """The datagrams' sender and the file check: the file holds the tokens of the datagrams that arrive;
    `unreachable` hosts fail to send as a host off the segment does (ENETUNREACH)."""

    def __init__(self, arrives: bool, unreachable: tuple[str, ...] = ()):
        self.arrives, self.unreachable, self.file, self.sent = arrives, unreachable, set(), []

    def run(self, host, argv, timeout=None, check=False):
        from orchestrator.localrun import Result
        if "sendto" in argv[2]:
            self.sent.append((host, argv[3], argv[4], argv[5]))
            if host in self.unreachable:
                r = Result(tuple(argv), 1, "", "OSError: [Errno 101] Network is unreachable", host=host)
                return r.check() if check else r
            if self.arrives:
                self.file.add(argv[5])
            return Result(tuple(argv), 0)
        return Result(tuple(argv), 0 if argv[-1] in self.file else 1)


def live_capture(log: str, arrives: bool, lab: str = "stopping-speed.yaml", segment: str = "experimental.blades",
                 unreachable: tuple[str, ...] = (), avoid: tuple[str, ...] = ("blade",)) -> tuple[Capture, FakeAccess]:
    hosts = FakeHosts(log)
    hosts.lab = load_lab(LABS / lab, machine_routes=[])
    hosts.access = FakeAccess(arrives, unreachable)
    cap = Capture(hosts, segment=segment, name="t", end_avoid=avoid)
    cap.canary = {"src": "injector", "dst": "198.18.8.1", "port": 9, "token": "wt-canary-t", "sent": 1,
                  "seen_after_s": 0.1}
    return cap, hosts.access


ONE_LATE = "1226 packets captured\n1227 packets received by filter\n0 packets dropped by kernel\n"


def test_the_end_marker_comes_from_a_host_still_on_the_segment():
    ss = load_lab(LABS / "stopping-speed.yaml", machine_routes=[])
    # the gateway stays on every experimental subnet; the injector left after the trigger
    assert end_marker(ss, "experimental.blades", avoid=("blade",)) == ("gateway", "198.18.8.255")
    assert end_marker(ss, "experimental.targets") == ("gateway", "198.18.9.255")
    # no gateway (the 4-VM spread lab): a blade, never the injector, the sniffer or the avoided host
    vm = load_lab(LABS / "vm-spread.yaml", machine_routes=[])
    assert end_marker(vm, "experimental", avoid=("blade1",)) == ("blade2", "198.18.8.255")
    # nobody but the injector and the measured host on the segment: none, and why
    assert end_marker(ss, "experimental.blades", avoid=("blade", "gateway")) == \
        "no host on experimental.blades to send it but the injector and blade, gateway"


def test_a_packet_received_after_the_end_marker_is_counted_not_an_error():
    # a TCG sniffer received one packet after tcpdump's last read: the end marker in the file shows every
    # packet before it was written, so the unwritten one came after the trial
    cap, acc = live_capture(ONE_LATE, arrives=True)
    stats = cap.stop()
    assert stats.problem() is None and stats.unwritten_after_end == 1 and stats.end_seen_s is not None
    (host, dst, port, token), = acc.sent
    assert (host, dst, port) == ("gateway", "198.18.8.255", "9") and token.startswith("wt-end-t-")
    assert cap.canary["end"]["sent"] == 1 and cap.canary["end"]["seen_after_s"] == stats.end_seen_s
    assert stats.to_dict()["unwritten_after_end"] == 1 and stats.to_dict()["end_seen_s"] == stats.end_seen_s
    # the same on the spread lab without a gateway: a blade that is not the avoided one marks the end
    cap, acc = live_capture(ONE_LATE, arrives=True, lab="vm-spread.yaml", segment="experimental",
                            avoid=("blade1",))
    assert cap.stop().problem() is None and acc.sent[0][:2] == ("blade2", "198.18.8.255")


def test_received_but_unwritten_before_any_end_marker_fails_loudly():
    cap, acc = live_capture(ONE_LATE, arrives=False)
    with pytest.raises(CaptureError, match=r"wrote 1226 of 1227 packets it received, and no end marker showed "
                                           r"where the file is complete \(\d+ end markers from gateway were not"):
        cap.stop(mark_end=True)
    assert len(acc.sent) >= 2 and "seen_after_s" not in cap.canary["end"]
    # a capture that never went live sends no end marker at all
    cap2, acc2 = live_capture(ONE_LATE, arrives=True)
    del cap2.canary["seen_after_s"]
    assert cap2.stop(check=False).problem() == ("the capture on sniffer wrote 1226 of 1227 packets it received, "
                                                "and no end marker showed where the file is complete (it was not "
                                                "sent)") and acc2.sent == []
    # a complete file needs no marker to be trusted, whatever became of it
    cap3, _ = live_capture("9 packets captured\n9 packets received by filter\n0 packets dropped by kernel\n",
                           arrives=False)
    assert cap3.stop(check=True).unwritten_after_end == 0


def test_a_sender_off_the_segment_or_no_sender_is_said_not_raised():
    # the reverted canary's failure: its sender had left the LAN (ENETUNREACH) and every VM trial failed
    cap, acc = live_capture(ONE_LATE, arrives=True, unreachable=("gateway",))
    stats = cap.stop(check=False)
    assert len(acc.sent) == 1 and stats.end_seen_s is None
    assert "(gateway could not send it: " in stats.problem() and "Network is unreachable" in stats.problem()
    # no host to send it from: today's behaviour, with the reason
    cap, acc = live_capture(ONE_LATE, arrives=True, avoid=("blade", "gateway"))
    assert cap.stop(check=False).problem().endswith(
        "(no host on experimental.blades to send it but the injector and blade, gateway)") and acc.sent == []
