"""The capture's end marker (orchestrator.experiment.capture.end_marker: one UDP datagram from a host still on
the segment to its broadcast address, port 9, after the trial) changes no figure any analysis measures: the
stopping-speed metrics look at the infected sources only, the spread analysis at the worm's TCP flows, the
benign one at its own connections' 5-tuples."""

from __future__ import annotations

from scapy.utils import rdpcap, wrpcap

from orchestrator.analysis.infections import Infection, confirm_on_wire
from orchestrator.analysis.pcap import read_capture
from orchestrator.analysis.trial import analyse_trial
from orchestrator.experiment.capture import CANARY_PORT
from tests.cli.test_analyse import trial_files
from workload import pcap as wpcap
from workload.analysis import attempts_on_wire

from .capgen import syn, udp
from .test_metrics import A

GATEWAY, BROADCAST = "198.18.8.1", "198.18.8.255"


def with_marker(src_pcap, out, src: str = GATEWAY):
    pkts = list(rdpcap(str(src_pcap)))
    m = udp(src, BROADCAST, 43210, CANARY_PORT, b"wt-end-capture-0123abcd")
    m.time = float(pkts[-1].time) + 0.4
    wrpcap(str(out), pkts + [m])
    return out


def test_the_end_marker_changes_no_stopping_speed_figure(tmp_path):
    pcap, thr, worm = trial_files(tmp_path, leak=True)
    marked = with_marker(pcap, tmp_path / "marked.pcap")
    before = analyse_trial(pcap, throttle_log=thr, worm_logs=[worm]).to_dict()
    after = analyse_trial(marked, throttle_log=thr, worm_logs=[worm]).to_dict()
    assert after["packets"] == before["packets"] + 1          # it is in the file ...
    assert after["metrics"]["sources"] == before["metrics"]["sources"] and before["metrics"]["sources"]
    assert after["findings"] == before["findings"] and after["errors"] == before["errors"] > 0
    mine = [{k: s[k] for k in ("syn_attempts", "udp_attempts", "udp_datagrams")} for s in after["sources"]
            if s["src"] == A]
    assert mine == [{k: s[k] for k in ("syn_attempts", "udp_attempts", "udp_datagrams")}
                    for s in before["sources"] if s["src"] == A]           # ... and no attempt of the worm


def test_the_end_marker_is_no_benign_connection_and_confirms_no_infection(tmp_path):
    a, b = "198.18.8.4", "198.18.8.5"
    pkts = [syn(a, b, 40001, 8080), syn(a, b, 40001, 8080, flags="PA"), udp(a, b, 5000, 5353)]
    for i, p in enumerate(pkts):
        p.time = 1_764_050_000.0 + i
    wrpcap(str(tmp_path / "plain.pcap"), pkts)
    # a spread lab without a gateway: a blade sends the marker
    marked = with_marker(tmp_path / "plain.pcap", tmp_path / "marked.pcap", src=a)
    plain, wire = attempts_on_wire(wpcap.read_packets(str(tmp_path / "plain.pcap"))), \
        attempts_on_wire(wpcap.read_packets(str(marked)))
    assert set(wire) - set(plain) == {("udp", a, 43210, BROADCAST, CANARY_PORT)}     # no benign flow's key
    assert all(wire[k] == v for k, v in plain.items())
    for path in (tmp_path / "plain.pcap", marked):
        inf = [Infection(b, 1.0, a, 1, f"{a}:40001"), Infection(b, 1.0, a, 1, f"{a}:43210")]
        confirm_on_wire(inf, read_capture(path), {b: b, a: a, BROADCAST: BROADCAST}, 8080)
        assert [i.confirmed_on_wire for i in inf] == [True, False]      # the marker confirms nothing
