"""A role a user adds beside the shipped ones is held to the same ansible-lint configuration (production
profile; `make lint` holds the shipped playbooks to it), and what it gets wrong is named with its file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
LINT = Path(sys.executable).with_name("ansible-lint")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not LINT.exists(), reason="ansible-lint is not installed in this venv")]


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--nocolor"], cwd=folder, capture_output=True, text=True, timeout=300)


def test_a_users_role_is_held_to_the_same_profile(tmp_path):
    copy = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, copy)
    role = copy / "roles" / "my-limiter" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- name: install my limiter\n  testbed_hots:\n    dirs: [/opt/x]\n")
    (copy / "site.yml").write_text((copy / "site.yml").read_text()
                                   + "\n- name: My limiter\n  hosts: blade\n  gather_facts: false\n"
                                     "  roles:\n    - {role: my-limiter, tags: [my-limiter]}\n")
    r = lint(copy)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "syntax-check[unknown-module]" in out and "testbed_hots" in out     # a misspelt module
    assert "roles/my-limiter/tasks/main.yml" in out
