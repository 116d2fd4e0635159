"""README's "Layout" names every module of the package on the line of its folder, and nothing that is not
there: a new module without a line, or a line naming a removed file, fails here."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("compressor", "passes", "frontends", "exporters")


def layout() -> dict[str, set[str]]:
    """folder ("compressor/", "compressor/data/", "passes/", ...) -> the words on its lines."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"\n## Layout\n```\n(.*?)```", text, re.S).group(1)
    folders: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        if not line[:1].isspace():  # an indented line continues the folder above
            first = line.split()[0]
            folder = first if first.endswith("/") else first.rpartition("/")[0] + "/"
        folders.setdefault(folder, set()).update(re.findall(r"[A-Za-z0-9_]+", line))
    return folders


def modules() -> list[Path]:
    return sorted(p.relative_to(REPO) for root in ROOTS for p in (REPO / root).rglob("*.py")
                  if p.name != "__init__.py" and not p.name.startswith("_"))


def test_every_module_is_on_its_folders_line():
    folders = layout()
    missing = [str(m) for m in modules() if m.stem not in folders.get(f"{m.parent}/", set())]
    assert not missing, f"README Layout does not name: {missing}"


def test_every_file_the_layout_names_exists():
    text = (REPO / "README.md").read_text()
    block = re.search(r"\n## Layout\n```\n(.*?)```", text, re.S).group(1)
    for line in block.splitlines():
        if line[:1].isspace():
            continue
        first = line.split()[0]
        if first.endswith(".py"):  # "compressor/ir.py edits.py ...": the .py words are files of that folder
            folder = REPO / first.rpartition("/")[0]
            named = [first.rpartition("/")[2], *re.findall(r"(?<=\s)([A-Za-z0-9_]+\.py)\b", line)]
            assert all((folder / n).is_file() for n in named), [n for n in named if not (folder / n).is_file()]
        else:
            assert (REPO / first).is_dir(), first


def test_every_repository_path_the_docs_name_exists():
    """README and BENCHMARKS name only files this repository holds (a moved or deleted module, or a file of
    another repository, is caught here)."""
    pattern = r"(?<![\w/.-])((?:compressor|passes|frontends|exporters|samples|benchmarks|tests)/[\w./-]*\w)"
    for doc in ("README.md", "BENCHMARKS.md"):
        named = set(re.findall(pattern, (REPO / doc).read_text()))
        assert named, doc
        assert not [p for p in sorted(named) if not (REPO / p).exists()], doc
