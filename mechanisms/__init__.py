"""The containment mechanisms the testbed can run, side by side, judged from the wire (docs/mechanisms.md).

The registry is a leaf: name → descriptor (`mechanisms.spec.Mechanism`: parameters with defaults, types and
ranges; placements; whether it has a daemon, an event log, a model; its Ansible role; argv builders to start
and stop it; where its model is). Nothing here imports the orchestrator, a daemon or a binding. A new
built-in is one folder plus one line below.
"""

from __future__ import annotations

from typing import Any

from .none import NONE
from .ratelimit.descriptor import RATE_LIMIT
from .spec import Mechanism, MechanismError, Param, StartContext
from .trw.descriptor import TRW
from .williamson.descriptor import WILLIAMSON

REGISTRY: dict[str, Mechanism] = {m.name: m for m in (WILLIAMSON, TRW, RATE_LIMIT, NONE)}
ALIASES: dict[str, str] = {a: m.name for m in REGISTRY.values() for a in m.aliases}

__all__ = ["ALIASES", "REGISTRY", "Mechanism", "MechanismError", "Param", "StartContext", "describe", "get",
           "names", "text"]


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Mechanism:
    """The descriptor of `name` (or an alias: `throttle` is williamson, `baseline` none). An unknown name
    raises MechanismError listing the known ones and their parameters."""
    m = REGISTRY.get(ALIASES.get(name, name))
    if m is None:
        raise MechanismError(f"unknown mechanism {name!r}; known:\n{text()}")
    return m


def describe() -> list[dict[str, Any]]:
    """The registry as JSON-ready dicts (`testbed mechanisms --json`)."""
    return [m.to_dict() for m in REGISTRY.values()]


def text() -> str:
    """The registry for people: one block per mechanism (`testbed mechanisms`)."""
    out = []
    for m in REGISTRY.values():
        what = [w for w, on in (("daemon", m.daemon), ("event log", m.event_log), ("model", m.model)) if on]
        out.append(f"  {m.name:<11} {m.summary}")
        out.append(f"  {'':<11} placements: {', '.join(m.placements)}; {', '.join(what) or 'nothing installed'}"
                   + (f"; role {m.role}" if m.role else ""))
        for p in m.params:
            out.append(f"  {'':<11}   {p.name} = {p.default!r}  ({p.kind}, {p.range_text()}): {p.help}")
    return "\n".join(out)
