"""The hf frontend on the generated hf-classifier and hf-segmenter directories: logits without a wrapper
(segmentation upsampled to the input), re-heading to the data's classes, class names, stages that reload
without the checkpoint's weights, a changed config refused, pickled-only and custom-code directories
refused in one line, a stage key that follows the checkpoint, and a chain down to verified ONNX."""
from __future__ import annotations

import json
import logging
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from compressor.cli import main
from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle
from compressor.errors import FrontendError
from compressor.examples import IMAGE_CLASSES, SEGMENT_CLASSES, make_example
from compressor.ir import ModelIR, TaskSpec, describe_directory
from compressor.options import parse_options
from compressor.pipeline import EvaluateOptions, Pipeline

pytest.importorskip("transformers", reason="the [hf] extra (transformers) is part of [dev]")

from compressor.frontends.hf import HFModel, resolve_task  # noqa: E402  (imports transformers lazily)

HF_LOG = "compressor.frontends.hf"
EVAL = parse_options(EvaluateOptions, {"batch_size": 8, "macs": False, "latency": {"backends": []}}, "evaluate")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    make_example("hf-classifier", root / "cls")
    make_example("hf-segmenter", root / "seg")
    return {"cls": root / "cls", "seg": root / "seg"}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _data(kind: str, classes: int, shape: tuple[int, ...] = (3, 32, 32), n: int = 8,
          names: tuple[str, ...] | None = None) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=gen)
    if kind == "segmentation":
        y = torch.randint(0, classes, (n, *shape[1:]), generator=gen)
        y[:, 0] = 255  # an unlabelled row
        task = TaskSpec(kind, classes, ignore_index=255, class_names=names)
    else:
        y = torch.randint(0, classes, (n,), generator=gen)
        task = TaskSpec(kind, classes, class_names=names)
    ds = ArrayDataset(x, y)
    return DataBundle("memory", task, shape, (0.0, 1.0), ds, ds, ds)


def _build(path: Path, data: DataBundle | None, **options):
    ctx = PassContext(data=data, progress=False)
    return HFModel(path=str(path), **options).build(data, ctx), ctx


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == HF_LOG]


def test_classifier_returns_logits_named_after_id2label(models, caplog):
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        ir, _ = _build(models["cls"], _data("classification", 3))
    assert {k: os.environ.get(k) for k in env} == env  # offline mode only while loading
    x = ir.example_inputs(2)
    with torch.no_grad():
        out = ir.module(*x)
        direct = ir.module.model(pixel_values=x[0]).logits
    assert out.shape == (2, 3) and torch.equal(out, direct)
    assert ir.task.class_names == IMAGE_CLASSES  # config.json id2label, head kept
    assert ir.recipe.frontend == {"name": "hf", "path": str(models["cls"].resolve()), "task": "classification",
                                  "num_labels": 3, "config_sha256": ir.recipe.frontend["config_sha256"]}
    assert len(ir.recipe.frontend["config_sha256"]) == 64
    assert ir.meta["hf_preprocessor"]["size"] == {"height": 32, "width": 32}
    assert ir.meta["hf_preprocessor"]["image_mean"] == [0.5, 0.5, 0.5]
    # the in-memory data has no preprocessing: one line says what the model expects and how to set it
    [warning] = _messages(caplog)
    assert "normalize mean [0.5, 0.5, 0.5] std [0.5, 0.5, 0.5]" in warning and "rescale ×1/255" in warning
    assert f"data.preprocess.hf_processor: {models['cls'].resolve()}" in warning and "\n" not in warning


def test_matching_data_preprocessing_is_not_warned_about(models, caplog):
    """DataBundle.preprocess as compressor.data.preprocess resolves it (plain data): the values count."""
    resolved = {"mode": "RGB", "channel_order": "RGB", "resize": [32, 32], "center_crop": None,
                "rescale_factor": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3, "hf_processor": str(models["cls"])}
    same = _data("classification", 3)
    same.preprocess = resolved
    other = _data("classification", 3)
    other.preprocess = {**resolved, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                        "rescale_factor": 1.0, "channel_order": "BGR"}
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        _build(models["cls"], same)
        assert _messages(caplog) == []
        _build(models["cls"], other)
    [warning] = _messages(caplog)
    assert warning.endswith("but the data rescales by 1.0; the data normalizes with mean [0.485, 0.456, 0.406] "
                            "std [0.229, 0.224, 0.225]; the data feeds BGR; set data.preprocess.hf_processor: "
                            f"{models['cls'].resolve()}")


def test_segmenter_logits_are_upsampled_to_the_input(models):
    data = _data("segmentation", 3, shape=(3, 24, 40))
    ir, _ = _build(models["seg"], data)
    x = ir.example_inputs(2)
    with torch.no_grad():
        out = ir.module(*x)
        low = ir.module.model(pixel_values=x[0]).logits
    assert low.shape == (2, 3, 6, 10)  # Segformer predicts at 1/4 of the input
    assert out.shape == (2, 3, 24, 40)
    assert torch.equal(out, F.interpolate(low, size=(24, 40), mode="bilinear", align_corners=False))
    assert ir.task == TaskSpec("segmentation", 3, ignore_index=255, class_names=SEGMENT_CLASSES)


@pytest.mark.parametrize("name, kind, classes, head", [
    ("cls", "classification", 5, "model.classifier"),
    ("seg", "segmentation", 2, "model.decode_head.classifier"),
])
def test_another_class_count_reheads_with_one_warning(models, caplog, name, kind, classes, head):
    names = tuple(f"c{i}" for i in range(classes))
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        ir, _ = _build(models[name], _data(kind, classes, names=names))
    with torch.no_grad():
        out = ir.module(*ir.example_inputs(2))
    assert out.shape[:2] == (2, classes) and ir.recipe.frontend["num_labels"] == classes
    assert ir.task.class_names == names  # a new head is named after the data's classes
    assert ir.module.model.config.id2label == dict(enumerate(names))
    [line] = [m for m in _messages(caplog) if "randomly initialized" in m]
    assert line == (f"hf frontend: {head} of {name} is new and randomly initialized (the checkpoint has 3 "
                    f"classes, the data {classes}); fine-tune before use")


def test_kept_head_with_differently_named_data_classes_is_warned(models, caplog):
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        ir, _ = _build(models["cls"], _data("classification", 3, names=("a", "b", "c")))
    assert ir.task.class_names == IMAGE_CLASSES
    assert any("head predicts ['blob', 'horizontal', 'vertical'] but the data's classes are ['a', 'b', 'c']" in m
               for m in _messages(caplog))


@pytest.mark.parametrize("name, kind, classes", [("cls", "classification", 3), ("seg", "segmentation", 3),
                                                 ("seg", "segmentation", 4)])
def test_stage_reloads_identically_without_the_checkpoint_weights(models, tmp_path, name, kind, classes):
    src = _copy(models[name], tmp_path / "model")
    ir, _ = _build(src, _data(kind, classes))
    ir.save(tmp_path / "stage")
    (src / "model.safetensors").unlink()  # rebuilding reads config.json only; the stage holds the weights
    back = ModelIR.load(tmp_path / "stage")  # no trust needed: no user code
    x = ir.example_inputs(3, seed=1)
    with torch.no_grad():
        assert torch.equal(back.module(*x), ir.module(*x))
    assert back.task == ir.task and back.recipe.frontend == ir.recipe.frontend
    shown = describe_directory(tmp_path / "stage")  # compress inspect: the source and its config hash
    assert f"recipe: hf{{path={src.resolve()}, config_sha256={ir.recipe.frontend['config_sha256']}, " in shown


def test_changed_config_refuses_the_rebuild_in_one_line(models, tmp_path):
    src = _copy(models["cls"], tmp_path / "model")
    ir, _ = _build(src, _data("classification", 3))
    ir.save(tmp_path / "stage")
    config = json.loads((src / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(FrontendError) as err:
        ModelIR.load(tmp_path / "stage")
    message = str(err.value)
    assert "config.json has changed since the stage was built" in message and "the source changed" in message
    assert "\n" not in message


def test_recipe_block_is_validated_in_ir_json(models, tmp_path):
    ir, _ = _build(models["cls"], _data("classification", 3))
    ir.save(tmp_path / "stage")
    doc = json.loads((tmp_path / "stage" / "ir.json").read_text())
    doc["recipe"]["frontend"]["config_sha256"] = "not-a-hash"
    (tmp_path / "stage" / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(FrontendError, match=r"recipe\.frontend\.config_sha256: expected a sha256 hex digest"):
        ModelIR.load(tmp_path / "stage")


def _run_cli(tmp_path: Path, model_dir: Path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"name: hf\nmodel: {{frontend: hf, path: {model_dir}}}\nexport: [onnx]\n")
    return CliRunner().invoke(main, ["run", str(pipeline), "--out", str(tmp_path / "run"), "--quiet"])


def test_pickled_weights_only_are_refused_in_one_line(models, tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(models["cls"] / "config.json", d)
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")
    r = _run_cli(tmp_path, d)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "holds pytorch_model.bin but no model.safetensors: the hf frontend loads safetensors only" in r.output
    assert "save_pretrained(" in r.output and "safe_serialization=True" in r.output  # how to convert


def test_custom_code_is_refused_in_one_line(models, tmp_path):
    d = _copy(models["cls"], tmp_path / "remote")
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_mine.MyModel"}
    (d / "config.json").write_text(json.dumps(config))
    r = _run_cli(tmp_path, d)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "has auto_map" in r.output and "custom code is not supported" in r.output


def test_input_channels_and_task_must_match_the_model(models):
    with pytest.raises(FrontendError, match=r"takes 3-channel images .* inputs have 1 channels"):
        _build(models["cls"], _data("classification", 3, shape=(1, 32, 32)))
    with pytest.raises(FrontendError, match=r"holds a segmentation model but dataset 'memory' is a classification"):
        _build(models["seg"], _data("classification", 3))


def test_task_from_architecture_model_type_or_option():
    d = Path("m")
    assert resolve_task(d, {"architectures": ["ConvNextForImageClassification"]}, None) == "classification"
    assert resolve_task(d, {"architectures": ["BeitForSemanticSegmentation"]}, None) == "segmentation"
    assert resolve_task(d, {"model_type": "vit"}, None) == "classification"  # no segmentation head for ViT
    with pytest.raises(FrontendError, match="both tasks know it.*set model.task"):
        resolve_task(d, {"model_type": "segformer"}, None)
    assert resolve_task(d, {"model_type": "segformer"}, "segmentation") == "segmentation"


def test_stage_key_follows_the_checkpoint_and_the_run_is_cached(models, tmp_path, caplog):
    """Without data the input shape comes from preprocessor_config.json. The baseline's key changes when
    the weights or config.json change; an unchanged directory is loaded from the store."""
    from safetensors.torch import load_file, save_file

    src = _copy(models["cls"], tmp_path / "model")
    text = textwrap.dedent(f"""\
        name: hfkey
        model: {{frontend: hf, path: {src}}}
        passes: [fp16]
        evaluate: {{macs: false, latency: {{backends: []}}}}
        """)

    def key() -> str:
        return Pipeline.from_text(text).compile().steps[0].key(None)

    first = key()
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        result = Pipeline.from_text(text).run(out=tmp_path / "run", progress=False)
    assert _messages(caplog) == []  # no data, so no data preprocessing to warn about
    assert result.stages[0].ir.inputs[0].shape == (None, 3, 32, 32)
    again = Pipeline.from_text(text).run(out=tmp_path / "run", progress=False)
    assert again.cached == [True, True] and key() == first
    weights = load_file(src / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + 1
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    after_weights = key()
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert len({first, after_weights, key()}) == 3
    rerun = Pipeline.from_text(text).run(out=tmp_path / "run", progress=False)
    assert rerun.cached == [False, False]


def test_chain_prune_finetune_fp16_onnx_on_the_classifier(models, tmp_path):
    from compressor.exporters.onnx import OnnxExporter
    from compressor.manager import Sequential
    from compressor.passes import FP16, Finetune, PruneL1

    ir, ctx = _build(models["cls"], _data("classification", 3, n=16))
    chain = Sequential([PruneL1(ratio=0.5, exclude_mode="follow", heads="whole"),
                        Finetune(epochs=1, batch_size=8, max_steps=1), FP16(), OnnxExporter()])
    from compressor.instruments import default_instruments

    out = tmp_path / "run"
    result = chain.run(ir, ctx, out=out, progress=False,
                       instruments=default_instruments(out, evaluate=EVAL, progress=False))
    assert [s.name for s in result.stages] == ["input", "prune-l1", "finetune", "fp16", "onnx"]
    pruned = result.stages[1].ir
    assert pruned.parameter_count() < ir.parameter_count()
    assert pruned.module.get_submodule("model.vit.layers.0.attention").num_attention_heads == 2
    onnx_stage = result.stages[-1]
    assert onnx_stage.output.artifact.is_file() and onnx_stage.output.info["info"]["verified"]
    assert result.ir.precision == "fp16" and result.ir.task.class_names == IMAGE_CLASSES
    for s in result.stages[1:4]:  # every IR stage rebuilds from the hf recipe plus its edits
        back = ModelIR.load(s.dir)
        x = s.ir.example_inputs(2)
        with torch.no_grad():
            assert torch.equal(back.module(*x), s.ir.module(*x)), s.name


def test_segmenter_on_the_segmentation_folder_example_with_its_processor(models, tmp_path, caplog):
    """The examples together: the data preprocessed by the model's own preprocessor_config.json is not
    warned about, and the task (ignore_index, class names) is the data's and the checkpoint's."""
    from compressor.data import DATASETS, build_data
    from compressor.plugins import load_plugins

    load_plugins()
    if "segmentation-folder" not in DATASETS:
        pytest.skip("the segmentation-folder dataset is not registered in this checkout")
    make_example("segmentation-folder", tmp_path / "seg", n_train=6, n_val=3, n_test=3)
    data = build_data("segmentation-folder", {"root": str(tmp_path / "seg"), "num_classes": 3, "ignore_index": 255,
                                              "preprocess": {"hf_processor": str(models["seg"])}})
    with caplog.at_level(logging.WARNING, logger=HF_LOG):
        ir, _ = _build(models["seg"], data)
    assert _messages(caplog) == []
    assert ir.task == TaskSpec("segmentation", 3, ignore_index=255, class_names=SEGMENT_CLASSES)
    x = torch.stack([data.val[i][0] for i in range(3)])
    with torch.no_grad():
        assert ir.module(x).shape == (3, 3, 32, 32)
