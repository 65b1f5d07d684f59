"""Every process a trial depends on, watched for the whole trial: one that dies, or ends badly, makes the trial
an error that says which process, on which host, how it ended and what its log said last — never a result.

A `Watched` is one process: a host agent service (the mechanism, the capture, the worm servers, a benign
workload: anything started with `hostagent start`), or a process such a service starts and records itself
(the worm's scanner, in the worm server's event log). `Watch.poll` asks each place that runs something it
watches in one round trip, with whatever the caller's stop condition reads there: the host agent's watcher
writes a service's exit status to `<prefix>/run/svc/NAME.exit` the moment it ends, so a poll is a few `cat`s
in one shell, no Python started on the host. Places with a stop condition to read are asked every poll, the
others one at a time in turn, at most once a second (a lab of hundreds of targets, or of emulated VMs whose
every SSH command is costly, is not loaded more); every place once more before the stop; and `stop_verdict`
judges the host agent's answer when the trial stops each service — it had already ended, exited non-zero, or
had to be killed —, so nothing that died between two looks goes unseen.
"""

from __future__ import annotations

import math
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.lab.fanout import parallel
from orchestrator.localrun import Result

LOG_LINES = 5          # of a dead process's log, in the reason
OTHERS_EVERY_S = 1.0   # places without a stop condition: one of them asked at most this often, in turn
_MARK = "@@wt-watch "


class Place(Protocol):
    label: str

    def sh(self, script: str, timeout: float | None = 60.0) -> Result: ...

    def stop(self, name: str, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Watched:
    place: str                 # where it runs: a host, or a local place's label ("the wire of blade")
    what: str                  # what it is, as the reason says it: "the throttle daemon", "tcpdump (the capture)"
    ended: str                 # shell: prints its exit status once it has ended (negative: the signal), else nothing
    log: str                   # shell word (path or glob) of its log, whose last lines the reason quotes
    service: str | None = None     # its host agent service (None: a process another service started)
    ends_itself: bool = False      # it may finish by itself, with status 0 (the worm's scanner)
    note: str = ""                 # said after how it ended (what its death means for the trial)

    @property
    def label(self) -> str:
        return f"{self.what} on {self.place}"


def service(place: str, prefix: str, name: str, what: str, *, log: str | None = None, note: str = "") -> Watched:
    """A host agent service under `prefix` (its log: the agent's default unless given)."""
    return Watched(place, what, f"cat {shlex.quote(f'{prefix}/run/svc/{name}.exit')} 2>/dev/null",
                   shlex.quote(log or f"{prefix}/log/{name}.log"), service=name, note=note)


def logged_child(place: str, what: str, *, events: str, exit_event: str, log: str) -> Watched:
    """A process another service starts and records in its JSON-lines event log, as
    `{"event": EXIT_EVENT, …, "returncode": N}` when it ends (N < 0: the signal that killed it)."""
    pattern = shlex.quote('"event": *"' + exit_event + '"')
    ended = (f"grep -E {pattern} {shlex.quote(events)} 2>/dev/null | tail -n 1 | "
             "sed -n 's/.*\"returncode\": *\\(-\\{0,1\\}[0-9][0-9]*\\).*/\\1/p'")
    return Watched(place, what, ended, log, ends_itself=True)


def describe(status: int | None) -> str:
    """How a process ended, from its exit status (negative: killed by that signal)."""
    if status is None:
        return "ended without an exit status (it and its host agent watcher are gone)"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


@dataclass
class Death:
    watched: Watched
    status: int | None
    when: str                      # "mid-trial", "before the trial stopped it", …
    how: str = ""                  # default: from the status
    log_tail: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.how = self.how or describe(self.status)

    @property
    def reason(self) -> str:
        w = self.watched
        text = f"{w.label} {self.how} {self.when}{w.note}"
        return text + (f"; its log ends: {' | '.join(self.log_tail)}" if self.log_tail else "; its log is empty")

    def to_dict(self) -> dict[str, Any]:
        sig = None
        if self.status is not None and self.status < 0:
            try:
                sig = signal.Signals(-self.status).name
            except ValueError:
                sig = str(-self.status)
        return {"what": self.watched.what, "place": self.watched.place, "service": self.watched.service,
                "status": self.status, "signal": sig, "how": self.how, "when": self.when, "log_tail": self.log_tail}


def stop_verdict(w: Watched, rep: Mapping[str, Any]) -> Death | None:
    """The host agent's answer when the trial stopped `w`: a death when it had already ended (a process that
    finishes by itself may have, with status 0), had to be killed, or exited non-zero on the stop signal."""
    status = rep.get("exit")
    if rep.get("running") is False:
        return None if (w.ends_itself and status == 0) else Death(w, status, "before the trial stopped it")
    if rep.get("forced"):
        return Death(w, None, "when the trial stopped it",
                     how=f"did not stop ({rep.get('error') or 'it ignored the signal'}) and had to be killed")
    if status not in (None, 0):
        return Death(w, status, "when the trial stopped it")
    return None


def _sections(out: str) -> dict[str, str]:
    got: dict[str, list[str]] = {}
    key = None
    for line in out.splitlines():
        if line.startswith(_MARK):
            key = line[len(_MARK):]
            got[key] = []
        elif key is not None:
            got[key].append(line)
    return {k: "\n".join(v).strip() for k, v in got.items()}


class Watch:
    """The processes one trial depends on, and the places that run them."""

    def __init__(self, places: Mapping[str, Place], *, others_every_s: float = OTHERS_EVERY_S,
                 clock=time.monotonic):
        self.places = dict(places)
        self.items: list[Watched] = []
        self.others_every_s, self.clock = others_every_s, clock
        self._turn, self._last_other = 0, -math.inf

    def add(self, w: Watched) -> Watched:
        if w.place not in self.places:
            raise KeyError(f"no place {w.place!r} to watch {w.what} on")
        self.items.append(w)
        return w

    def services(self) -> list[Watched]:
        return [w for w in self.items if w.service]

    def script(self, place: str, extra: Mapping[str, str] = {}) -> str:
        """One shell script asking `place` how each process it runs stands, then the caller's snippets."""
        parts = [f"echo '{_MARK}w{i}'; {w.ended}" for i, w in enumerate(self.items) if w.place == place]
        parts += [f"echo '{_MARK}x{k}'; {snippet}" for k, snippet in extra.items()]
        return "\n".join(parts) + "\n"

    def _due(self, extra: Mapping[str, Mapping[str, str]], everywhere: bool) -> list[str]:
        watched = list(dict.fromkeys(w.place for w in self.items))
        first = [p for p in self.places if p in extra]
        rest = [p for p in watched if p not in extra]
        if everywhere or not rest:
            return first + rest
        if self.clock() - self._last_other < self.others_every_s:
            return first
        self._last_other = self.clock()
        self._turn += 1
        return [*first, rest[(self._turn - 1) % len(rest)]]

    def poll(self, extra: Mapping[str, Mapping[str, str]] = {}, *,
             everywhere: bool = False) -> tuple[list[Death], dict[str, dict[str, str]]]:
        """One round trip to each place due (`everywhere`: every place that runs something watched); returns
        what has died (with its log's last lines) and, per place, what each of the caller's `extra` snippets
        printed."""
        due = self._due(extra, everywhere)

        def ask(place: str) -> tuple[str, dict[str, str]]:
            return place, _sections(self.places[place].sh(self.script(place, extra.get(place, {})), timeout=15).stdout)
        answers = dict(parallel([lambda p=p: ask(p) for p in due]))
        deaths = []
        for i, w in enumerate(self.items):
            got = answers.get(w.place, {}).get(f"w{i}")
            if not got:
                continue
            try:
                status = int(got.split()[0])
            except ValueError:
                status = None
            if w.ends_itself and status == 0:
                continue
            deaths.append(Death(w, status, "mid-trial"))
        self.tails(deaths)
        outs = {p: {k[1:]: v for k, v in a.items() if k.startswith("x")} for p, a in answers.items()}
        return deaths, outs

    def tails(self, deaths: Sequence[Death]) -> None:
        """Fill in each death's last log lines (one round trip per place)."""
        by_place: dict[str, list[Death]] = {}
        for d in deaths:
            if not d.log_tail:
                by_place.setdefault(d.watched.place, []).append(d)

        def read(place: str) -> None:
            ds = by_place[place]
            script = "\n".join(f"echo '{_MARK}{i}'; tail -q -n {LOG_LINES} {d.watched.log} 2>/dev/null"
                               for i, d in enumerate(ds))
            got = _sections(self.places[place].sh(script, timeout=15).stdout)
            for i, d in enumerate(ds):
                d.log_tail = [ln.strip() for ln in got.get(str(i), "").splitlines() if ln.strip()]
        parallel([lambda p=p: read(p) for p in by_place])
