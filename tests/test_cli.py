"""The command line: one-line errors with exit code 2, --help, listing, inspect, kill-then-resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_help_teaches():
    r = invoke("--help")
    assert r.exit_code == 0
    assert "compress run samples/quickstart.yaml" in r.output
    assert "--set" in invoke("run", "--help").output


def test_validate_ok(tiny_yaml):
    r = invoke("validate", tiny_yaml)
    assert r.exit_code == 0 and r.output.startswith("ok: zoo{model=seg-cnn")


@pytest.mark.parametrize("text, fragment", [
    ("name: x\nmodel: [unclosed\n", "malformed YAML"),
    ("model: {frontend: zoo}\npasses:\n  - prune-l1: {ratio: 1.5}\n", ":3: passes[0] prune-l1: ratio: 1.5 is out of range"),
    ("model: {frontend: zoo}\npases: []\n", ":2: unknown key 'pases'; did you mean 'passes'?"),
    ("model: {frontend: zoo, width: wide}\n", ":1: model (zoo): width: expected an integer, got 'wide'"),
    ("- just\n- a list\n", "a pipeline is a mapping"),
])
def test_bad_pipeline_one_line_exit_2(tmp_path, text, fragment):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    r = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert fragment in r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()  # validated before anything is written


def test_missing_file_exit_2(tmp_path):
    r = invoke("run", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_model_rejecting_input_shape(tmp_path):
    """A model that does not accept the declared input: one line, exit 2, no finished stage."""
    (tmp_path / "m.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n    return nn.Sequential(nn.Conv2d(3, 1, 1))\n")
    p = tmp_path / "p.yaml"
    p.write_text(f"data: {{name: insar-synthetic, n_train: 4, n_val: 4, n_test: 4, size: 16}}\n"
                 f"model: {{frontend: torch, factory: 'm:make', search_path: '{tmp_path}'}}\n")
    r = invoke("run", p, "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "does not accept inputs of shape [[None, 2, 16, 16]]" in r.output
    assert not (tmp_path / "out" / "00_baseline" / "stage.json").exists()


def test_empty_dataset(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("data: {name: insar-synthetic, n_val: 0, size: 16}\nmodel: {frontend: zoo}\n")
    r = invoke("run", p, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "empty" in r.output


def test_missing_weights(tmp_path):
    (tmp_path / "m2.py").write_text("import torch.nn as nn\ndef make():\n    return nn.Conv2d(2, 1, 1)\n")
    p = tmp_path / "p.yaml"
    p.write_text(f"data: {{name: insar-synthetic, n_train: 4, n_val: 4, n_test: 4, size: 16}}\n"
                 f"model: {{frontend: torch, factory: 'm2:make', search_path: '{tmp_path}', weights: nope.pt}}\n")
    r = invoke("run", p, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "weights file nope.pt does not exist" in r.output


def test_debug_shows_traceback(tmp_path):
    r = CliRunner().invoke(main, ["--debug", "run", str(tmp_path / "nope.yaml")])
    assert r.exit_code != 0 and r.exception is not None


def test_passes_lists_options():
    r = invoke("passes")
    assert r.exit_code == 0
    for name in ("prune-l1", "finetune", "fp16", "onnx", "zoo", "insar-synthetic", "digits"):
        assert f"  {name}  " in r.output
    assert "ratio: float = 0.5" in r.output
    assert "prune-l1" in invoke("passes", "prune*").output and "onnx" not in invoke("passes", "prune*").output


def test_inspect(tmp_path, seg_ir):
    seg_ir.save(tmp_path / "ir")
    r = invoke("inspect", tmp_path / "ir")
    assert r.exit_code == 0 and "segmentation" in r.output and "stem.0" in r.output
    r = invoke("inspect", tmp_path / "missing")
    assert r.exit_code == 2 and "no IR at" in r.output


def test_inspect_onnx(tmp_path, seg_ir):
    from compressor.exporters.onnx import export_onnx

    export_onnx(seg_ir, tmp_path / "model.onnx", simplify=False, verify=False)
    r = invoke("inspect", tmp_path / "model.onnx")
    assert r.exit_code == 0 and "inputs: input['batch', 2, 32, 32] float" in r.output and "Conv" in r.output


def test_bench_ir(tmp_path, seg_ir):
    seg_ir.save(tmp_path / "ir")
    r = invoke("bench", tmp_path / "ir", "--iters", 3, "--warmup", 1, "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["backend"] == "torch-cpu" and stats["iters"] >= 3 and stats["median_ms"] > 0


def test_kill_then_resume(tmp_path):
    """SIGKILL during the finetune stage: finished stages survive, the killed one is redone."""
    from conftest import TINY_PIPELINE

    from compressor.pipeline import Pipeline

    p = tmp_path / "tiny.yaml"
    text = TINY_PIPELINE.replace("finetune:\n      epochs: 1\n", "finetune:\n      epochs: 5000\n")
    assert "epochs: 5000" in text
    p.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "compressor.cli", "run", str(p), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 240
    ckpt_dir = out / "02_finetune" / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "01_prune-l1" / "stage.json").is_file()
    assert not (out / "02_finetune" / "stage.json").exists()
    # a kill may interrupt an atomic write, leaving its *.tmp, but never a half-written final file
    for f in out.rglob("*.json"):
        json.loads(f.read_text())
    for f in out.rglob("*.pt"):
        torch.load(f, map_location="cpu", weights_only=True)
    before = (out / "01_prune-l1" / "stage.json").read_text()

    # resume with fewer epochs (a different key): the killed stage is redone from scratch
    result = Pipeline.from_text(p.read_text().replace("epochs: 5000", "epochs: 1"), source=str(p)).run(
        out=out, progress=False)
    assert result.cached == [True, True, False, False, False]
    assert (out / "01_prune-l1" / "stage.json").read_text() == before
    assert (out / "report.md").is_file()
    assert not list(out.rglob("*.tmp"))


def test_kill_during_epoch_2_then_resume_equals_uninterrupted(tmp_path):
    """kill -9 while the baseline trains epoch 2 (its epoch-1 checkpoint on disk), then re-run: the
    resumed training continues the same shuffle order and RNG streams, so the stage's weights and the
    report's metrics equal an uninterrupted run's exactly."""
    from compressor.pipeline import Pipeline

    text = ("name: exact\nseed: 0\ndata: {name: insar-synthetic, n_train: 256, n_val: 32, n_test: 16, size: 32}\n"
            "model:\n  frontend: zoo\n  model: seg-cnn\n  width: 4\n  train: {epochs: 4, batch_size: 16}\n"
            "evaluate: {batch_size: 16, macs: false, latency: {backends: []}}\n")
    p = tmp_path / "p.yaml"
    p.write_text(text)
    ref = Pipeline.from_yaml(p).run(out=tmp_path / "ref" / "run", progress=False)  # its own store: ref/.store

    out = tmp_path / "killed" / "run"
    proc = subprocess.Popen([sys.executable, "-m", "compressor.cli", "run", str(p), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "00_baseline" / "checkpoints" / "train.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not ckpt.is_file():
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= done < 4 and not (out / "00_baseline" / "stage.json").exists()

    resumed = Pipeline.from_yaml(p).run(out=out, progress=False)
    assert resumed.stages[0].record["metrics"] == ref.stages[0].record["metrics"]
    assert (out / "00_baseline" / "weights.safetensors").read_bytes() == \
        (tmp_path / "ref" / "run" / "00_baseline" / "weights.safetensors").read_bytes()
