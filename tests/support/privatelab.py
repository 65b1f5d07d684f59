"""A lab file of the repository under a random name, on a private state directory, for a root test that runs
`testbed` on it: the test brings down exactly that lab, by name, and no other test's lab is touched."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

LABS = Path(__file__).resolve().parents[2] / "labs"


def private_lab(tmp_path: Path, monkeypatch, lab_file: str, prefix: str,
                edits: dict[str, str] | None = None) -> tuple[str, Path, Path]:
    """`labs/<lab_file>` renamed `<prefix><random hex>` (and `edits`, text → text, applied) in tmp_path, with
    TESTBED_STATE_DIR set to tmp_path/state: (name, lab path, state directory). Skips without root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: builds a namespace lab")
    state = tmp_path / "state"
    monkeypatch.setenv("TESTBED_STATE_DIR", str(state))
    name = f"{prefix}{secrets.token_hex(3)}"
    text, n = re.subn(r"(?m)^name: \S+$", f"name: {name}", (LABS / lab_file).read_text(), count=1)
    assert n == 1, f"labs/{lab_file} has no 'name:' line"
    for old, new in (edits or {}).items():
        assert old in text, f"labs/{lab_file} has no {old!r} to edit"
        text = text.replace(old, new)
    lab = tmp_path / "lab.yaml"
    lab.write_text(text)
    return name, lab, state
