"""workload runs on bare guests like the worm: stdlib and testworm imports only, each module says what it is."""

from __future__ import annotations

import pathlib

from tests.support.stdlib import foreign_imports, undocumented_or_long

PKG = pathlib.Path(__file__).resolve().parents[2] / "workload"


def test_workload_imports_only_the_standard_library_and_testworm():
    assert len(list(PKG.glob("*.py"))) >= 8
    assert foreign_imports(PKG, allowed=("testworm",)) == []


def test_the_check_sees_a_foreign_import(tmp_path):
    (tmp_path / "m.py").write_text('"""x"""\nimport numpy\nfrom testworm import addrs\n')
    assert foreign_imports(tmp_path) == ["m.py: numpy", "m.py: testworm"]
    assert foreign_imports(tmp_path, allowed=("testworm",)) == ["m.py: numpy"]
    assert undocumented_or_long(tmp_path) == ["m.py: no docstring saying what it is for"]


def test_every_module_opens_with_what_it_is_responsible_for():
    assert undocumented_or_long(PKG) == []
