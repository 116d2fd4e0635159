"""No file is ever unpickled: a pickle whose __reduce__ writes a marker is planted as a stage IR, as a
training / search checkpoint, and as the argument of `inspect` and `bench`; the marker never appears and
the user gets one line and exit code 2 (or, inside a run, the stage is recomputed)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main
from compressor.errors import CompressError
from compressor.ir import IR_JSON, WEIGHTS, ModelIR


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _plant(path: Path, marker: Path, as_torch: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if as_torch:
        torch.save({"model": Evil(marker), "optim": {}, "epoch": 1}, path)  # the zip format torch.save writes
    else:
        path.write_bytes(pickle.dumps(Evil(marker)))
    return path


def _one_line_exit_2(r) -> None:
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1 and "Traceback" not in r.output


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("command", [["inspect"], ["bench"], ["bench", "--backend", "torch-cpu"],
                                     ["bench", "--trust-factory"]])
def test_cli_refuses_pickles(tmp_path, command, as_torch):
    marker = tmp_path / "marker"
    evil = _plant(tmp_path / "ir.pt", marker, as_torch)
    r = CliRunner().invoke(main, [*command, str(evil)])
    _one_line_exit_2(r)
    assert "pickle" in r.output and not marker.exists()


def test_stage_ir_with_pickled_weights(tmp_path, seg_ir):
    marker = tmp_path / "marker"
    stage = tmp_path / "stage"
    seg_ir.save(stage)
    _plant(stage / WEIGHTS, marker)
    with pytest.raises(CompressError, match="does not match the sha256"):
        ModelIR.load(stage)
    doc = json.loads((stage / IR_JSON).read_text())  # a crafted stage records the pickle's own hash
    doc["weights"]["sha256"] = __import__("hashlib").sha256((stage / WEIGHTS).read_bytes()).hexdigest()
    (stage / IR_JSON).write_text(json.dumps(doc))
    with pytest.raises(CompressError, match="do not fit|not a readable|weights"):
        ModelIR.load(stage)
    for command in (["inspect"], ["bench"]):
        _one_line_exit_2(CliRunner().invoke(main, [*command, str(stage)]))
    assert not marker.exists()


def test_stage_ir_naming_a_factory_is_not_rebuilt_without_trust(tmp_path, seg_ir):
    """A crafted ir.json whose recipe names a factory (code) is refused by bench unless trusted."""
    marker = tmp_path / "marker"
    (tmp_path / "evilpkg.py").write_text(f"from pathlib import Path\ndef make():\n    Path({str(marker)!r}).write_text('x')\n")
    stage = tmp_path / "stage"
    seg_ir.save(stage)
    doc = json.loads((stage / IR_JSON).read_text())
    doc["recipe"]["frontend"] = {"name": "torch", "factory": "evilpkg:make", "kwargs": {}, "search_path": str(tmp_path)}
    (stage / IR_JSON).write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["bench", str(stage)])
    _one_line_exit_2(r)
    assert "--trust-factory" in r.output and not marker.exists()
    r = CliRunner().invoke(main, ["inspect", str(stage)])  # inspect describes without rebuilding
    assert r.exit_code == 0 and "recipe: torch{factory=evilpkg:make" in r.output and not marker.exists()


def test_training_checkpoint_pickle_is_refused(tmp_path, seg_ir):
    from compressor.data import build_data, make_loader
    from compressor.train import TrainOptions, fit

    marker = tmp_path / "marker"
    ckpt = _plant(tmp_path / "train_checkpoint.pt", marker, as_torch=True)
    data = build_data("insar-synthetic", {"n_train": 8, "n_val": 4, "n_test": 4, "size": 32}, seed=0)
    with pytest.raises(CompressError, match="not a plain state_dict checkpoint.*not loaded"):
        fit(seg_ir.module, make_loader(data.train, 4, shuffle=False), seg_ir.task, TrainOptions(epochs=1),
            checkpoint=ckpt, progress=False)
    assert not marker.exists()


def test_search_checkpoint_pickle_is_refused(tmp_path):
    from compressor.data import build_data
    from compressor.frontends.darts.search import CHECKPOINT, SearchOptions, run_search
    from compressor.options import parse_options

    marker = tmp_path / "marker"
    _plant(tmp_path / "search" / CHECKPOINT, marker, as_torch=True)
    data = build_data("digits", {}, seed=0)
    opts = parse_options(SearchOptions, {"epochs": 1, "init_channels": 4, "layers": 3}, "search")
    with pytest.raises(CompressError, match="not a plain checkpoint.*not loaded"):
        run_search(opts, data, tmp_path / "search", progress=False)
    assert not marker.exists()


def test_a_run_recomputes_a_stage_whose_ir_is_a_pickle(tmp_path, tiny_yaml):
    """A finished stage whose files were replaced is recomputed (with a warning), never unpickled."""
    from compressor.pipeline import Pipeline

    out = tmp_path / "out"
    p = Pipeline.from_yaml(tiny_yaml)
    p.run(out=out, progress=False)
    marker = tmp_path / "marker"
    _plant(out / "01_prune-l1" / WEIGHTS, marker)
    result = Pipeline.from_yaml(tiny_yaml).run(out=out, progress=False)
    assert result.cached[:2] == [True, False] and not marker.exists()
    ModelIR.load(out / "01_prune-l1")  # rewritten, loadable
