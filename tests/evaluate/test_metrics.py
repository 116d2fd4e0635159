"""Task metrics: split-wide pixel counts, the 0/0 conventions, macro averages, evaluate_*."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.utils.data import DataLoader, TensorDataset

from compressor.errors import DataError
from compressor.evaluate.metrics import TaskMetrics, evaluate_module, evaluate_onnx, segmentation_scores
from compressor.ir import TaskSpec

SEG = TaskSpec("segmentation", 1)


def _logits(pred: list[list[int]]) -> torch.Tensor:
    """Masks of 0/1 predictions as logits (+3 / -3), shape (N, 1, H, W)."""
    p = torch.tensor(pred, dtype=torch.float32).reshape(len(pred), 1, 2, 2)
    return p * 6 - 3


def _mask(t: list[list[int]]) -> torch.Tensor:
    return torch.tensor(t, dtype=torch.float32).reshape(len(t), 1, 2, 2)


def test_segmentation_counts_accumulate_over_the_split() -> None:
    m = TaskMetrics(SEG)
    # batch 1: image a TP=2 FP=1 FN=0 TN=1, image b TP=4; batch 2: image c TP=0 FP=0 FN=3 TN=1
    m.update(_logits([[1, 1, 1, 0], [1, 1, 1, 1]]), _mask([[1, 1, 0, 0], [1, 1, 1, 1]]))
    m.update(_logits([[0, 0, 0, 0]]), _mask([[1, 1, 1, 0]]))
    got = m.compute()
    tp, fp, fn, tn = 6, 1, 3, 2
    p, r = tp / (tp + fp), tp / (tp + fn)
    assert got["accuracy"] == pytest.approx((tp + tn) / 12)
    assert got["precision"] == pytest.approx(p)
    assert got["recall"] == pytest.approx(r)
    assert got["f1"] == pytest.approx(2 * p * r / (p + r))
    assert got["iou"] == pytest.approx(0.6)  # 6 / 10
    # neither a mean over batches (6/7, 0) nor over images (2/3, 1, 0)
    assert got["iou"] != pytest.approx((6 / 7 + 0) / 2)
    assert got["iou"] != pytest.approx((2 / 3 + 1 + 0) / 3)
    assert all(isinstance(v, float) for v in got.values())


def test_threshold_is_logit_above_zero_even_for_logits_in_unit_interval() -> None:
    # logits 0.3 and 0.7 are positive predictions (logit > 0); 0 and -0.2 are negative
    m = TaskMetrics(SEG)
    m.update(torch.tensor([0.3, 0.7, 0.0, -0.2]).reshape(1, 1, 2, 2), _mask([[1, 1, 1, 0]]))
    got = m.compute()
    assert got["precision"] == 1.0 and got["recall"] == pytest.approx(2 / 3)


def test_zero_division_conventions() -> None:
    # nothing predicted, positives exist: all positive-class scores 0
    s = segmentation_scores(tp=0, fp=0, fn=3, tn=5)
    assert s == {"accuracy": 5 / 8, "precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}
    # no positives, some predicted
    s = segmentation_scores(tp=0, fp=2, fn=0, tn=6)
    assert s == {"accuracy": 6 / 8, "precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}
    # no positives and none predicted: perfect
    s = segmentation_scores(tp=0, fp=0, fn=0, tn=4)
    assert s == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": 1.0}
    # and through TaskMetrics
    m = TaskMetrics(SEG)
    m.update(torch.full((2, 1, 2, 2), -1.0), torch.zeros(2, 1, 2, 2))
    assert m.compute()["iou"] == 1.0
    with pytest.raises(DataError):
        segmentation_scores(0, 0, 0, 0)
    with pytest.raises(DataError, match="empty"):
        TaskMetrics(SEG).compute()


def test_segmentation_rejects_bad_masks_and_shapes() -> None:
    m = TaskMetrics(SEG)
    with pytest.raises(DataError):
        m.update(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(DataError, match="shape"):
        m.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
    m.update(torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2))  # (N, H, W) masks are accepted
    assert m.compute()["iou"] == 1.0


def test_classification_macro_matches_hand_computation() -> None:
    task = TaskSpec("classification", 3)
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5
    m = TaskMetrics(task)
    m.update(logits[:4], target[:4])
    m.update(logits[4:], target[4:])
    got = m.compute()
    # per class (tp, fp, fn): 0 -> (1,1,1), 1 -> (2,1,0), 2 -> (1,0,1)
    prec = [1 / 2, 2 / 3, 1 / 1]
    rec = [1 / 2, 2 / 2, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(prec, rec)]
    assert set(got) == {"accuracy", "precision", "recall", "f1"}
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == pytest.approx(np.mean(prec))
    assert got["recall"] == pytest.approx(np.mean(rec))
    assert got["f1"] == pytest.approx(np.mean(f1))


def test_classification_checks_shapes() -> None:
    m = TaskMetrics(TaskSpec("classification", 3))
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        m.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def _seg_data(n: int = 10) -> tuple[torch.nn.Conv2d, DataLoader]:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 1, 3, padding=1)
    x = torch.randn(n, 2, 8, 8)
    y = (torch.randn(n, 1, 8, 8) > 0).float()
    return conv, DataLoader(TensorDataset(x, y), batch_size=4)


def test_evaluate_module_equals_one_big_update_and_restores_mode() -> None:
    conv, loader = _seg_data()
    conv.train()
    got = evaluate_module(conv, loader, SEG)
    assert conv.training
    x, y = loader.dataset.tensors
    ref = TaskMetrics(SEG)
    with torch.no_grad():
        ref.update(conv(x), y)
    assert got == pytest.approx(ref.compute())
    assert 0.0 <= got["iou"] <= 1.0


def test_evaluate_module_fp16_casts_inputs() -> None:
    conv, loader = _seg_data()
    fp32 = evaluate_module(conv, loader, SEG)
    half = evaluate_module(conv.half(), loader, SEG)  # dtype inferred from the parameters
    assert half["accuracy"] == pytest.approx(fp32["accuracy"], abs=0.05)


def _conv_onnx(conv: torch.nn.Conv2d, path) -> None:
    w = numpy_helper.from_array(conv.weight.detach().numpy(), "w")
    b = numpy_helper.from_array(conv.bias.detach().numpy(), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_evaluate_onnx_matches_evaluate_module(tmp_path) -> None:
    conv, loader = _seg_data()
    _conv_onnx(conv, tmp_path / "m.onnx")
    got = evaluate_onnx(tmp_path / "m.onnx", loader, SEG, threads=1)
    assert got == pytest.approx(evaluate_module(conv, loader, SEG), abs=1e-6)
