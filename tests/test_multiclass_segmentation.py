"""Multi-class semantic segmentation end to end: TaskSpec("segmentation", C, ignore_index, class_names) with
C ≥ 2 gives C logits per pixel and int64 class maps; the metrics (mIoU, per-class IoU, pixel accuracy), the
training and distillation losses leave ignore_index pixels out; every pass and the ONNX export run on a
C-output model; sweeps accept miou; the report shows mIoU and a per-class table. Classification gains top-5."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle
from compressor.evaluate.metrics import TaskMetrics, evaluate_module
from compressor.instruments import default_instruments
from compressor.exporters.onnx import OnnxExporter
from compressor.evaluate.agreement import agreement
from compressor.frontend import input_spec_from, lower
from compressor.frontends.zoo import Zoo
from compressor.ir import TaskSpec
from compressor.manager import Sequential
from compressor.options import parse_options
from compressor.passes import FP16, Distill, Finetune, Int8, PruneDario, PruneL1
from compressor.passes.distill import soft_loss
from compressor.pipeline import EvaluateOptions
from compressor.report import markdown_table
from compressor.sweep.spec import SweepSpec, row_figures
from compressor.train import task_loss

IGNORE = 255
TASK = TaskSpec("segmentation", 3, IGNORE, ("bg", "a", "b"))
EVAL = parse_options(EvaluateOptions, {"batch_size": 16, "macs": False, "latency": {"backends": []}}, "evaluate")
TRAIN = {"epochs": 1, "batch_size": 8}


def _data(n: int = 16, size: int = 16) -> DataBundle:
    """Learnable 3-class maps: the class is the band channel 0 falls in; ~10% of the pixels are unlabelled."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, size, size, generator=gen)
    y = torch.bucketize(x[:, 0].contiguous(), torch.tensor([0.4, 0.7]))  # int64 (N, H, W): 0, 1, 2
    y[x[:, 1] > 0.9] = IGNORE
    ds = ArrayDataset(x, y)
    return DataBundle("mc-toy", TASK, (2, size, size), (0.0, 1.0), ds, ds, ds)


def _logits(pred: list[list[list[int]]], classes: int = 3) -> torch.Tensor:
    """Argmax maps as (N, C, H, W) logits: 5 for the predicted class, 0 for the others."""
    return F.one_hot(torch.tensor(pred), classes).permute(0, 3, 1, 2).float() * 5


# batch 1 then batch 2 (2×3 maps); the pixels labelled 255 are predicted 2 and 0
TARGETS = [torch.tensor([[[0, 0, 1], [1, 2, IGNORE]]]), torch.tensor([[[2, 2, IGNORE], [0, 0, 0]]])]
PREDS = [[[[0, 1, 1], [1, 0, 2]]], [[[2, 1, 0], [0, 0, 0]]]]


def _scores(task: TaskSpec, preds: list = PREDS) -> dict:
    m = TaskMetrics(task)
    for p, t in zip(preds, TARGETS):
        m.update(_logits(p, task.num_classes), t)
    return m.compute()


def test_metrics_match_a_hand_computation_over_the_split() -> None:
    got = _scores(TASK)
    # labelled pixels (label, prediction): (0,0) ×4, (0,1), (1,1) ×2, (2,0), (2,2), (2,1)
    # class 0: TP 4, FP 1 (2→0), FN 1 (0→1): 4/6; class 1: TP 2, FP 2, FN 0: 2/4; class 2: TP 1, FP 0, FN 2: 1/3
    assert got["per_class_iou"] == pytest.approx({"bg": 4 / 6, "a": 2 / 4, "b": 1 / 3})
    assert got["miou"] == pytest.approx((4 / 6 + 2 / 4 + 1 / 3) / 3)
    assert got["pixel_accuracy"] == pytest.approx(7 / 10)  # 7 right of 10 labelled pixels
    assert set(got) == {"miou", "pixel_accuracy", "per_class_iou"}
    # the predictions at the ignored pixels count for nothing
    moved = [[[[0, 1, 1], [1, 0, 1]]], [[[2, 1, 1], [0, 0, 0]]]]
    assert _scores(TASK, moved) == got


def test_miou_leaves_out_classes_neither_labelled_nor_predicted() -> None:
    got = _scores(TaskSpec("segmentation", 4, IGNORE))  # class 3 never occurs: no IoU, not in the mean
    assert got["per_class_iou"]["3"] is None
    assert got["miou"] == pytest.approx((4 / 6 + 2 / 4 + 1 / 3) / 3)
    with pytest.raises(Exception, match="no labelled pixels"):
        m = TaskMetrics(TASK)
        m.update(_logits([[[0, 1]]]), torch.tensor([[[IGNORE, IGNORE]]]))
        m.compute()


def test_cross_entropy_and_pixel_kd_ignore_the_unlabelled_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=gen)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    target[0, 0, :] = IGNORE
    keep = target != IGNORE
    loss = task_loss(TASK)(logits, target, None)
    logp = F.log_softmax(logits, dim=1).permute(0, 2, 3, 1)[keep]  # (labelled pixels, C)
    assert loss.item() == pytest.approx(-logp.gather(1, target[keep][:, None]).mean().item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, :, 0, :].abs().max() == 0  # no gradient reaches an ignored pixel

    t = 2.0
    soft = soft_loss(logits.detach(), teacher, TASK, t, target)
    p_t = F.softmax(teacher / t, dim=1).permute(0, 2, 3, 1)[keep]
    log_s = F.log_softmax(logits.detach() / t, dim=1).permute(0, 2, 3, 1)[keep]
    kl = (p_t * (p_t.log() - log_s)).sum(1).mean() * t * t  # KL per pixel over the classes, mean over labelled
    assert soft.item() == pytest.approx(kl.item(), rel=1e-5)
    changed = teacher.clone()
    changed[0, :, 0, :] = 50.0  # a confident teacher on unlabelled pixels changes nothing
    assert soft_loss(logits.detach(), changed, TASK, t, target).item() == pytest.approx(soft.item(), rel=1e-6)
    all_ignored = torch.full_like(target, IGNORE)
    assert task_loss(TASK)(logits, all_ignored, None).item() == 0.0


def test_int8_agreement_is_per_pixel_argmax() -> None:
    ref = _logits([[[0, 1], [2, 2]]]).numpy()
    got = ref.copy()
    got[0, :, 1, 1] = [9.0, 0.0, 0.0]  # one of 4 confident pixels flips to class 0
    assert agreement(TASK, got, ref) == 0.75


class _Residual(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(w, w, 3, padding=1), nn.Conv2d(w, w, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _ResSeg(nn.Module):
    """Residual blocks for prune-dario, C logits per pixel."""

    def __init__(self, w: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, w, 3, padding=1)
        self.blocks = nn.Sequential(*[_Residual(w) for _ in range(3)])
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _info(stage) -> dict:
    return stage.output.info["info"]


def test_every_pass_and_the_onnx_export_run_on_a_three_class_model(tmp_path) -> None:
    data = _data()
    ctx = PassContext(seed=0, data=data, progress=False)
    ir = Zoo(model="seg-cnn", width=4).build(data, ctx)
    assert ir.task == TASK and ir.module.head.out_channels == 3
    out = tmp_path / "run"
    run = Sequential([PruneL1(ratio=0.5), Finetune(**TRAIN), FP16(), OnnxExporter()]).run(
        ir, ctx, out=out, progress=False, instruments=default_instruments(out, evaluate=EVAL, progress=False))
    assert [s.name for s in run.stages] == ["input", "prune-l1", "finetune", "fp16", "onnx"]
    assert run.stages[1].output.ir.parameter_count() < ir.parameter_count()
    onnx_info = _info(run.stages[-1])
    assert onnx_info["verified"] and min(onnx_info["class_agreement"].values()) > 0.9
    report = json.loads((out / "report.json").read_text())
    for row in report["stages"]:
        assert set(row["metrics"]) == {"miou", "pixel_accuracy", "per_class_iou"}, row["name"]
        assert set(row["metrics"]["per_class_iou"]) == {"bg", "a", "b"}
    finetuned, exported = report["stages"][2]["metrics"], report["stages"][4]["metrics"]
    assert exported["miou"] == pytest.approx(finetuned["miou"], abs=0.02)  # fp16 ONNX vs fp32 torch
    md = (out / "report.md").read_text()
    assert "| Stage | Pixel acc | mIoU | Params |" in md and "## Per-class IoU %" in md
    assert "| Class | 0 input | 1 prune-l1 | 2 finetune | 3 fp16 | 4 onnx |" in md
    assert any(line.startswith("| b | ") for line in md.splitlines())
    figures = row_figures(report["stages"][-1])
    assert figures["miou"] == exported["miou"] and "per_class_iou" not in figures

    # int8 from the fine-tuned stage (loaded from the store), verified against onnxruntime
    q = Sequential([PruneL1(ratio=0.5), Finetune(**TRAIN), Int8(backend="onnxruntime-cpu", calib_batches=2,
                                                              batch_size=8), OnnxExporter()])
    qout = tmp_path / "q"
    qrun = q.run(ir, ctx, out=qout, progress=False, instruments=default_instruments(qout, evaluate=EVAL, progress=False))
    assert qrun.cached[:3] == [True, True, True] and qrun.stages[3].output.ir.precision == "int8"
    qinfo = _info(qrun.stages[-1])
    assert qinfo["int8"]["metric_check"]["metric"] == "miou"
    assert min(qinfo["class_agreement"].values()) >= 0.98
    assert all("miou" in s.record["metrics"] for s in qrun.stages)

    # distill: the fine-tuned student learns from the input model, per-pixel KD
    student = run.stages[2].output.ir
    kd = Distill(teacher="baseline", alpha=0.5, temperature=2.0, **TRAIN)
    kd_ctx = PassContext(seed=0, data=data, progress=False, teacher=ir)
    distilled = kd(student, kd_ctx)
    assert distilled.history[-1].stats["last_step"]["soft"] > 0
    assert "miou" in evaluate_module(distilled.module, [(data.val.x, data.val.y)], TASK)


def test_prune_dario_distills_a_three_class_model() -> None:
    data = _data()
    torch.manual_seed(0)
    ir = lower(_ResSeg(), [input_spec_from(data.input_shape, data.input_range)], TASK)
    ctx = PassContext(seed=0, data=data, progress=False)
    out = PruneDario(iterations=2, warm_start=1, remove_blocks=1, finetune_epochs=1, finetune_batch_size=8,
                     distill_alpha=0.5)(ir, ctx)
    assert out.parameter_count() < ir.parameter_count()
    logits = out.module(data.val.x[:2])
    assert logits.shape == (2, 3, 16, 16)
    assert "miou" in evaluate_module(out.module, [(data.val.x, data.val.y)], TASK)


def test_darts_segmentation_network_gives_one_logit_per_class_and_teaches_a_darts_student() -> None:
    from compressor.frontends.darts.frontend import lower_genotype

    teacher = lower_genotype("PC_DARTS_cifar", task=TASK, in_channels=2, input_size=8, init_channels=4, layers=3)
    assert teacher.task == TASK and teacher.module(teacher.example_inputs(2)[0]).shape == (2, 3, 8, 8)
    data = _data(size=8)
    ctx = PassContext(seed=0, data=data, progress=False, teacher=teacher)
    student = Distill(student="darts", student_init_channels=2, max_steps=1, **TRAIN)(teacher, ctx)
    assert student.task == TASK and student.parameter_count() < teacher.parameter_count()
    assert student.module.head.out_channels == 3


@dataclass(frozen=True)
class _NoOptions:
    pass


class _ToyData:
    """A registered stand-in for a multi-class segmentation dataset: declares its task before building."""

    Options = _NoOptions
    task_kind = "segmentation"
    num_classes = 3

    @staticmethod
    def build(options: _NoOptions, seed: int = 0) -> DataBundle:
        return _data()


def test_sweeps_validate_miou_against_the_task(tmp_path, monkeypatch) -> None:
    from compressor.errors import ConfigError
    from compressor.plugins import load_plugins
    from compressor.registry import DATASETS

    load_plugins()
    monkeypatch.setitem(DATASETS, "mc-toy", _ToyData)
    base = {"name": "b", "seed": 0, "data": {"name": "mc-toy"},
            "model": {"frontend": "zoo", "model": "seg-cnn", "width": 4},
            "evaluate": {"macs": False, "latency": {"backends": []}}}
    doc = {"name": "s", "base": base, "space": {"model.width": [4, 8]},
           "objectives": {"miou": "maximize", "params": "minimize"}, "constraints": ["pixel_accuracy >= 0.5"]}
    spec = SweepSpec.from_dict(doc, source=str(tmp_path / "s.yaml"))
    assert spec.objectives[0].metric.name == "miou" and spec.m_factor.accuracy == "miou"  # no accuracy: A = miou
    with pytest.raises(ConfigError, match="'iou' is not measured for this task"):
        SweepSpec.from_dict({**doc, "objectives": {"iou": "maximize"}}, source=str(tmp_path / "s.yaml"))
    binary = {**base, "data": {"name": "insar-synthetic", "size": 16}}
    with pytest.raises(ConfigError, match="'miou' is not measured for this task"):
        SweepSpec.from_dict({**doc, "base": binary, "constraints": []}, source=str(tmp_path / "s.yaml"))


def test_classification_with_ten_classes_reports_top5() -> None:
    task = TaskSpec("classification", 10)
    logits = torch.arange(10, dtype=torch.float32).repeat(4, 1)  # ranking 9 > 8 > ... > 0 for every sample
    target = torch.tensor([9, 5, 4, 0])  # top-1 right once; in the top 5 (9..5) twice
    m = TaskMetrics(task)
    m.update(logits, target)
    got = m.compute()
    assert got["accuracy"] == pytest.approx(1 / 4) and got["top5"] == pytest.approx(2 / 4)
    assert "top5" not in _classification_keys(5)
    table = markdown_table([{"name": "baseline", "metrics": got}]).splitlines()
    assert table[0].startswith("| Stage | Accuracy | Recall | F1 | IoU | Top-5 | Params |")
    assert table[2].split(" | ")[5] == "50.00"


def _classification_keys(classes: int) -> set[str]:
    m = TaskMetrics(TaskSpec("classification", classes))
    m.update(torch.eye(classes), torch.arange(classes))
    return set(m.compute())
