"""The three bring-your-own-data samples run from a fresh clone as their headers document: the
`compress data make-example` commands in each sample's comments, then `compress run` on the sample (training
shortened with --set so the suite stays fast; every other option is the shipped one)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHORT = {  # --set overrides: fewer epochs, nothing else
    "imagefolder_classification": ["model.train.epochs=1", "passes.finetune.epochs=1"],
    "segmentation_multiclass": ["model.train.epochs=1", "passes.finetune.epochs=1"],
    "hf_pretrained": ["model.train.epochs=1", "passes.finetune.epochs=1"],
}


@pytest.mark.parametrize("sample", sorted(SHORT))
def test_sample_runs_as_documented(sample, tmp_path, monkeypatch):
    text = (ROOT / "samples" / f"{sample}.yaml").read_text()
    makes = re.findall(r"^#\s+compress (data make-example \S+ \S+)\s*$", text, flags=re.M)
    assert makes, f"{sample}: its header documents no make-example command"
    monkeypatch.chdir(tmp_path)  # the sample's relative paths (runs/examples/...) resolve here
    runner = CliRunner()
    for cmd in makes:
        r = runner.invoke(main, shlex.split(cmd))
        assert r.exit_code == 0, r.output
    args = ["run", str(ROOT / "samples" / f"{sample}.yaml"), "--out", str(tmp_path / "run"), "--quiet"]
    for s in SHORT[sample]:
        args += ["--set", s]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(text)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    names = [s["name"] for s in report["stages"]]
    passes = [next(iter(p)) if isinstance(p, dict) else p for p in doc["passes"]]
    assert names[1:] == passes + ["onnx"], names
    onnx = tmp_path / "run" / report["stages"][-1]["artifact"]
    assert onnx.is_file() and onnx.suffix == ".onnx"
