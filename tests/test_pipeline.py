"""Pipeline end to end on a tiny configuration: report rows, resume, re-run from a changed pass."""
import json

import onnx
import pytest

from compressor.errors import ConfigError
from compressor.pipeline import Pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conftest import TINY_PIPELINE

    d = tmp_path_factory.mktemp("run")
    (d / "tiny.yaml").write_text(TINY_PIPELINE)
    p = Pipeline.from_yaml(d / "tiny.yaml")
    result = p.run(out=d / "out", progress=False)
    return d, result


def test_one_line_form(tiny_yaml):
    p = Pipeline.from_yaml(tiny_yaml)
    assert p.to_line() == ("zoo{model=seg-cnn, width=4} | train{epochs=1, batch_size=16} | prune-l1{ratio=0.5} | "
                           "finetune{epochs=1, batch_size=16} | fp16 | onnx")


def test_report_has_every_stage(tiny_run):
    d, result = tiny_run
    report = json.loads((d / "out" / "report.json").read_text())
    names = [s["name"] for s in report["stages"]]
    assert names == ["baseline", "prune-l1", "finetune", "fp16", "onnx"]
    # option values as typed data beside the label (what sweeps tabulate)
    assert report["stages"][1]["options"]["ratio"] == 0.5 and report["stages"][2]["options"]["epochs"] == 1
    assert report["stages"][0]["options"]["frontend"] == "zoo"
    st = {s["name"]: s for s in report["stages"]}
    assert st["prune-l1"]["params"] < st["baseline"]["params"]
    assert st["prune-l1"]["size_bytes"] < st["baseline"]["size_bytes"]
    assert st["fp16"]["size_bytes"] < 0.6 * st["finetune"]["size_bytes"]
    assert st["fp16"]["precision"] == "fp16"
    for s in report["stages"]:
        assert set(s["metrics"]) >= {"accuracy", "recall", "f1", "iou"}
        assert s["latency"], f"no latency for {s['name']}"
    assert "onnxruntime-cpu" in st["onnx"]["latency"] and "torch-cpu" in st["baseline"]["latency"]
    md = (d / "out" / "report.md").read_text()
    assert md.count("\n| ") >= 6  # header + 5 rows
    assert (d / "out" / "report.png").stat().st_size > 1000


def test_onnx_stage_verified_and_fp16(tiny_run):
    d, _ = tiny_run
    info = json.loads((d / "out" / "04_onnx" / "stage.json").read_text())["info"]
    assert info["verified"] is True and info["precision"] == "fp16"
    model = onnx.load(d / "out" / "04_onnx" / "model.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_rerun_resumes_from_cache(tiny_run, tmp_path):
    """A second run directory beside the first shares its stages through the store: nothing recomputed."""
    d, first = tiny_run
    out = d / "again"
    again = Pipeline.from_yaml(d / "tiny.yaml").run(out=out, progress=False)
    assert again.cached == [True] * 5
    a = json.loads((d / "out" / "report.json").read_text())
    b = json.loads((out / "report.json").read_text())
    assert a["stages"] == b["stages"]
    assert all((out / n).resolve() == (d / "out" / n).resolve() for n in ("00_baseline", "04_onnx"))


def test_changed_option_reruns_from_that_pass(tiny_run, tmp_path):
    d, first = tiny_run
    p = Pipeline.from_yaml(d / "tiny.yaml", overrides=["passes.prune-l1.ratio=0.25"])
    again = p.run(out=d / "changed", progress=False)
    assert again.cached == [True, False, False, False, False]
    assert again.stages[1].record["params"] > first.stages[1].record["params"]
    assert (d / "out" / "01_prune-l1" / "ir.json").is_file()  # the other run's stage is untouched


def test_removed_pass_leaves_no_stale_stage(tiny_run, tmp_path):
    d, _ = tiny_run
    out = tmp_path / "copy"
    Pipeline.from_yaml(d / "tiny.yaml").run(out=out, progress=False, store=d / ".store")
    p = Pipeline.from_yaml(d / "tiny.yaml", overrides=["export=[]"])
    p.run(out=out, progress=False, store=d / ".store")
    assert not (out / "04_onnx").exists()
    assert [s["name"] for s in json.loads((out / "report.json").read_text())["stages"]][-1] == "fp16"


@pytest.mark.parametrize("override, fragment", [
    ("pases=[]", "unknown key 'pases'; did you mean 'passes'?"),
    ("passes.prune-l1.ratio=1.5", "--set passes.prune-l1.ratio=1.5: passes[0] prune-l1: ratio: 1.5 is out of range; "
                                  "valid: [0, 1)"),
    ("passes.prune-l1.ratoi=0.5", "unknown prune-l1 option 'ratoi'; did you mean 'ratio'?"),
    ("passes.0=prune-l2", "unknown pass 'prune-l2'; did you mean 'prune-l1'?"),
    ("model.frontend=zooo", "unknown frontend 'zooo'; did you mean 'zoo'?"),
    ("model.train.epochs=many", "model.train: epochs: expected an integer, got 'many'"),
    ("data.name=insar-synthetc", "unknown dataset 'insar-synthetc'; did you mean 'insar-synthetic'?"),
    ("evaluate.split=trian", "choose one of 'val', 'test'"),
    ("evaluate.latency.iter=3", "unknown latency option 'iter'; did you mean 'iters'?"),
    ("seed=-1", "expected a non-negative integer"),
])
def test_validation_errors(tiny_yaml, override, fragment):
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(tiny_yaml, overrides=[override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_training_without_data_is_rejected():
    with pytest.raises(ConfigError, match="training needs data"):
        Pipeline.from_dict({"model": {"frontend": "zoo", "train": {"epochs": 1}}})


@pytest.mark.parametrize("passes, fragment", [
    ("[fp16, prune-l1]", "passes[1] prune-l1: prune-l1 takes an fp32 IR but gets fp16; run prune-l1 before fp16"),
    ("[fp16, fp16]", "passes[1] fp16: fp16: the IR is already fp16"),
    ("[int8, prune-l1]", "passes[1] prune-l1: prune-l1 takes an fp32 IR but gets int8; run prune-l1 before int8"),
    ("[int8, finetune]", "passes[1] finetune: finetune takes an fp32 IR but gets int8; run finetune before int8"),
    ("[fp16, int8]", "passes[1] int8: int8 takes an fp32 IR but gets fp16; run int8 instead of fp16"),
    ("[int8, int8]", "passes[1] int8: int8: the IR is already int8"),
    ("[{distill: {teacher: finetune}}, finetune]",
     "passes[0] distill: reads stage 'finetune', which does not run before it (finetune runs later, at passes[1])"),
    ("[{distill: {teacher: nope}}]", "reads stage 'nope', which does not run before it; valid: baseline"),
])
def test_validate_checks_the_chain_contracts(tmp_path, passes, fragment):
    """Chains that would fail after minutes of training are rejected by validate, before any work."""
    from click.testing import CliRunner

    from compressor.cli import main

    p = tmp_path / "p.yaml"
    p.write_text(f"data: {{name: digits}}\nmodel: {{frontend: zoo, model: cls-cnn, train: {{epochs: 1}}}}\n"
                 f"passes: {passes}\n")
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2 and fragment in r.output, r.output
    assert r.output.count("\n") == 1


def test_a_pass_that_trains_needs_data(tmp_path):
    from compressor.errors import ConfigError
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError, match=r"passes\[0\] prune-dario: prune-dario\{.*\} trains, so it needs data"):
        Pipeline.from_dict({"model": {"frontend": "torch", "factory": "m:f", "input_shape": [1, 8, 8],
                                      "task": "classification", "num_classes": 10},
                            "passes": [{"prune-dario": {"finetune_epochs": 1}}]})
