"""Stopping-speed metrics per infected source, and cross-checks between the three witnesses of a trial:
the worm log (what the worm tried), the throttle event log (what the throttle says it did) and the capture
(what reached the wire). Pure functions over parsed logs and an attempt table: no I/O, no model.

Clocks: worm and throttle times are compared on `t_mono` when both logs come from one kernel (their
wall-minus-monotonic offsets agree), else on `t_wall`; the capture is always aligned on `t_wall`.
The throttle's own log is only ever *compared* with the other witnesses here, never used to predict anything.

The host's own traffic: with a worm log, a 5-tuple of an infected source that is not in the log and was first
seen (on the wire or by the throttle) before the worm's first attempt is the host's earlier traffic — the
runner's *normal traffic* that fills the working set first, and its retransmissions. It is left out of the
wire counts and the "not in the worm log" checks (as the runner leaves it out of its own counts) and said in
one info finding, `prior_traffic`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .attempts import PROTO_NAMES, PROTO_NUMBERS, PROTO_TCP, Attempts, int_to_ip, ip_to_int
from .figures import (
    SAME_KERNEL_S,
    Finding,
    MetricsResult,
    MetricsSettings,
    SourceMetrics,
)
from .logs import ThrottleEvent, ThrottleLog, WormAttempt, WormLog

Key = tuple[int, int, int, int, int]  # (src, sport, dst, dport, proto) with addresses as integers


# ---------------------------------------------------------------------------------------------- internals

@dataclass(frozen=True)
class _Row:
    """One packet on the wire, as the checks need it."""

    key: Key
    ts: float
    repeat: bool
    attempt: bool


def _wkey(a: WormAttempt) -> Key:
    return (ip_to_int(a.src), a.sport, ip_to_int(a.dst), a.dport, PROTO_NUMBERS[a.protocol])


def _tkey(e: ThrottleEvent) -> Key | None:
    if e.dst is None or e.sport is None or e.dport is None or e.proto is None or e.src is None:
        return None
    return (ip_to_int(e.src), e.sport, ip_to_int(e.dst), e.dport, PROTO_NUMBERS[e.proto])


def _key_dict(k: Key) -> dict:
    return {"src": int_to_ip(k[0]), "sport": k[1], "dst": int_to_ip(k[2]), "dport": k[3],
            "proto": PROTO_NAMES.get(k[4], str(k[4]))}


def _match(left: Iterable[tuple[Key, float, object]], right: Iterable[tuple[Key, float, object]],
           tol: float) -> tuple[list, list, list]:
    """Pair items of two lists with equal keys and times within ±tol, one-to-one, earliest first.

    Returns (unmatched left, unmatched right, matched pairs); items are the (key, t, payload) tuples given.
    """
    lg: dict[Key, list] = defaultdict(list)
    rg: dict[Key, list] = defaultdict(list)
    for item in left:
        lg[item[0]].append(item)
    for item in right:
        rg[item[0]].append(item)
    ul: list = []
    ur: list = []
    pairs: list = []
    for k in lg.keys() | rg.keys():
        ls = sorted(lg.get(k, ()), key=lambda x: x[1])
        rs = sorted(rg.get(k, ()), key=lambda x: x[1])
        used = [False] * len(rs)
        j = 0
        for item in ls:
            while j < len(rs) and (used[j] or rs[j][1] < item[1] - tol):
                j += 1
            if j < len(rs) and rs[j][1] <= item[1] + tol:
                used[j] = True
                pairs.append((item, rs[j]))
                j += 1
            else:
                ul.append(item)
        ur.extend(r for r, u in zip(rs, used, strict=True) if not u)
    ul.sort(key=lambda x: x[1])
    ur.sort(key=lambda x: x[1])
    return ul, ur, pairs


def _within(span: tuple[float, float] | None, tol: float):
    """Predicate: time t lies inside the capture's span (± tol); always false without a span."""
    def inside(t: float) -> bool:
        return span is not None and span[0] - tol <= t <= span[1] + tol
    return inside


def _rate(times: Sequence[float]) -> float | None:
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None


def choose_clock(worm: WormLog | None, throttle: ThrottleLog | None, setting: str = "auto") -> tuple[str, str]:
    """("mono" | "wall", why). Auto picks mono when both logs' wall-minus-mono offsets agree (one kernel)."""
    if setting != "auto":
        return setting, f"clock {setting!r} chosen by the caller"
    w = [a.t_wall - a.t_mono for a in (worm.attempts if worm else [])]
    t = [e.t_wall - e.t_mono for e in (throttle.events if throttle else [])]
    if throttle and throttle.config:
        t.append(float(throttle.config["t_wall"]) - float(throttle.config["t_mono"]))
    if not w or not t:
        return "mono", "one log only: its own t_mono"
    dw, dt = statistics.median(w), statistics.median(t)
    if abs(dw - dt) <= SAME_KERNEL_S:
        return "mono", f"worm and throttle logs share a monotonic clock (offsets differ by {abs(dw - dt):.3f} s)"
    return "wall", (f"worm and throttle logs come from different clocks (wall-minus-mono offsets differ by "
                    f"{abs(dw - dt):.1f} s): compared on t_wall, as exact as the hosts' clock sync")


def resolve_sniffer(setting: str | None, throttle: ThrottleLog | None) -> tuple[str, str]:
    if setting is not None:
        return setting, f"sniffer {setting} the throttle (given)"
    mode = throttle.mode if throttle else None
    if mode == "host":
        return "after", "sniffer after the throttle (throttle mode 'host')"
    if mode in ("gateway", "wire"):
        return "before", f"sniffer before the throttle (throttle mode {mode!r})"
    return "after", "sniffer position unknown (no throttle mode): assumed after the throttle"


# ------------------------------------------------------------------------------------------------- metrics

def compute_metrics(attempts: Attempts | None, worm: WormLog | None, throttle: ThrottleLog | None, *,
                    settings: MetricsSettings | None = None,
                    capture_span: tuple[float, float] | None = None) -> MetricsResult:
    """Per-source metrics and cross-check findings. `capture_span`: (first, last) packet time of the capture,
    to tell 'not on the wire' from 'not captured'; the span of `attempts` when not given."""
    st = settings or MetricsSettings()
    tol = st.tolerance_s
    findings: list[Finding] = []
    clock, clock_why = choose_clock(worm, throttle, st.clock)
    sniffer, sniffer_why = resolve_sniffer(st.sniffer, throttle)
    findings.append(Finding("analysis_settings", "info", f"{sniffer_why}; {clock_why}; matching tolerance "
                                                         f"±{tol} s"))
    _log_findings(worm, throttle, findings, st.max_examples)

    worm_by_src, thr_by_src = _by_source(worm, throttle)
    infected = infected_sources(worm, throttle)

    all_rows = _wire_rows(attempts, infected)
    if capture_span is None and attempts is not None and len(attempts):
        finite = attempts.ts[np.isfinite(attempts.ts)]
        capture_span = (float(finite.min()), float(finite.max())) if len(finite) else None
    prior = _prior_flows(worm_by_src, all_rows, thr_by_src, clock)
    if prior:
        by = {src: len(keys) for src, keys in prior.items()}
        findings.append(Finding(
            "prior_traffic", "info",
            f"{sum(by.values())} 5-tuple(s) of infected sources began before the worm's first attempt and are not in "
            "its log: the host's own traffic (the runner's normal traffic, and its retransmissions), left out of the "
            "wire counts", sum(by.values()), by,
            [_key_dict(k) for keys in prior.values() for k in sorted(keys)][:st.max_examples]))
    rows_by_src = {src: [r for r in rows if r.key not in prior.get(src, ())] for src, rows in all_rows.items()}
    thr_worm = {src: [e for e in evs if _tkey(e) not in prior.get(src, ())] for src, evs in thr_by_src.items()}

    sources = []
    for src in infected:
        sm = _source_metrics(src, worm_by_src.get(src, []), thr_by_src.get(src, []), rows_by_src.get(src),
                             worm, clock, sniffer, tol)
        sources.append(sm)
        if throttle is not None and not sm.blocked:
            findings.append(Finding("not_blocked", "info", f"the throttle never blocked {src}: no stopping time",
                                    by_source={src: 1}))

    if attempts is not None:
        _coverage_checks(sources, capture_span, tol, findings, thr_by_src, sniffer)
        _leak_check(sources, all_rows, sniffer, tol, findings, st.max_examples)
        if throttle is not None:
            _throttle_vs_wire(infected, thr_by_src, all_rows, throttle, sources, sniffer, tol, capture_span,
                              findings, st.max_examples)
        if worm is not None:
            _worm_vs_wire(worm_by_src, rows_by_src, sniffer, throttle is not None, tol, capture_span, findings,
                          st.max_examples)
    if worm is not None and throttle is not None:
        _worm_vs_throttle(worm_by_src, thr_worm, throttle, clock, tol, findings, st.max_examples)
    return MetricsResult(sniffer, clock, tol, sources, findings)


def _by_source(worm: WormLog | None, throttle: ThrottleLog | None) -> tuple[dict[str, list[WormAttempt]],
                                                                             dict[str, list[ThrottleEvent]]]:
    worm_by_src: dict[str, list[WormAttempt]] = defaultdict(list)
    for a in worm.attempts if worm else []:
        worm_by_src[a.src].append(a)
    thr_by_src: dict[str, list[ThrottleEvent]] = defaultdict(list)
    for e in throttle.events if throttle else []:
        if e.src is not None:
            thr_by_src[e.src].append(e)
    return worm_by_src, thr_by_src


def infected_sources(worm: WormLog | None, throttle: ThrottleLog | None) -> list[str]:
    """Who is infected, by address: every source in the worm log, else every source the throttle blocked.
    The metrics look at the capture's rows of these sources only."""
    worm_by_src, thr_by_src = _by_source(worm, throttle)
    if worm_by_src:
        return sorted(worm_by_src, key=ip_to_int)
    return sorted({s for s, evs in thr_by_src.items() if any(e.event == "blocked" for e in evs)}, key=ip_to_int)


def _prior_flows(worm_by_src: dict[str, list[WormAttempt]], rows_by_src: dict[str, list[_Row]],
                 thr_by_src: dict[str, list[ThrottleEvent]], clock: str) -> dict[str, set[Key]]:
    """Per infected source, the 5-tuples not in the worm log first seen before the worm's first attempt."""
    out: dict[str, set[Key]] = {}
    for src, atts in worm_by_src.items():
        if not atts:
            continue
        wkeys = {_wkey(a) for a in atts}
        first_wall = min(a.t_wall for a in atts)
        first_t = min(a.t_mono for a in atts) if clock == "mono" else first_wall
        keys = {r.key for r in rows_by_src.get(src, []) if r.ts < first_wall and r.key not in wkeys}
        for e in thr_by_src.get(src, []):
            k = _tkey(e)
            if k is not None and k not in wkeys and (e.t_mono if clock == "mono" else e.t_wall) < first_t:
                keys.add(k)
        if keys:
            out[src] = keys
    return out


def _wire_rows(attempts: Attempts | None, srcs: Sequence[str]) -> dict[str, list[_Row]]:
    out: dict[str, list[_Row]] = {}
    if attempts is None:
        return out
    for src in srcs:
        s = ip_to_int(src)
        idx = np.flatnonzero(attempts.src == s)
        out[src] = [
            _Row((s, int(attempts.sport[i]), int(attempts.dst[i]), int(attempts.dport[i]), int(attempts.proto[i])),
                 float(attempts.ts[i]), bool(attempts.repeat[i]), bool(attempts.attempt[i]))
            for i in idx]
    return out


def _source_metrics(src: str, watts: list[WormAttempt], tevs: list[ThrottleEvent], rows: list[_Row] | None,
                    worm: WormLog | None, clock: str, sniffer: str, tol: float) -> SourceMetrics:
    sm = SourceMetrics(src)
    watts = sorted(watts, key=lambda a: a.t_mono if clock == "mono" else a.t_wall)
    if watts:
        sm.first_attempt_basis = "worm_log"
        sm.first_attempt_mono, sm.first_attempt_wall = watts[0].t_mono, watts[0].t_wall
        sm.worm_attempts = len(watts)
        sm.worm_distinct_destinations = len({a.dst for a in watts})
        sm.worm_scan_rate = _rate([a.t_mono if clock == "mono" else a.t_wall for a in watts])
        sm.requested_rate = worm.requested_rate if worm else None
    elif rows:
        sm.first_attempt_basis = "capture"
        sm.first_attempt_wall = min(r.ts for r in rows if r.attempt) if any(r.attempt for r in rows) else None

    counts: dict[str, int] = defaultdict(int)
    for e in tevs:
        counts[e.event] += 1
    sm.throttle_events = dict(counts)
    qls = [e.queue_len for e in tevs if e.queue_len is not None]
    sm.max_queue_len = max(qls) if qls else None
    block = next((e for e in sorted(tevs, key=lambda e: e.t_mono) if e.event == "blocked"), None)
    if block is not None:
        sm.blocked = True
        sm.blocked_mono, sm.blocked_wall, sm.blocked_queue_len = block.t_mono, block.t_wall, block.queue_len
        sm.throttle_emitted_before_block = sum(1 for e in tevs if e.event in ("passed", "released")
                                               and e.t_mono <= block.t_mono)
        first = sm.first_attempt_mono if clock == "mono" else sm.first_attempt_wall
        if sm.first_attempt_basis == "worm_log" and first is not None:      # the worm's log says when it began
            sm.stopping_time_s = (block.t_mono if clock == "mono" else block.t_wall) - first
            sm.stopping_time_clock = clock
            sm.worm_attempts_before_block = sum(
                1 for a in watts if (a.t_mono <= block.t_mono if clock == "mono" else a.t_wall <= block.t_wall))
        elif sm.first_attempt_wall is not None:
            sm.stopping_time_s = block.t_wall - sm.first_attempt_wall
            sm.stopping_time_clock = "wall"

    if rows is not None:
        att = [r for r in rows if r.attempt]
        sm.wire_attempts = len(att)
        new = [r for r in att if not r.repeat]
        sm.wire_new_attempts = len(new)
        sm.wire_distinct_destinations = len({r.key[2] for r in att})
        if att:
            sm.wire_first_ts, sm.wire_last_ts = att[0].ts, att[-1].ts
        if sniffer == "before":
            sm.wire_scan_rate = _rate([r.ts for r in new])
        if sm.blocked_wall is not None:  # the capture and the throttle log share the wall clock: cut exactly
            before = [r for r in att if r.ts <= sm.blocked_wall]
            sm.wire_attempts_before_block = len(before)
            sm.wire_new_attempts_before_block = sum(1 for r in before if not r.repeat)
            sm.wire_attempts_after_block = len(att) - len(before)
            sm.wire_distinct_destinations_before_block = len({r.key[2] for r in before})
    return sm


def _example(key: Key, t: float, **extra) -> dict:
    return {**_key_dict(key), "t": round(t, 6), **extra}


def _add(findings: list[Finding], code: str, severity: str, message: str, items: list, max_examples: int,
         example) -> None:
    if not items:
        return
    by_src: dict[str, int] = defaultdict(int)
    for it in items:
        by_src[int_to_ip(it[0][0])] += 1
    findings.append(Finding(code, severity, message.format(n=len(items)), len(items), dict(by_src),
                            [example(it) for it in items[:max_examples]]))


# ------------------------------------------------------------------------------------------------- checks

def _log_findings(worm: WormLog | None, throttle: ThrottleLog | None, findings: list[Finding], mx: int) -> None:
    for name, log in (("worm", worm), ("throttle", throttle)):
        if log is None:
            continue
        iss = log.issues
        if iss.invalid:
            findings.append(Finding(
                "log_invalid_lines", "warning",
                f"{name} log {iss.path or ''}: {iss.invalid} of {iss.lines} lines invalid and skipped".replace("  ", " "),
                iss.invalid, examples=[{"log": name, "line": n, "reason": r} for n, r in iss.examples[:mx]]))
    if throttle is not None and throttle.config is None:
        findings.append(Finding("throttle_log_no_config", "warning",
                                "throttle log has no config line: mode, policy and protocols are unknown"))
    if worm is not None and len(worm.stops) < len(worm.starts):
        findings.append(Finding("worm_log_no_stop", "info",
                                f"worm log: {len(worm.starts) - len(worm.stops)} start line(s) without a stop line "
                                "(the worm was killed, or is still running)"))
    if worm is not None and not worm.attempts:
        findings.append(Finding("worm_log_no_attempts", "warning", "worm log has no valid attempt line"))


def _coverage_checks(sources: list[SourceMetrics], span: tuple[float, float] | None, tol: float,
                     findings: list[Finding], thr_by_src: dict[str, list[ThrottleEvent]] | None = None,
                     sniffer: str = "after") -> None:
    """A capture that starts after the worm's first attempt; one that ends before the block *while the
    throttle still had packets for the wire* — let out (passed, released) with the sniffer after it, or
    arriving with the sniffer before it. With the sniffer after a throttle that let nothing out near the
    block, a quiet wire before the block is what it should be, not an early end (no warning)."""
    if span is None:
        if sources:
            findings.append(Finding("capture_no_attempts", "error",
                                    "the capture holds no connection attempt at all: nothing to compare"))
        return
    lo, hi = span
    late = {s.src: 1 for s in sources if s.first_attempt_basis == "worm_log" and s.first_attempt_wall is not None
            and s.first_attempt_wall < lo - tol}
    if late:
        findings.append(Finding(
            "capture_started_late", "error",
            f"the capture starts ({lo:.6f}) after the first worm attempt of {len(late)} source(s): "
            "attempts before it were not captured", len(late), late))
    wanted = ("passed", "released") if sniffer == "after" else ("passed", "queued", "blocked", "dropped")
    early: dict[str, int] = {}
    for s in sources:
        if s.blocked_wall is None or s.blocked_wall <= hi + tol:
            continue
        if thr_by_src is None:
            early[s.src] = 1
            continue
        missed = sum(1 for e in thr_by_src.get(s.src, []) if e.event in wanted and hi + tol < e.t_wall
                     <= s.blocked_wall + tol)
        if missed:
            early[s.src] = missed
    if early:
        findings.append(Finding(
            "capture_ended_early", "warning",
            f"the capture ends ({hi:.6f}) before the throttle blocked {len(early)} source(s), and the throttle log "
            f"has {sum(early.values())} packet(s) for the wire after that end: wire counts before the block are "
            "incomplete", len(early), early))


def _leak_check(sources: list[SourceMetrics], rows_by_src: dict[str, list[_Row]], sniffer: str, tol: float,
                findings: list[Finding], mx: int) -> None:
    """Sniffer after the throttle: no attempt of a blocked source may reach the wire after the block.
    Within `tol` after it, a packet released just before the block may still be stamped late: a warning
    (and the throttle-vs-wire check tells whether the throttle did let it out); beyond `tol`, an error."""
    if sniffer != "after":
        return
    late: list[tuple[Key, float, _Row]] = []
    near: list[tuple[Key, float, _Row]] = []
    for s in sources:
        if s.blocked_wall is None:
            continue
        for r in rows_by_src.get(s.src, []):
            if r.attempt and r.ts > s.blocked_wall:
                (late if r.ts > s.blocked_wall + tol else near).append((r.key, r.ts, r))

    def ex(it):
        return _example(it[0], it[1], retransmission=it[2].repeat)

    _add(findings, "wire_after_block", "error",
         "{n} connection attempts reached the wire more than " + f"{tol} s after the throttle blocked their source "
         "(must be zero)", late, mx, ex)
    _add(findings, "wire_just_after_block", "warning",
         "{n} connection attempts reached the wire less than " + f"{tol} s after the throttle blocked their source "
         "(a packet let out just before the block and stamped after it, or a leak: see the throttle checks)",
         near, mx, ex)


def _arrivals(evs: list[ThrottleEvent], tol: float) -> list[ThrottleEvent]:
    """Decisions that stand for a packet reaching the throttle (passed, queued, blocked, dropped) — minus the
    `dropped` lines that discard an already-queued packet when its source is blocked."""
    out = []
    queued: dict[Key, int] = defaultdict(int)
    block_t = next((e.t_mono for e in sorted(evs, key=lambda e: e.t_mono) if e.event == "blocked"), None)
    for e in sorted(evs, key=lambda e: e.t_mono):
        k = _tkey(e)
        if k is None:
            continue
        if e.event == "queued":
            queued[k] += 1
        elif e.event == "released":
            queued[k] = max(0, queued[k] - 1)
            continue
        elif e.event == "dropped" and queued[k] > 0 and block_t is not None and abs(e.t_mono - block_t) <= tol:
            queued[k] -= 1
            continue
        out.append(e)
    return out


def _throttle_vs_wire(infected: list[str], thr_by_src: dict[str, list[ThrottleEvent]],
                      rows_by_src: dict[str, list[_Row]], throttle: ThrottleLog, sources: list[SourceMetrics],
                      sniffer: str, tol: float, span: tuple[float, float] | None, findings: list[Finding],
                      mx: int) -> None:
    protos = {PROTO_NUMBERS[p] for p in throttle.protocols if p in PROTO_NUMBERS}
    all_t = [e.t_wall for evs in thr_by_src.values() for e in evs]
    if throttle.config is not None:
        all_t.append(float(throttle.config["t_wall"]))
    if not all_t:
        return
    t_lo, t_hi = min(all_t) - tol, max(all_t) + tol
    in_cap = _within(span, tol)
    blocked_at = {s.src: s.blocked_wall for s in sources}
    expected, wire = [], []
    for src in infected:
        evs = thr_by_src.get(src, [])
        if sniffer == "after":
            chosen = [e for e in evs if e.event in ("passed", "released")]
        else:
            chosen = _arrivals(evs, tol)
        expected += [(k, e.t_wall, e) for e in chosen if (k := _tkey(e)) is not None and in_cap(e.t_wall)]
        b = blocked_at.get(src)
        for r in rows_by_src.get(src, []):
            if r.key[4] not in protos or not t_lo <= r.ts <= t_hi:
                continue
            if sniffer == "after" and b is not None and r.attempt and r.ts > b + tol:
                continue  # already reported as wire_after_block
            wire.append((r.key, r.ts, r))
    missing, extra, pairs = _match(expected, wire, tol)
    if sniffer == "after" and throttle.policy == "connections":
        # a retransmitted SYN joins the entry it repeats: once that entry left, its repeats are explained
        left = {p[0][0] for p in pairs}
        extra = [w for w in extra if not (w[0][4] == PROTO_TCP and w[2].repeat and w[0] in left)]
    what = "passed or released" if sniffer == "after" else "received (passed, queued, blocked or dropped)"
    where = "after" if sniffer == "after" else "before"
    _add(findings, "throttle_packet_not_on_wire", "error",
         "{n} packets the throttle says it " + what + f" are not in the capture within ±{tol} s "
         f"(sniffer {where} the throttle)", missing, mx, lambda it: _example(it[0], it[1], event=it[2].event))
    _add(findings, "wire_packet_not_in_throttle_log", "error",
         "{n} packets of infected sources on the wire have no matching throttle line " +
         ("(passed/released)" if sniffer == "after" else "(any decision)") + f" within ±{tol} s",
         extra, mx, lambda it: _example(it[0], it[1], retransmission=it[2].repeat))


def _worm_vs_wire(worm_by_src: dict[str, list[WormAttempt]], rows_by_src: dict[str, list[_Row]], sniffer: str,
                  have_throttle: bool, tol: float, span: tuple[float, float] | None, findings: list[Finding],
                  mx: int) -> None:
    in_cap = _within(span, tol)
    keys = {_wkey(a) for atts in worm_by_src.values() for a in atts}
    if sniffer == "before" or not have_throttle:
        want = [(_wkey(a), a.t_wall, a) for atts in worm_by_src.values() for a in atts
                if a.outcome != "unreachable" and in_cap(a.t_wall)]
        wire = [(r.key, r.ts, r) for rows in rows_by_src.values() for r in rows]
        missing, _extra, _pairs = _match(want, wire, tol)
        _add(findings, "worm_attempt_not_on_wire", "error",
             "{n} worm attempts (outcome other than 'unreachable') have no first packet in the capture within "
             + f"±{tol} s", missing, mx, lambda it: _example(it[0], it[1], outcome=it[2].outcome))
    lo = {src: min(a.t_wall for a in atts) - tol for src, atts in worm_by_src.items() if atts}
    strangers: dict[Key, tuple] = {}
    for src, rows in rows_by_src.items():
        for r in rows:
            if r.key not in keys and src in lo and r.ts >= lo[src]:
                strangers.setdefault(r.key, (r.key, r.ts, r))
    _add(findings, "wire_attempt_not_in_worm_log", "warning",
         "{n} 5-tuples of SYNs or UDP datagrams from infected sources (after their first worm attempt) are not "
         "in the worm log", list(strangers.values()), mx, lambda it: _example(it[0], it[1]))


def _worm_vs_throttle(worm_by_src: dict[str, list[WormAttempt]], thr_by_src: dict[str, list[ThrottleEvent]],
                      throttle: ThrottleLog, clock: str, tol: float, findings: list[Finding], mx: int) -> None:
    protos = throttle.protocols
    tt = (lambda x: x.t_mono) if clock == "mono" else (lambda x: x.t_wall)
    evs_all = [e for evs in thr_by_src.values() for e in evs]
    starts = [tt(e) for e in evs_all]
    if throttle.config is not None:
        starts.append(float(throttle.config["t_mono" if clock == "mono" else "t_wall"]))
    if not starts:
        return
    t0 = min(starts) - tol
    want = [(_wkey(a), tt(a), a) for atts in worm_by_src.values() for a in atts
            if a.protocol in protos and a.outcome != "unreachable" and tt(a) >= t0]
    arrivals = [(k, tt(e), e) for src in worm_by_src for e in _arrivals(thr_by_src.get(src, []), tol)
                if (k := _tkey(e)) is not None]
    # the throttle sees a SYN's retransmissions too: match each worm attempt with the first arrival of its key
    first_arrival: dict[Key, tuple] = {}
    for it in sorted(arrivals, key=lambda x: x[1]):
        first_arrival.setdefault(it[0], it)
    missing, _extra, _pairs = _match(want, list(first_arrival.values()), tol)
    _add(findings, "worm_attempt_not_in_throttle_log", "warning",
         "{n} worm attempts have no throttle decision for their packet within " + f"±{tol} s ({clock} clock)",
         missing, mx, lambda it: _example(it[0], it[1], outcome=it[2].outcome))
    wkeys = {_wkey(a) for atts in worm_by_src.values() for a in atts}
    strangers = [it for it in first_arrival.values() if it[0] not in wkeys]
    _add(findings, "throttle_packet_not_in_worm_log", "warning",
         "{n} packets (distinct 5-tuples) from infected sources in the throttle log are not in the worm log",
         strangers, mx, lambda it: _example(it[0], it[1], event=it[2].event))


def error_count(findings: Iterable[Finding]) -> int:
    return sum(1 for f in findings if f.severity == "error")
