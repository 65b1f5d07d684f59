"""testworm must run on any guest with a bare Python 3.11: it may import nothing outside the stdlib."""

from __future__ import annotations

import pathlib

from tests.support.stdlib import foreign_imports, undocumented_or_long

PKG = pathlib.Path(__file__).resolve().parents[2] / "testworm"


def test_testworm_imports_only_the_standard_library():
    assert len(list(PKG.glob("*.py"))) >= 10
    assert foreign_imports(PKG) == []


def test_every_module_opens_with_what_it_is_responsible_for():
    assert undocumented_or_long(PKG) == []
