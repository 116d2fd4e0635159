"""The store loses nothing and serves nothing it cannot verify: `cache prune` after a sweep, with --out
elsewhere and during a run; sealed stage records and metrics; stage paths that are symlinks; `inspect` and
`bench` checking the sha256 values they have."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from compressor.cli import main
from compressor.manager import Instrument
from compressor.pipeline import Pipeline
from compressor.store import STAGE_FILE, Store, prune, references

FAST = ("name: integ\nseed: 0\ndata: {name: insar-synthetic, n_train: 32, n_val: 16, n_test: 16, size: 16}\n"
        "model: {frontend: zoo, model: seg-cnn, width: 4, train: {epochs: 1, batch_size: 16}}\n"
        "passes: [{prune-l1: {ratio: 0.5}}]\nexport: [onnx]\n"
        "evaluate: {batch_size: 16, macs: false, latency: {backends: []}}\n")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (baseline, prune-l1, onnx) in runs/integ, its store runs/.store; copied per test."""
    root = tmp_path_factory.mktemp("finished")
    Pipeline.from_text(FAST).run(out=root / "runs" / "integ", progress=False)
    return root / "runs"


@pytest.fixture
def runs(finished, tmp_path):
    dst = tmp_path / "runs"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def _links_ok(d: Path) -> list[Path]:
    links = [p for p in d.rglob("*") if p.is_symlink()]
    assert links
    return [p for p in links if not p.exists()]


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


# ---- prune never deletes what something shows ------------------------------------------------------------

def test_prune_after_a_sweep_keeps_every_trial_and_budget_link(tmp_path):
    from compressor.sweep.spec import SweepSpec
    from compressor.sweep.study import run_sweep

    base = {"name": "b", "seed": 0, "data": {"name": "digits", "train_fraction": 0.3, "val_fraction": 0.2},
            "model": {"frontend": "zoo", "model": "resnet", "width": 4, "depth": 1, "kernels": [3, 3, 3],
                      "train": {"epochs": 1, "batch_size": 128}},
            "evaluate": {"batch_size": 256, "macs": False, "latency": {"backends": []}}}
    spec = SweepSpec.from_dict({"name": "sw", "base": base, "space": {"model.kernels.0": [3, 5]},
                                "objectives": {"accuracy": "maximize"}, "trials": 2,
                                "budgets": {"any": ["params <= 1e9"]}}, source=str(tmp_path / "s.yaml"))
    runs = tmp_path / "runs"
    run_sweep(spec, out=runs / "sw", store=runs / ".store", progress=False)
    stages = {e["key"] for e in Store(runs / ".store").entries()}
    assert len(stages) == 2 and (runs / "sw" / "budgets" / "any" / "run").is_symlink()
    r = _cli("cache", "prune", "--store", str(runs / ".store"))
    assert r.exit_code == 0, r.output
    assert "deleted 0 stages" in r.output and r.output.count("shown by") == 2, r.output
    assert {e["key"] for e in Store(runs / ".store").entries()} == stages
    assert _links_ok(runs / "sw") == []
    assert (runs / "sw" / "budgets" / "any" / "run" / "00_baseline" / STAGE_FILE).is_file()


def test_prune_keeps_stages_of_a_run_whose_out_is_elsewhere(tmp_path):
    store = tmp_path / "shared" / ".store"
    Pipeline.from_text(FAST).run(out=tmp_path / "elsewhere" / "deep" / "r", store=store, progress=False)
    decisions = prune(Store(store))
    assert len(decisions) == 3 and not any(d.delete for d in decisions)
    assert all("shown by" in d.why and "elsewhere" in d.why for d in decisions)
    assert _links_ok(tmp_path / "elsewhere") == []
    shutil.rmtree(tmp_path / "elsewhere")  # nothing shows them any more: now they go
    assert sum(d.delete for d in prune(Store(store))) == 3 and Store(store).entries() == []


class PruneAfterEachStage(Instrument):
    """A `compress cache prune` from another terminal after every stage of a run."""

    def __init__(self, store: Path) -> None:
        self.store, self.deleted = Store(store), 0

    def after_stage(self, run, s) -> None:
        self.deleted += sum(d.delete for d in prune(self.store))


def test_prune_during_a_run_deletes_none_of_its_stages(tmp_path):
    from compressor.instruments import default_instruments

    store = tmp_path / "s" / ".store"
    out = tmp_path / "o" / "r"
    p = Pipeline.from_text(FAST)
    pruner = PruneAfterEachStage(store)
    inst = default_instruments(out, store=store, evaluate=p.evaluate, progress=False) + [pruner]
    result = p.compile().run(ctx=p.context(False), out=out, progress=False, instruments=inst)
    assert pruner.deleted == 0 and len(result.stages) == 3
    assert _links_ok(out) == [] and len(Store(store).entries()) == 3


def test_a_stage_whose_lock_is_held_is_kept_even_when_nothing_shows_it(runs):
    store = Store(runs / ".store")
    shutil.rmtree(runs / "integ")
    key = store.entries()[0]["key"]
    with store.lock(key):  # a running run computing it
        decisions = {d.key: d for d in prune(store)}
    assert decisions[key].delete is False and "in use by a running run" in decisions[key].why
    assert [d.delete for k, d in decisions.items() if k != key] == [True, True]
    assert [e["key"] for e in store.entries()] == [key]


def test_prune_dry_run_says_what_it_would_do_and_deletes_nothing(runs):
    (runs / "integ" / "01_prune-l1").unlink()
    r = _cli("cache", "prune", "--store", str(runs / ".store"), "--dry-run")
    assert r.exit_code == 0 and "would delete 1 stages" in r.output and r.output.count("keep ") == 2, r.output
    assert "no run shows it" in r.output and len(Store(runs / ".store").entries()) == 3


def test_references_come_from_the_store_record_and_survive_a_moved_view(runs):
    refs = references(Store(runs / ".store"))
    assert len(refs) == 3 and all(any("integ" in x for x in v) for v in refs.values())
    assert (runs / ".store" / ".refs").is_dir() and len(list((runs / ".store" / ".refs").iterdir())) == 3


# ---- every stored byte is covered by a checksum ----------------------------------------------------------

def _metrics_file(stage: Path) -> Path:
    (f,) = stage.glob("metrics-*.json")
    return f


def _rerun(runs: Path, caplog):
    with caplog.at_level(logging.WARNING):
        return Pipeline.from_text(FAST).run(out=runs / "integ", progress=False)


def test_an_edited_metrics_file_is_never_served(runs, caplog):
    first = json.loads((runs / "integ" / "report.json").read_text())
    f = _metrics_file(runs / "integ" / "01_prune-l1")
    doc = json.loads(f.read_text())
    doc["record"]["metrics"]["iou"] = 0.999
    f.write_text(json.dumps(doc))
    base = _metrics_file(runs / "integ" / "00_baseline")
    doc = json.loads(base.read_text())
    doc["record"]["params"] = 12345
    base.write_text(json.dumps(doc))
    again = _rerun(runs, caplog)
    assert again.cached == [True, True, True]
    warned = [r.message for r in caplog.records if "does not match its seal" in r.message]
    assert len(warned) == 2 and all("metrics-" in m for m in warned), warned
    report = json.loads((runs / "integ" / "report.json").read_text())
    for a, b in zip(first["stages"], report["stages"]):
        assert a["metrics"] == b["metrics"] and a["params"] == b["params"]
    assert report["stages"][1]["metrics"]["iou"] != 0.999 and report["stages"][0]["params"] != 12345


def test_an_edited_stage_record_is_recomputed_with_a_warning(runs, caplog):
    rec_path = runs / "integ" / "02_onnx" / STAGE_FILE
    rec = json.loads(rec_path.read_text())
    rec["info"]["verified"] = not rec["info"].get("verified", True)
    rec_path.write_text(json.dumps(rec))
    again = _rerun(runs, caplog)
    assert again.cached == [True, True, False]
    assert any("stage.json does not match its seal" in r.message for r in caplog.records)


def test_an_unreadable_stage_record_is_recomputed_with_a_warning(runs, caplog):
    (runs / "integ" / "01_prune-l1" / STAGE_FILE).write_bytes(b"\xff\xfe{garbage")
    again = _rerun(runs, caplog)
    assert again.cached == [True, False, True]  # the onnx stage's key depends on prune-l1's key, not its bytes
    assert any("stage.json is unreadable" in r.message for r in caplog.records)


def test_a_stage_path_replaced_by_a_symlink_is_replaced_without_a_reproducer(runs, caplog, tmp_path):
    store = runs / ".store"
    key = os.path.basename(os.readlink(runs / "integ" / "01_prune-l1"))
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the store's")
    shutil.rmtree(store / key)
    (store / key).symlink_to(elsewhere, target_is_directory=True)
    again = _rerun(runs, caplog)
    assert again.cached == [True, False, True]
    assert any("is a symlink" in r.message for r in caplog.records)
    assert (elsewhere / "keep.txt").read_text() == "not the store's" and len(list(elsewhere.iterdir())) == 1
    assert (store / key).is_dir() and not (store / key).is_symlink()
    assert not (runs / "integ" / "reproduce").exists()
    assert Pipeline.from_text(FAST).run(out=runs / "integ", progress=False).cached == [True, True, True]


def test_a_stage_path_that_is_a_file_is_replaced(runs, caplog):
    store = runs / ".store"
    key = os.path.basename(os.readlink(runs / "integ" / "02_onnx"))
    shutil.rmtree(store / key)
    (store / key).write_text("x")
    assert _rerun(runs, caplog).cached == [True, True, False]
    assert any("is a file, not a directory" in r.message for r in caplog.records)


def test_a_store_that_cannot_be_written_is_blamed_not_the_out_dir(tmp_path):
    store = tmp_path / "store-file"
    store.write_text("a file where the store should be")
    r = CliRunner().invoke(main, ["run", str(_write(tmp_path / "p.yaml", FAST)), "--out", str(tmp_path / "r"),
                                  "--store", str(store), "--quiet"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: store ") and "--store" in line and "--out" not in line, r.output
    assert not (tmp_path / "r" / "reproduce").exists()


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# ---- inspect and bench verify what they can -------------------------------------------------------------

def _flip(path: Path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("what, damage, expect", [
    ("weights", lambda d: _flip(d / "weights.safetensors"), "corrupt: weights.safetensors does not match"),
    ("recipe", lambda d: (d / "ir.json").write_text((d / "ir.json").read_text().replace('"width": 4', '"width": 5')),
     "corrupt: ir.json does not match"),
    ("record", lambda d: (d / STAGE_FILE).write_text((d / STAGE_FILE).read_text().replace('"prune-l1"', '"x"', 1)),
     "corrupt: stage.json does not match its seal"),
    ("metrics", lambda d: _metrics_file(d).write_text(_metrics_file(d).read_text().replace('"params"', '"params_"')),
     "corrupt: metrics-"),
])
def test_inspect_refuses_a_damaged_stage_in_one_line(runs, what, damage, expect, caplog):
    stage = runs / "integ" / "01_prune-l1"
    ok = _cli("inspect", str(stage))
    assert ok.exit_code == 0 and "integrity: verified: ir.json, weights.safetensors and 1 metrics file(s) against the sealed stage.json" in ok.output, ok.output
    damage(stage)
    with caplog.at_level(logging.WARNING):
        r = _cli("inspect", str(stage))
    assert r.exit_code == 2 and r.output.startswith("error: " + expect) and len(r.output.splitlines()) == 1, r.output
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]  # the error line is the only line


@pytest.mark.parametrize("command", ["inspect", "bench"])
def test_a_flipped_byte_in_a_stage_onnx_is_refused_and_a_bare_copy_is_unverified(runs, tmp_path, command):
    onnx_file = runs / "integ" / "02_onnx" / "model.onnx"
    bare = tmp_path / "bare.onnx"
    shutil.copy(onnx_file, bare)
    extra = ["--iters", "2", "--warmup", "0", "--min-seconds", "0"] if command == "bench" else []
    ok = _cli(command, str(onnx_file), *extra)
    assert ok.exit_code == 0 and "integrity: verified: model.onnx against the sealed stage.json" in ok.output, ok.output
    r = _cli(command, str(bare), *extra)
    assert r.exit_code == 0 and "integrity: unverified: no stage.json beside it" in r.output, r.output
    _flip(onnx_file, 200)
    r = _cli(command, str(onnx_file), *extra)
    assert r.exit_code == 2 and r.output.startswith("error: corrupt: model.onnx does not match the sha256"), r.output


def test_bench_json_carries_the_integrity_line(runs):
    r = _cli("bench", str(runs / "integ" / "02_onnx" / "model.onnx"), "--iters", "2", "--warmup", "0",
             "--min-seconds", "0", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["extra"]["integrity"].startswith("verified"), r.output


def test_an_ir_directory_without_a_record_checks_its_weights_hash(runs, tmp_path):
    d = tmp_path / "ir"
    shutil.copytree(runs / "integ" / "01_prune-l1", d)
    (d / STAGE_FILE).unlink()
    r = _cli("inspect", str(d))
    assert r.exit_code == 0 and "integrity: unverified: no stage.json (weights match the sha256 in ir.json" in r.output
    _flip(d / "weights.safetensors")
    r = _cli("inspect", str(d))
    assert r.exit_code == 2 and "corrupt: weights.safetensors does not match the sha256 in ir.json" in r.output


# ---- cache ls over odd run directories -------------------------------------------------------------------

def test_cache_ls_survives_symlink_loops_and_odd_records(runs):
    (runs / "integ" / "loop").symlink_to(runs / "integ" / "loop")
    (runs / "other").mkdir()
    (runs / "other" / "a").symlink_to(runs / "other" / "b")
    (runs / "other" / "b").symlink_to(runs / "other" / "a")
    key = os.path.basename(os.readlink(runs / "integ" / "00_baseline"))
    rec = json.loads((runs / ".store" / key / STAGE_FILE).read_text())
    rec["name"] = {"a": 1}
    (runs / ".store" / key / STAGE_FILE).write_text(json.dumps(rec))
    r = _cli("cache", "ls", "--store", str(runs / ".store"))
    assert r.exit_code == 0 and "3 stages" in r.output and r.output.count("integ") == 3, r.output
    r = _cli("cache", "prune", "--store", str(runs / ".store"), "--dry-run")
    assert r.exit_code == 0 and "would delete 0 stages" in r.output, r.output
