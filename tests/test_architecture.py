"""The package's import graph: no import cycle among its modules, and no module imports another module's private
name (`from x import _y`; importing a module as `_x` is fine).

Every import counts: module level, inside functions, under `if TYPE_CHECKING:`. The folders map into the
`compressor` namespace as pyproject's package-dir says (passes/ is compressor.passes, ...).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# folder -> package, as [tool.setuptools] package-dir in pyproject.toml (test_roots_match_pyproject)
ROOTS = {"compressor": "compressor", "passes": "compressor.passes", "exporters": "compressor.exporters",
         "frontends": "compressor.frontends"}


def package_modules(repo: Path, roots: dict[str, str]) -> dict[str, Path]:
    """Module name -> file, for every .py file under the roots."""
    mods = {}
    for folder, package in roots.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([package, *parts])] = path
    return mods


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    """(module -> the package modules it imports, {(importer, module, private name)})."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = set()
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
                if base.split(".")[0] in {r.split(".")[0] for r in ROOTS.values()}:
                    private |= {(mod, base, a.name) for a in node.names
                                if a.name.startswith("_") and not a.name.startswith("__")}
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    return imports(package_modules(REPO, ROOTS))


def test_no_import_cycle(package):
    found = cycles(package[0])
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


def test_no_import_of_another_modules_private_name(package):
    assert not package[1], f"imports of private names (importer, module, name): {sorted(package[1])}"


def test_roots_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_dir = doc["tool"]["setuptools"]["package-dir"]
    assert {folder: package for package, folder in package_dir.items()} == ROOTS


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """A cycle through a function-local import and a TYPE_CHECKING import, a relative import, and a private
    name, in a throwaway package: each is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from compressor.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n")
    (pkg / "c.py").write_text("import compressor.a as _a\nfrom compressor.sub.b import _hidden\n")
    (pkg / "d.py").write_text("from compressor import c\n")
    graph, private = imports(package_modules(tmp_path, {"pkg": "compressor"}))
    assert graph["compressor.sub.b"] == {"compressor.c"}
    assert cycles(graph) == {frozenset({"compressor.a", "compressor.sub.b", "compressor.c"})}
    assert private == {("compressor.c", "compressor.sub.b", "_hidden")}
