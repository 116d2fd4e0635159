"""The pass manager: a Python chain and a YAML run are one path (caching, measurement, report);
instruments see every stage; a failed stage leaves a reproducer that replays it alone."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import main
from compressor.context import PassContext
from compressor.data import build_data
from compressor.errors import PassError
from compressor.exporters.onnx import OnnxExporter
from compressor.frontends.zoo import Zoo
from compressor.instruments import REPRODUCE_DIR, default_instruments
from compressor.ir import ModelIR
from compressor.manager import Instrument, Sequential, ir_content_hash
from compressor.passes import FP16, PruneL1
from compressor.options import parse_options
from compressor.pipeline import EvaluateOptions, Pipeline

DATA = {"n_train": 32, "n_val": 16, "n_test": 16, "size": 16}
EVAL = parse_options(EvaluateOptions, {"batch_size": 16, "macs": False, "latency": {"backends": []}}, "evaluate")
FAST = ("name: mgr\nseed: 0\ndata: {name: insar-synthetic, n_train: 32, n_val: 16, n_test: 16, size: 16}\n"
        "model: {frontend: zoo, model: seg-cnn, width: 4, train: {epochs: 1, batch_size: 16}}\n"
        "passes: [{prune-l1: {ratio: 0.5}}, fp16]\nexport: [onnx]\n"
        "evaluate: {batch_size: 16, macs: false, latency: {backends: []}}\n")


def _baseline() -> tuple[ModelIR, PassContext]:
    ctx = PassContext(seed=0, data=build_data("insar-synthetic", DATA, seed=0), progress=False)
    return Zoo(model="seg-cnn", width=4).build(ctx.data, ctx), ctx


def test_python_chain_is_cached_and_reported_like_a_yaml_run(tmp_path):
    ir, ctx = _baseline()
    chain = Sequential([PruneL1(ratio=0.5), FP16(), OnnxExporter()])
    out = tmp_path / "py"
    first = chain.run(ir, ctx, out=out, progress=False, instruments=default_instruments(out, evaluate=EVAL, progress=False))
    assert [s.name for s in first.stages] == ["input", "prune-l1", "fp16", "onnx"]
    assert first.cached == [False] * 4
    report = json.loads((tmp_path / "py" / "report.json").read_text())
    assert [r["name"] for r in report["stages"]] == ["input", "prune-l1", "fp16", "onnx"]
    assert report["stages"][1]["params"] < report["stages"][0]["params"]
    assert report["stages"][1]["options"]["ratio"] == 0.5  # typed option values
    _, ctx2 = _baseline()
    again = chain.run(ir, ctx2, out=out, progress=False, instruments=default_instruments(out, evaluate=EVAL, progress=False))
    assert again.cached == [True] * 4  # every stage loaded from the store
    assert [s.record["metrics"] for s in again.stages] == [s.record["metrics"] for s in first.stages]
    assert ir_content_hash(again.ir) == ir_content_hash(first.ir)
    # the same chain in memory (no store, no report) gives the same IR
    assert ir_content_hash(chain(ir, PassContext(seed=0, data=ctx.data, progress=False))) == ir_content_hash(first.ir)


def test_python_chain_equals_the_pipeline_it_mirrors(tmp_path):
    """The YAML run compiles to the same steps: its final IR equals the Python chain's on its baseline."""
    p = Pipeline.from_text(FAST.replace("train: {epochs: 1, batch_size: 16}", "train: null"))
    result = p.run(out=tmp_path / "yaml", progress=False)
    assert [type(s.step).__name__ for s in result.stages] == ["ModelStep", "PassStep", "PassStep", "ExportStep"]
    ir, ctx = _baseline()
    chained = Sequential([PruneL1(ratio=0.5), FP16()])(ir, ctx)
    assert ir_content_hash(chained) == ir_content_hash(result.ir)


class Recorder(Instrument):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def enter_run(self, run):
        self.events.append(("enter", len(run.steps)))

    def before_stage(self, run, s):
        self.events.append(("before", s.name, s.input is None))

    def after_stage(self, run, s):
        self.events.append(("after", s.name, s.output.ir.precision))

    def stage_failed(self, run, s, exc):
        self.events.append(("failed", s.name, type(exc).__name__))

    def exit_run(self, run, ok):
        self.events.append(("exit", ok))


def test_instruments_see_every_stage_in_order():
    ir, ctx = _baseline()
    rec = Recorder()
    Sequential([PruneL1(ratio=0.5), FP16()]).run(ir, ctx, instruments=[rec], progress=False)
    assert rec.events == [("enter", 3), ("before", "input", True), ("after", "input", "fp32"),
                          ("before", "prune-l1", False), ("after", "prune-l1", "fp32"),
                          ("before", "fp16", False), ("after", "fp16", "fp16"), ("exit", True)]


def test_a_failing_stage_is_reported_to_instruments(monkeypatch):
    ir, ctx = _baseline()
    rec = Recorder()
    monkeypatch.setattr(FP16, "run", lambda self, ir, ctx: 1 / 0)
    with pytest.raises(PassError, match="fp16 failed: ZeroDivisionError"):
        Sequential([PruneL1(ratio=0.5), FP16()]).run(ir, ctx, instruments=[rec], progress=False)
    assert rec.events[-2:] == [("failed", "fp16", "PassError"), ("exit", False)]


def test_chain_rejects_a_model_step_after_the_first_and_a_missing_ir():
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match="give the IR to start from"):
        Sequential([FP16()]).run(progress=False, instruments=[])
    with pytest.raises(TypeError, match="a chain holds passes and exporters"):
        Sequential([object()])


def test_a_chain_without_instruments_runs_in_memory_and_writes_nothing(tmp_path, monkeypatch):
    from compressor.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    ir, ctx = _baseline()
    result = Sequential([PruneL1(ratio=0.5), FP16()]).run(ir, ctx, progress=False)
    assert [s.name for s in result.stages] == ["input", "prune-l1", "fp16"]
    assert result.run_dir is None and result.ir.precision == "fp16"
    assert result.ir.parameter_count() < ir.parameter_count()
    assert list(tmp_path.iterdir()) == []  # no store, no report, no reproducer
    with pytest.raises(ConfigError, match=r"run\(out='runs/x'\) writes through instruments, and none were given; "
                                          r"pass instruments=compressor.instruments.default_instruments\(out\)"):
        Sequential([FP16()]).run(ir, ctx, out="runs/x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_manager_imports_no_instrument_and_no_pipeline_file_reader():
    """The engine takes its instruments from its caller: manager.py imports neither the instruments module
    nor the YAML side (config, pipeline)."""
    import ast
    from pathlib import Path

    import compressor.manager as manager

    tree = ast.parse(Path(manager.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {"compressor.instruments", "compressor.config", "compressor.pipeline", "yaml"} & imported, imported


def test_to_dict_round_trips():
    p = Pipeline.from_text(FAST)
    again = Pipeline.from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict())))
    assert again.to_line() == p.to_line() and again.to_dict() == p.to_dict()


def _fail_fp16(monkeypatch):
    def boom(self, ir, ctx):
        raise RuntimeError("synthetic failure in fp16")

    monkeypatch.setattr(FP16, "run", boom)


def test_failed_run_writes_a_reproducer_that_replays_the_stage(tmp_path, monkeypatch):
    from compressor.reproduce import replay

    good = Pipeline.from_text(FAST).run(out=tmp_path / "g" / "good", progress=False)  # its own store
    _fail_fp16(monkeypatch)
    with pytest.raises(PassError, match="synthetic failure in fp16"):
        Pipeline.from_text(FAST).run(out=tmp_path / "bad", progress=False)
    repro = tmp_path / "bad" / REPRODUCE_DIR
    doc = json.loads((repro / "reproduce.json").read_text())
    assert (doc["kind"], doc["step"], doc["index"]) == ("pass", "fp16", 2)
    assert "synthetic failure in fp16" in doc["error"] and doc["data"]["n_train"] == 32
    # the input IR is the failing stage's input: the pruned model of the good run
    loaded = ModelIR.load(repro / "input")
    assert ir_content_hash(loaded) == ir_content_hash(good.stages[1].output.ir)
    assert Pipeline.from_yaml(repro / "pipeline.yaml").to_line() == Pipeline.from_text(FAST).to_line()
    with pytest.raises(PassError, match="synthetic failure in fp16"):  # still failing: replays the failure
        replay(repro, progress=False)
    monkeypatch.undo()
    fixed = replay(repro, progress=False)  # only that stage (after measuring its input)
    assert [s.name for s in fixed.stages] == ["input", "fp16"]
    assert ir_content_hash(fixed.ir) == ir_content_hash(good.stages[2].output.ir)
    assert fixed.stages[1].record["metrics"] == good.stages[2].record["metrics"]
    Pipeline.from_text(FAST).run(out=tmp_path / "bad", progress=False)
    assert not repro.exists()  # a successful run removes the stale reproducer


def test_cli_reproducer_lines_and_replay(tmp_path, monkeypatch):
    p = tmp_path / "p.yaml"
    p.write_text(FAST.replace("passes: [{prune-l1: {ratio: 0.5}}, fp16]", "passes: [fp16]"))
    _fail_fp16(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(p), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: pass fp16 failed: RuntimeError: synthetic failure in fp16")
    assert any(f"compress run --reproduce {tmp_path / 'r' / REPRODUCE_DIR}" in line for line in lines)
    res = runner.invoke(main, ["run", "--reproduce", str(tmp_path / "r" / REPRODUCE_DIR)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines()[-1].startswith("error: pass fp16 failed")
    monkeypatch.undo()
    res = runner.invoke(main, ["run", "--reproduce", str(tmp_path / "r" / REPRODUCE_DIR), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "| fp16" in res.stdout
    res = runner.invoke(main, ["run", "--reproduce", str(tmp_path)])
    assert res.exit_code == 2 and "not a reproducer directory" in res.stderr
    res = runner.invoke(main, ["run"])
    assert res.exit_code == 2 and "missing PIPELINE" in res.stderr


def test_a_failing_baseline_is_reproduced_from_the_pipeline(tmp_path, monkeypatch):
    from compressor.frontends import zoo
    from compressor.reproduce import replay

    real = zoo.Zoo.build
    monkeypatch.setattr(zoo.Zoo, "build", lambda self, data, ctx: (_ for _ in ()).throw(PassError("no model today")))
    with pytest.raises(PassError, match="no model today"):
        Pipeline.from_text(FAST).run(out=tmp_path / "b", progress=False)
    doc = json.loads((tmp_path / "b" / REPRODUCE_DIR / "reproduce.json").read_text())
    assert doc["kind"] == "model" and doc["input"] is False
    monkeypatch.setattr(zoo.Zoo, "build", real)
    res = replay(tmp_path / "b" / REPRODUCE_DIR, progress=False)
    assert [s.name for s in res.stages] == ["baseline"]


def test_dump_ir_writes_each_ir_stage(tmp_path):
    Pipeline.from_text(FAST).run(out=tmp_path / "d", progress=False, dump_ir=True)
    dumps = sorted(f.name for f in (tmp_path / "d" / "dump").iterdir())
    assert dumps == ["00_baseline.txt", "01_prune-l1.txt", "02_fp16.txt"]
    text = (tmp_path / "d" / "dump" / "02_fp16.txt").read_text()
    assert "fp16" in text.split("\n\n")[0] and "Conv2d" in text


def test_timing_and_default_instruments(tmp_path):
    names = [type(i).__name__ for i in default_instruments(tmp_path, dump_ir=True)]
    assert names == ["StoreInstrument", "MeasureInstrument", "TimingInstrument", "ProgressInstrument",
                     "DumpIRInstrument", "ReportInstrument", "ReproducerInstrument"]
    assert [type(i).__name__ for i in default_instruments(None)] == ["MeasureInstrument", "TimingInstrument",
                                                                     "ProgressInstrument"]
    Pipeline.from_text(FAST).run(out=tmp_path / "t", progress=False)
    rows = json.loads((tmp_path / "t" / "timing.json").read_text())
    assert [r["name"] for r in rows] == ["baseline", "prune-l1", "fp16", "onnx"] and all(r["wall_s"] > 0 for r in rows)


def test_inspect_asks_the_exporter_of_the_suffix(tmp_path):
    Pipeline.from_text(FAST).run(out=tmp_path / "i", progress=False)
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "i" / "03_onnx" / "model.onnx")])
    assert res.exit_code == 0 and "opset" in res.output
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    res = CliRunner().invoke(main, ["inspect", str(engine)])
    assert res.exit_code == 2 and "no readable sidecar model.engine.json" in res.stderr
    (tmp_path / "model.engine.json").write_text(json.dumps({"precision": "fp16", "tensorrt_version": "10.3"}))
    res = CliRunner().invoke(main, ["inspect", str(engine)])
    assert res.exit_code == 0 and 'precision: "fp16"' in res.output


def test_no_core_file_names_a_pass_exporter_or_suffix():
    """The manager, steps, instruments, store and reproducer know no pass, exporter or artifact suffix: every
    string and name in their code (docstrings and comments aside) is checked."""
    import ast
    import pathlib

    import compressor

    core = pathlib.Path(compressor.__file__).parent
    banned = (".onnx", ".engine", "onnx", "tensorrt", "prune", "distill", "finetune", "fp16", "dario")
    for name in ("manager.py", "steps.py", "instruments.py", "store.py", "reproduce.py"):
        tree = ast.parse((core / name).read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        words = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings]
        words += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        words += [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        hits = [w for w in words for b in banned if b in w.lower()]
        assert not hits, (name, hits)
