"""Preprocessing declared once: numerics against a hand computation, Hugging Face preprocessor configs, and the
record of it in the IR, the ONNX file's metadata_props and `compress bench`."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from imaging import cli_error, write_classes
from PIL import Image

from compressor.cli import main
from compressor.data.preprocess import Preprocess, PreprocessOptions, read_hf_processor, resolve
from compressor.errors import ConfigError, DataError
from compressor.options import parse_options

PIXELS = np.random.default_rng(7).integers(0, 256, (20, 24, 3), dtype=np.uint8)
IMAGE = Image.fromarray(PIXELS)
VIT = {"do_resize": True, "size": {"height": 8, "width": 8}, "resample": 2, "do_rescale": True,
       "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
       "image_processor_type": "ViTImageProcessor"}
CLIP = {"do_resize": True, "size": {"shortest_edge": 10}, "do_center_crop": True, "crop_size": {"height": 8, "width": 8},
        "resample": 3, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True, "image_processor_type": "CLIPImageProcessor"}


def _pre(**options) -> Preprocess:
    return resolve(parse_options(PreprocessOptions, options, "preprocess"))


def _hf_dir(tmp_path, config: dict, name: str = "proc"):
    d = tmp_path / name
    d.mkdir()
    (d / "preprocessor_config.json").write_text(json.dumps(config))
    return d


def test_crop_order_and_normalisation_by_hand():
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.125]
    pre = _pre(center_crop=[8, 10], channel_order="BGR", mean=mean, std=std).with_mode("RGB")
    x = pre.image(IMAGE, "img").numpy()
    top, left = (20 - 8) // 2, (24 - 10) // 2
    by_hand = PIXELS[top:top + 8, left:left + 10].astype(np.float64).transpose(2, 0, 1)[::-1] / 255.0
    by_hand = (by_hand - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert x.shape == (3, 8, 10) and x.dtype == np.float32
    assert np.allclose(x, by_hand, atol=1e-6)
    assert pre.input_range() == pytest.approx((min(-m / s for m, s in zip(mean, std)),
                                               max((1 - m) / s for m, s in zip(mean, std))))


def test_resize_shorter_side_and_exact():
    pre = _pre(resize=10).with_mode("RGB")
    assert pre.output_size(20, 24, "a") == (10, 12)  # 24 * 10 / 20
    assert pre.output_size(30, 20, "a") == (15, 10)
    assert pre.output_size(7, 9, "a") == (10, 12)  # int(10 * 9 / 7) = 12: truncated, as torchvision
    x = pre.image(IMAGE, "img").numpy()
    reference = np.asarray(IMAGE.resize((12, 10), Image.Resampling.BILINEAR), dtype=np.float64).transpose(2, 0, 1)
    assert np.allclose(x, reference / 255.0, atol=1e-6)
    exact = _pre(resize=[6, 5], interpolation="nearest").with_mode("RGB")
    reference = np.asarray(IMAGE.resize((5, 6), Image.Resampling.NEAREST), dtype=np.float64).transpose(2, 0, 1)
    assert np.allclose(exact.image(IMAGE, "img").numpy(), reference / 255.0, atol=1e-6)
    with pytest.raises(DataError, match="img is 10x12 after the resize, smaller than center_crop 11x11"):
        _pre(resize=10, center_crop=11).with_mode("RGB").image(IMAGE, "img")


def test_gray_mode_and_broadcast_statistics():
    pre = _pre(mode="L", mean=[0.5], std=[0.5]).with_mode("L")
    x = pre.image(IMAGE, "img").numpy()
    gray = np.asarray(IMAGE.convert("L"), dtype=np.float64)
    assert x.shape == (1, 20, 24) and np.allclose(x[0], (gray / 255 - 0.5) / 0.5, atol=1e-6)
    assert pre.input_range() == (-1.0, 1.0)
    rgb = _pre(mean=[0.5], std=[0.5]).with_mode("RGB")
    assert rgb.mean == (0.5, 0.5, 0.5) and rgb.to_dict()["std"] == [0.5, 0.5, 0.5]
    with pytest.raises(ConfigError, match="preprocess.mean has 2 values but the images have 3 channel"):
        _pre(mean=[0.5, 0.5], std=[0.5]).with_mode("RGB")
    with pytest.raises(DataError, match="mixed channel counts"):
        _pre().with_mode("L").image(IMAGE, "img")


def test_hf_processor_mapping(tmp_path):
    vit = resolve(PreprocessOptions(hf_processor=str(_hf_dir(tmp_path, VIT, "vit")))).with_mode("RGB").to_dict()
    assert vit["resize"] == [8, 8] and vit["interpolation"] == "bilinear" and vit["center_crop"] is None
    assert vit["mean"] == [0.5, 0.4, 0.3] and vit["std"] == [0.2, 0.25, 0.3] and vit["mode"] == "RGB"
    assert vit["hf_processor"].endswith("preprocessor_config.json")
    clip = _hf_dir(tmp_path, CLIP, "clip")
    pre = resolve(PreprocessOptions(hf_processor=str(clip)))
    assert (pre.resize, pre.center_crop, pre.interpolation, pre.mode, pre.convert) == (10, (8, 8), "bicubic", "RGB",
                                                                                       True)
    over = resolve(PreprocessOptions(hf_processor=str(clip / "preprocessor_config.json"), resize=[9, 9]))
    assert over.resize == (9, 9) and over.center_crop == (8, 8)  # a key given beside it wins
    raw = read_hf_processor(_hf_dir(tmp_path, {"do_rescale": False, "do_normalize": False,
                                               "image_mean": [0.5], "size": 12}, "raw"))
    assert raw["rescale_factor"] == 1.0 and "mean" not in raw and raw["resize"] == (12, 12)
    assert Preprocess(**{k: v for k, v in raw.items() if k != "hf_processor"}).input_range() == (0.0, 255.0)
    with pytest.raises(ConfigError, match="size .*longest_edge.* is not supported"):
        read_hf_processor(_hf_dir(tmp_path, {"size": {"longest_edge": 5}}, "bad"))
    with pytest.raises(ConfigError, match="does not exist"):
        read_hf_processor(tmp_path / "nowhere")


def test_hf_processor_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is the reference for hf_processor")
    for name, config in (("vit", VIT), ("clip", CLIP)):
        d = _hf_dir(tmp_path, config, name)
        processor = transformers.AutoImageProcessor.from_pretrained(str(d), backend="pil")
        reference = processor(IMAGE, return_tensors="np")["pixel_values"][0]
        ours = resolve(PreprocessOptions(hf_processor=str(d))).with_mode("RGB").image(IMAGE, "img").numpy()
        assert ours.shape == reference.shape and np.abs(ours - reference).max() < 1e-5, name


def test_option_errors(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(_pipeline(tmp_path, "{resize: [1, 2, 3]}"))])
    assert r.exit_code == 2 and "preprocess.resize: [1, 2, 3] is not valid" in r.stderr
    r = CliRunner().invoke(main, ["validate", str(_pipeline(tmp_path, "{channel_order: RBG}"))])
    assert r.exit_code == 2 and "'RBG' is not valid" in r.stderr
    write_classes(tmp_path / "imgs", {"a": 7, "b": 7})
    line = cli_error(tmp_path, f"{{name: image-folder, root: {tmp_path / 'imgs'}, preprocess: "
                               f"{{hf_processor: {tmp_path / 'none'}}}}}")
    assert str(tmp_path / "none") in line and "does not exist" in line


def _pipeline(tmp_path, preprocess: str):
    p = tmp_path / "v.yaml"
    p.write_text(f"data: {{name: image-folder, root: x, preprocess: {preprocess}}}\nmodel: {{frontend: zoo, "
                 f"model: cls-cnn}}\n")
    return p


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A cls-cnn built by the model step of a pipeline on image-folder, exported to ONNX."""
    from compressor.exporters.onnx import export_onnx
    from compressor.pipeline import Pipeline

    tmp = tmp_path_factory.mktemp("onnx")
    write_classes(tmp / "imgs", {"ant": 7, "bee": 7}, size=(12, 12))
    pipeline = Pipeline.from_text(f"data: {{name: image-folder, root: {tmp / 'imgs'}, preprocess: {{resize: [8, 8], "
                                  f"mean: [0.5], std: [0.25]}}}}\nmodel: {{frontend: zoo, model: cls-cnn, width: 4}}\n")
    ctx = pipeline.context(progress=False)
    ir = pipeline.compile().steps[0].compute(None, ctx, tmp).ir
    path = tmp / "model.onnx"
    export_onnx(ir, path, dynamo=False, simplify=False)
    return path, ctx.data


def test_onnx_metadata_and_bench(exported, monkeypatch):
    import onnx

    from compressor.bench import run_bench

    path, data = exported
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["compressor.preprocess"] == data.preprocess and data.preprocess["resize"] == [8, 8]
    assert props["compressor.task"] == {"kind": "classification", "num_classes": 2, "ignore_index": None,
                                        "class_names": ["ant", "bee"]}
    stats = run_bench(path, threads=1, warmup=0, iters=1)
    assert stats.extra["preprocess"] == data.preprocess and stats.extra["task"]["class_names"] == ["ant", "bee"]
    r = CliRunner().invoke(main, ["bench", str(path), "--iters", "1", "--warmup", "0", "--min-seconds", "0"])
    lines = r.output.splitlines()
    assert r.exit_code == 0 and lines[3].startswith("preprocess: {") and lines[4].startswith("task: {"), r.output
    assert json.loads(lines[3].split(": ", 1)[1]) == data.preprocess
    r = CliRunner().invoke(main, ["bench", str(path), "--iters", "1", "--warmup", "0", "--min-seconds", "0", "--json"])
    assert json.loads(r.output)["extra"]["preprocess"] == data.preprocess
    monkeypatch.setitem(sys.modules, "onnx", None)  # an edge device with onnxruntime only
    assert run_bench(path, threads=1, warmup=0, iters=1).extra["preprocess"] == data.preprocess


def test_bench_reads_metadata_without_torch(exported):
    path, data = exported
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from compressor.bench import run_bench
        print(json.dumps(run_bench({str(path)!r}, threads=1, warmup=0, iters=1).extra["preprocess"]))
        assert sys.modules["torch"] is None
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == data.preprocess
