"""Lab files: loading and the semantic pass over the strict models (models.py; the YAML with key paths and
lines: specfile.py).

`load_lab(path)` returns a resolved `topology.Lab` or raises SpecError listing every problem (file, key path,
line, reason). Nothing here touches the network; the machine's routes are passed in for the overlap check.

Every problem at once: when the models refuse part of a file, the semantic checks (addresses, roles, LANs)
still run on the rest — the refused keys (or the entries that lack a required key) are cut out, and what the
cut could make up is not reported (`validate_partly`).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.labfile.constants import ROLES
from orchestrator.labfile.models import LabFile
from orchestrator.labfile.resolve import resolve
from orchestrator.labfile.specfile import MAX_REASON, Problems, read_spec_file


def _union_tag(part: Any) -> bool:
    """pydantic puts the union member it tried into the error path (ThrottleSpec, literal['none'], …)."""
    return isinstance(part, str) and (part[:1].isupper() or part.startswith(("literal[", "function-")))


def _data_loc(loc: tuple, data: Any) -> tuple:
    """pydantic's error location without the union tags it adds — a key the file has stays, even one that
    looks like a tag (a host key 'A')."""
    out, cur = [], data
    for part in loc:
        if isinstance(cur, dict) and part in cur or isinstance(cur, list) and isinstance(part, int) \
                and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif not _union_tag(part):
            out.append(part)          # a key the file does not have (a missing one)
            cur = None
    return tuple(out)


def _pydantic_problems(exc: ValidationError, problems: Problems, model: type[BaseModel], data: Any) -> None:
    errors: list[dict[str, Any]] = [{**e, "loc": _data_loc(e["loc"], data)} for e in exc.errors()]
    # a value that failed as a mapping and as a literal alternative (throttle: {…} | none): the mapping's
    # complaints, deeper in the path, say more than "should be 'none'"
    deeper = {e["loc"][:i] for e in errors if e["type"] != "literal_error" for i in range(len(e["loc"]))}
    errors = [e for e in errors if not (e["type"] == "literal_error" and e["loc"] in deeper)]
    for err in errors:
        loc = err["loc"]
        kind = err["type"]
        if kind == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            hint = f"; known keys here: {', '.join(known)}" if known else ""
            problems.add(loc, f"unknown key '{loc[-1]}'{hint}")
        elif kind == "literal_error" and loc and loc[-1] == "role":
            problems.add(loc, f"unknown role '{err['input']}'; known roles: {', '.join(ROLES)}")
        elif kind == "missing":
            problems.add(loc, "required key is missing")
        elif kind == "string_pattern_mismatch" and loc == ("name",):
            problems.add(loc, f"invalid lab name '{err['input']}': use 1-24 lower-case letters, digits and "
                              "dashes, starting with a letter")
        else:
            problems.add(loc, err["msg"].removeprefix("Value error, "))    # a validator's own message


def _inner_model(annotation: Any) -> Any:
    """The model class a field holds, or _DictOf(model) for a dict of models (hosts: {name: HostSpec})."""
    args = getattr(annotation, "__args__", ())
    for arg in (annotation, *args):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = getattr(arg, "__args__", ())
        for a in inner:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return _DictOf(a)
    return None


class _DictOf:
    def __init__(self, model: type[BaseModel]):
        self.model = model


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    cur: Any = model
    for part in loc:
        if isinstance(cur, _DictOf):
            cur = cur.model
            continue
        if isinstance(part, int) or not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return []
        field = cur.model_fields.get(str(part))
        if field is None:
            return []
        cur = _inner_model(field.annotation)
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return []



# ---------------------------------------------------------------- every problem at once

EXPERIMENT_NOT_LAB = ("this is an experiment file (it has 'experiment:'): run it with `testbed run FILE`; "
                      "`testbed up` builds a lab file (the one its 'lab:' names)")


def _has(data: Any, loc: tuple) -> bool:
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            return False
    return True


def _cut(data: Any, loc: tuple) -> None:
    cur = data
    for part in loc[:-1]:
        cur = cur[part]
    del cur[loc[-1]]


def validate_partly(model: type[BaseModel], data: Any, problems: Problems, rounds: int = 4
                    ) -> tuple[BaseModel | None, list[tuple]]:
    """Validate `data` against `model`, every refusal into `problems`; then, for the semantic pass, the model
    of what is left once every refused key is cut out (a missing required key cuts the entry that lacks it),
    with the cuts made — or None when what is left cannot stand (a required top-level key is refused)."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        _pydantic_problems(exc, problems, model, data)
        errors = exc.errors()
    left, cuts = copy.deepcopy(data), list[tuple]()
    for _ in range(rounds):
        round_cuts = set()
        for e in errors:
            loc = _data_loc(e["loc"], left)
            loc = loc[:-1] if e["type"] == "missing" else loc
            while loc and not _has(left, loc):
                loc = loc[:-1]
            if not loc or len(loc) == 1 and model.model_fields.get(str(loc[0])) is not None \
                    and model.model_fields[str(loc[0])].is_required():
                return None, cuts
            round_cuts.add(loc)
        for loc in sorted(round_cuts, key=lambda c: [str(p) for p in c], reverse=True):
            if _has(left, loc):
                _cut(left, loc)          # list entries last to first: the indices of the others stay
        cuts += sorted(round_cuts, key=str)
        try:
            return model.model_validate(left), cuts
        except ValidationError as exc:
            errors = exc.errors()
    return None, cuts


class _AfterCuts(Problems):
    """The semantic pass's problems on what was left after cuts: none about what was cut (or inside it), none
    that a cut could make up (a host cut out leaves the role counts short), none at all after a LAN cut (the
    defaults that take its place are not the file's)."""

    def __init__(self, base: Problems, cuts: list[tuple]):
        super().__init__(base.source, base.lines)
        self.base, self.cuts = base, cuts
        self.hosts_cut = any(len(c) == 2 and c[0] == "hosts" for c in cuts)

    def add(self, path, reason: str, *, limit: int = MAX_REASON) -> None:
        key = tuple(path)
        if any(key[:len(c)] == c for c in self.cuts) or self.hosts_cut and key == ("hosts",):
            return
        self.items.append((".".join(str(p) for p in key) or "<top>", reason))
        self.base.add(path, reason, limit=limit)


# ---------------------------------------------------------------- loading


def validate_data(data: Any, source: str, lines: dict[tuple, int] | None = None,
                  problems: Problems | None = None, *, machine_routes: Iterable[str] = (),
                  known_providers: Iterable[str] | None = None):
    """Validate parsed lab data; return the resolved topology.Lab or raise SpecError with every problem."""
    problems = problems or Problems(source, lines or {})
    if not isinstance(data, dict):
        problems.add((), "a lab file is a mapping with at least 'name' and 'hosts'")
        problems.raise_if_any()
    if "experiment" in data:
        problems.add((), EXPERIMENT_NOT_LAB)
        problems.raise_if_any()
    if known_providers is None:
        from orchestrator import providers  # the registry: a leaf
        known_providers = providers.known_providers()
    known = sorted(known_providers)
    provider = data.get("provider", "netns")
    if isinstance(provider, str) and provider not in known:
        problems.add(("provider",), f"unknown provider '{provider}'; known providers: {', '.join(known)}")
    spec, cuts = validate_partly(LabFile, data, problems)
    if spec is None or any(c[0] == "lans" for c in cuts):
        problems.raise_if_any()
        raise AssertionError("a refused lab file without a problem")     # unreachable
    assert isinstance(spec, LabFile)
    lab = resolve(spec, source, _AfterCuts(problems, cuts) if cuts else problems, machine_routes=list(machine_routes))
    problems.raise_if_any()
    assert lab is not None
    return lab


def load_lab(path: str | Path, *, machine_routes: Iterable[str] | None = None,
             provider_override: str | None = None, name_override: str | None = None):
    """Read, validate and resolve a lab file. machine_routes defaults to this machine's routes."""
    source = str(path)
    data, lines, problems = read_spec_file(path)
    if provider_override and isinstance(data, dict):
        data = {**data, "provider": provider_override}
    if name_override and isinstance(data, dict):
        data = {**data, "name": name_override}
    if machine_routes is None:
        machine_routes = machine_route_prefixes()
    return validate_data(data, source, lines, problems, machine_routes=machine_routes)


def machine_route_prefixes() -> list[str]:
    """Non-default IPv4 route prefixes of the machine's root namespace (main and local tables)."""
    from orchestrator.localrun import run

    res = run(["ip", "-4", "-j", "route", "show", "table", "all"], timeout=10)
    if not res.ok:
        return []
    out = []
    for r in json.loads(res.stdout or "[]"):
        dst = r.get("dst", "")
        if dst in ("default", "") or r.get("type") in ("broadcast",):
            continue
        try:
            out.append(str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)))
        except ValueError:
            continue
    return sorted(set(out))
