"""workload runs on bare guests like the worm: stdlib and testworm imports only, each module says what it is."""

from __future__ import annotations

import ast
import pathlib
import sys

PKG = pathlib.Path(__file__).resolve().parents[2] / "workload"


def test_workload_imports_only_the_standard_library_and_testworm():
    foreign = []
    modules = sorted(PKG.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("__future__", "testworm"):
                    foreign.append(f"{path.name}: {name}")
    assert foreign == []


def test_every_module_opens_with_what_it_is_responsible_for():
    for path in PKG.glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 20, path.name
        assert len(path.read_text().splitlines()) < 400, f"{path.name} is getting long"
