"""`testbed validate FILE…`: check lab and experiment files without building anything.

A file is an experiment file when it has `experiment:` and a lab file otherwise; an experiment file's lab file
is checked with it. Every problem of every file is reported — the parse and the semantic checks together
(load.validate_partly) — and nothing is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import SpecError, SpecErrors


@dataclass
class FileCheck:
    path: Path
    kind: str | None                    # lab, experiment, or None when the file could not be read
    summary: str = ""                   # what a good file holds
    errors: list[SpecError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe(self) -> str:
        return f"{self.kind}: {self.summary}" if self.summary else str(self.kind)

    def to_dict(self) -> dict:
        return {"file": str(self.path), "kind": self.kind, "ok": self.ok, "summary": self.summary or None,
                "problems": [{"file": e.source, "where": where, "reason": reason}
                             for e in self.errors for where, reason in e.problems]}


def file_kind(path: Path) -> str | None:
    from orchestrator.labfile.specfile import read_spec_file

    try:
        data, _, _ = read_spec_file(path)
    except SpecError:
        return None
    return "experiment" if isinstance(data, dict) and "experiment" in data else "lab"


def validate_file(path: Path, *, machine_routes=None) -> FileCheck:
    """Check one file as `testbed up` (a lab file) or `testbed run` (an experiment file) would."""
    from orchestrator.experiment.spec import load_experiment
    from orchestrator.labfile.load import load_lab

    kind = file_kind(path)
    check = FileCheck(path, kind)
    try:
        if kind == "experiment":
            exp = load_experiment(path, machine_routes=machine_routes)
            s = exp.spec
            trials = len(s.rates) * len(s.protocols) * s.repeats * len(exp.mechanisms)      # as plan_trials
            if s.kind == "spread":     # every deploy condition (none once) × mechanism × rate × repeat
                from orchestrator.experiment.spreadrun import plan_spread

                trials = len(plan_spread(exp))
            check.summary = (f"{s.experiment} ({s.kind}) on lab {exp.lab.name}: {trials} trial(s), "
                             f"rates {', '.join(f'{r:g}' for r in s.rates)}/s")
        else:
            lab = load_lab(path, machine_routes=machine_routes)
            check.summary = f"{lab.name} ({lab.provider}): {len(lab.hosts)} hosts on {len(lab.segments)} segments"
    except SpecErrors as exc:
        check.errors = list(exc.errors)
    except SpecError as exc:
        check.errors = [exc]
    return check
