"""A spread trial's figures from its files (no lab needed: a run directory is re-analysable): the infections
from the worm servers' logs, each confirmed on its segment's capture, the epidemic's figures, and when each
carrier (or the gateway, per source) was blocked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.analysis import infections as inf
from orchestrator.analysis.pcap import read_capture
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.spreadrun import SpreadSetup


def read_events(path: Path) -> list[dict[str, Any]]:
    from testworm.eventlog import read_events as read

    return read(str(path)) if path.is_file() else []


def evaluate_spread(ss: SpreadSetup, t: TrialSpec, files: Mapping[str, Path],
                    places: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], list[inf.Infection]]:
    lab = ss.base.lab
    names = {i.ip: h.name for h in lab.hosts for i in h.interfaces if i.ip and i.segment.startswith("experimental")}
    logs = {v: read_events(files[f"{v}:server"]) for v in ss.vulnerable if f"{v}:server" in files}
    infections = inf.infections_from_logs(logs, names, ss.initial)
    addrs = ss.addresses()
    for seg in ss.segments:
        path = files.get(f"pcap:{seg}")
        mine = [i for i in infections if ss.segment_of(i.host) == seg]
        if path is None or not mine:
            continue
        inf.confirm_on_wire(mine, read_capture(path), addrs, ss.exp.spec.worm.port)
    offsets = inf.clock_offsets(infections)
    capture_clock = not shared_clock(ss) and inf.on_capture_clock(infections, ss.initial)
    inf.wire_relative(infections)
    measured = inf.epidemic([i.infected_at_s for i in infections], len(ss.vulnerable))
    measured["confirmed_on_wire"] = sum(1 for i in infections if i.confirmed_on_wire)
    measured["generations"] = max((i.generation for i in infections), default=0)
    measured |= _draw(ss, t, places, measured.get("t_first_s"))
    t0 = _t0_wall(logs, ss.initial)
    rel: dict[str, float] = {}
    if capture_clock:       # each host's events onto the initial host's clock, through the capture's
        measured["clock"] = "capture"
        measured["clock_offsets_s"] = offsets
        rel = {h: o - offsets[ss.initial] for h, o in offsets.items()}
    measured["blocked"] = _blocked(files, places, t0, names, rel)
    measured["blocked_hosts"] = len(measured["blocked"])
    findings = inf.findings(infections)
    if not infections:
        findings.append({"kind": "no-injection", "host": ss.initial,
                         "detail": f"{ss.initial}'s server never took the injector's trigger"})
    return measured, findings, infections


def _draw(ss: SpreadSetup, t: TrialSpec, places: Mapping[str, Any], t_first_s: float | None) -> dict[str, Any]:
    """Where this trial's own scan order put the first infection, and the start-up beyond it — only where the
    initial host scans unthrottled with the random strategy (else its attempts leave on another clock)."""
    from orchestrator.experiment.commands import trial_seed
    from orchestrator.experiment.spreaddraw import draw_figures

    w = ss.exp.spec.worm
    if w.strategy != "random" or w.profile or ss.initial in places or t.deploy == "gateway":
        return {}
    ips = ss.addresses()
    return draw_figures(w.scan, trial_seed(ss.exp.spec, t), ips[ss.initial],
                        [ips[v] for v in ss.vulnerable if v != ss.initial], t.rate, t_first_s)


def _t0_wall(logs: Mapping[str, list[dict[str, Any]]], initial: str) -> float | None:
    e = inf.trigger_event(logs.get(initial, []))
    return float(e["t_wall"]) if e is not None else None


def _blocked(files: Mapping[str, Path], places: Mapping[str, Any], t0: float | None,
             names: Mapping[str, str], offsets: Mapping[str, float]) -> dict[str, float]:
    """Source host → when the mechanism blocked it (from the injection): a carrier's own log, or the gateway's
    per source address. `offsets`: each place's clock against t0's (the initial host's; none: one clock; a
    place without one, such as a gateway that is never infected, is read as on t0's clock)."""
    out: dict[str, float] = {}
    if t0 is None:
        return out
    for p in places:
        for e in read_events(files.get(f"{p}:mechanism", Path("/nonexistent"))):
            if e.get("event") != "blocked" or "t_wall" not in e:
                continue
            src = names.get(str(e.get("src", "")), p)
            if src not in out:
                out[src] = round(float(e["t_wall"]) - offsets.get(p, 0.0) - t0, 6)
    return out


def shared_clock(ss: SpreadSetup) -> bool:
    """Do the lab's hosts and the capture read one kernel's clock (the netns provider)? Else each VM keeps its
    own, and the servers' times are tied to the capture's (inf.on_capture_clock)."""
    return bool(getattr(ss.base, "shared_clock", True))
