"""Which lab a command-line argument means: a lab's name, or a lab or experiment file naming it.

`down`, `status`, `check`, `exec` (and `provision`, `power`, `console`) take either, as containerlab's
`destroy -t FILE` does. A lab name never contains a dot (load.NAME_PATTERN), so an argument ending in
.yaml or .yml — or naming an existing file — is a file; anything else is a name, checked as one. Only the file's `name:` (an experiment file's `lab:` and then that
file's `name:`) is read: a lab that is up can be found from a file that has since been edited.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import SpecError
from orchestrator.labfile.specfile import read_spec_file


def looks_like_a_file(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or Path(ref).is_file()


def lab_name(ref: str) -> str:
    """The lab name `ref` stands for (SpecError, exit 2, for a file that names none)."""
    if not looks_like_a_file(ref):
        return ref
    path = Path(ref)
    data, _, _ = read_spec_file(path)
    if isinstance(data, dict) and "experiment" in data:
        lab = data.get("lab")
        if not isinstance(lab, str):
            raise SpecError(ref, [("lab", "an experiment file names its lab file in 'lab:'")])
        lab_path = Path(lab) if Path(lab).is_absolute() else path.parent / lab
        data, _, _ = read_spec_file(lab_path)
        ref = str(lab_path)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise SpecError(ref, [("name", "a lab file names its lab in 'name:'")])
    return name
