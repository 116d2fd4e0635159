"""The content-addressed stage store, shared by every run (and sweep trial) that points at it.

A stage lives at `<store>/<key>/` (default store: `.store` beside the run directories, e.g.
`runs/.store/`); its key hashes everything that determines it (the previous key, the stage's name and
options, the package versions). A run directory is only the human view: `NN_name` links into the store,
plus the report. So two runs that share a prefix of stages share those stages, and nothing a run does
deletes another run's stages.

- `stage.json`, written last and atomically, marks a stage finished and lists every file of it with its
  sha256; a file that no longer matches makes the stage be recomputed, with one line saying why.
- A per-key lock (`<store>/.locks/<key>.lock`, `fcntl.flock`) makes concurrent processes that need the
  same stage compute it once: the second waits, then finds it finished.
- A directory without `stage.json` is an interrupted attempt of that very stage (same key): it is kept, so
  its training checkpoints let the stage resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOCKS = ".locks"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_pickle(path: Path) -> bool:
    """A torch.save zip or a raw pickle, told from its first bytes (the file is never unpickled)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"PK" or head[:1] == b"\x80"


def write_json(path: Path, obj: Any) -> None:
    """Atomically, through a per-process temp name (concurrent writers never share a temp file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def dir(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock across processes (released on exit, and by the OS if the process dies)."""
        import fcntl

        locks = self.root / LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def finished(self, key: str) -> dict[str, Any] | None:
        """The stage record of a finished, intact stage, or None (missing, interrupted, or a file changed
        since it was written: then a warning says which and the stage is recomputed)."""
        d = self.dir(key)
        info = read_json(d / STAGE_FILE)
        if info is None:
            return None
        if not isinstance(info, dict) or info.get("key") != key or not isinstance(info.get("sha256"), dict):
            log.warning("stage %s: %s is not a stage record of this key; recomputing", key, STAGE_FILE)
            return None
        for name, digest in info["sha256"].items():
            f = d / name
            if not f.is_file():
                log.warning("stage %s (%s): %s is missing; recomputing", key, info.get("name"), name)
                return None
            if sha256_file(f) != digest:
                log.warning("stage %s (%s): %s changed on disk (sha256 mismatch); recomputing", key,
                            info.get("name"), name)
                return None
        return info

    def begin(self, key: str, force: bool = False) -> tuple[Path, bool]:
        """The directory to compute stage `key` in, and whether an interrupted attempt is resumed. Call
        with the key's lock held."""
        d = self.dir(key)
        if d.is_dir() and not force and not (d / STAGE_FILE).exists():
            return d, True
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d, False

    def commit(self, key: str, info: dict[str, Any], files: list[str]) -> dict[str, Any]:
        """Mark stage `key` finished: its files' sha256 and `info` in stage.json, written last."""
        d = self.dir(key)
        record = {**info, "key": key, "sha256": {name: sha256_file(d / name) for name in files}}
        write_json(d / STAGE_FILE, record)
        return record

    def entries(self) -> list[dict[str, Any]]:
        """Every stage in the store: its record (or None when unfinished), directory and bytes."""
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name == LOCKS:
                continue
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            out.append({"key": d.name, "dir": d, "bytes": size, "record": read_json(d / STAGE_FILE),
                        "mtime": d.stat().st_mtime})
        return out


def link_stage(run_dir: Path, name: str, target: Path) -> Path:
    """Point `run_dir/name` at a stage directory of the store (a relative symlink, replaced atomically);
    an old-layout real directory of the same name (this run's own) is removed first."""
    link = run_dir / name
    rel = os.path.relpath(target, run_dir)
    if link.is_symlink() and os.readlink(link) == rel:
        return link
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    tmp = run_dir / f".{name}.{os.getpid()}.link"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(rel, tmp)
    os.replace(tmp, link)
    return link


def references(store: Store, runs_root: Path | None = None) -> dict[str, list[str]]:
    """key → the run directories (under `runs_root`, default the store's parent) whose view links to it."""
    runs_root = Path(runs_root) if runs_root is not None else store.root.parent
    refs: dict[str, list[str]] = {}
    if not runs_root.is_dir():
        return refs
    root = store.root.resolve()
    for run in sorted(runs_root.iterdir()):
        if not run.is_dir() or run.resolve() == root:
            continue
        for link in run.iterdir():
            if link.is_symlink():
                target = link.resolve()
                if target.parent == root:
                    refs.setdefault(target.name, []).append(run.name)
    return refs


def prune(store: Store, runs_root: Path | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Delete the stages no run directory links to (finished or not); returns what was (or would be) removed.
    A stage some run still shows is never removed."""
    refs = references(store, runs_root)
    gone = [e for e in store.entries() if e["key"] not in refs]
    for e in gone:
        if not dry_run:
            with store.lock(e["key"]):
                shutil.rmtree(e["dir"], ignore_errors=True)
            (store.root / LOCKS / f"{e['key']}.lock").unlink(missing_ok=True)
    return gone
