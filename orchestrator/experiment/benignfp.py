"""The figures of a benign trial on several hosts (`benign.hosts` > 1, issue 17): each host's connections joined
with the one capture and judged as a single host's are (orchestrator.experiment.benign.host_figures), then over
the hosts: every connection's delay together, each host's false block (when, why, the model's), and the
detector's false-positive rate over the hosts and the time run (orchestrator.analysis.falsepos)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.analysis import benign as ab
from orchestrator.analysis import falsepos
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import TestbedError
from orchestrator.experiment.record import Evaluation, TrialSpec
from orchestrator.experiment.setup import Setup
from workload import pcap as wpcap
from workload.analysis import attempts_on_wire


def host_files(files: dict[str, Path | None], k: int, blade: str) -> tuple[Path | None, dict[str, Path | None]]:
    """Host k's connection log and its mechanism's log (host 0's under the single-host names)."""
    if k == 0:
        return files.get("benign_log"), files
    return files.get(f"benign_log:{blade}"), {"mechanism_log": files.get(f"mechanism_log:{blade}")}


def evaluate_hosts(st: Setup, t: TrialSpec, files: dict[str, Path | None], tdir: Path, blades: list[str], *,
                   host_figures: Callable[..., dict[str, Any]],
                   mechanism_events: Callable[[dict[str, Path | None]], list[dict[str, Any]]]) -> Evaluation:
    """Each host judged by `host_figures` (orchestrator.experiment.benign's, which a single-host trial uses),
    then the figures over the hosts."""
    cap = files.get("pcap")
    if cap is None:
        raise TestbedError(f"no capture was fetched from {st.sniffer}")
    wire = attempts_on_wire(wpcap.read_packets(str(cap)))
    per: list[dict[str, Any]] = []
    for k, b in enumerate(blades):
        log, mfiles = host_files(files, k, b)
        if not log or not Path(log).exists():
            raise TestbedError(f"the benign workload on {b} left no connection log")
        f = host_figures(st, t, Path(log), mechanism_events(mfiles), wire,
                         tdir / ("benign.csv" if k == 0 else f"benign-{b}.csv"))
        f["fp_host"]["host"] = b
        per.append(f)
    rows = [r for f in per for r in f["rows"]]
    blocks = sorted((b for f in per for b in f["blocks"]), key=lambda b: b["t_s"] if b["t_s"] is not None else math.inf)
    m = st.mech
    period = float(m.params["release_period_s"]) if st.throttled and m is not None else None
    measured = ab.summary(rows, scheduled=sum(int(f["measured"].get("scheduled") or 0) for f in per),
                          blocks=blocks, period_s=period)
    measured |= {"benign_rate": t.rate, "stop_reason": per[0]["measured"]["stop_reason"],
                 "after_block": {k: sum(f["measured"]["after_block"][k] for f in per)
                                 for k in ("scheduled_after", "on_wire_after")},
                 "misses": sum(int(f["measured"].get("misses") or 0) for f in per),
                 "fp": falsepos.fp_figures([f["fp_host"] for f in per], span_s(st)),
                 "per_host": [f["fp_host"] | {"connections": f["measured"]["connections"],
                                              "dropped": f["measured"]["dropped"],
                                              "misses": f["measured"].get("misses", 0)} for f in per]}
    findings = [x | {"host": f["fp_host"]["host"]} for f in per for x in f["findings"]]
    pm = model_over_hosts(per)
    agree = agreement_over_hosts(per)
    atomic_write_json(tdir / "analysis.json", {"measured": measured, "model": pm, "agreement": agree})
    return Evaluation(measured, findings, pm, agree or {"ok": None})


def span_s(st: Setup) -> float:
    """The seconds a benign session schedules connections over: each host's exposure when never blocked."""
    b = st.exp.spec.benign
    return b.duration_s if b is not None else 0.0


def model_over_hosts(per: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The model's figures over the hosts: the delays of every host's connections together (williamson) and
    each host's predicted block."""
    if all(f["model"] is None for f in per):
        return None
    out: dict[str, Any] = {"blocked_s": [(f["model"] or {}).get("blocked_s") for f in per],
                           "block_hosts": sum(1 for f in per if (f["model"] or {}).get("blocked_s") is not None)}
    pcs = [f["model_per_conn"] for f in per if f["model_per_conn"] is not None]
    if pcs:
        d = ab.distribution_of({"per_conn": {(k, i): p for k, pc in enumerate(pcs) for i, p in pc.items()}})
        out |= {"delay_p50_s": d["p50"], "delay_p95_s": d["p95"], "delay_p99_s": d["p99"], "delay_max_s": d["max"],
                "dropped": sum(1 for pc in pcs for p in pc.values() if p["fate"] == "dropped")}
    return out


def agreement_over_hosts(per: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Every host agrees (its connections, where judged, and its block against the model's)."""
    ags = [f["agree"] for f in per]
    if all(a is None for a in ags):
        return None
    judged = [a for a in ags if a is not None]
    conns = sum(int(a.get("connections") or 0) for a in judged)
    agree = sum(int(a.get("agree") or 0) for a in judged)
    out: dict[str, Any] = {"ok": all(bool(a.get("ok")) for a in judged), "hosts": len(per),
                           "hosts_agree": sum(1 for a in judged if a.get("ok")),
                           "block": [a.get("block") for a in ags if a is not None]}
    if conns:
        out |= {"connections": conns, "agree": agree, "disagree": conns - agree, "share": agree / conns,
                "unobserved": sum(int(a.get("unobserved") or 0) for a in judged)}
    return out
