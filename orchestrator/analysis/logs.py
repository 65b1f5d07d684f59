"""Tolerant readers for the worm log and the throttle event log (docs/event-logs.md): every valid line is
kept, every invalid one is skipped and counted with its line number and reason, unknown keys are ignored.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LogReadError, reading

MAX_EXAMPLES = 5

# throttle decisions that carry a packet (src, dst, sport, dport, proto)
PACKET_DECISIONS = ("passed", "queued", "released", "blocked", "dropped")


@dataclass
class LogIssues:
    """What a reader skipped: how many lines and the first few (line number, reason)."""

    path: str | None
    lines: int = 0
    invalid: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    unknown_events: dict[str, int] = field(default_factory=dict)

    def bad(self, lineno: int, reason: str) -> None:
        self.invalid += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((lineno, reason))

    def to_dict(self) -> dict:
        return {"path": self.path, "lines": self.lines, "invalid": self.invalid,
                "invalid_examples": [{"line": n, "reason": r} for n, r in self.examples],
                "unknown_events": dict(self.unknown_events)}


@dataclass(frozen=True)
class WormAttempt:
    i: int | None
    t_mono: float
    t_wall: float
    src: str
    sport: int
    dst: str
    dport: int
    protocol: str  # "tcp" | "udp"
    outcome: str | None
    generation: int | None = None


@dataclass
class WormLog:
    issues: LogIssues
    starts: list[dict] = field(default_factory=list)
    attempts: list[WormAttempt] = field(default_factory=list)
    infects: list[dict] = field(default_factory=list)
    stops: list[dict] = field(default_factory=list)

    @property
    def requested_rate(self) -> float | None:
        rates = {s.get("params", {}).get("rate") for s in self.starts if isinstance(s.get("params"), dict)}
        rates.discard(None)
        return float(rates.pop()) if len(rates) == 1 else None


@dataclass(frozen=True)
class ThrottleEvent:
    event: str
    t_mono: float
    t_wall: float
    src: str | None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    proto: str | None = None
    queue_len: int | None = None

    @property
    def key(self) -> tuple[str | None, int | None, str | None, int | None, str | None]:
        return (self.src, self.sport, self.dst, self.dport, self.proto)


@dataclass
class ThrottleLog:
    issues: LogIssues
    config: dict | None = None
    events: list[ThrottleEvent] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)     # `state` lines: what the mechanism held, and when

    @property
    def policy(self) -> str:
        return str((self.config or {}).get("policy") or "packets")

    @property
    def mode(self) -> str | None:
        m = (self.config or {}).get("mode")
        return str(m) if m is not None else None

    @property
    def protocols(self) -> set[str]:
        p = (self.config or {}).get("protocols")
        return {str(x) for x in p} if isinstance(p, list) else {"tcp", "udp"}


# ------------------------------------------------------------------------------------------------ reading

def _lines(path: Path) -> Iterable[tuple[int, str]]:
    with reading(path, LogReadError, "log file"), open(path, encoding="utf-8", errors="replace") as fh:
        yield from enumerate(fh, start=1)


def _objects(lines: Iterable[tuple[int, str]], issues: LogIssues) -> Iterable[tuple[int, dict]]:
    """Parse JSON lines; yield (line number, object) for those with a valid event/t_mono/t_wall."""
    for lineno, raw in lines:
        text = raw.strip()
        if not text:
            continue
        issues.lines += 1
        try:
            obj = json.loads(text)
        except ValueError:
            issues.bad(lineno, "not JSON" + (" (cut short: no newline at the end)" if not raw.endswith("\n") else ""))
            continue
        if not isinstance(obj, dict):
            issues.bad(lineno, "not a JSON object")
            continue
        why = _missing(obj, event=str, t_mono=float, t_wall=float)
        if why:
            issues.bad(lineno, why)
            continue
        yield lineno, obj


def _missing(obj: dict, **required: type) -> str | None:
    for key, typ in required.items():
        if key not in obj or obj[key] is None:
            return f"missing {key!r}"
        v = obj[key]
        if typ is float and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            return f"{key!r} is not a finite number"
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            return f"{key!r} is not an integer"
        if typ is str and not isinstance(v, str):
            return f"{key!r} is not a string"
        if typ is ipaddress.IPv4Address:
            try:
                ipaddress.IPv4Address(v)
            except (ValueError, TypeError):
                return f"{key!r} is not an IPv4 address"
    return None


def _bad_port(obj: dict, *keys: str) -> str | None:
    for k in keys:
        v = obj[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
            return f"{k!r} is not a port number"
    return None


def read_worm_log(path: str | Path) -> WormLog:
    p = Path(path)
    return parse_worm_log(_lines(p), path=str(p))


def parse_worm_log(lines: Iterable[tuple[int, str]] | Iterable[str], path: str | None = None) -> WormLog:
    """Worm log from lines (strings, or (line number, string) pairs)."""
    log = WormLog(LogIssues(path))
    for lineno, o in _objects(_numbered(lines), log.issues):
        ev = o["event"]
        if ev == "attempt":
            why = (_missing(o, src=ipaddress.IPv4Address, dst=ipaddress.IPv4Address, sport=int, dport=int,
                            protocol=str) or _bad_port(o, "sport", "dport"))
            if not why and o["protocol"] not in ("tcp", "udp"):
                why = f"'protocol' is {o['protocol']!r}, not tcp or udp"
            if why:
                log.issues.bad(lineno, f"attempt: {why}")
                continue
            log.attempts.append(WormAttempt(
                i=o.get("i") if isinstance(o.get("i"), int) else None, t_mono=float(o["t_mono"]),
                t_wall=float(o["t_wall"]), src=o["src"], sport=o["sport"], dst=o["dst"], dport=o["dport"],
                protocol=o["protocol"], outcome=o.get("outcome") if isinstance(o.get("outcome"), str) else None,
                generation=o.get("generation") if isinstance(o.get("generation"), int) else None))
        elif ev == "start":
            log.starts.append(o)
        elif ev == "infect":
            log.infects.append(o)
        elif ev == "stop":
            log.stops.append(o)
        else:
            log.issues.unknown_events[ev] = log.issues.unknown_events.get(ev, 0) + 1
    return log


def merge_worm_logs(logs: Iterable[WormLog]) -> WormLog:
    """One WormLog holding the lines of several (e.g. one per scanner process of a trial)."""
    logs = list(logs)
    paths = [lg.issues.path for lg in logs if lg.issues.path]
    out = WormLog(LogIssues(", ".join(paths) if paths else None))
    for lg in logs:
        out.starts += lg.starts
        out.attempts += lg.attempts
        out.infects += lg.infects
        out.stops += lg.stops
        out.issues.lines += lg.issues.lines
        out.issues.invalid += lg.issues.invalid
        out.issues.examples += lg.issues.examples
        for k, v in lg.issues.unknown_events.items():
            out.issues.unknown_events[k] = out.issues.unknown_events.get(k, 0) + v
    out.issues.examples = out.issues.examples[:MAX_EXAMPLES]
    return out


def read_throttle_log(path: str | Path) -> ThrottleLog:
    p = Path(path)
    return parse_throttle_log(_lines(p), path=str(p))


def parse_throttle_log(lines: Iterable[tuple[int, str]] | Iterable[str], path: str | None = None) -> ThrottleLog:
    """Throttle event log from lines. `blocked` needs only `src`; other decisions need the packet's 5-tuple."""
    log = ThrottleLog(LogIssues(path))
    for lineno, o in _objects(_numbered(lines), log.issues):
        ev = o["event"]
        if ev == "config":
            if log.config is None:
                log.config = o
            continue
        if ev == "state":
            log.states.append(o)
            continue
        if ev == "reset":
            src = o.get("src")
            if src is not None and _missing(o, src=ipaddress.IPv4Address):
                log.issues.bad(lineno, "reset: 'src' is neither null nor an IPv4 address")
                continue
            log.events.append(ThrottleEvent("reset", float(o["t_mono"]), float(o["t_wall"]), src))
            continue
        if ev not in PACKET_DECISIONS:
            log.issues.unknown_events[ev] = log.issues.unknown_events.get(ev, 0) + 1
            continue
        why = _missing(o, src=ipaddress.IPv4Address)
        has_tuple = all(o.get(k) is not None for k in ("dst", "sport", "dport", "proto"))
        if not why and (ev != "blocked" or has_tuple):
            why = (_missing(o, dst=ipaddress.IPv4Address, sport=int, dport=int, proto=str)
                   or _bad_port(o, "sport", "dport"))
            if not why and o["proto"] not in ("tcp", "udp"):
                why = f"'proto' is {o['proto']!r}, not tcp or udp"
        if why:
            log.issues.bad(lineno, f"{ev}: {why}")
            continue
        ql = o.get("queue_len")
        log.events.append(ThrottleEvent(
            ev, float(o["t_mono"]), float(o["t_wall"]), o["src"],
            o.get("dst") if has_tuple else None, o.get("sport") if has_tuple else None,
            o.get("dport") if has_tuple else None, o.get("proto") if has_tuple else None,
            ql if isinstance(ql, int) and not isinstance(ql, bool) else None))
    return log


def _numbered(lines: Iterable) -> Iterable[tuple[int, str]]:
    for k, item in enumerate(lines, start=1):
        if isinstance(item, tuple):
            yield item
        else:
            yield k, item if item.endswith("\n") else item + "\n"
