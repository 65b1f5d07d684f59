"""A trial's figures from its files, once collected: the analysis of the capture and the logs, the attempts
out counted on the wire (or from the answers, in front of the mechanism), the clocks tied together, and the
model's prediction beside them with the verdict of their agreement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.analysis import containment
from orchestrator.analysis.figures import MetricsSettings
from orchestrator.analysis.scan import scan_capture
from orchestrator.analysis.trial import analyse_trial
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import TestbedError
from orchestrator.experiment import agreement, judged
from orchestrator.experiment.record import Evaluation, TrialSpec
from orchestrator.experiment.rundir import finite
from orchestrator.experiment.setup import Setup, answers_measurable, lab_ip, unseen_by_mechanism
from throttle.core import ThrottleConfig


def evaluate(st: Setup, t: TrialSpec, files: dict[str, Path | None], tdir: Path,
             end_wall: float | None = None) -> Evaluation:
    """The trial's figures from its collected files (the analysis is also written to tdir/analysis.json).
    `end_wall`: when the trial stopped waiting (the wire's silence is measured up to then; default: the
    capture's last packet)."""
    s = st.exp.spec
    src = lab_ip(st.lab, st.infected, st.segment)
    worm_log, pcap = files.get("worm_log"), files.get("pcap")
    if not worm_log:
        raise TestbedError(f"the worm on {st.infected} left no scan log: it never started scanning")
    if pcap is None:
        raise TestbedError(f"no capture was fetched from {st.sniffer}")
    sniffer = sniffer_side(st)
    # the logs are on the infected host's clock, the capture on the sniffer's: VMs keep their own clocks, so
    # measure the offset from packets the throttle accepted (namespaces share one clock: it comes out ≈ 0)
    scan = scan_capture(pcap, answers=True)      # one streamed pass: attempts, answers, summary
    att = scan.attempts()
    tlog = files.get("throttle_log")
    verdicts = [json.loads(x) for x in Path(tlog).read_text().splitlines() if x.strip()] if tlog else []
    worm_lines = worm_log.read_text().splitlines()
    link: float | None = 0.0
    if answers_measurable(st, t) and not st.shared_clock:     # a VM's sniffer: tie its clock to the throttle's
        link = agreement.answer_clock(att, verdicts, src=src)
    offset, matched = 0.0, 0
    sends = agreement.worm_sends(worm_lines, src=src)
    mlog = files.get("mechanism_log")
    events = verdicts if st.throttled else \
        [json.loads(x) for x in Path(mlog).read_text().splitlines() if x.strip()] if mlog else []
    if verdicts and sniffer == "after":
        found, matched = agreement.clock_offset(att, verdicts, src=src)
        offset = found or 0.0
    elif sniffer == "after" and not st.shared_clock:
        # another mechanism on the worm's host (a VM's clock): tie the capture to it by the SYNs it passed
        # (its own event log), or else by the worm's own logged sends
        found, matched = agreement.clock_offset(att, events, src=src)
        if not matched:
            found, matched = agreement.clock_offset(att, sends, src=src, earliest=True)
        offset = found or 0.0
    an = analyse_trial(scan, throttle_log=tlog, worm_logs=[worm_log],
                       settings=MetricsSettings(sniffer=sniffer, tolerance_s=0.25), capture_offset_s=offset)
    d = an.to_dict()
    atomic_write_json(tdir / "analysis.json", d)
    sm: dict[str, Any] = next((x for x in d["metrics"]["sources"] if x["src"] == src), {})
    att.ts = att.ts - offset
    wire = agreement.wire_counts(att, src=src, scan=s.worm.scan, dport=s.worm.port, protocol=t.protocol,
                                 block_wall=sm.get("blocked_wall"), first_wall=sm.get("first_attempt_wall"))
    stop_s, skew = sm.get("stopping_time_s"), None
    if stop_s is not None and sm.get("stopping_time_clock") == "wall" and verdicts:
        # worm and throttle on different kernels (a VM and its hypervisor): their wall clocks disagree
        skew, _ = agreement.send_offset(worm_lines, verdicts, src=src)
        if skew is not None:
            stop_s -= skew
    measured = _measured(sm, wire, stop_s, offset, matched)
    measured |= _out_counts(st, t, sniffer, wire, scan.answers, sm, src, link)
    if sniffer == "before" or st.contained_by is None:       # the capture sees the worm unthrottled
        measured["achieved_rate_wire"] = wire.get("wire_rate")
    times, block, contra = _wire_times(st, t, sniffer, att, scan.answers, src, link, events)
    end = end_wall if end_wall is not None else (float(att.ts.max()) + offset if att.ts.size else None)
    if times is not None and end is not None:
        cf = containment.figures(times, end=end - offset, first=sm.get("first_attempt_wall"),
                                 quiet_s=s.quiet_s, block=block,
                                 last_send=max((e["t_wall"] for e in sends), default=None))
        measured |= {k: cf[k] for k in ("contained", "contained_s", "out_before_contained", "wire_rate",
                                        "silent_s", "quiet_s", "contained_by")}
    else:
        measured |= {"contained": None, "contained_s": None, "out_before_contained": None, "wire_rate": None}
    unaligned = sniffer == "after" and not st.shared_clock and matched == 0 and times is not None and len(times) > 0
    if unaligned and measured.get("contained_s") is not None:
        # the worm's first attempt is on its clock, the wire's last on the sniffer's: no figure across them
        measured["contained_s"] = None
    measured = {k: finite(v) for k, v in measured.items()}
    findings = [{k: f[k] for k in ("code", "severity", "message", "count") if k in f}
                for f in d.get("findings", []) if f.get("severity") in ("warning", "error")]
    findings += [contra] if contra else []
    if unaligned:
        findings.append({"code": "capture_clock_unaligned", "severity": "error", "count": 1,
                         "message": f"no attempt of {src} on the capture matched the mechanism's or the worm's "
                                    f"log: the sniffer's clock is not tied to the worm's, so contained_s is not "
                                    f"measured"})
    if st.throttled:
        tmodel = _model(st, t, verdicts, worm_lines, src)
        return Evaluation(measured, findings, tmodel, agreement.judge(measured, tmodel, **st.tolerance), skew)
    m = st.mech
    assert m is not None
    model = judged.model(m, worm_lines, src)
    verdict = judged.judge(m, measured, model, **st.tolerance)
    if contra:
        verdict["ok"] = False
    return Evaluation(measured, findings, model, verdict, skew)


def _wire_times(st: Setup, t: TrialSpec, sniffer: str, att, pk, src: str, link: float | None,
                events: list[dict[str, Any]]):
    """The worm's attempts as they left the placement point (on the worm's clock), and a finding when the
    mechanism's own block time (from its event log) and a finding when the wire contradicts it. (None, None,
    None) when the capture cannot tell: in front of the mechanism with nothing answering (UDP, or a
    blackholing gateway)."""
    s = st.exp.spec
    if sniffer == "after":
        times = containment.worm_times(att, src=src, scan=s.worm.scan, dport=s.worm.port, protocol=t.protocol)
    elif answers_measurable(st, t) and link is not None:
        times = containment.answer_times(pk, src=src, scan=s.worm.scan, dport=s.worm.port,
                                         unseen=unseen_by_mechanism(st)) - link
    else:
        return None, None, None
    block = next((e.get("t_wall") for e in events if e.get("event") == "blocked" and e.get("src") in (src, None)),
                 None)
    return times, block, containment.block_contradicted(times, block)


def sniffer_side(st: Setup) -> str:
    """Where the capture stands relative to the mechanism: after it (it sees what the mechanism let out) when
    the mechanism is in the host, or when there is none; before it otherwise."""
    m = st.contained_by
    return "after" if m is None or m.placement == "host" else "before"


def _measured(sm: dict[str, Any], wire: dict[str, Any], stop_s: float | None, offset: float,
              matched: int) -> dict[str, Any]:
    return {
        "blocked": bool(sm.get("blocked")), "stop_s": stop_s,
        "first_attempt_wall": sm.get("first_attempt_wall"), "blocked_wall": sm.get("blocked_wall"),
        "achieved_rate": sm.get("worm_scan_rate"), "attempts": sm.get("worm_attempts"),
        "distinct_destinations": sm.get("worm_distinct_destinations"),
        "max_queue_len": sm.get("max_queue_len"), "throttle_events": sm.get("throttle_events"),
        "wire_attempts": wire["wire_attempts"], "wire_packets": wire["wire_packets"],
        "capture_clock_offset_s": offset, "capture_clock_matches": matched,
    }


def _out_counts(st: Setup, t: TrialSpec, sniffer: str, wire: dict[str, Any], answers, sm: dict[str, Any], src: str,
                link: float | None) -> dict[str, Any]:
    """The attempts out before (and after) the block: on the wire behind the mechanism, or from the answers
    coming back when the capture stands in front of it."""
    s = st.exp.spec
    if sniffer == "after":
        return {"out_before_block": wire["out_before_block"],
                "packets_out_before_block": wire["packets_out_before_block"],
                "out_after_block": wire["out_after_block"]}
    if answers_measurable(st, t) and link is not None:
        # in front of the throttle: what got through shows as the answers coming back (the gateway's RSTs),
        # on the capture's clock — the block placed there by the measured link between the two clocks
        block = sm.get("blocked_wall")
        ans = agreement.answered_counts(answers, src=src, scan=s.worm.scan, dport=s.worm.port,
                                        block_wall=None if block is None else block + link,
                                        unseen=unseen_by_mechanism(st),
                                        tolerance_s=agreement.answer_tolerance(st.emulated))
        return {"out_before_block": ans["out_before_block"], "out_after_block": ans["out_after_block"],
                "out_measured_from": "answers", "answer_clock_offset_s": link}
    return {"out_before_block": None, "out_after_block": None}


def _model(st: Setup, t: TrialSpec, verdicts: list[dict[str, Any]], worm_lines: list[str],
           src: str) -> dict[str, Any]:
    """The throttle model's prediction for the worm's own logged attempts."""
    s, m = st.exp.spec, st.mech
    assert m is not None
    cfg = ThrottleConfig(**m.params, initial_working_set=tuple(st.normal))
    # arrivals closer to a release tick than the daemon's own measured decision jitter are ties: the model
    # gives every outcome their orderings allow, beside its strict (exact-clock) prediction
    jitter = agreement.decision_jitter(verdicts, period_s=m.params["release_period_s"])
    model = agreement.model_trial(worm_lines, src=src, config=cfg, placement=m.placement,
                                  protocol=t.protocol, retransmit=st.retransmit, unseen=unseen_by_mechanism(st),
                                  tie_window_s=jitter["window_s"], answered=s.gateway_empty == "reset")
    if "orderings" in model:
        model["orderings"]["jitter"] = jitter
    return {k: finite(v) if not isinstance(v, list) else v for k, v in model.items()}
