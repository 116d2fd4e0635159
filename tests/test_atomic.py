"""The one atomic-write helper (compressor.store): a failure leaves the old file and no temp file behind, a mode
is applied, and no other module renames files into place itself."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from compressor import store
from compressor.store import atomic_path, atomic_write, swap_dir, swap_symlink, temp_path, write_json

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("compressor", "passes", "frontends", "exporters", "benchmarks")
# the only functions that rename a finished file, directory or link into place
RENAMERS = {("compressor/store.py", "atomic_path"), ("compressor/store.py", "swap_dir"),
            ("compressor/store.py", "swap_symlink")}


def test_atomic_write_text_bytes_and_mode(tmp_path):
    p = atomic_write(tmp_path / "a.txt", "é\n")
    assert p == tmp_path / "a.txt" and p.read_bytes() == "é\n".encode()
    atomic_write(p, b"\x00\x01", mode=0o755)
    assert p.read_bytes() == b"\x00\x01" and stat.S_IMODE(p.stat().st_mode) == 0o755
    atomic_write(p, b"x", mode=0o600)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="verification failed"):
        with atomic_path(p) as tmp:
            assert tmp == temp_path(p) and tmp.parent == p.parent and tmp.name == f"model.onnx.{os.getpid()}.tmp"
            tmp.write_bytes(b"half-written")
            raise RuntimeError("verification failed")
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.onnx"]


def test_a_failing_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    write_json(p, {"a": 1})

    def full_disk(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", full_disk)
    with pytest.raises(OSError, match="disk full"):
        write_json(p, {"a": 2})
    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, "x", mode=0o644)
    assert p.read_text() == '{\n  "a": 1\n}'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_a_writer_that_writes_nothing_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_swap_dir_and_swap_symlink(tmp_path):
    d, new = tmp_path / "reproduce", tmp_path / "reproduce.tmp"
    (d / "old").mkdir(parents=True)
    new.mkdir()
    (new / "reproduce.json").write_text("{}")
    swap_dir(new, d)
    assert sorted(x.name for x in d.iterdir()) == ["reproduce.json"] and not new.exists()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = swap_symlink(tmp_path / "run", "a")
    assert os.readlink(link) == "a"
    swap_symlink(link, "b")
    assert os.readlink(link) == "b" and link.resolve() == tmp_path / "b"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a", "b", "reproduce", "run"]


def _renames(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every os.replace / os.rename / shutil.move / .rename() call in `path`."""
    found = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                attr, owner = child.func.attr, child.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else ""
                if (owner_name, attr) in {("os", "replace"), ("os", "rename"), ("os", "renames"),
                                          ("shutil", "move")} or attr == "rename":
                    found.append((name, child.lineno))
            visit(child, name)

    visit(ast.parse(path.read_text(), str(path)), "<module>")
    return found


def test_only_the_store_renames_files_into_place():
    """Every atomic write goes through compressor.store (atomic_path / atomic_write / write_json, swap_dir,
    swap_symlink): no module keeps its own temp-file-and-rename copy."""
    offenders = []
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            offenders += [f"{rel}:{line} ({func})" for func, line in _renames(path) if (rel, func) not in RENAMERS]
    assert not offenders, f"rename into place outside compressor.store: {offenders}"
    assert {(r, f) for r in ["compressor/store.py"] for f, _ in _renames(REPO / r)} == RENAMERS


def test_the_walk_finds_a_rename(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\ndef save(p):\n    os.replace(p + '.tmp', p)\nPath('a').rename('b')\n")
    assert _renames(f) == [("save", 3), ("<module>", 4)]
