"""The package layout stays readable: the benchmarks are never imported by the product, no import cycles
(function-local imports count), a small export top level, no long files."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"s3gen_export": REPO / "export" / "s3gen_export", "s3gen_runtime": REPO / "runtime" / "s3gen_runtime",
            "s3gen_cli": REPO / "cli" / "s3gen_cli", "s3gen_bench": REPO / "bench" / "s3gen_bench",
            "s3gen_chatterbox": REPO / "integrations" / "s3gen_chatterbox"}
PRODUCT = ("s3gen_export", "s3gen_runtime", "s3gen_cli", "s3gen_chatterbox")
MAX_LINES = 450
MAX_EXPORT_TOP_MODULES = 8


def module_name(package: str, path: Path) -> str:
    parts = (package,) + path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(pkg, p): p for pkg, root in PACKAGES.items() for p in sorted(root.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `name` imports, anywhere in the file (lazy imports included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported_modules(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_product_never_imports_the_benchmarks():
    offenders = {name: sorted(t for t in targets if t.startswith("s3gen_bench"))
                 for name, targets in import_graph().items() if name.split(".")[0] in PRODUCT}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from .b import f\n")
    (root / "b.py").write_text("def f():\n    from . import a\n")
    PACKAGES["pkg"] = root
    try:
        names = {module_name("pkg", p): p for p in root.rglob("*.py")}
        graph = {n: imported_modules(n, p, set(names)) for n, p in names.items()}
    finally:
        del PACKAGES["pkg"]
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])


def test_export_top_level_is_small():
    top = sorted(p.name for p in PACKAGES["s3gen_export"].glob("*.py"))
    assert len(top) <= MAX_EXPORT_TOP_MODULES, top


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_file_is_long_and_every_folder_says_what_it_is(package):
    root = PACKAGES[package]
    long = {str(p.relative_to(REPO)): n for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    silent = [str(init.relative_to(REPO)) for init in root.rglob("__init__.py") if ast.get_docstring(ast.parse(init.read_text())) is None]
    assert silent == []
