"""A spread trial's figures from its files alone (fakes: server logs, a capture, a mechanism log, no lab): the
infections in order, each confirmed on the wire or a finding, the epidemic figures, who was blocked when, and
where the trial's own scan order put the first infection."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.spec import load_experiment
from orchestrator.experiment.spreaddraw import draw_figures, first_place
from orchestrator.experiment.spreadeval import evaluate_spread
from orchestrator.experiment.spreadrun import SpreadSetup
from tests.analysis.capgen import T0, eth, write_pcap
from testworm.addrs import AddressSet, ip_int
from testworm.strategies import make_targets

LABS = Path(__file__).resolve().parents[2] / "labs"
B1, B2, B3, B4, INJ = "198.18.8.4", "198.18.8.5", "198.18.8.6", "198.18.8.7", "198.18.8.3"


def setup(tmp_path: Path, shared_clock: bool = True) -> SpreadSetup:
    p = tmp_path / "exp.yaml"
    p.write_text(f"""\
experiment: spread-eval
kind: spread
lab: {LABS / 'paper-testbed.yaml'}
worm: {{strategy: random, port: 8080, protocols: [tcp], scan: 198.18.8.0/22, max_attempts: 20000, lifetime_s: 60}}
rates: [20]
vulnerable: [blade1, blade2, blade3, blade4]
initial: blade1
deploy: [0.0, 1.0]
mechanisms: [{{name: williamson, placement: host}}]
repeats: 1
timeout_s: 60
seed: 1
""")
    e = load_experiment(p, machine_routes=[])
    return SpreadSetup(SimpleNamespace(lab=e.lab, exp=e, shared_clock=shared_clock),
                       ["blade1", "blade2", "blade3", "blade4"], "blade1",
                       {"experimental": ("injector", "198.18.8.1")}, 3)


def trig(t: float, peer: str, gen: int, ok: bool = True) -> dict:
    return {"event": "request", "t_wall": T0 + t, "peer": peer, "cmd": "trigger", "generation": gen, "ok": ok}


def jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def flow(t: float, src: str, sport: int, dst: str, data: bool = True) -> list:
    out = [(T0 + t, bytes(eth(IP(src=src, dst=dst), TCP(sport=sport, dport=8080, flags="S"))))]
    if data:
        out.append((T0 + t + 0.002, bytes(eth(IP(src=src, dst=dst), TCP(sport=sport, dport=8080, flags="PA"),
                                              Raw(b'{"cmd": "trigger"}\n')))))
    return out


def files(tmp_path: Path, *, b3_on_wire: bool = True) -> dict[str, Path]:
    logs = {"blade1": [{"event": "listening", "t_wall": T0 - 1}, trig(0.0, f"{INJ}:41000", 0)],
            "blade2": [trig(2.5, f"{B1}:42001", 1)],
            "blade3": [trig(4.0, f"{B2}:43001", 2), trig(4.5, f"{B1}:42007", 1, ok=False)],    # infected once
            "blade4": [{"event": "listening", "t_wall": T0 - 1}]}                               # never
    out = {f"{h}:server": jsonl(tmp_path / f"{h}.jsonl", ev) for h, ev in logs.items()}
    frames = flow(-0.01, INJ, 41000, B1) + flow(2.49, B1, 42001, B2) + flow(3.99, B2, 43001, B3, data=b3_on_wire)
    out["pcap:experimental"] = write_pcap(tmp_path / "c.pcap", sorted(frames))
    return out


def test_an_unthrottled_trial_from_its_files(tmp_path):
    ss = setup(tmp_path)
    t = TrialSpec(0, "tcp", 20.0, 1, "none", "0")
    measured, findings, infs = evaluate_spread(ss, t, files(tmp_path), {})
    assert [(i.host, i.infected_at_s, i.by, i.generation, i.confirmed_on_wire) for i in infs] == [
        ("blade1", 0.0, "injector", 0, True), ("blade2", 2.5, "blade1", 1, True), ("blade3", 4.0, "blade2", 2, True)]
    assert {k: measured[k] for k in ("hosts", "infected_final", "t_first_s", "t_50_s", "t_90_s", "t_all_s",
                                     "confirmed_on_wire", "generations", "blocked_hosts")} == {
        "hosts": 4, "infected_final": 3, "t_first_s": 2.5, "t_50_s": 2.5, "t_90_s": None, "t_all_s": None,
        "confirmed_on_wire": 3, "generations": 2, "blocked_hosts": 0}
    assert findings == []
    # the trial's own draw: blade1's scan order with seed 1 + index 0, the first of blade2…4 in it
    k = first_place("198.18.8.0/22", 1, B1, [B2, B3, B4])
    assert measured["first_place"] == k and measured["t_first_draw_s"] == round(k / 20, 4)
    assert measured["start_up_s"] == pytest.approx(2.5 - k / 20, abs=1e-4)


def test_an_infection_the_wire_does_not_show_is_a_finding_and_blocks_are_timed(tmp_path):
    ss = setup(tmp_path)
    t = TrialSpec(1, "tcp", 20.0, 1, "williamson", "1")
    f = files(tmp_path, b3_on_wire=False)
    f["blade1:mechanism"] = jsonl(tmp_path / "m1.jsonl", [{"event": "config", "t_wall": T0 - 2},
                                                          {"event": "blocked", "t_wall": T0 + 5.25, "src": B1},
                                                          {"event": "blocked", "t_wall": T0 + 9.0, "src": B1}])
    f["blade2:mechanism"] = jsonl(tmp_path / "m2.jsonl", [{"event": "config", "t_wall": T0 - 2}])
    measured, findings, infs = evaluate_spread(ss, t, f, {"blade1": None, "blade2": None})
    assert measured["confirmed_on_wire"] == 2 and [x["kind"] for x in findings] == ["infection-not-on-wire"]
    assert findings[0]["host"] == "blade3"
    assert measured["blocked"] == {"blade1": 5.25} and measured["blocked_hosts"] == 1     # the first block
    assert "first_place" not in measured            # the initial host's attempts leave on the throttle's clock


def test_on_vms_each_servers_clock_is_tied_to_the_capture_through_its_trigger(tmp_path):
    """VM guests keep their own clocks (no shared kernel, no time sync): blade2's runs 0.7 s behind blade1's and
    blade3's 0.4 s ahead. The servers' own times would put blade2 at 1.8 s and blade3 at 4.4 s; the capture's
    one clock puts each infection at its trigger's segment (2.5 s, 4.0 s), and blade2's block at 5.0 s on the
    initial host's clock (its log says 4.3)."""
    f = files(tmp_path)
    skew = {"blade2": -0.7, "blade3": 0.4}
    for h, d in skew.items():
        evs = [json.loads(x) for x in f[f"{h}:server"].read_text().splitlines()]
        jsonl(f[f"{h}:server"], [e | {"t_wall": e["t_wall"] + d} for e in evs])
    f["blade2:mechanism"] = jsonl(tmp_path / "m2.jsonl", [{"event": "blocked", "t_wall": T0 + 4.3, "src": B2}])
    t = TrialSpec(1, "tcp", 20.0, 1, "williamson", "1")
    shared, _, infs_shared = evaluate_spread(setup(tmp_path), t, f, {"blade2": None})
    assert [(i.host, i.infected_at_s) for i in infs_shared] == [("blade1", 0.0), ("blade2", 1.8), ("blade3", 4.4)]
    assert "clock" not in shared and shared["blocked"] == {"blade2": 4.3}    # one kernel: read as they are
    measured, findings, infs = evaluate_spread(setup(tmp_path, shared_clock=False), t, f, {"blade2": None})
    assert [(i.host, i.infected_at_s, i.wire_at_s) for i in infs] == [
        ("blade1", 0.0, 0.0), ("blade2", 2.5, 2.5), ("blade3", 4.0, 4.0)]
    assert measured["clock"] == "capture" and findings == []
    assert measured["clock_offsets_s"] == pytest.approx({"blade1": 0.008, "blade2": -0.692, "blade3": 0.408})
    assert (measured["t_first_s"], measured["t_50_s"]) == (2.5, 2.5)
    assert measured["blocked"] == {"blade2": pytest.approx(5.0)}


def test_an_infection_the_capture_lacks_keeps_its_servers_time_on_vms(tmp_path):
    ss = setup(tmp_path, shared_clock=False)
    measured, findings, infs = evaluate_spread(ss, TrialSpec(0, "tcp", 20.0, 1, "none", "0"),
                                               files(tmp_path, b3_on_wire=False), {})
    assert [(i.host, i.infected_at_s, i.confirmed_on_wire) for i in infs] == [
        ("blade1", 0.0, True), ("blade2", 2.5, True), ("blade3", 4.0, False)]
    assert sorted(measured["clock_offsets_s"]) == ["blade1", "blade2"]
    assert [x["host"] for x in findings] == ["blade3"]


def test_no_injection_is_a_finding(tmp_path):
    ss = setup(tmp_path)
    f = files(tmp_path)
    f["blade1:server"] = jsonl(tmp_path / "b1.jsonl", [{"event": "listening", "t_wall": T0 - 1}])
    measured, findings, infs = evaluate_spread(ss, TrialSpec(0, "tcp", 20.0, 1, "none", "0"), f, {})
    assert infs == [] and measured["infected_final"] == 0
    assert [(x["kind"], x["host"]) for x in findings] == [("no-injection", "blade1")]


def test_first_place_is_the_worms_own_order():
    scan, own = "198.18.8.0/29", "198.18.8.4"
    order = list(make_targets("random", AddressSet.from_cidrs([scan]), seed=7, own=ip_int(own)))
    targets = ["198.18.8.2", "198.18.8.6"]
    want = min(order.index(ip_int(a)) for a in targets)
    assert first_place(scan, 7, own, targets) == want
    assert first_place(scan, 7, own, [own]) is None                 # its own address never counts
    assert draw_figures(scan, 7, own, targets, 4.0, None) == {"first_place": want, "t_first_draw_s": want / 4,
                                                             "start_up_s": None}


def test_the_measured_paper_trial_drew_its_first_blade_late():
    """The first unthrottled 16-blade trial (seed 1, trial 0): blade1's first blade is the 198th address of its
    order, 9.85 s of scanning at 20/s — the measured t_first 10.05 s is that draw plus 0.2 s of start-up."""
    blades = [f"198.18.8.{i}" for i in range(5, 20)]
    assert draw_figures("198.18.8.0/22", 1, B1, blades, 20.0, 10.05) == {
        "first_place": 197, "t_first_draw_s": 9.85, "start_up_s": 0.2}
