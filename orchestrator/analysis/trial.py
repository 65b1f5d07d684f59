"""One trial's analysis from its files: read the capture and the logs, extract attempts, compute metrics and
cross-checks, and give the result as one JSON-ready dict. This is what `testbed analyse` and the experiment
runner call; rendering lives in `command.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .attempts import Attempts, SourceTimeline, build_attempts, ip_to_int, source_timelines, timelines
from .figures import Finding, MetricsResult, MetricsSettings
from .logs import ThrottleLog, WormLog, merge_worm_logs, read_throttle_log, read_worm_log
from .metrics import compute_metrics, error_count, infected_sources
from .packets import linktype_name
from .pcap import CaptureReader
from .scan import CaptureScan, CaptureSummary
from .stream import stream_capture

SCHEMA_VERSION = 1


@dataclass
class TrialAnalysis:
    capture: CaptureSummary
    attempts: Attempts  # the attempt rows the metrics read: the infected sources' (every row, given a scan)
    timelines: list[SourceTimeline]
    metrics: MetricsResult
    findings: list[Finding]  # capture findings, then the metrics' findings
    worm: WormLog | None
    throttle: ThrottleLog | None
    totals: dict[str, int]  # Attempts.totals() of the whole capture

    @property
    def partial(self) -> bool:
        return self.capture.partial

    @property
    def errors(self) -> int:
        return error_count(self.findings)

    def to_dict(self) -> dict:
        """The JSON shape of `testbed analyse --json` (see docs/analysis.md)."""
        pk = self.capture
        span = pk.span
        return _clean({
            "schema": SCHEMA_VERSION,
            "file": pk.path,
            "format": pk.format,
            "linktypes": [{"linktype": lt, "name": linktype_name(lt)} for lt in pk.linktypes],
            **self.totals,
            "ipv4_packets": pk.ipv4_packets,
            "udp_mode": self.attempts.udp_mode,
            "first_ts": span[0] if span else None,
            "last_ts": span[1] if span else None,
            "partial": pk.partial,
            "partial_reasons": list(pk.problems),
            "notes": list(pk.notes),
            "sources": [t.to_dict() for t in self.timelines],
            "metrics": self.metrics.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "errors": self.errors,
            "logs": {"worm": self.worm.issues.to_dict() if self.worm else None,
                     "throttle": self.throttle.issues.to_dict() if self.throttle else None},
        })


def analyse_trial(pcap: str | Path | CaptureScan, *, throttle_log: str | Path | None = None,
                  worm_logs: Sequence[str | Path] = (), settings: MetricsSettings | None = None,
                  udp: str = "first_per_destination", bins: int = 24,
                  capture_offset_s: float = 0.0) -> TrialAnalysis:
    """Analyse one trial. Raises CaptureReadError / LogReadError (exit code 2) when a file cannot be read at
    all; a capture damaged part-way gives a result with `partial` set and a `capture_partial` finding.
    `capture_offset_s`: how far the capture's clock is ahead of the logs' (VMs keep their own clocks); the
    capture's timestamps are moved onto the logs' clock before anything is compared.
    `pcap` is a capture file, streamed once in memory bounded whatever its size (`stream_capture`), or a scan
    of it already made (whose own tables are left as they are); both give the same result."""
    if not isinstance(pcap, CaptureScan):
        build_attempts([], [], [], [], [], [], udp=udp)  # a bad udp mode fails before any file is read
        reader = CaptureReader(pcap)  # a file that is no capture fails before the logs are read
    worm = merge_worm_logs(read_worm_log(p) for p in worm_logs) if worm_logs else None
    throttle = read_throttle_log(throttle_log) if throttle_log is not None else None
    if isinstance(pcap, CaptureScan):
        pk, whole = pcap.summary, pcap.attempts(udp)
        if capture_offset_s:
            whole = replace(whole, ts=whole.ts - capture_offset_s)
        totals = whole.totals()
        att = whole.select(np.isin(whole.src, [ip_to_int(s) for s in infected_sources(worm, throttle)]))
    else:
        sc = stream_capture(reader, udp=udp, keep=[ip_to_int(s) for s in infected_sources(worm, throttle)],
                            bins=bins, offset_s=capture_offset_s)
        pk, att, totals = sc.summary, sc.kept, sc.totals
    span = pk.span
    if capture_offset_s and span:
        span = (span[0] - capture_offset_s, span[1] - capture_offset_s)
    metrics = compute_metrics(att, worm, throttle, settings=settings, capture_span=span)
    findings: list[Finding] = []
    if pk.partial:
        findings.append(Finding("capture_partial", "warning",
                                f"{pk.path}: read partially: " + "; ".join(pk.problems), len(pk.problems)))
    tl = source_timelines(whole, bins=bins, span=span) if isinstance(pcap, CaptureScan) else timelines(sc.partials)
    return TrialAnalysis(pk, att, tl, metrics, findings + metrics.findings, worm, throttle, totals)


def _clean(obj):
    """JSON-safe: NaN/inf become None, NumPy scalars become Python numbers, tuples become lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
