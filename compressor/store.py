"""The content-addressed stage store, shared by every run (and sweep trial) that points at it.

A stage lives at `<store>/<key>/` (default store: `.store` beside the run directories, e.g.
`runs/.store/`); its key hashes everything that determines it (the previous key, the stage's name and
options, the package versions). A run directory is only the human view: `NN_name` links into the store,
plus the report. So two runs that share a prefix of stages share those stages, and nothing a run does
deletes another run's stages.

Integrity: every stored byte is covered by a checksum.
- `stage.json`, written last and atomically, marks a stage finished and lists every file of it with its
  sha256; it carries its own `seal` (the sha256 of the rest of the record), so an edited or damaged
  record is detected too. Each `metrics-<eval key>.json` carries a seal chained to the stage's seal, so
  edited metrics are never served and metrics of an earlier attempt of the stage never match.
  A mismatch is one warning line naming the file; the stage (or only its metrics) is recomputed.
  A seal is a checksum, not a signature: it catches corruption and hand edits, not someone who
  recomputes the sha256 values on purpose.
- A stage path that is a symlink or a file (not a directory of the store) is replaced, with a line
  saying so: the store never follows it, deletes through it or writes into it.

Concurrency: a per-key lock (`<store>/.locks/<key>.lock`, `fcntl.flock`) makes concurrent processes that
need the same stage compute it once: the second waits, then finds it finished. A directory without
`stage.json` is an interrupted attempt of that very stage (same key): it is kept, so its training
checkpoints let the stage resume.

References: every link the store serves (`runs/<run>/NN_stage`, a sweep trial's
`runs/<sweep>/trials/NNNN/NN_stage`, a run anywhere else given by `--out`) is recorded under the key's lock
in `<store>/.refs/<key>.json`. `prune` keeps a stage while any recorded link (or a link found under the
store's parent) still points at it, and never touches a stage whose lock a running run holds.

Atomic writes: every file the compiler writes in place goes through `atomic_path` / `atomic_write` (a
per-process temp name beside the target, renamed onto it only when complete, removed on failure);
`swap_dir` and `swap_symlink` put a finished directory or a link in place.

This module imports nothing beyond the standard library: `compress bench model.onnx` uses it to verify an
artifact on a machine without torch.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from compressor.errors import StoreError

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOCKS = ".locks"
REFS = ".refs"
SEAL = "seal"
METRICS_PREFIX = "metrics-"
# a stage record or metrics file is small; anything bigger is not one (and is not read into memory)
MAX_RECORD_BYTES = 16 << 20


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


# ---- atomic writes: every file the compiler writes goes through these -------------------------------

def temp_path(path: Path) -> Path:
    """The temp name beside `path` that `atomic_path` writes first: per process (`name.<pid>.tmp`), so
    concurrent writers of the same file never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """A temp path beside `path` for a writer that needs a file name (torch.save, savefig, a serializer):
    when the block ends normally the temp file gets `mode` (if given) and is renamed onto `path`; when it
    raises, `path` is left as it was and the temp file is removed. The parent directory must exist."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically (see `atomic_path`); returns the path."""
    path = Path(path)
    with atomic_path(path, mode) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def swap_dir(tmp: Path, path: Path) -> None:
    """Put the finished directory `tmp` in place of the directory `path` (whose old content is removed
    first: a directory cannot be renamed over a non-empty one)."""
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def swap_symlink(link: Path, target: str | os.PathLike[str]) -> Path:
    """Point the symlink `link` at `target` (kept as given, e.g. relative), replacing what `link` was
    atomically through a per-process temp link, so a reader never sees it missing."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return link


def write_json(path: Path, obj: Any) -> None:
    """Atomically (`atomic_write`)."""
    atomic_write(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> Any:
    """The JSON document at `path`, or None when it is missing, unreadable, too big or not JSON."""
    try:
        return _load_record(path)
    except (OSError, ValueError, RecursionError):
        return None


def _load_record(path: Path) -> Any:
    """json.loads of a small file; raises OSError / ValueError (too big, not UTF-8, not JSON) /
    RecursionError (nested too deep)."""
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"larger than {MAX_RECORD_BYTES >> 20} MiB")
    return json.loads(data.decode("utf-8"))


def seal_of(doc: dict[str, Any], chain: str = "") -> str:
    """The sha256 of `doc` without its own seal, in canonical JSON, chained to `chain` (the seal of the
    stage a metrics file belongs to)."""
    body = {k: v for k, v in doc.items() if k != SEAL}
    text = json.dumps(body, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256((chain + "\n" + text).encode()).hexdigest()


def _sealed(doc: Any, chain: str = "") -> bool:
    return isinstance(doc, dict) and isinstance(doc.get(SEAL), str) and doc[SEAL] == seal_of(doc, chain)


def path_problem(d: Path) -> str | None:
    """Why `d` cannot be a stage directory of the store (a symlink, a file), or None."""
    if d.is_symlink():
        return "is a symlink, not a directory of the store"
    if d.exists() and not d.is_dir():
        return "is a file, not a directory"
    return None


def _remove_path(d: Path) -> None:
    """Remove a stage path without ever following a link out of the store."""
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        d.unlink()
    elif d.exists():
        shutil.rmtree(d)


@dataclass
class Check:
    """What checking a stage directory found: `problem` (one line, None when intact) and the record."""

    record: dict[str, Any] | None
    problem: str | None = None
    missing: bool = False  # no stage.json at all: unfinished, nothing to warn about
    legacy: bool = False   # a record of an older version, written before records were sealed


def check_stage_dir(d: Path, key: str | None = None) -> Check:
    """Check a stage directory against its sealed stage.json: the record's seal, its key (when given)
    and every file's sha256. Never raises."""
    rec_path = d / STAGE_FILE
    if not rec_path.exists() and not rec_path.is_symlink():
        return Check(None, None, missing=True)
    if rec_path.is_symlink() or not rec_path.is_file():
        return Check(None, f"{STAGE_FILE} is not a regular file")
    try:
        info = _load_record(rec_path)
    except (OSError, ValueError, RecursionError) as exc:
        return Check(None, f"{STAGE_FILE} is unreadable ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})")
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), dict) or not isinstance(info.get("key"), str):
        return Check(None, f"{STAGE_FILE} is not a stage record (it needs key, sha256 and seal)")
    if SEAL not in info:
        return Check(None, f"{STAGE_FILE} has no seal (written by an older version)", legacy=True)
    if not _sealed(info):
        return Check(None, f"{STAGE_FILE} does not match its seal (edited or corrupt)")
    if key is not None and info["key"] != key:
        return Check(None, f"{STAGE_FILE} is the record of stage {info['key']!r}, not of {key!r}")
    for name, digest in info["sha256"].items():
        if not isinstance(name, str) or "/" in name or name in ("", ".", "..") or not isinstance(digest, str):
            return Check(None, f"{STAGE_FILE} lists an invalid file entry {str(name)[:60]!r}")
        f = d / name
        if f.is_symlink() or not f.is_file():
            return Check(info, f"{name} is missing")
        if sha256_file(f) != digest:
            return Check(info, f"{name} does not match the sha256 in {STAGE_FILE} (changed on disk)")
    return Check(info)


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def dir(self, key: str) -> Path:
        return self.root / key

    def _lock_file(self, key: str) -> Path:
        locks = self.root / LOCKS
        try:
            locks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot create {LOCKS} ({exc.strerror or exc}); pass --store a "
                             "writable directory") from None
        return locks / f"{key}.lock"

    @contextlib.contextmanager
    def lock(self, key: str, blocking: bool = True) -> Iterator[bool]:
        """Exclusive per-key lock across processes (released on exit, and by the OS if the process dies).
        Yields whether it is held: always True when blocking; non-blocking, False when another process
        holds it. After taking it, the lock file must still be the one at its path (a prune may have
        removed it meanwhile): otherwise it is taken again on the new file."""
        import fcntl

        path = self._lock_file(key)
        while True:
            f = open(path, "a+")
            try:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) and not blocking:
                        yield False
                        return
                    raise
                try:
                    same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    fcntl.flock(f, fcntl.LOCK_UN)
                    continue
                try:
                    yield True
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
                return
            finally:
                f.close()

    def finished(self, key: str) -> dict[str, Any] | None:
        """The stage record of a finished, intact stage, or None (missing or interrupted; or damaged: then
        one warning line names the file and the stage is recomputed)."""
        d = self.dir(key)
        problem = path_problem(d)
        if problem is not None:
            log.warning("stage %s: %s %s; it is replaced by a fresh stage", key, d, problem)
            return None
        check = check_stage_dir(d, key)
        if check.problem is not None:
            name = (check.record or {}).get("name")
            log.warning("stage %s%s: %s; recomputing", key, f" ({name})" if isinstance(name, str) else "",
                        check.problem)
            return None
        return check.record

    def begin(self, key: str, force: bool = False) -> tuple[Path, bool]:
        """The directory to compute stage `key` in, and whether an interrupted attempt is resumed. Call
        with the key's lock held. A stage path that is a symlink or a file is removed (the link only,
        never what it points at) with a warning."""
        d = self.dir(key)
        try:
            problem = path_problem(d)
            if problem is not None:
                log.warning("stage %s: %s %s; replacing it with a directory of the store", key, d, problem)
                d.unlink()
            if d.is_dir() and not force and not (d / STAGE_FILE).exists():
                return d, True
            _remove_path(d)
            d.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot prepare stage directory {d} ({exc.strerror or exc}); "
                             "check the store directory (--store) is writable") from None
        return d, False

    def commit(self, key: str, info: dict[str, Any], files: list[str]) -> dict[str, Any]:
        """Mark stage `key` finished: its files' sha256 and `info` in a sealed stage.json, written last."""
        d = self.dir(key)
        record = {**json.loads(json.dumps(info, default=str)), "key": key,
                  "sha256": {name: sha256_file(d / name) for name in files}}
        record[SEAL] = seal_of(record)
        write_json(d / STAGE_FILE, record)
        return record

    # ---- who shows a stage -----------------------------------------------------------------------------
    def _refs_file(self, key: str) -> Path:
        return self.root / REFS / f"{key}.json"

    def add_referrer(self, key: str, link: Path) -> None:
        """Record that `link` shows stage `key`. Call with the key's lock held."""
        path = self._refs_file(key)
        links = self._recorded(key)
        entry = os.path.abspath(link)
        if entry in links:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"key": key, "links": sorted({*links, entry})})
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot record who shows stage {key} ({exc.strerror or exc}); "
                             "check the store directory (--store) is writable") from None

    def _recorded(self, key: str) -> list[str]:
        doc = read_json(self._refs_file(key))
        links = doc.get("links") if isinstance(doc, dict) else None
        return [x for x in links if isinstance(x, str)] if isinstance(links, list) else []

    def referrers(self, key: str) -> list[str]:
        """The recorded links that still point at stage `key`."""
        target = os.path.realpath(self.dir(key))
        return [link for link in self._recorded(key) if _points_at(link, target)]

    def entries(self) -> list[dict[str, Any]]:
        """Every stage in the store: its record (or None when unfinished), directory, bytes and any problem
        with its path. Never follows a link out of the store."""
        out: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if d.name.startswith("."):  # .locks, .refs, temp names
                continue
            problem = path_problem(d)
            if problem is not None:
                out.append({"key": d.name, "dir": d, "bytes": 0, "record": None, "problem": problem,
                            "mtime": d.lstat().st_mtime})
                continue
            size = 0
            for base, _dirs, files in os.walk(d):  # os.walk does not follow links
                for f in files:
                    with contextlib.suppress(OSError):
                        size += os.lstat(os.path.join(base, f)).st_size
            record = read_json(d / STAGE_FILE)
            out.append({"key": d.name, "dir": d, "bytes": size,
                        "record": record if isinstance(record, dict) else None, "problem": None,
                        "mtime": d.stat().st_mtime})
        return out


# ---- metrics, sealed to the stage they measure ---------------------------------------------------------

def metrics_name(eval_key: str) -> str:
    return f"{METRICS_PREFIX}{eval_key}.json"


def sealed_record(d: Path, key: str) -> dict[str, Any] | None:
    """Stage directory `d`'s stage.json when it is the sealed record of `key` (files are not re-hashed:
    the store checked them when it served the stage), else None."""
    info = read_json(d / STAGE_FILE)
    return info if _sealed(info) and info.get("key") == key else None


def read_metrics(d: Path, eval_key: str, stage: dict[str, Any]) -> dict[str, Any] | None:
    """The measurement record of stage directory `d` for `eval_key`, if its file is intact and sealed to
    `stage` (the stage's sealed record); otherwise None, with a warning when a file was there."""
    path = d / metrics_name(eval_key)
    if not path.exists():
        return None
    record = _intact_metrics(path, eval_key, stage)
    if record is None:
        log.warning("stage %s (%s): %s does not match its seal (edited, corrupt or from an earlier attempt); "
                    "measuring again", stage.get("key"), stage.get("name"), path.name)
    return record


def _intact_metrics(path: Path, eval_key: str, stage: dict[str, Any]) -> dict[str, Any] | None:
    """The record in metrics file `path` when it is sealed to `stage` and is `eval_key`'s, else None."""
    try:
        doc = _load_record(path)
    except (OSError, ValueError, RecursionError):
        return None
    if not (_sealed(doc, stage.get(SEAL, "")) and doc.get("eval_key") == eval_key
            and doc.get("stage_key") == stage.get("key") and isinstance(doc.get("record"), dict)):
        return None
    return doc["record"]


def write_metrics(d: Path, eval_key: str, stage: dict[str, Any], record: dict[str, Any]) -> None:
    """Write `record` as stage directory `d`'s measurement for `eval_key`, sealed to `stage`."""
    doc = {"eval_key": eval_key, "stage_key": stage.get("key"), "record": json.loads(json.dumps(record, default=str))}
    doc[SEAL] = seal_of(doc, stage.get(SEAL, ""))
    write_json(d / metrics_name(eval_key), doc)


def _points_at(link: str, target: str) -> bool:
    try:
        return os.path.islink(link) and os.path.realpath(link) == target
    except (OSError, ValueError):
        return False


def link_stage(run_dir: Path, name: str, target: Path) -> Path:
    """Point `run_dir/name` at a stage directory of the store (a relative symlink, replaced atomically);
    an old-layout real directory of the same name (this run's own) is removed first."""
    link = run_dir / name
    rel = os.path.relpath(target, run_dir)
    if link.is_symlink() and os.readlink(link) == rel:
        return link
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    return swap_symlink(link, rel)


# a run or sweep directory under the store's parent is at most this deep: runs/<sweep>/trials/NNNN/NN_stage,
# runs/<sweep>/budgets/<name>/run (which points at a trial, not at the store)
_SCAN_DEPTH = 4


def scan_links(store: Store, runs_root: Path | None = None) -> dict[str, list[str]]:
    """key → links into the store found under `runs_root` (default the store's parent), walking run and
    sweep directories without following links. This finds views made before links were recorded, and
    views moved since."""
    runs_root = Path(runs_root) if runs_root is not None else store.root.parent
    root = os.path.realpath(store.root)
    refs: dict[str, list[str]] = {}
    if not runs_root.is_dir():
        return refs
    base_depth = str(runs_root).rstrip(os.sep).count(os.sep)
    for base, dirs, files in os.walk(runs_root):
        if os.path.realpath(base) == root:
            dirs[:] = []
            continue
        if base.rstrip(os.sep).count(os.sep) - base_depth >= _SCAN_DEPTH:
            dirs[:] = []
        for name in [*dirs, *files]:
            path = os.path.join(base, name)
            if not os.path.islink(path):
                continue
            try:
                target = os.path.realpath(path)
            except (OSError, ValueError):
                continue
            if os.path.dirname(target) == root:
                refs.setdefault(os.path.basename(target), []).append(path)
    return refs


def references(store: Store, runs_root: Path | None = None) -> dict[str, list[str]]:
    """key → the links that show it: those recorded in the store, and those found under `runs_root`."""
    refs = scan_links(store, runs_root)
    for e in store.entries():
        for link in store.referrers(e["key"]):
            if link not in refs.setdefault(e["key"], []):
                refs[e["key"]].append(link)
    return {k: sorted(v) for k, v in refs.items() if v}


@dataclass
class StageDecision:
    key: str
    name: str
    bytes: int
    delete: bool
    why: str


def prune(store: Store, runs_root: Path | None = None, dry_run: bool = False) -> list[StageDecision]:
    """Decide for every stage whether to keep it (a link shows it, or a running run holds its lock) or
    delete it, and delete (unless `dry_run`). A stage is checked again under its lock, so a run that takes
    it meanwhile keeps it."""
    scanned = scan_links(store, runs_root)
    decisions = []
    for e in store.entries():
        key, record = e["key"], e["record"] or {}
        name = str(record.get("name", "?"))
        with store.lock(key, blocking=False) as held:
            if not held:
                decisions.append(StageDecision(key, name, e["bytes"], False,
                                               "in use by a running run (its lock is held)"))
                continue
            target = os.path.realpath(store.dir(key))
            shown = store.referrers(key) + [x for x in scanned.get(key, []) if _points_at(x, target)]
            if shown and e["problem"] is None:
                more = f" (+{len(set(shown)) - 1} more)" if len(set(shown)) > 1 else ""
                decisions.append(StageDecision(key, name, e["bytes"], False, f"shown by {shown[0]}{more}"))
                continue
            why = f"its path {e['problem']}" if e["problem"] else "no run shows it"
            decisions.append(StageDecision(key, name, e["bytes"], True, why))
            if not dry_run:
                _remove_path(store.dir(key))
                store._refs_file(key).unlink(missing_ok=True)
                # held, so safe: a process waiting on this file re-takes the lock on a new one (see lock)
                store._lock_file(key).unlink(missing_ok=True)
    return decisions


def verify_artifact(path: Path) -> str:
    """What `compress inspect` and `compress bench` can verify of `path` (a stage directory, or a file in
    one): the sealed stage.json beside it, every file it lists, and a directory's sealed metrics files; for
    an IR directory without a stage record (ModelIR.save), the weights against the sha256 in its ir.json.
    Returns one line saying what was verified, or why the artifact is unverified; raises StoreError
    ("corrupt: X does not match ...") on any mismatch."""
    path = Path(path)
    d = path if path.is_dir() else path.parent
    check = check_stage_dir(d)
    if check.legacy:
        return f"unverified: {STAGE_FILE} was written by an older version, without a seal"
    if check.problem is not None:
        raise StoreError(f"corrupt: {check.problem} in {d}; re-run the pipeline that wrote it (the store "
                         "recomputes a damaged stage), or re-export the file")
    if check.record is not None:
        listed = check.record["sha256"]
        if path.is_file() and path.name not in listed:
            return f"unverified: {STAGE_FILE} beside {path.name} does not list it"
        if path.is_file():
            return f"verified: {path.name} against the sealed {STAGE_FILE}"
        metrics = sorted(d.glob(f"{METRICS_PREFIX}*.json"))
        for f in metrics:
            eval_key = f.name[len(METRICS_PREFIX):-len(".json")]
            if _intact_metrics(f, eval_key, check.record) is None:
                raise StoreError(f"corrupt: {f.name} does not match its seal in {d}; delete it (the next run "
                                 "measures the stage again)")
        return (f"verified: {', '.join(sorted(listed))} and {len(metrics)} metrics file(s) against the sealed "
                f"{STAGE_FILE}")
    if path.is_dir():
        doc = read_json(d / "ir.json")
        weights = doc.get("weights") if isinstance(doc, dict) else None
        digest = weights.get("sha256") if isinstance(weights, dict) else None
        target = d / (weights.get("file", "") if isinstance(weights, dict) else "")
        if isinstance(digest, str) and target.name and target.parent == d and target.is_file():
            if sha256_file(target) != digest:
                raise StoreError(f"corrupt: {target.name} does not match the sha256 in ir.json ({d})")
            return f"unverified: no {STAGE_FILE} (weights match the sha256 in ir.json; ir.json itself is not covered)"
    return f"unverified: no {STAGE_FILE} beside it records its sha256"
