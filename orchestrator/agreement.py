"""Measured against predicted, for one trial (pure): the model fed from the worm's own log, the worm's
attempts counted on the wire, and whether the two agree within the stated tolerance.

The model never sees the throttle's event log — it is fed the worm's attempt times, destinations and source
ports, the sender's retransmission schedule, and the initial working set the runner itself created — so a
disagreement between the throttle and its model can show.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

from throttle.core import ThrottleConfig
from throttle.model import arrivals_from_worm_log, read_worm_log, replay

from .analysis.pcap import TCP_ACK, TCP_RST, TCP_SYN

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


def model_trial(worm_lines: Iterable[str | Mapping[str, Any]], *, src: str, config: ThrottleConfig,
                placement: str, protocol: str, retransmit: str = "linux", curve_points: int = 400,
                unseen: Collection[str] = ()) -> dict[str, Any]:
    """Replay the worm's logged attempts (from `src`) through the throttle's algorithm. Attempts to an
    address in `unseen` never reach the throttle where it stands (a gateway's own addresses: delivered to
    the gateway, not forwarded through its throttle); times stay relative to the worm's first attempt."""
    wl = read_worm_log(worm_lines)
    every = [a for a in arrivals_from_worm_log(wl, retransmit if protocol == "tcp" else "none") if a.src == src]
    arrivals = [a for a in every if a.dst not in unseen]
    if not arrivals:
        return {"stop_s": None, "blocked": False, "out_before_block": 0, "packets_out_before_block": 0,
                "attempts_before_block": 0, "arrivals": 0, "unseen_arrivals": len(every), "queue_curve": []}
    rp = replay(arrivals, config, placement=placement)
    sr = rp.sources[src]
    t0 = every[0].t
    curve = [(round(t - t0, 6), q) for t, q in sr.queue_curve]
    if len(curve) > curve_points:
        step = len(curve) / curve_points
        curve = [curve[int(i * step)] for i in range(curve_points)] + [curve[-1]]
    return {"stop_s": None if sr.blocked_at is None else sr.blocked_at - t0, "blocked": sr.blocked_at is not None,
            "out_before_block": sr.out_before_block, "packets_out_before_block": sr.packets_out_before_block,
            "attempts_before_block": sr.attempts_before_block, "arrivals": len(arrivals),
            "unseen_arrivals": len(every) - len(arrivals),
            "suppressed_retransmits": sr.suppressed_retransmits, "queue_curve": curve}


def clock_offset(att, verdicts: Iterable[Mapping[str, Any]], *, src: str) -> tuple[float | None, int]:
    """How far the capture's clock is ahead of the throttle host's: the median over packets the throttle
    accepted (`passed`/`released` events) of (first time on the wire − the verdict's t_wall). Used only to
    place the block on the capture's time line — VMs keep their own clocks; namespaces share one (≈ 0)."""
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
    return (float(np.median(diffs)) if diffs else None), len(diffs)


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
    net = ipaddress.ip_network(scan)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    flags = pk.tcp_flags
    answer = ((flags & TCP_RST) != 0) | ((flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
    mask = (pk.tcp & (pk.dst == int(ipaddress.IPv4Address(src))) & (pk.src >= lo) & (pk.src <= hi)
            & (pk.sport == dport) & answer)
    if unseen:
        mask &= ~np.isin(pk.src, np.array([int(ipaddress.IPv4Address(a)) for a in unseen], dtype=np.uint32))
    first: dict[tuple[int, int], float] = {}
    for a, sp, t in zip(pk.src[mask].tolist(), pk.dport[mask].tolist(), pk.ts[mask].tolist(), strict=True):
        if (a, sp) not in first or t < first[(a, sp)]:
            first[(a, sp)] = t
    ts = np.array(sorted(first.values()), dtype=np.float64)
    if block_wall is None:
        return {"answered": int(ts.size), "out_before_block": int(ts.size), "out_after_block": 0}
    before = int((ts <= block_wall + tolerance_s).sum())
    return {"answered": int(ts.size), "out_before_block": before, "out_after_block": int(ts.size) - before,
            "answer_tolerance_s": tolerance_s}


def judge(measured: Mapping[str, Any], model: Mapping[str, Any] | None, *, stop_abs_s: float = STOP_TOL_ABS_S,
          stop_rel: float = STOP_TOL_REL) -> dict[str, Any]:
    """Do measurement and model agree? Stopping time within max(stop_abs_s, stop_rel) — 20 ms and 3 % by
    default —, attempts out ±1, and no worm attempt on the wire after the block."""
    res: dict[str, Any] = {"tolerance": {"stop_abs_s": stop_abs_s, "stop_rel": stop_rel, "out": OUT_TOL}}
    leak = measured.get("out_after_block") or 0
    res["leak_ok"] = leak == 0
    if model is None:
        res.update(ok=res["leak_ok"], stop_ok=None, out_ok=None)
        return res
    ms, ps = measured.get("stop_s"), model.get("stop_s")
    if ms is None and ps is None:
        res["stop_ok"], res["stop_error_s"] = True, None
    elif ms is None or ps is None:
        res["stop_ok"], res["stop_error_s"] = False, None
    else:
        res["stop_error_s"] = ms - ps
        res["stop_tolerance_s"] = max(stop_abs_s, stop_rel * ps)
        res["stop_ok"] = abs(ms - ps) <= res["stop_tolerance_s"]
    mo, po = measured.get("out_before_block"), model.get("out_before_block")
    res["out_error"] = None if mo is None or po is None else mo - po
    # attempts out are measured where the capture sees what left the throttle (host placement), or the answers
    # to it (TCP in front of a gateway or wire throttle); where neither, they are not judged
    res["out_ok"] = None if mo is None else (res["out_error"] is not None and abs(res["out_error"]) <= OUT_TOL)
    res["ok"] = bool(res["stop_ok"] and res["out_ok"] is not False and res["leak_ok"])
    reasons = []
    if not res["stop_ok"]:
        reasons.append(f"stopping time {ms} s vs model {ps} s" if ms is not None and ps is not None else
                       f"blocked {'measured' if ms is not None else 'by the model'} only")
    if res["out_ok"] is False:
        reasons.append(f"attempts out before the block {mo} vs model {po}")
    if not res["leak_ok"]:
        reasons.append(f"{leak} worm attempt(s) on the wire after the block")
    res["reasons"] = reasons
    return res
