"""Lab files: loading and the semantic pass over the strict models (models.py; the YAML with key paths and
lines: specfile.py).

`load_lab(path)` returns a resolved `topology.Lab` or raises SpecError listing every problem (file, key path,
line, reason). Nothing here touches the network; the machine's routes are passed in for the overlap check.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.labfile.constants import ROLES
from orchestrator.labfile.models import LabFile
from orchestrator.labfile.resolve import resolve
from orchestrator.labfile.specfile import Problems, read_spec_file


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
    errors = [{**e, "loc": _data_loc(e["loc"], data)} for e in exc.errors()]
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



# ---------------------------------------------------------------- loading


def validate_data(data: Any, source: str, lines: dict[tuple, int] | None = None,
                  problems: Problems | None = None, *, machine_routes: Iterable[str] = (),
                  known_providers: Iterable[str] | None = None):
    """Validate parsed lab data; return the resolved topology.Lab or raise SpecError with every problem."""
    problems = problems or Problems(source, lines or {})
    if not isinstance(data, dict):
        problems.add((), "a lab file is a mapping with at least 'name' and 'hosts'")
        problems.raise_if_any()
    if known_providers is None:
        from orchestrator import providers  # the registry: a leaf
        known_providers = providers.known_providers()
    known = sorted(known_providers)
    provider = data.get("provider", "netns")
    if isinstance(provider, str) and provider not in known:
        problems.add(("provider",), f"unknown provider '{provider}'; known providers: {', '.join(known)}")
    try:
        spec = LabFile.model_validate(data)
    except ValidationError as exc:
        _pydantic_problems(exc, problems, LabFile, data)
        problems.raise_if_any()
        raise  # unreachable: a ValidationError always carries at least one error
    lab = resolve(spec, source, problems, machine_routes=list(machine_routes))
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
