"""The content-addressed stage store: shared between runs, computed once under concurrency, verified by
sha256 on every load."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from compressor.pipeline import Pipeline
from compressor.store import STAGE_FILE, Store

FAST = ("name: store\nseed: 0\ndata: {name: insar-synthetic, n_train: 32, n_val: 16, n_test: 16, size: 16}\n"
        "model: {frontend: zoo, model: seg-cnn, width: 4, train: {epochs: 1, batch_size: 16}}\n"
        "passes: [{prune-l1: {ratio: 0.5}}]\nexport: [onnx]\n"
        "evaluate: {batch_size: 16, macs: false, latency: {backends: []}}\n")


def test_two_processes_compute_each_stage_once(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(FAST)
    cmd = [sys.executable, "-m", "compressor.cli", "-v", "run", str(p), "--out", str(tmp_path / "runs" / "same")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) for _ in range(2)]
    logs = [proc.communicate(timeout=600)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    both = "\n".join(logs)
    for label in ("zoo{model=seg-cnn, width=4}", "prune-l1{ratio=0.5}", "onnx"):  # running/exporting once in all
        assert sum(f"] {label}" in line and ("running" in line or "exporting" in line)
                   for line in both.splitlines()) == 1, both
    stages = Store(tmp_path / "runs" / ".store").entries()
    assert len(stages) == 3 and all(s["record"] and s["record"]["key"] == s["key"] for s in stages)
    report = json.loads((tmp_path / "runs" / "same" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["baseline", "prune-l1", "onnx"]


def test_a_corrupted_artifact_is_detected_and_recomputed(tmp_path, caplog):
    p = Pipeline.from_text(FAST)
    first = p.run(out=tmp_path / "a", progress=False)
    onnx_file = tmp_path / "a" / "02_onnx" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        again = Pipeline.from_text(FAST).run(out=tmp_path / "a", progress=False)
    assert again.cached == [True, True, False]
    assert any("model.onnx does not match the sha256 in stage.json (changed on disk); recomputing" in r.message for r in caplog.records)
    assert again.stages[2].record["metrics"] == first.stages[2].record["metrics"]
    info = json.loads((tmp_path / "a" / "02_onnx" / STAGE_FILE).read_text())
    assert set(info["sha256"]) == {"model.onnx"}


def test_runs_share_stages_and_never_delete_each_other(tmp_path):
    Pipeline.from_text(FAST).run(out=tmp_path / "one", progress=False)
    other = Pipeline.from_text(FAST.replace("ratio: 0.5", "ratio: 0.25")).run(out=tmp_path / "two", progress=False)
    assert other.cached == [True, False, False]
    for run in ("one", "two"):
        for stage in ("00_baseline", "01_prune-l1", "02_onnx"):
            assert (tmp_path / run / stage / STAGE_FILE).is_file(), (run, stage)
    assert len(Store(tmp_path / ".store").entries()) == 5


def test_prune_removes_only_unreferenced_stages(tmp_path):
    from compressor.store import prune, references

    Pipeline.from_text(FAST).run(out=tmp_path / "one", progress=False)
    Pipeline.from_text(FAST.replace("ratio: 0.5", "ratio: 0.25")).run(out=tmp_path / "two", progress=False)
    store = Store(tmp_path / ".store")
    import shutil

    shutil.rmtree(tmp_path / "two")  # its prune-l1 and onnx stages are now shown by no run
    assert sum(len(v) for v in references(store).values()) == 3
    would = [d for d in prune(store, dry_run=True) if d.delete]
    assert len(would) == 2 and len(store.entries()) == 5
    gone = [d for d in prune(store) if d.delete]
    assert {d.key for d in gone} == {d.key for d in would}
    assert len(store.entries()) == 3
    assert Pipeline.from_text(FAST).run(out=tmp_path / "one", progress=False).cached == [True, True, True]


def test_cache_commands(tmp_path):
    from click.testing import CliRunner

    from compressor.cli import main

    Pipeline.from_text(FAST).run(out=tmp_path / "one", progress=False)
    r = CliRunner().invoke(main, ["cache", "ls", "--store", str(tmp_path / ".store")])
    assert r.exit_code == 0 and r.output.count("runs: one") == 3 and "3 stages" in r.output
    r = CliRunner().invoke(main, ["cache", "prune", "--store", str(tmp_path / ".store")])
    assert r.exit_code == 0 and "deleted 0 stages" in r.output and r.output.count("keep ") == 3


def test_a_pass_version_bump_recomputes_only_that_pass(tmp_path, monkeypatch):
    from compressor.passes import PruneL1

    Pipeline.from_text(FAST).run(out=tmp_path / "a", progress=False)
    monkeypatch.setattr(PruneL1, "version", PruneL1.version + 1)
    again = Pipeline.from_text(FAST).run(out=tmp_path / "a", progress=False)
    assert again.cached == [True, False, False]
