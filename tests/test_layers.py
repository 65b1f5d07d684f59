"""The orchestrator's layers, held by its imports: no cycle, and nothing imports against the order
labfile ← providers ← lab ← experiment ← results ← cli (analysis below experiment, beside lab; errors,
atomic and localrun under everything). Read from the source with ast, like test_stdlib_only.py: an import
under `if TYPE_CHECKING:` is for the type checker only and does not count. The provider registry
(orchestrator/providers/__init__.py) is a leaf anything may ask for the known providers' names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "orchestrator"
RANK = {"": 0, "labfile": 1, "providers": 2, "lab": 3, "analysis": 3, "experiment": 4, "results": 5, "cli": 6}
LEAVES = {"orchestrator.providers"}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The orchestrator modules `name` imports (a package's submodule when it names one)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("orchestrator")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("orchestrator"):
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != name}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_import_goes_down_the_layers():
    bad = []
    for m, deps in graph().items():
        for d in deps:
            if d in LEAVES:
                continue
            a, b = layer(m), layer(d)
            if RANK[b] > RANK[a] or (RANK[b] == RANK[a] and a != b):
                bad.append(f"{m} ({a or 'base'}) imports {d} ({b or 'base'})")
    assert not bad, "imports against labfile ← providers ← lab ← experiment ← results ← cli:\n" + "\n".join(sorted(bad))


def test_the_registry_is_a_leaf():
    assert graph()["orchestrator.providers"] <= {"orchestrator.errors"}


def test_no_module_imports_itself_round_a_cycle():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:          # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_the_checker_sees_what_it_judges():
    g = graph()
    assert "orchestrator.experiment.trial" in g["orchestrator.experiment.runner"]
    assert "orchestrator.labfile.topology" in g["orchestrator.providers.base"]
    assert layer("orchestrator.errors") == "" and layer("orchestrator.cli") == "cli"
    assert layer("orchestrator.cli.common") == "cli" and layer("orchestrator.providers") == "providers"
