"""The `sweep:` block of a benign or stopping-speed experiment (issue 17): a mechanism's parameters swept, each setting a run of
its own over every rate and protocol, so the report can set what each costs the benign traffic beside how
fast it stops a worm (the trade-off plot).

```yaml
sweep: {working_set_size: [1, 2, 5, 10]}     # several keys: every combination, in the order written
```
Each mechanism that takes a swept parameter runs once per setting, under a label that names it
(`williamson-wss2`: the parameter's initials and its value); the others run once, as written. Every value is
checked against the mechanism's own parameters before anything is built.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from mechanisms.spec import MechanismError
from orchestrator.experiment.mechspec import MechanismRun

MAX_SETTINGS = 64
SWEPT_KINDS = ("benign", "stopping-speed")


def short(key: str, keys: Sequence[str]) -> str:
    """A parameter's name in a label: its initials (working_set_size → wss), or whole when two keys share them."""
    ini = "".join(w[0] for w in key.split("_") if w)
    return ini if sum(1 for k in keys if "".join(w[0] for w in k.split("_") if w) == ini) == 1 else key


def label(name: str, setting: Mapping[str, Any], keys: Sequence[str]) -> str:
    return name + "".join(f"-{short(k, keys)}{v:g}" if isinstance(v, int | float) else f"-{short(k, keys)}{v}"
                          for k, v in setting.items())


def expand(mechs: Sequence[MechanismRun], sweep: Mapping[str, Sequence[Any]] | None, kind: str,
           problems) -> list[MechanismRun]:
    """The mechanisms with the sweep applied (problems added, not raised; on one, the mechanisms unswept)."""
    if not sweep:
        return list(mechs)
    if kind not in SWEPT_KINDS:
        problems.add(("sweep",), "a sweep runs in kind: benign and kind: stopping-speed experiments (with a "
                                 "benign: block, both axes of the trade-off measured; docs/benign.md)")
        return list(mechs)
    keys, bad = list(sweep), False
    for k in keys:
        if not any(m.descriptor is not None and k in m.descriptor.defaults() for m in mechs):
            known = sorted({p for m in mechs if m.descriptor is not None for p in m.descriptor.defaults()})
            problems.add(("sweep", k), f"no mechanism of this experiment takes {k} (theirs: "
                                       f"{', '.join(known) or 'none'})")
            bad = True
        elif len(set(map(repr, sweep[k]))) != len(sweep[k]):
            problems.add(("sweep", k), "a value is named twice")
            bad = True
    for m in mechs:                     # each value alone, so a refusal names its own line
        d = m.descriptor
        for k in (k for k in keys if d is not None and k in d.defaults()):
            for j, v in enumerate(sweep[k]):
                try:
                    assert d is not None
                    d.validate(m.params | {k: v})
                except MechanismError as exc:
                    problems.add(("sweep", k, j), str(exc))
                    bad = True
    if bad:
        return list(mechs)
    out: list[MechanismRun] = []
    for m in mechs:
        mine = [k for k in keys if m.descriptor is not None and k in m.descriptor.defaults()]
        if not mine:
            out.append(m)
            continue
        grid = [dict(zip(mine, vs, strict=True)) for vs in itertools.product(*(sweep[k] for k in mine))]
        if len(grid) > MAX_SETTINGS:
            problems.add(("sweep",), f"{len(grid)} settings of {m.name}; at most {MAX_SETTINGS}")
            return list(mechs)
        assert m.descriptor is not None
        out += [dataclasses.replace(m, params=m.descriptor.validate(m.params | setting),
                                    label=label(m.name, setting, mine)) for setting in grid]
    return out
