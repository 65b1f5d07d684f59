"""What a containment mechanism is to the testbed: a descriptor (pure data plus argv builders, no I/O).

A descriptor names the mechanism, its parameters (type, default, range), the placements it supports, whether
it runs a daemon, writes an event log (docs/event-logs.md) and has a model, the Ansible role that installs it,
the commands that start and stop it on the host that carries it, and where its model is.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PLACEMENTS = ("host", "gateway", "wire")
KINDS = {"int": int, "float": float, "str": str, "bool": bool}


class MechanismError(ValueError):
    """An unknown mechanism or an invalid parameter: the message is meant for a user (exit 2)."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str                                 # int | float | str | bool
    default: Any
    help: str
    low: float | None = None                  # bounds; `open` says which ends are excluded
    high: float | None = None
    open: str = ""                            # "" | "low" | "high" | "both"
    choices: tuple[str, ...] = ()

    def check(self, mech: str, v: Any) -> Any:
        where = f"{mech}: parameter {self.name}"
        if self.kind in ("int", "float") and isinstance(v, bool):
            raise MechanismError(f"{where} must be a number, got {v!r}")
        if self.kind == "float" and isinstance(v, int):
            v = float(v)
        if not isinstance(v, KINDS[self.kind]):
            raise MechanismError(f"{where} must be {'an' if self.kind == 'int' else 'a'} {self.kind}, got {v!r}")
        num: Any = v          # of the parameter's kind now (a number where there are bounds)
        if self.kind == "float" and not math.isfinite(num):
            raise MechanismError(f"{where} must be finite, got {v!r}")
        if self.choices and v not in self.choices:
            raise MechanismError(f"{where} must be one of {', '.join(self.choices)}, got {v!r}")
        lo_open, hi_open = self.open in ("low", "both"), self.open in ("high", "both")
        if self.low is not None and (num < self.low or (lo_open and num == self.low)) or \
                self.high is not None and (num > self.high or (hi_open and num == self.high)):
            raise MechanismError(f"{where} must be in {self.range_text()}, got {v!r}")
        return v

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(self.choices)
        if self.low is None and self.high is None:
            return "any"
        lo = "(" if self.open in ("low", "both") else "["
        hi = ")" if self.open in ("high", "both") else "]"
        return f"{lo}{'-inf' if self.low is None else _num(self.low)}, {'inf' if self.high is None else _num(self.high)}{hi}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "default": self.default, "range": self.range_text(),
                "help": self.help}


@dataclass(frozen=True)
class StartContext:
    """What a start command is built from, per trial, on the host (or switch) that carries the mechanism."""

    placement: str
    python: str = "python3"
    interface: str | None = None
    events: str | None = None                 # the event log's path (mechanisms that write one)
    protocols: tuple[str, ...] = ("tcp", "udp")
    fail_closed: bool = True
    queue_num: int = 0
    initial_working_set: tuple[str, ...] = ()  # williamson only: the state the worm meets


Argv = list[str]


@dataclass(frozen=True)
class Mechanism:
    name: str
    summary: str
    params: tuple[Param, ...]
    placements: tuple[str, ...]
    daemon: bool                              # start runs in the foreground until SIGTERM
    event_log: bool
    model: str | None                         # "module:function", see load_model()
    role: str | None                          # the Ansible role (path relative to the repository)
    start: Callable[[Mapping[str, Any], StartContext], Argv] | None = None
    stop: Callable[[StartContext], Argv] | None = None      # after SIGTERM (daemons) or instead of it
    doc: str | None = None
    reference: str = ""
    aliases: tuple[str, ...] = field(default=())
    protocols: tuple[str, ...] = ("tcp", "udp")             # what it contains (a worm on another passes)
    check: Callable[[Mapping[str, Any]], None] | None = None   # cross-parameter checks (raise ValueError)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The parameters with defaults filled in; unknown names and bad values raise MechanismError."""
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            listing = ", ".join(f"{p.name} (default {p.default!r})" for p in self.params) or "none"
            raise MechanismError(f"{self.name}: unknown parameter {', '.join(unknown)}; its parameters: {listing}")
        out = {k: p.check(self.name, params.get(k, p.default)) for k, p in known.items()}
        if self.check is not None:
            try:
                self.check(out)
            except ValueError as exc:
                raise MechanismError(f"{self.name}: {exc}") from None
        return out

    def check_placement(self, placement: str) -> None:
        if placement not in self.placements:
            raise MechanismError(f"{self.name} does not support placement {placement!r}; it supports "
                                 f"{', '.join(self.placements)}")

    def start_argv(self, params: Mapping[str, Any] | None, ctx: StartContext) -> Argv | None:
        self.check_placement(ctx.placement)
        return None if self.start is None else self.start(self.validate(params), ctx)

    def stop_argv(self, ctx: StartContext) -> Argv | None:
        return None if self.stop is None else self.stop(ctx)

    def load_model(self) -> Callable[..., dict[str, Any]] | None:
        """The model's `predict(worm_log_lines, params, *, placement) -> dict` (None without a model). The
        dict has `blocked`, `stop_s` (from the worm's first attempt), `out_before_block`, `wire_rate`."""
        if self.model is None:
            return None
        mod, fn = self.model.split(":")
        return getattr(importlib.import_module(mod), fn)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "reference": self.reference,
                "params": [p.to_dict() for p in self.params], "placements": list(self.placements),
                "daemon": self.daemon, "event_log": self.event_log, "model": self.model, "role": self.role,
                "doc": self.doc, "aliases": list(self.aliases), "protocols": list(self.protocols)}


def flags(pairs: Sequence[tuple[str, Any]]) -> Argv:
    """`--flag value` pairs as argv (numbers with repr, so nothing is rounded)."""
    out: Argv = []
    for flag, v in pairs:
        out += [flag, repr(v) if isinstance(v, float) else str(v)]
    return out
