"""Fault cases against the real CLI: the store loses nothing and serves nothing it cannot verify, and
hostile files get one line and exit code 2.

    python benchmarks/reliability.py            # ≈ 3 min on 2 cores; writes BENCHMARKS.md
    python benchmarks/reliability.py --no-write

Every case runs `compress` in a subprocess, as a user would, and is judged by what the user sees:
- store: `cache prune` after a sweep, with --out outside the store's parent, and repeatedly while a run
  computes; an edited metrics file (IoU, the baseline's params), an edited or unreadable stage.json, a
  stage directory replaced by a symlink or a file: the next run's report must equal the first run's, the
  link's target must be untouched and no reproducer written;
- verify: `inspect` / `bench` of a stage whose weights, ir.json, stage.json or metrics were changed, and of
  a stage's model.onnx with a flipped byte: exit 2 with "corrupt: ..."; a bare copy: "unverified";
- hostile documents: tampered ir.json / safetensors headers in an IR directory, hostile ONNX graphs,
  genotype JSON, reproducer directories, sweep files: exit 2, exactly one stderr line, no traceback.
Prints one line per case and the pass count per group.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402

PIPELINE = """\
name: rel
seed: 0
data: {name: insar-synthetic, n_train: 32, n_val: 16, n_test: 16, size: 16}
model: {frontend: zoo, model: seg-cnn, width: 4, train: {epochs: 1, batch_size: 16}}
passes: [{prune-l1: {ratio: 0.5}}]
export: [onnx]
evaluate: {batch_size: 16, macs: false, latency: {backends: []}}
"""
SLOW = PIPELINE.replace("name: rel", "name: slow").replace("n_train: 32", "n_train: 512").replace(
    "epochs: 1", "epochs: 4").replace("passes: [{prune-l1: {ratio: 0.5}}]",
                                      "passes: [{prune-l1: {ratio: 0.5}}, {finetune: {epochs: 3, batch_size: 16}}]")
SWEEP = """\
name: sw
base:
  name: b
  seed: 0
  data: {name: digits, train_fraction: 0.3, val_fraction: 0.2}
  model: {frontend: zoo, model: resnet, width: 4, depth: 1, kernels: [3, 3, 3], train: {epochs: 1, batch_size: 128}}
  evaluate: {batch_size: 256, macs: false, latency: {backends: []}}
space: {model.kernels.0: [3, 5]}
objectives: {accuracy: maximize}
budgets: {any: ["params <= 1e9"]}
trials: 2
"""


def compress(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressor.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> bool:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr


def report(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: s[k] for k in ("name", "metrics", "params", "size_bytes")}
            for s in json.loads((run_dir / "report.json").read_text())["stages"]]


def dangling(d: Path) -> int:
    return sum(1 for p in d.rglob("*") if p.is_symlink() and not p.exists())


class Cases:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, bool, str]] = []

    def check(self, group: str, name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a case that crashes the harness fails, with its reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.rows.append((group, name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {group:<9} {name}{'' if ok else '  -- ' + detail[:300]}", flush=True)


# ---- the store --------------------------------------------------------------------------------------------

def store_cases(c: Cases, work: Path) -> None:
    pipeline = work / "p.yaml"
    pipeline.write_text(PIPELINE)
    runs = work / "runs"
    assert compress("run", str(pipeline), "--out", str(runs / "rel"), "--quiet").returncode == 0
    ref = report(runs / "rel")
    store = runs / ".store"

    def sweep_then_prune() -> tuple[bool, str]:
        (work / "sw.yaml").write_text(SWEEP)
        r = compress("sweep", str(work / "sw.yaml"), "--out", str(runs / "sw"), "--quiet")
        if r.returncode != 0:
            return False, r.stderr
        p = compress("cache", "prune", "--store", str(store))
        ok = "deleted 0 stages" in p.stdout and dangling(runs / "sw") == 0 and \
            (runs / "sw" / "budgets" / "any" / "run" / "00_baseline" / "stage.json").is_file()
        return ok, p.stdout.splitlines()[-1]
    c.check("store", "cache prune after a sweep keeps every trial's stages", sweep_then_prune)

    def out_elsewhere() -> tuple[bool, str]:
        other = work / "elsewhere" / "r"
        r = compress("run", str(pipeline), "--out", str(other), "--store", str(store), "--quiet")
        p = compress("cache", "prune", "--store", str(store))
        again = compress("run", str(pipeline), "--out", str(other), "--store", str(store))
        return (r.returncode == 0 and "deleted 0 stages" in p.stdout and dangling(other.parent) == 0
                and again.stderr.count("cached") == 3), p.stdout.splitlines()[-1]
    c.check("store", "cache prune keeps a run whose --out is outside the store's parent", out_elsewhere)

    def prune_during_run() -> tuple[bool, str]:
        slow = work / "slow.yaml"
        slow.write_text(SLOW)
        out = work / "far" / "slow"
        s2 = work / "s2" / ".store"
        proc = subprocess.Popen([sys.executable, "-m", "compressor.cli", "run", str(slow), "--out", str(out),
                                 "--store", str(s2), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        prunes = deleted = 0
        while proc.poll() is None:
            if s2.is_dir():
                p = compress("cache", "prune", "--store", str(s2), "--quiet")
                prunes += 1
                deleted += int(p.stdout.split("deleted ")[1].split()[0]) if "deleted " in p.stdout else 0
            time.sleep(0.5)
        err = proc.stderr.read() if proc.stderr else ""
        ok = proc.returncode == 0 and deleted == 0 and dangling(out) == 0 and (out / "report.json").is_file()
        return ok, f"{prunes} prunes during the run, {deleted} stages deleted, exit {proc.returncode} {err[-200:]}"
    c.check("store", "cache prune while a run computes deletes none of its stages", prune_during_run)

    def fresh_copy() -> Path:
        dst = work / "copy"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        shutil.copytree(runs / "rel", dst / "rel", symlinks=True)
        shutil.copytree(store, dst / ".store", symlinks=True)
        return dst

    def rerun_same(damage: Callable[[Path], None], expect_warning: str) -> Callable[[], tuple[bool, str]]:
        def case() -> tuple[bool, str]:
            d = fresh_copy()
            damage(d / "rel")
            r = compress("run", str(pipeline), "--out", str(d / "rel"))
            same = r.returncode == 0 and report(d / "rel") == ref
            return (same and expect_warning in r.stderr and not (d / "rel" / "reproduce").exists(),
                    f"exit {r.returncode}; " + " | ".join(ln for ln in r.stderr.splitlines() if "WARNING" in ln)[:300])
        return case

    def edit_metrics(stage: str, path: tuple[str, ...], value: Any) -> Callable[[Path], None]:
        def damage(run: Path) -> None:
            (f,) = (run / stage).glob("metrics-*.json")
            doc = json.loads(f.read_text())
            node = doc["record"]
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            f.write_text(json.dumps(doc))
        return damage

    def edit_record(run: Path) -> None:
        f = run / "02_onnx" / "stage.json"
        doc = json.loads(f.read_text())
        doc["info"]["max_abs_diff"] = 0.0
        f.write_text(json.dumps(doc))

    def replace_by_link(run: Path) -> None:
        d = Path(os.path.realpath(run / "01_prune-l1"))
        shutil.rmtree(d)
        (run.parent / "outside").mkdir(exist_ok=True)
        (run.parent / "outside" / "keep.txt").write_text("keep")
        d.symlink_to(run.parent / "outside", target_is_directory=True)

    def replace_by_file(run: Path) -> None:
        d = Path(os.path.realpath(run / "02_onnx"))
        shutil.rmtree(d)
        d.write_text("x")

    c.check("store", "edited metrics (iou 0.999) are not served",
            rerun_same(edit_metrics("01_prune-l1", ("metrics", "iou"), 0.999), "does not match its seal"))
    c.check("store", "edited baseline params are not served",
            rerun_same(edit_metrics("00_baseline", ("params",), 12345), "does not match its seal"))
    c.check("store", "an edited stage.json is recomputed", rerun_same(edit_record, "stage.json does not match its seal"))
    c.check("store", "an unreadable stage.json is recomputed, with a line",
            rerun_same(lambda run: (run / "01_prune-l1" / "stage.json").write_bytes(b"\xff\x00garbage"),
                       "stage.json is unreadable"))
    c.check("store", "a stage directory replaced by a symlink is replaced (target untouched, no reproducer)",
            rerun_same(replace_by_link, "is a symlink"))
    c.check("store", "a stage directory replaced by a file is replaced", rerun_same(replace_by_file, "is a file"))

    # ---- inspect / bench verify --------------------------------------------------------------------------
    def flip(path: Path, at: int) -> None:
        data = bytearray(path.read_bytes())
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))

    def refused(cmd: str, target: Callable[[Path], Path], damage: Callable[[Path], None]) -> Callable[[], tuple[bool, str]]:
        def case() -> tuple[bool, str]:
            d = fresh_copy()
            path = target(d / "rel")
            damage(path)
            extra = ["--iters", "2", "--warmup", "0", "--min-seconds", "0"] if cmd == "bench" else []
            r = compress(cmd, str(path), *extra)
            return one_line_error(r) and "corrupt: " in r.stderr, r.stderr.strip()[:300]
        return case

    stage = lambda run: run / "01_prune-l1"  # noqa: E731
    onnx_file = lambda run: run / "02_onnx" / "model.onnx"  # noqa: E731
    c.check("verify", "inspect: a flipped weights byte", refused("inspect", stage, lambda d: flip(d / "weights.safetensors", -9)))
    c.check("verify", "inspect: an edited recipe in ir.json", refused(
        "inspect", stage, lambda d: (d / "ir.json").write_text((d / "ir.json").read_text().replace('"width": 4', '"width": 6'))))
    c.check("verify", "inspect: edited metrics", refused("inspect", stage, edit_metrics_file))
    c.check("verify", "bench: a flipped weights byte of a stage", refused("bench", stage, lambda d: flip(d / "weights.safetensors", -9)))
    c.check("verify", "inspect: a flipped byte in a stage's model.onnx", refused("inspect", onnx_file, lambda f: flip(f, 300)))
    c.check("verify", "bench: a flipped byte in a stage's model.onnx", refused("bench", onnx_file, lambda f: flip(f, 300)))

    def bare() -> tuple[bool, str]:
        shutil.copy(runs / "rel" / "02_onnx" / "model.onnx", work / "bare.onnx")
        r = compress("inspect", str(work / "bare.onnx"))
        return r.returncode == 0 and "integrity: unverified" in r.stdout, r.stdout.splitlines()[-1]
    c.check("verify", "inspect: a bare .onnx is described as unverified", bare)


def edit_metrics_file(d: Path) -> None:
    (f,) = d.glob("metrics-*.json")
    f.write_text(f.read_text().replace('"params"', '"params_x"'))


# ---- hostile documents ----------------------------------------------------------------------------------

def ir_dir_cases(c: Cases, work: Path) -> None:
    """Tampered IR directories (no stage.json: nothing to verify against, so every field is validated)."""
    src = Path(os.path.realpath(work / "runs" / "rel" / "01_prune-l1"))
    doc0 = json.loads((src / "ir.json").read_text())

    def with_doc(change: Callable[[dict], Any]) -> Callable[[Path], None]:
        def damage(d: Path) -> None:
            doc = json.loads(json.dumps(doc0))
            change(doc)
            (d / "ir.json").write_text(json.dumps(doc))
        return damage

    def setk(path: tuple, value: Any) -> Callable[[dict], None]:
        def change(doc: dict) -> None:
            node = doc
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        return change

    def header(entry_shape: Any) -> Callable[[Path], None]:
        def damage(d: Path) -> None:
            data = (d / "weights.safetensors").read_bytes()
            (n,) = struct.unpack("<Q", data[:8])
            head = json.loads(data[8:8 + n])
            name = next(k for k in head if k != "__metadata__")
            head[name]["shape"] = entry_shape
            raw = json.dumps(head).encode()
            (d / "weights.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
            doc = json.loads((d / "ir.json").read_text())
            doc["weights"].pop("sha256", None)  # the header itself is what is checked here
            (d / "ir.json").write_text(json.dumps(doc))
        return damage

    cases: dict[str, Callable[[Path], None]] = {
        "task {}": with_doc(setk(("task",), {})),
        "task a string": with_doc(setk(("task",), "segmentation")),
        "inputs a string": with_doc(setk(("inputs",), "x")),
        "an input without shape": with_doc(lambda doc: doc["inputs"][0].pop("shape")),
        "a negative shape": with_doc(setk(("inputs", 0, "shape", 1), -3)),
        "a string shape": with_doc(setk(("inputs", 0, "shape", 1), "two")),
        "dtype int8": with_doc(setk(("inputs", 0, "dtype"), "int8")),
        "value_range strings": with_doc(setk(("inputs", 0, "value_range"), ["a", "b"])),
        "meta a list": with_doc(setk(("meta",), [1, 2])),
        "a history entry that is a string": with_doc(setk(("history",), ["x"])),
        "a history entry without keys": with_doc(setk(("history",), [{}])),
        "recipe a string": with_doc(setk(("recipe",), "zoo")),
        "a frontend block without options": with_doc(lambda doc: doc["recipe"]["frontend"].pop("options")),
        "a huge input shape": with_doc(setk(("inputs", 0, "shape"), [None, 100000, 100000, 100000])),
        "a 100k-deep JSON array": lambda d: (d / "ir.json").write_text("[" * 100_000 + "]" * 100_000),
        "a safetensors entry shape that is a string": header("12"),
    }
    for name, damage in cases.items():
        for cmd in ("inspect", "bench"):
            def case(damage: Callable[[Path], None] = damage, cmd: str = cmd, name: str = name) -> tuple[bool, str]:
                d = work / "tampered"
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(src, d)
                (d / "stage.json").unlink()
                for f in d.glob("metrics-*.json"):
                    f.unlink()
                damage(d)
                extra = ["--iters", "2", "--warmup", "0", "--min-seconds", "0"] if cmd == "bench" else []
                r = compress(cmd, str(d), *extra)
                return one_line_error(r), f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
            c.check("ir.json", f"{cmd}: {name}", case)


def onnx_cases(c: Cases, work: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(model: Any, name: str) -> Path:
        path = work / name
        onnx.save(model, str(path))
        return path

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    opset = [helper.make_opsetid("", 17)]
    shape = numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "shape")
    bad_reshape = helper.make_model(helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")],
                                                      "g", [x], [y], [shape]), opset_imports=opset)
    big = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1_000_000, 1_000_000])],
                                              [y]), opset_imports=opset)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], raw_data=b"\x00" * 7)
    short = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w]),
                              opset_imports=opset)
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 4])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 4])])
    trips = numpy_helper.from_array(np.array(2 ** 62, dtype=np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    loop = helper.make_model(helper.make_graph([helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body,
                                                                 name="forever")], "g", [x], [y], [trips, cond]),
                             opset_imports=opset)
    paths = {"a Reshape that fails in onnxruntime": save(bad_reshape, "reshape.onnx"),
             "a Loop of 2**62 iterations": save(loop, "loop.onnx"),
             "1e6 x 1e6 input dims": save(big, "big.onnx"),
             "an initializer of the wrong length": save(short, "short.onnx")}
    (work / "empty.onnx").write_bytes(b"")
    for name, path in paths.items():
        c.check("onnx", f"bench: {name}", lambda p=path: _one(compress("bench", str(p), "--iters", "2", "--warmup", "0",
                                                                          timeout=120)))
    c.check("onnx", "inspect: an empty file", lambda: _one(compress("inspect", str(work / "empty.onnx"))))
    c.check("onnx", "bench --iters 10**30", lambda: _one(compress("bench", str(work / "reshape.onnx"), "--iters",
                                                                    str(10 ** 30), timeout=60)))


def _one(r: subprocess.CompletedProcess) -> tuple[bool, str]:
    return one_line_error(r), f"exit {r.returncode}: {r.stderr.strip()[-300:]}"


def file_cases(c: Cases, work: Path) -> None:
    """Genotype JSON, reproducer directories and sweep files that name a place to write or code to run."""
    geno = work / "g.json"
    for name, data in {"binary": b"\x00\xff\x10" * 50, "UTF-16 with a BOM": '{"normal": []}'.encode("utf-16"),
                       "100k-deep": b"[" * 100_000 + b"]" * 100_000}.items():
        def case(data: bytes = data) -> tuple[bool, str]:
            geno.write_bytes(data)
            return _one(compress("genotype", "distance", str(geno), "DARTS_V2"))
        c.check("files", f"genotype distance: {name}", case)

    def budget_escape() -> tuple[bool, str]:
        bad = work / "bad_sweep.yaml"
        bad.write_text(SWEEP.replace("budgets: {any:", "budgets: {'../../escape':"))
        r = compress("sweep", str(bad), "--out", str(work / "runs" / "sw2"))
        return one_line_error(r) and not (work / "escape").exists(), r.stderr.strip()[-300:]
    c.check("files", "a sweep budget name '../../escape'", budget_escape)

    def reproducer_runs_no_factory() -> tuple[bool, str]:
        rep = work / "rep"
        shutil.rmtree(rep, ignore_errors=True)
        (rep / "input").mkdir(parents=True)
        marker = work / "RAN"
        (work / "evil_pkg.py").write_text(f"import pathlib\ndef f(**kw):\n    pathlib.Path({str(marker)!r}).write_text('x')\n")
        src = Path(os.path.realpath(work / "runs" / "rel" / "01_prune-l1"))
        doc = json.loads((src / "ir.json").read_text())
        doc["recipe"]["frontend"] = {"name": "torch", "factory": "evil_pkg:f", "kwargs": {}}
        (rep / "input" / "ir.json").write_text(json.dumps(doc))
        shutil.copy(src / "weights.safetensors", rep / "input" / "weights.safetensors")
        (rep / "reproduce.json").write_text(json.dumps(
            {"format": 1, "index": 1, "kind": "pass", "step": "prune-l1", "label": "prune-l1", "options": {},
             "error": "x", "seed": 0, "device": "cpu", "data": None, "input": True, "refs": [],
             "trust": {"frontend": "torch", "factory": "evil_pkg:f"}, "evaluate": None}))
        env = {**os.environ, "PYTHONPATH": str(work)}
        r = subprocess.run([sys.executable, "-m", "compressor.cli", "run", "--reproduce", str(rep)],
                           capture_output=True, text=True, env=env, timeout=300)
        return one_line_error(r) and "--trust-factory" in r.stderr and not marker.exists(), r.stderr.strip()[-300:]
    c.check("files", "run --reproduce of a received directory runs no factory", reproducer_runs_no_factory)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "reliability")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    c = Cases()
    store_cases(c, args.out)
    ir_dir_cases(c, args.out)
    onnx_cases(c, args.out)
    file_cases(c, args.out)
    minutes = (time.perf_counter() - start) / 60
    groups: dict[str, list[bool]] = {}
    for group, _name, ok, _detail in c.rows:
        groups.setdefault(group, []).append(ok)
    summary = "; ".join(f"{g} {sum(v)}/{len(v)}" for g, v in groups.items())
    total = sum(ok for *_x, ok, _d in c.rows)
    print(f"\n{total}/{len(c.rows)} cases pass ({summary}); {minutes:.1f} min")
    failed = [f"  - FAIL {g}: {n} ({d[:160]})" for g, n, ok, d in c.rows if not ok]
    body = "\n".join([
        "## Reliability: fault cases through the CLI", "",
        "- command: `python benchmarks/reliability.py`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {minutes:.1f} min",
        f"- **{total}/{len(c.rows)} cases pass**: {summary}",
        "- store: a prune after a sweep, with --out elsewhere and while a run computes; edited metrics and stage "
        "records; stage directories replaced by a symlink or a file (the next run's report must equal the "
        "first's, no reproducer). verify: inspect/bench of damaged stages and ONNX files (exit 2, `corrupt: ...`). "
        "ir.json, onnx, files: hostile documents (exit 2, one line, no traceback)",
        *failed])
    if not args.no_write:
        write_section("reliability", body)
    return 0 if total == len(c.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
