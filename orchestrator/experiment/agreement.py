"""Measured against predicted, for one trial (pure): the model fed from the worm's own log, the worm's
attempts counted on the wire, and whether the two agree within the stated tolerance.

The model never sees the throttle's decisions — it is fed the worm's attempt times, destinations and source
ports (and its schedule past the end of its log), the sender's retransmission schedule, and the initial
working set the runner itself created — so a disagreement between the throttle and its model can show. From
the throttle's event log it takes one figure, the daemon's decision jitter: arrivals closer than that to a
release tick are ties, and the model gives every outcome their orderings allow (throttle.orderings).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from orchestrator.analysis.containment import answer_times
from throttle.core import ThrottleConfig
from throttle.model import WormLog, arrivals_from_worm_log, read_worm_log, schedule_after_log
from throttle.orderings import Outcome, orderings

STOP_TOL_ABS_S = 0.020      # max(20 ms, 3 %) on a real kernel (namespaces, KVM guests)
STOP_TOL_REL = 0.03
EMULATED_TOL_ABS_S = 0.050  # max(50 ms, 5 %) on guests under QEMU's software emulation
EMULATED_TOL_REL = 0.05
OUT_TOL = 1                 # attempts out before the block: ±1


def tolerance(emulated: bool) -> dict[str, float]:
    return ({"stop_abs_s": EMULATED_TOL_ABS_S, "stop_rel": EMULATED_TOL_REL} if emulated
            else {"stop_abs_s": STOP_TOL_ABS_S, "stop_rel": STOP_TOL_REL})


def sender_schedule(linear_timeouts: str | None) -> tuple[str, str]:
    """The infected host's SYN retransmission schedule, from its net.ipv4.tcp_syn_linear_timeouts: Linux
    6.x kernels with linear SYN timeouts (4 by default) retry every second five times before doubling; older
    kernels (absent, or 0) double from the start. Returns (schedule name for the model, why)."""
    v = (linear_timeouts or "").strip()
    if v in ("", "0"):
        return "linux-classic", "tcp_syn_linear_timeouts " + ("0" if v == "0" else "absent") + ": 1, 3, 7, 15 s…"
    if v == "4":
        return "linux", "tcp_syn_linear_timeouts 4: every second five times, then doubling"
    return "linux", f"tcp_syn_linear_timeouts {v}: not measured here; modelled as 4"


def throttle_config(spec: Any, initial_working_set: Iterable[str] = ()) -> ThrottleConfig:
    return ThrottleConfig(working_set_size=spec.working_set_size, release_period_s=spec.release_period_s,
                          delay_queue_limit=spec.delay_queue_limit, policy=spec.policy,
                          initial_working_set=tuple(initial_working_set))


TIE_WINDOW_FLOOR_S = 0.0002   # the least tie window: 0.2 ms (flipped ties measured here lay within 0.06 ms)


def decision_jitter(verdicts: Iterable[Mapping[str, Any]], *, period_s: float,
                    floor_s: float = TIE_WINDOW_FLOOR_S) -> dict[str, Any]:
    """The daemon's decision jitter, from its own event log: how long after the tick it was due at it gave each
    release its verdict (t_mono − due_mono of its `released` events, in its last session). An arrival closer to
    a tick than the worst of those may have been decided on either side of it; the tie window is that worst
    lateness, at least `floor_s` (a trial blocked before its first release has none to measure), at most half
    the release period."""
    late: list[float] = []
    for ev in verdicts:
        if ev.get("event") == "config":      # a restarted daemon: its log's new session
            late = []
        elif ev.get("event") == "released" and isinstance(ev.get("t_mono"), (int, float)) \
                and isinstance(ev.get("due_mono"), (int, float)):
            late.append(max(0.0, float(ev["t_mono"]) - float(ev["due_mono"])))
    late.sort()
    worst = late[-1] if late else None
    return {"window_s": min(period_s / 2, max(floor_s, worst or 0.0)), "releases": len(late),
            "late_max_s": worst, "late_median_s": late[len(late) // 2] if late else None, "floor_s": floor_s}


def worm_targets(wl: WormLog, *, src: str) -> tuple[Callable[[int], Iterator[str]] | None, str]:
    """The worm's own target generator, rebuilt from its log's start line (the test worm's strategies are pure
    and seeded) and checked against every destination it logged: (targets from attempt `first` on, how), or
    (None, why not) — the model then takes the attempts after the log to new destinations."""
    from testworm.addrs import AddressSet, ip_int, ip_str
    from testworm.errors import UsageError
    from testworm.strategies import START_KEYWORDS, make_targets

    p = (wl.start or {}).get("params") or {}
    try:
        start = p.get("start")
        if isinstance(start, str) and start not in START_KEYWORDS:
            start = ip_int(start)
        tset = AddressSet.from_cidrs(p["targets"])
        own = ip_int(p["source"]) if p.get("source") else None
        hits = [ip_int(h) for h in p.get("hit_list") or []]
        weights = tuple(p.get("local_weights") or (0.5, 0.25, 0.25))

        def gen() -> Iterator[int]:
            return make_targets(p["strategy"], tset, seed=p["seed"], own=own, start=start, hits=hits, weights=weights)
        logged = {a["i"]: a["dst"] for a in wl.attempts if a["src"] == src and isinstance(a.get("i"), int)}
        n = max(logged, default=-1) + 1
        for i, addr in enumerate(itertools.islice(gen(), n)):
            if i in logged and logged[i] != ip_str(addr):
                return None, f"the worm's {p['strategy']} targets do not give its logged attempt {i} ({logged[i]})"
    except (KeyError, TypeError, ValueError, UsageError) as exc:
        return None, f"the worm's targets cannot be rebuilt from its start line ({type(exc).__name__}: {exc})"
    return (lambda first: (ip_str(a) for a in itertools.islice(gen(), first, None))), \
        f"the worm's own {p['strategy']} targets (seed {p['seed']})"


def _outcome_dict(o: Outcome, t0: float) -> dict[str, Any]:
    """An outcome relative to the worm's first attempt. Never blocked, its attempts out are those by the end
    of the worm's log (all a trial can have seen; the schedule after it runs on to the worm's own bounds)."""
    d = {"stop_s": None if o.blocked_at is None else round(o.blocked_at - t0, 6), "blocked": o.blocked_at is not None,
         "out_before_block": o.out_before_block if o.blocked_at is not None or o.out_at_cut is None else o.out_at_cut}
    if o.out_at_cut is not None:
        d["out_at_log_end"] = o.out_at_cut
    return d


def model_trial(worm_lines: Iterable[str | Mapping[str, Any]], *, src: str, config: ThrottleConfig,
                placement: str, protocol: str, retransmit: str = "linux", curve_points: int = 400,
                unseen: Collection[str] = (), tie_window_s: float = 0.0, answered: bool = True) -> dict[str, Any]:
    """Replay the worm's logged attempts (from `src`) through the throttle's algorithm, and its schedule after
    the log ends (when the runner stopped it) so that a block the model puts later is still found. Attempts
    to an address in `unseen` never reach the throttle where it stands (a gateway's own addresses: delivered
    to the gateway, not forwarded through its throttle); times stay relative to the worm's first attempt.
    The figures are the strict prediction (the exact clock); `orderings` is the set of outcomes that every
    ordering of the ties within `tie_window_s` allows (throttle.orderings). `answered`: a packet that leaves
    the throttle is answered at once (the gateway resets scans of empty addresses), ending its attempt."""
    wl = read_worm_log(worm_lines)
    every = [a for a in arrivals_from_worm_log(wl, retransmit if protocol == "tcp" else "none") if a.src == src]
    arrivals = [a for a in every if a.dst not in unseen]
    if not arrivals:
        return {"stop_s": None, "blocked": False, "out_before_block": 0, "packets_out_before_block": 0,
                "attempts_before_block": 0, "arrivals": 0, "unseen_arrivals": len(every), "queue_curve": []}
    targets, how = worm_targets(wl, src=src)
    more = schedule_after_log(wl, src=src, retransmit=retransmit, targets=targets, answered=answered,
                              unseen=unseen)
    os_ = orderings(arrivals, config, src=src, window_s=tie_window_s, placement=placement, more=more)
    sr = os_.strict.sources[src]
    t0 = every[0].t
    curve = [(round(t - t0, 6), q) for t, q in sr.queue_curve]
    if len(curve) > curve_points:
        step = len(curve) / curve_points
        curve = [curve[int(i * step)] for i in range(curve_points)] + [curve[-1]]
    outcomes = [_outcome_dict(o, t0) for o in os_.outcomes]
    blocks = [o["stop_s"] for o in outcomes if o["blocked"]]
    strict = _outcome_dict(os_.strict_outcome, t0)
    return {"stop_s": None if sr.blocked_at is None else sr.blocked_at - t0, "blocked": sr.blocked_at is not None,
            "out_before_block": strict["out_before_block"], "packets_out_before_block": sr.packets_out_before_block,
            "attempts_before_block": sr.attempts_before_block, "arrivals": len(arrivals),
            "unseen_arrivals": len(every) - len(arrivals),
            "suppressed_retransmits": sr.suppressed_retransmits, "queue_curve": curve,
            "observed_until_s": None if more is None else round(more.cut - t0, 6),
            "after_log": None if more is None else {"from_attempt": more.first, "targets": how if targets else
                                                    f"new destinations: {how}"},
            "orderings": {"window_s": tie_window_s, "ties": os_.ties, "decisive": os_.decisive,
                          "complex": os_.complex_ties, "incomplete": os_.incomplete, "outcomes": outcomes,
                          "strict": strict,
                          "stop_s_min": min(blocks, default=None),
                          "stop_s_max": None if not outcomes[-1]["blocked"] else max(blocks),
                          "out_min": min(o["out_before_block"] for o in outcomes),
                          "out_max": max(o["out_before_block"] for o in outcomes)}}


def clock_offset(att, verdicts: Iterable[Mapping[str, Any]], *, src: str,
                 earliest: bool = False) -> tuple[float | None, int]:
    """How far the capture's clock is ahead of the throttle host's: the median over packets the throttle
    accepted (`passed`/`released` events) of (first time on the wire − the verdict's t_wall). Used only to
    place the block on the capture's time line — VMs keep their own clocks; namespaces share one (≈ 0).
    `earliest`: the smallest difference instead — for the worm's own sends (`worm_sends`), where a SYN a
    mechanism held or dropped first reaches the wire later (a retransmission: +1 s, +3 s), never earlier."""
    sel = (att.src == int(ipaddress.IPv4Address(src))) & ~att.repeat
    first: dict[tuple[int, int, int, int], float] = {}
    for d, sp, dp, pr, t in zip(att.dst[sel].tolist(), att.sport[sel].tolist(), att.dport[sel].tolist(),
                                 att.proto[sel].tolist(), att.ts[sel].tolist(), strict=True):
        first.setdefault((d, sp, dp, pr), t)
    diffs = []
    for ev in verdicts:
        if ev.get("event") not in ("passed", "released") or ev.get("src") != src or ev.get("t_wall") is None:
            continue
        try:
            key = (int(ipaddress.IPv4Address(ev["dst"])), int(ev["sport"]), int(ev["dport"]),
                   6 if ev.get("proto") == "tcp" else 17)
        except (KeyError, TypeError, ValueError):
            continue
        if key in first:
            diffs.append(first[key] - float(ev["t_wall"]))
    if not diffs:
        return None, 0
    return float(min(diffs) if earliest else np.median(diffs)), len(diffs)


def worm_sends(worm_lines: Iterable[str], *, src: str) -> list[dict[str, Any]]:
    """The worm's logged attempts from `src` as `passed` events on its own wall clock (for `clock_offset`,
    when no mechanism log says when a SYN passed)."""
    import json
    out = []
    for line in worm_lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("event") == "attempt" and e.get("src") == src and e.get("t_wall") is not None:
            out.append({"event": "passed", "src": src, "dst": e.get("dst"), "sport": e.get("sport"),
                        "dport": e.get("dport"), "proto": e.get("protocol", "tcp"), "t_wall": e["t_wall"]})
    return out


def send_offset(worm_lines: Iterable[str], verdicts: Iterable[Mapping[str, Any]], *, src: str) -> tuple[float | None, int]:
    """How far the throttle's wall clock is ahead of the worm's, when they run on different kernels (a worm
    in a VM, a throttle on its hypervisor): the 5th percentile over attempts of (the throttle's first event
    for it − the worm's send time) — the least-delayed packets, so the throttle's own lag is not absorbed."""
    import json
    sent: dict[tuple[str, int], float] = {}
    for line in worm_lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "attempt" and e.get("src") == src and e.get("sport") is not None:
            sent[(e["dst"], int(e["sport"]))] = float(e["t_wall"])
    seen: set[tuple[str, int]] = set()
    diffs = []
    for ev in verdicts:
        if ev.get("event") not in ("passed", "queued", "blocked") or ev.get("src") != src:
            continue
        key = (ev.get("dst"), ev.get("sport"))
        if key in sent and key not in seen:
            seen.add(key)
            diffs.append(float(ev["t_wall"]) - sent[key])
    return (float(np.percentile(diffs, 5)) if diffs else None), len(diffs)


def wire_counts(att, *, src: str, scan: str, dport: int, protocol: str, block_wall: float | None,
                first_wall: float | None, tolerance_s: float = 0.0) -> dict[str, Any]:
    """The worm's attempts on the wire (from src, into the scanned range, on the worm's port), split at the
    block: new attempts (retransmissions not counted) and packets, before and after."""
    net = ipaddress.ip_network(scan)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    proto = 6 if protocol == "tcp" else 17
    mask = ((att.src == int(ipaddress.IPv4Address(src))) & (att.dst >= lo) & (att.dst <= hi)
            & (att.dport == dport) & (att.proto == proto) & att.attempt)
    ts, repeat = att.ts[mask], att.repeat[mask]
    if first_wall is not None:
        keep = ts >= first_wall - 1.0   # nothing of the worm's can precede its first attempt by much
        ts, repeat = ts[keep], repeat[keep]
    out: dict[str, Any] = {"wire_attempts": int((~repeat).sum()), "wire_packets": int(ts.size)}
    if ts.size:
        out["wire_first"], out["wire_last"] = float(ts.min()), float(ts.max())
        new_ts = np.sort(ts[~repeat])
        out["wire_rate"] = (float((new_ts.size - 1) / (new_ts[-1] - new_ts[0]))
                            if new_ts.size > 1 and new_ts[-1] > new_ts[0] else None)
    if block_wall is not None:
        before = ts <= block_wall + tolerance_s
        out["out_before_block"] = int((before & ~repeat).sum())
        out["packets_out_before_block"] = int(before.sum())
        out["out_after_block"] = int((~before).sum())
    else:
        out["out_before_block"] = out["wire_attempts"]
        out["packets_out_before_block"] = out["wire_packets"]
        out["out_after_block"] = 0
    return out


ANSWER_TOL_S = 0.005   # a released SYN is answered on the capture within 0.2 ms of the verdict (55 measured)
ANSWER_TOL_EMULATED_S = 0.020   # a sniffer VM under emulation: answers within 0.7 ms, plus the clock link's error


def answer_tolerance(emulated: bool) -> float:
    return ANSWER_TOL_EMULATED_S if emulated else ANSWER_TOL_S


def answer_clock(att, verdicts: Iterable[Mapping[str, Any]], *, src: str, min_matches: int = 3) -> float | None:
    """How far the capture's clock is ahead of the throttle's, with the capture in front of the throttle (a VM's
    sniffer): from the connections the throttle passed at once — each one's first SYN is on the wire as the
    throttle decides (the normal traffic's, or a fresh host's first attempts). None with fewer than
    `min_matches` of them: the answers are then not placed against the block."""
    found, n = clock_offset(att, (v for v in verdicts if v.get("event") == "passed"), src=src)
    return found if n >= min_matches else None


def answered_counts(pk, *, src: str, scan: str, dport: int, block_wall: float | None,
                    unseen: Collection[str] = (), tolerance_s: float = ANSWER_TOL_S) -> dict[str, Any]:
    """Attempts out, seen from in front of the throttle: with the sniffer upstream of a gateway or wire
    throttle, what got through shows as the answers coming back — the gateway's RST for an empty address
    (`gateway_empty: reset`), a target's SYN-ACK or RST. `pk` is the capture's Packets; an attempt is a
    (destination, source port) pair that got an answer (RST, or SYN+ACK) from the scanned range on the worm's
    port back to `src`, timed by its first answer. Answers from addresses in `unseen` (the gateway's own: it
    answers them itself, they never pass its throttle) are left out. TCP only (UDP's ICMP errors are rate
    limited by the kernel); `block_wall` must be on the capture's clock (see answer_clock)."""
    ts = answer_times(pk, src=src, scan=scan, dport=dport, unseen=unseen)
    if block_wall is None:
        return {"answered": int(ts.size), "out_before_block": int(ts.size), "out_after_block": 0}
    before = int((ts <= block_wall + tolerance_s).sum())
    return {"answered": int(ts.size), "out_before_block": before, "out_after_block": int(ts.size) - before,
            "answer_tolerance_s": tolerance_s}


def _against(measured: Mapping[str, Any], cand: Mapping[str, Any], observed_until: float | None,
             stop_abs_s: float, stop_rel: float) -> dict[str, Any]:
    """One predicted outcome against the measurement. A block predicted after the worm's log ended (when the
    trial was stopped) cannot have been seen: against a measurement without a block it counts as none, with
    the attempts out by the log's end."""
    ms, ps = measured.get("stop_s"), cand.get("stop_s")
    mo, po = measured.get("out_before_block"), cand.get("out_before_block")
    if ms is None and ps is not None and observed_until is not None and ps > observed_until:
        ps, po = None, cand.get("out_at_log_end", po)
    v: dict[str, Any] = {"model_stop_s": ps, "model_out": po}
    if ms is None and ps is None:
        v["stop_ok"], v["stop_error_s"] = True, None
    elif ms is None or ps is None:
        v["stop_ok"], v["stop_error_s"] = False, None
    else:
        v["stop_error_s"] = ms - ps
        v["stop_tolerance_s"] = max(stop_abs_s, stop_rel * ps)
        v["stop_ok"] = abs(ms - ps) <= v["stop_tolerance_s"]
    v["out_error"] = None if mo is None or po is None else mo - po
    # attempts out are measured where the capture sees what left the throttle (host placement), or the answers
    # to it (TCP in front of a gateway or wire throttle); where neither, they are not judged
    v["out_ok"] = None if mo is None else (v["out_error"] is not None and abs(v["out_error"]) <= OUT_TOL)
    v["agrees"] = bool(v["stop_ok"] and v["out_ok"] is not False)
    return v


def _miss(v: Mapping[str, Any]) -> tuple[float, int]:
    """How far a verdict's outcome lies from the measurement (in tolerances, then attempts): the nearest wins."""
    err, tol = v.get("stop_error_s"), v.get("stop_tolerance_s")
    return (abs(err) / tol if err is not None and tol else 0.0, abs(v.get("out_error") or 0))


def _same(a: Mapping[str, Any], b: Mapping[str, Any], window_s: float) -> bool:
    if a.get("blocked") != b.get("blocked") or a.get("out_before_block") != b.get("out_before_block"):
        return False
    return not a.get("blocked") or abs(a["stop_s"] - b["stop_s"]) <= window_s + 1e-9


def judge(measured: Mapping[str, Any], model: Mapping[str, Any] | None, *, stop_abs_s: float = STOP_TOL_ABS_S,
          stop_rel: float = STOP_TOL_REL) -> dict[str, Any]:
    """Do measurement and model agree? Stopping time within max(stop_abs_s, stop_rel) — 20 ms and 3 % by
    default —, attempts out ±1, and no worm attempt on the wire after the block — against the strict
    prediction, or against any other outcome the orderings of ties allow (model["orderings"]). `ordering`
    says which the measurement matched: `strict`, or `other` (a tie went the other way: `tie_decided`)."""
    res: dict[str, Any] = {"tolerance": {"stop_abs_s": stop_abs_s, "stop_rel": stop_rel, "out": OUT_TOL}}
    leak = measured.get("out_after_block") or 0
    res["leak_ok"] = leak == 0
    if model is None:
        res.update(ok=res["leak_ok"], stop_ok=None, out_ok=None)
        return res
    orders = model.get("orderings") or {}
    until = model.get("observed_until_s")
    strict = {**(orders.get("strict") or {}), "stop_s": model.get("stop_s"), "blocked": model.get("stop_s") is not None,
              "out_before_block": model.get("out_before_block")}
    cands = [("strict", strict)] + [("other", o) for o in orders.get("outcomes", [])
                                    if not _same(o, strict, orders.get("window_s", 0.0))]
    verdicts = [(how, c, _against(measured, c, until, stop_abs_s, stop_rel)) for how, c in cands]
    agreeing = [x for x in verdicts if x[2]["agrees"]]
    how, cand, best = min(agreeing, key=lambda x: _miss(x[2])) if agreeing else verdicts[0]
    res.update({k: v for k, v in best.items() if k not in ("agrees", "model_stop_s", "model_out")})
    res["ok"] = bool(best["agrees"] and res["leak_ok"])
    res["ordering"] = how if agreeing else None
    res["tie_decided"] = how == "other" and bool(agreeing)
    if how == "other":
        res["matched"] = dict(cand)
    ms, mo = measured.get("stop_s"), measured.get("out_before_block")
    ps, po = best["model_stop_s"], best["model_out"]
    span = ""
    if len(cands) > 1:
        lo, hi = orders.get("stop_s_min"), orders.get("stop_s_max")
        span = (f" (the orderings of {orders.get('ties')} tie(s) allow {'no block' if lo is None else f'{lo:.3f}'}"
                f"–{'no block' if hi is None else f'{hi:.3f}'} s, {orders.get('out_min')}–{orders.get('out_max')} out)")
    reasons = []
    if not res["stop_ok"]:
        reasons.append((f"stopping time {ms} s vs model {ps} s" if ms is not None and ps is not None else
                        f"blocked {'measured' if ms is not None else 'by the model'} only") + span)
    if res["out_ok"] is False:
        reasons.append(f"attempts out {'before the block' if ms is not None else 'by the end'} {mo} vs model {po}"
                       + (span if res["stop_ok"] else ""))
    if not res["leak_ok"]:
        reasons.append(f"{leak} worm attempt(s) on the wire after the block")
    res["reasons"] = reasons
    return res
