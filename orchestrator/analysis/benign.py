"""What containment cost a host's benign traffic (issue 17), from its files: each benign connection's delay
measured on the wire, the williamson model's delay for the same connection, their agreement connection by
connection, and the mechanism's blocks of a host that ran no worm (false blocks). Pure functions of records.

Measured, per connection, from its *scheduled* time (the generator's `due_wall` / `due_mono`):
- `wire_s`: → its first SYN (UDP: datagram) on the wire, from the capture — not the generator's own log;
- `established_s`: → the handshake completed (the generator's log, monotonic);
- `outcome`: the generator's (ok, refused, reset, timeout, unreachable, bad_answer).

The williamson model replays the schedule through the throttle's own core (throttle.model.replay): each
connection's first SYN at its scheduled time, the sender's retransmissions after it while it was still open
(suppressed while held, in the host's stack), on a virtual clock. Its prediction per connection is when the
first packet went out (passed, or released at a tick) or that it was dropped (a block).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from throttle.core import ThrottleConfig
from throttle.model import arrivals_from_worm_log, replay
from workload.analysis import distribution, join

PASSED = ("passed", "released")


def session(events: Sequence[Mapping[str, Any]]) -> tuple[dict | None, list[dict], dict | None]:
    """The generator log's (start, conn records, stop)."""
    start = next((dict(e) for e in events if e.get("event") == "start"), None)
    stop = next((dict(e) for e in events if e.get("event") == "stop"), None)
    return start, [dict(e) for e in events if e.get("event") == "conn"], stop


def measured_rows(conns: Sequence[dict], wire: dict[tuple, list[float]] | None, slack_s: float = 1.0) -> list[dict]:
    """One row per connection (schedule order): the workload's join of its log with the capture."""
    rows = join(conns, wire, slack_s)
    by_i = {c["i"]: c for c in conns}
    for r in rows:
        c = by_i[r["i"]]
        r["src"], r["sport"], r["server"] = c.get("src"), c.get("sport"), c.get("server")
        r["due_wall"], r["due_mono"] = c.get("due_wall"), c.get("due_mono")
    return rows


def _attempts(conns: Sequence[dict]) -> list[dict]:
    """The connections as the model's attempt records: the first SYN at the scheduled time; open until the
    handshake completed or the generator gave up (so the sender's retransmissions stop there)."""
    out = []
    for c in sorted(conns, key=lambda c: c["i"]):
        done = c.get("t_established_mono") or c.get("t_done_mono")
        out.append({"event": "attempt", "i": c["i"], "t_mono": float(c["due_mono"]), "src": c["src"],
                    "dst": c["dst"], "sport": c.get("sport"), "dport": c.get("dport"),
                    "protocol": c.get("protocol", "tcp"), "t_done_mono": done})
    return out


def williamson_model(conns: Sequence[dict], params: Mapping[str, Any], *, placement: str = "host",
                     retransmit: str = "linux", initial_working_set: Iterable[str] = ()) -> dict[str, Any]:
    """The williamson model's delay for every benign connection, from the schedule: {"per_conn": {i: {"wire_s",
    "fate", "queued_behind"}}, "blocked_s": time of the predicted block after the session start (None: none),
    "block_queue_len"}. fate: passed (hit or room in the working set), released (after waiting in the delay
    queue), dropped (the source was blocked), held (still queued when the replay ran dry: never)."""
    keys = ("working_set_size", "release_period_s", "delay_queue_limit", "policy")
    cfg = ThrottleConfig(**{k: params[k] for k in keys if k in params},
                         initial_working_set=tuple(initial_working_set))
    attempts = _attempts(conns)
    if not attempts:
        return {"per_conn": {}, "blocked_s": None, "block_queue_len": None}
    arrivals = arrivals_from_worm_log(attempts, retransmit)
    rep = replay(arrivals, cfg, placement=placement)
    due = {a["i"]: a["t_mono"] for a in attempts}
    t0 = min(due.values())
    per: dict[int, dict[str, Any]] = {}
    blocked_s, qlen = None, None
    for e in rep.events:
        a = e.ref
        if e.event == "blocked" and blocked_s is None:
            blocked_s, qlen = e.t - t0, e.queue_len
        if a is None or a.attempt not in due:
            continue
        p = per.setdefault(a.attempt, {"wire_s": None, "fate": "held", "queued_behind": None})
        if p["fate"] in PASSED or p["fate"] == "dropped":
            continue
        if e.event == "queued" and p["queued_behind"] is None:
            p["queued_behind"] = e.queue_len - 1
        elif e.event in PASSED:
            p["fate"], p["wire_s"] = e.event, e.t - due[a.attempt]
        elif e.event in ("dropped", "blocked"):
            p["fate"] = "dropped"
    for i in due:
        per.setdefault(i, {"wire_s": None, "fate": "held", "queued_behind": None})
    return {"per_conn": per, "blocked_s": blocked_s, "block_queue_len": qlen}


def distribution_of(model: Mapping[str, Any]) -> dict[str, float | int | None]:
    """The model's delay distribution (the connections it lets out)."""
    return distribution(p["wire_s"] for p in model["per_conn"].values())


def agreement(rows: Sequence[dict], model: Mapping[str, Any], *, abs_s: float, rel: float,
              observed_until_wall: float | None = None) -> dict[str, Any]:
    """Measured against predicted, connection by connection: a connection agrees when both saw its SYN go
    out and the delays differ by at most max(abs_s, rel × predicted), or when neither did. Marks each row.
    A connection the model releases only after `observed_until_wall` (the session's end: the generator had
    given up on it and the capture stops with the trial) and that the wire did not show is not judged
    (`agree` None, counted in `unobserved`)."""
    per = model["per_conn"]
    n = agree = unobserved = 0
    worst: tuple[float, int] | None = None
    for r in rows:
        p = per.get(r["i"])
        if p is None:
            continue
        r["model_wire_s"], r["model_fate"], r["queued_behind"] = p["wire_s"], p["fate"], p["queued_behind"]
        got, want = r.get("wire_s"), p["wire_s"]
        if got is None and want is not None and observed_until_wall is not None and \
                r.get("due_wall") is not None and r["due_wall"] + want > observed_until_wall:
            r["agree"] = None
            unobserved += 1
            continue
        n += 1
        if got is None or want is None:
            ok = got is None and want is None
        else:
            err = got - want
            ok = abs(err) <= max(abs_s, rel * want)
            if worst is None or abs(err) > abs(worst[0]):
                worst = (err, r["i"])
        r["agree"] = ok
        agree += ok
    return {"ok": n > 0 and agree == n, "connections": n, "agree": agree, "disagree": n - agree,
            "unobserved": unobserved,
            "share": agree / n if n else None, "worst_error_s": worst[0] if worst else None,
            "worst_conn": worst[1] if worst else None, "tolerance": {"abs_s": abs_s, "rel": rel}}


def false_blocks(events: Iterable[Mapping[str, Any]], *, start_wall: float | None,
                 worm_sources: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The mechanism's blocks of a host that ran no worm: when (s after the session's start, on the wall
    clock) and why (the event's reason and what it says about its state), from the mechanism's own log."""
    worm = set(worm_sources)
    out = []
    for e in events:
        if e.get("event") != "blocked" or e.get("src") in worm:
            continue
        t = e.get("t_wall")
        out.append({"src": e.get("src"), "t_wall": t,
                    "t_s": None if t is None or start_wall is None else t - start_wall,
                    "cause": e.get("reason"), "queue_len": e.get("queue_len"), "dst": e.get("dst"),
                    "detail": {k: e[k] for k in ("llr", "failures", "successes", "threshold") if k in e}})
    return out


def after_block(rows: Sequence[dict], block_wall: float | None) -> dict[str, int]:
    """The wire after a false block: connections scheduled after it, and how many of them still reached it
    (a block the wire contradicts is a finding)."""
    if block_wall is None:
        return {"scheduled_after": 0, "on_wire_after": 0}
    later = [r for r in rows if r.get("due_wall") is not None and r["due_wall"] > block_wall]
    return {"scheduled_after": len(later), "on_wire_after": sum(1 for r in later if r.get("wire_s") is not None)}


def empty_queue_wait(rows: Sequence[dict], period_s: float) -> dict[str, Any]:
    """The throttle's promise at a low rate: a new destination that finds the delay queue empty waits at most
    one release period. Over the connections the model says were queued behind nobody: their measured wait
    on the wire, and how many exceeded one period (beyond the agreement tolerance)."""
    waits = [r["wire_s"] for r in rows if r.get("model_fate") == "released" and r.get("queued_behind") == 0
             and r.get("wire_s") is not None]
    return {"n": len(waits), "max_s": max(waits) if waits else None,
            "over_one_period": sum(1 for w in waits if w > period_s + 0.02)}


def summary(rows: Sequence[dict], *, scheduled: int | None, blocks: Sequence[dict], period_s: float | None
            ) -> dict[str, Any]:
    """The session's figures: counts, the wire delay's distribution, established delay, false blocks."""
    wire = [r["wire_s"] for r in rows if r.get("wire_s") is not None]
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    d = distribution(wire)
    est = distribution(r.get("established_s") for r in rows)
    out: dict[str, Any] = {
        "connections": len(rows), "scheduled": scheduled, "ok": outcomes.get("ok", 0),
        "dropped": len(rows) - outcomes.get("ok", 0), "outcomes": outcomes, "on_wire": len(wire),
        "not_on_wire": len(rows) - len(wire),
        "delay_p50_s": d["p50"], "delay_p95_s": d["p95"], "delay_p99_s": d["p99"], "delay_max_s": d["max"],
        "delay_mean_s": math.fsum(wire) / len(wire) if wire else None,
        "established_p50_s": est["p50"], "established_p99_s": est["p99"], "established_max_s": est["max"],
        "delayed": sum(1 for w in wire if w > 0.05),
        "false_blocks": len(blocks), "false_block": blocks[0] if blocks else None}
    if period_s is not None:
        out["empty_queue_wait"] = empty_queue_wait(rows, period_s)
    return out


# ---- summary.csv rows of a benign run (pure, over trials.jsonl records)

BENIGN_COLUMNS = [
    "mechanism", "setting", "protocol", "benign_rate", "connections", "delay_p50_s", "delay_p95_s", "delay_p99_s",
    "delay_max_s", "model_p99_s", "dropped", "false_blocks", "false_block_s", "false_block_cause", "agree",
    "agree_share", "repeats", "errors", "hosts", "false_block_hosts", "fp_rate", "fp_per_host_hour",
]


def _mean(xs: list[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def summarise_benign(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mechanism, setting, protocol, benign rate): delays averaged over repeats (each repeat's
    quantiles), connections and drops summed, false blocks counted, `agree` true only if every repeat's
    connections agreed with the model (empty without one)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for t in trials:
        key = (t.get("mechanism") or "", t.get("setting") or "", t["protocol"], float(t["rate"]))
        groups.setdefault(key, []).append(t)
    rows = []
    for (mech, setting, proto, rate), ts in groups.items():
        done = [t for t in ts if t.get("status") in ("ok", "timeout")]
        m = [t.get("measured") or {} for t in done]
        ag = [t.get("agreement") or {} for t in done]

        def col(src, key):
            return [float(x[key]) for x in src if x.get(key) is not None]
        fb = [x["false_block"] for x in m if x.get("false_block")]
        oks = [a.get("ok") for a in ag if a.get("ok") is not None]
        rows.append({
            "mechanism": mech, "setting": setting, "protocol": proto, "benign_rate": rate, "rate": rate,
            "connections": int(sum(col(m, "connections"))) if m else None,
            "delay_p50_s": _mean(col(m, "delay_p50_s")), "delay_p95_s": _mean(col(m, "delay_p95_s")),
            "delay_p99_s": _mean(col(m, "delay_p99_s")), "delay_max_s": max(col(m, "delay_max_s"), default=None),
            "model_p99_s": _mean(col([t.get("model") or {} for t in done], "delay_p99_s")),
            "dropped": int(sum(col(m, "dropped"))) if m else None,
            "false_blocks": int(sum(col(m, "false_blocks"))) if m else None,
            "false_block_s": _mean([float(b["t_s"]) for b in fb if b.get("t_s") is not None]),
            "false_block_cause": fb[0].get("cause") if fb else None,
            "agree": all(oks) if oks else None, "agree_share": _mean(col(ag, "share")),
            "repeats": len(ts), "errors": len(ts) - len(done)}
            | falsepos_columns(m))
    return rows


def falsepos_columns(measured: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The false-positive columns of a group, pooled over its trials' hosts (orchestrator.analysis.falsepos;
    empty for trials recorded before they were measured)."""
    from orchestrator.analysis.falsepos import pooled

    p = pooled([x["fp"] for x in measured if x.get("fp")])
    return {k: p[k] for k in ("hosts", "false_block_hosts", "fp_rate", "fp_per_host_hour")}
