"""Packages that run on bare guests (testworm, workload): what they import, and that each module says what it is."""

from __future__ import annotations

import ast
import pathlib
import sys


def foreign_imports(pkg: pathlib.Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """Every absolute import in pkg/*.py of a top-level module outside the stdlib and `allowed`."""
    foreign = []
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("__future__", *allowed):
                    foreign.append(f"{path.name}: {name}")
    return foreign


def undocumented_or_long(pkg: pathlib.Path, max_lines: int = 400) -> list[str]:
    """Modules of pkg without a docstring that says something, or of max_lines lines or more."""
    bad = []
    for path in sorted(pkg.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or len(doc) <= 20:
            bad.append(f"{path.name}: no docstring saying what it is for")
        if len(path.read_text().splitlines()) >= max_lines:
            bad.append(f"{path.name} is getting long")
    return bad
