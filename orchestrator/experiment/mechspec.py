"""The `mechanisms:` block of an experiment file: each entry checked against the registry (mechanisms/) or, for
a user's own mechanism, its role, commands and placeholders — all before anything is built.

`resolve_mechanisms(spec, base, problems)` returns the experiment's mechanisms in order (`MechanismRun`), the
legacy `throttle:` block and `kind: baseline` answered as williamson and none with the same parameters.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import mechanisms
from mechanisms.spec import Mechanism, MechanismError

# what a custom mechanism's start, stop and events may name, filled per trial on the host that carries it
PLACEHOLDERS = {
    "iface": "the interface the mechanism watches (the infected host's experimental one, or the gateway's)",
    "protocol": "the trial's protocol (tcp | udp)",
    "run": "a directory of this trial on that host (its files are collected with the trial)",
    "host": "the name of the host that carries the mechanism",
    "placement": "host | gateway",
    "rate": "the trial's scan rate (attempts per second)",
    "trial": "the trial's id",
}
CUSTOM_PLACEMENTS = ("host", "gateway")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomSpec(_Strict):
    role: str = Field(description="an Ansible role that installs the mechanism, relative to the experiment file")
    start: str = Field(description="run per trial on the host that carries it (placeholders: "
                                   + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ")")
    stop: str = Field(description="run per trial, also after a failed trial")
    events: str | None = Field(None, description="optional: its event log (docs/event-logs.md), e.g. {run}/x.jsonl")


class MechanismSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$",
                      description="a registry name (`testbed mechanisms`) or, with custom, the user's own")
    placement: Literal["host", "gateway", "wire"] = Field("host", description="where it runs")
    params: dict[str, Any] = Field(default_factory=dict, description="checked against the registry's parameters")
    fail_open: bool = Field(False, description="daemons: pass new connections if the daemon dies (default: drop)")
    custom: CustomSpec | None = None


@dataclass(frozen=True)
class MechanismRun:
    """One mechanism of an experiment, resolved: its descriptor (None for a user's own), validated parameters,
    placement, and for a custom one the role's absolute path and its commands."""

    name: str
    placement: str
    params: dict[str, Any] = field(default_factory=dict)
    fail_open: bool = False
    descriptor: Mechanism | None = None
    custom: CustomSpec | None = None
    role_path: Path | None = None
    label: str | None = None            # a sweep's setting (`williamson-wss2`): names its trials

    @property
    def key(self) -> str:
        """What its trials' ids name: the sweep's label, or its name."""
        return self.label or self.name

    @property
    def is_none(self) -> bool:
        return self.descriptor is not None and self.descriptor.name == "none"

    @property
    def daemon(self) -> bool:
        return self.descriptor.daemon if self.descriptor else False

    @property
    def event_log(self) -> bool:
        return self.descriptor.event_log if self.descriptor else bool(self.custom and self.custom.events)

    @property
    def role(self) -> str | None:
        return str(self.role_path) if self.role_path else (self.descriptor.role if self.descriptor else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "placement": self.placement, "params": self.params}
        if self.label:
            out["label"] = self.label
        if self.daemon:
            out["fail_open"] = self.fail_open
        if self.custom:
            out["custom"] = self.custom.model_dump() | {"role": str(self.role_path)}
        return out


def placeholders(template: str) -> list[str]:
    """The placeholders a command names ({iface} …); ValueError for braces that do not parse."""
    out = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"its braces do not pair ({exc}; a literal brace is {{{{ or }}}})") from None
    for _, fname, spec, conv in parts:
        if fname is None:
            continue
        if not fname.isidentifier() or spec or conv:
            raise ValueError(f"'{{{fname}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}' is not a "
                             "placeholder (write {name}; a literal brace is {{ or }})")
        out.append(fname)
    return out


def fill(template: str, values: dict[str, str]) -> str:
    """A custom command with its placeholders filled (only known names: checked when the file was loaded)."""
    return template.format(**values)


def _check_custom(c: CustomSpec, where: tuple, base: Path, problems) -> Path | None:
    role = Path(c.role) if Path(c.role).is_absolute() else base / c.role
    ok = True
    if not role.is_dir():
        problems.add((*where, "role"), f"role {role} does not exist (a role is a directory, relative to the "
                                       "experiment file)")
        ok = False
    elif not (role / "tasks" / "main.yml").is_file() and not (role / "tasks" / "main.yaml").is_file():
        problems.add((*where, "role"), f"role {role} has no tasks/main.yml")
        ok = False
    for key in ("start", "stop", "events"):
        text = getattr(c, key)
        if text is None:
            continue
        if not text.strip():
            problems.add((*where, key), "is empty")
            continue
        try:
            names = placeholders(text)
        except ValueError as exc:
            problems.add((*where, key), str(exc))
            continue
        for n in names:
            if n not in PLACEHOLDERS:
                problems.add((*where, key), f"unknown placeholder {{{n}}}; known: "
                                            + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
    return role.resolve() if ok else None


def resolve_mechanisms(spec, base: Path, problems) -> list[MechanismRun]:
    """The experiment's mechanisms, in order (problems added, not raised)."""
    if spec.mechanisms is None:
        if spec.kind == "baseline":
            return [MechanismRun("none", "host", {}, False, mechanisms.get("none"))]
        if spec.throttle == "none":
            return []            # the stopping-speed check reports it
        th = spec.throttle
        w = mechanisms.get("williamson")
        params = w.validate({"working_set_size": th.working_set_size, "delay_queue_limit": th.delay_queue_limit,
                             "release_period_s": th.release_period_s, "policy": th.policy})
        return [MechanismRun("williamson", th.placement, params, th.fail_open, w)]
    if "throttle" in spec.model_fields_set or "kind" in spec.model_fields_set \
            and spec.kind not in ("benign", "spread"):
        problems.add(("mechanisms",), "name the mechanisms in one place: `mechanisms:` replaces `throttle:` and "
                                      "`kind:` (write `- name: williamson` or `- name: none`)")
    out: list[MechanismRun] = []
    seen: set[str] = set()
    for i, m in enumerate(spec.mechanisms):
        where = ("mechanisms", i)
        if m.name in seen:
            problems.add((*where, "name"), f"{m.name} is named twice (a sweep runs each mechanism once)")
            continue
        seen.add(m.name)
        if m.custom is not None:
            if m.name in mechanisms.REGISTRY or m.name in mechanisms.ALIASES:
                problems.add((*where, "name"), f"{m.name} is a built-in mechanism; give your own another name")
                continue
            if m.placement not in CUSTOM_PLACEMENTS:
                problems.add((*where, "placement"), f"a custom mechanism runs at {' or '.join(CUSTOM_PLACEMENTS)}, "
                                                    f"not {m.placement}")
            if m.params:
                problems.add((*where, "params"), "a custom mechanism takes its parameters in its start command")
            role = _check_custom(m.custom, (*where, "custom"), base, problems)
            out.append(MechanismRun(m.name, m.placement, {}, m.fail_open, None, m.custom, role))
            continue
        try:
            d = mechanisms.get(m.name)
        except MechanismError as exc:
            problems.add((*where, "name"), f"{exc}\n  (or give it a `custom:` block: your own mechanism)",
                         limit=10_000)      # the whole registry: what the user can choose from
            continue
        try:
            d.check_placement(m.placement)
        except MechanismError as exc:
            problems.add((*where, "placement"), str(exc))
        try:
            params = d.validate(m.params)
        except MechanismError as exc:
            problems.add((*where, "params", *_bad_param(exc, m.params)), str(exc))
            params = {}
        out.append(MechanismRun(d.name, m.placement, params, m.fail_open, d))
    return out


def _bad_param(exc: MechanismError, given: dict[str, Any]) -> tuple[str, ...]:
    """The parameter an error names (its key path: a line number in the file), if one."""
    text = str(exc)
    return next(((k,) for k in given if f"parameter {k} " in text or f"parameter {k}," in text), ())
