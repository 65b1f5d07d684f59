"""`testbed analyse PCAP [--throttle-log F] [--worm-log F] [--json]`: analyse one capture (and its logs) and
print the per-source attempt timelines, the stopping-speed metrics and the cross-check findings.

Exit codes: 0 when the analysis ran (also for a partial capture, which is said loudly, and for failed
cross-checks, which are findings in the output); 2 when an input cannot be read at all (missing, empty,
not a capture, unsupported link type, unreadable log).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import LazyConsole, handles_errors, out, report
from orchestrator.errors import TestbedError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.analysis.trial import TrialAnalysis

MAX_SOURCE_ROWS = 40
SPARK = " ▁▂▃▄▅▆▇█"
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def register(app: typer.Typer) -> None:
    app.command(name="analyse")(handles_errors(analyse_verb))


def analyse_verb(pcap: Annotated[Path, typer.Argument(help="a pcap or pcapng capture, taken anywhere")],
                 throttle_log: Annotated[Path | None, typer.Option(help="the throttle's JSON-lines event log")] = None,
                 worm_log: Annotated[Path | None, typer.Option(help="the test worm's JSON-lines attempt log")] = None,
                 sniffer: Annotated[str | None, typer.Option(
                     help="where the capture stands relative to the throttle: after (host placement) or before "
                          "(gateway, wire); default from the throttle log's mode")] = None,
                 tolerance: Annotated[float, typer.Option(help="seconds allowed between witnesses when matching")] = 0.25,
                 udp: Annotated[str, typer.Option(help="which UDP datagrams count as attempts: first_per_destination, "
                                                       "first_per_flow, every or none")] = "first_per_destination",
                 as_json: Annotated[bool, typer.Option("--json", help="one JSON object (packets, syn_attempts, "
                                                                      "udp_attempts, sources, metrics, findings, …)")] = False):
    """Per-source attempt timelines and stopping-speed metrics from a capture (and the logs, when given).

    Exit 0 when the analysis ran (failed cross-checks are findings in the output), 2 when an input cannot be read.

    Examples:  testbed analyse RUN/trials/tcp-r20-1/capture.pcap  ·  T=RUN/trials/tcp-r20-1; testbed analyse
    $T/capture.pcap --throttle-log $T/throttle.jsonl --worm-log $T/worm.jsonl --json
    """
    from orchestrator.analysis.attempts import UDP_MODES

    if sniffer not in (None, "before", "after"):
        raise typer.BadParameter("--sniffer is before or after")
    if udp not in UDP_MODES:
        raise typer.BadParameter(f"--udp is one of {', '.join(UDP_MODES)}")
    raise typer.Exit(analyse(pcap, throttle_log, worm_log, as_json, out, sniffer=sniffer,
                             tolerance_s=tolerance, udp=udp))


def analyse(pcap: Path, throttle_log: Path | None, worm_log: Path | None, as_json: bool,
            console: Console | LazyConsole, *, sniffer: str | None = None, tolerance_s: float = 0.25,
            udp: str = "first_per_destination") -> int:
    """Run the analysis and print it (rich tables, or one JSON object with `as_json`). Returns the exit code."""
    from orchestrator.analysis.figures import MetricsSettings
    from orchestrator.analysis.trial import analyse_trial

    try:
        try:
            settings = MetricsSettings(sniffer=sniffer, tolerance_s=tolerance_s)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        result = analyse_trial(pcap, throttle_log=throttle_log, worm_logs=[worm_log] if worm_log else [],
                               settings=settings, udp=udp)
    except TestbedError as exc:
        return report(exc, console, as_json=as_json)
    if as_json:
        console.out(json.dumps(result.to_dict(), allow_nan=False), highlight=False)
    else:
        render(result, console)
    return 0


# ------------------------------------------------------------------------------------------------ rendering

def _t(ts: float | None, t0: float | None) -> str:
    if ts is None:
        return "–"
    if t0 is None:
        return time.strftime("%H:%M:%S", time.gmtime(ts)) + f"{ts % 1:.3f}"[1:]
    return f"{ts - t0:+.3f}"


def _n(v, fmt: str = "{:,}") -> str:
    return "–" if v is None else fmt.format(v)


def _spark(hist: list[int]) -> str:
    top = max(hist) if hist else 0
    if top == 0:
        return ""
    return "".join(SPARK[0 if h == 0 else 1 + (h * (len(SPARK) - 2)) // top] for h in hist)


def render(res: TrialAnalysis, console: Console | LazyConsole) -> None:
    from rich.table import Table
    from rich.text import Text

    d = res.to_dict()
    t0 = d["first_ts"]
    lts = ", ".join(f"{x['linktype']} {x['name']}" for x in d["linktypes"]) or "none"
    span = f"{d['last_ts'] - t0:.3f} s from {_t(t0, None)} UTC" if t0 is not None else "no timestamps"
    console.print(Text.assemble(("capture ", "bold"), f"{d['file']} ({d['format']}, link type {lts}), {span}"))
    console.print(f"  packets {d['packets']:,} (IPv4 {d['ipv4_packets']:,}) · SYN attempts {d['syn_attempts']:,} "
                  f"({d['syn_retransmissions']:,} retransmissions) · UDP attempts {d['udp_attempts']:,} "
                  f"({d['udp_datagrams']:,} datagrams, {d['udp_mode'].replace('_', ' ')})", highlight=False)
    if d["partial"]:
        console.print(Text("  PARTIAL: " + "; ".join(d["partial_reasons"]), style="bold red"))
    for note in d["notes"]:
        console.print(Text(f"  note: {note}", style="dim"))

    srcs = sorted(d["sources"], key=lambda s: (-(s["syn_attempts"] + s["udp_attempts"]), s["src"]))
    if srcs:
        tab = Table(title="Connection attempts on the wire, per source (times from the first packet)",
                    title_justify="left")
        for col in ("source", "SYN", "retrans", "UDP", "dests", "first", "last", "new/s", "timeline"):
            tab.add_column(col, justify="left" if col in ("source", "timeline") else "right")
        for s in srcs[:MAX_SOURCE_ROWS]:
            tab.add_row(s["src"], _n(s["syn_attempts"]), _n(s["syn_retransmissions"]), _n(s["udp_attempts"]),
                        _n(s["distinct_destinations"]), _t(s["first_ts"], t0), _t(s["last_ts"], t0),
                        _n(s["new_attempt_rate"], "{:.1f}"), _spark(s["histogram"]))
        console.print(tab)
        if len(srcs) > MAX_SOURCE_ROWS:
            console.print(f"  … and {len(srcs) - MAX_SOURCE_ROWS} more sources (all of them with --json)")
    else:
        console.print("  no connection attempts in the capture")

    m = d["metrics"]
    if m["sources"]:
        st = m["settings"]
        tab = Table(title=f"Stopping speed per infected source (sniffer {st['sniffer']} the throttle, "
                          f"{st['clock']} clock, ±{st['tolerance_s']} s)", title_justify="left")
        for col in ("source", "first attempt", "blocked after", "queue", "wire before", "(new)", "wire after",
                    "worm attempts", "dests", "worm /s", "wire /s"):
            tab.add_column(col, justify="left" if col == "source" else "right")
        for s in m["sources"]:
            after = s["wire_attempts_after_block"]
            tab.add_row(
                s["src"], _t(s["first_attempt_wall"], t0),
                _n(s["stopping_time_s"], "{:.3f} s") if s["blocked"] else Text("not blocked", style="yellow"),
                _n(s["blocked_queue_len"]), _n(s["wire_attempts_before_block"]),
                _n(s["wire_new_attempts_before_block"]),
                Text(_n(after), style="bold red" if after and st["sniffer"] == "after" else ""),
                _n(s["worm_attempts"]), _n(s["worm_distinct_destinations"] or s["wire_distinct_destinations"]),
                _n(s["worm_scan_rate"], "{:.1f}"), _n(s["wire_scan_rate"], "{:.1f}"))
        console.print(tab)

    shown = [f for f in d["findings"] if f["severity"] != "info" or f["code"] == "analysis_settings"]
    if shown:
        tab = Table(title="Findings", title_justify="left")
        for col in ("severity", "check", "count", "what"):
            tab.add_column(col, justify="right" if col == "count" else "left")
        for f in shown:
            ex = f["examples"][:2]
            what = f["message"] + "".join(
                "\n  e.g. " + " ".join(f"{k}={v}" for k, v in e.items()) for e in ex)
            tab.add_row(Text(f["severity"], style=SEVERITY_STYLE.get(f["severity"], "")), f["code"],
                        _n(f["count"]) if f["count"] else "", what)
        console.print(tab)
    errors = d["errors"]
    verdict = (Text(f"{errors} cross-check error(s): these numbers are in doubt", style="bold red") if errors
               else Text("cross-checks: no errors", style="green"))
    if m["sources"] or errors:
        console.print(verdict)
