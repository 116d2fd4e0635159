import math

import pytest
import torch

from compressor.context import PassContext
from compressor.data import build_data
from compressor.errors import ConfigError, PassError
from compressor.frontends import darts
from compressor.passes import Distill, PruneL1
from compressor.passes.distill import kd_loss, soft_loss


def test_kd_loss_classification_hand_value():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    T, a = 2.0, 0.25
    ps = torch.softmax(s / T, 1)[0]
    pt = torch.softmax(t / T, 1)[0]
    kl = float((pt * (pt.log() - ps.log())).sum())
    ce = -math.log(float(torch.softmax(s, 1)[0, 0]))
    expected = a * T * T * kl + (1 - a) * ce
    assert kd_loss(s, t, y, "classification", a, T).item() == pytest.approx(expected, rel=1e-6)


def test_soft_loss_segmentation_hand_value():
    s = torch.tensor([[[[0.0, 2.0]]]])
    t = torch.tensor([[[[2.0, 0.0]]]])
    T = 2.0
    q = torch.sigmoid(t / T)
    p = torch.sigmoid(s / T)
    bce = -(q * p.log() + (1 - q) * (1 - p).log()).mean()
    assert soft_loss(s, t, "segmentation", T).item() == pytest.approx(float(bce) * T * T, rel=1e-6)


@pytest.fixture(scope="module")
def insar():
    return build_data("insar-synthetic", {"n_train": 16, "n_val": 8, "n_test": 8, "size": 16}, seed=0)


def test_distill_into_pruned_current_ir(seg_ir, insar):
    ir16 = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=4, layers=3)
    pruned = PruneL1(ratio=0.5, exclude_mode="follow")(ir16)
    ctx = PassContext(data=insar, teacher=ir16, progress=False)
    out = Distill(epochs=1, batch_size=8, feature_layers=["stem.1"])(pruned, ctx)
    st = out.history[-1].stats
    assert st["student_params"] == pruned.parameter_count() < st["teacher_params"]
    assert st["last_step"]["feature"] > 0 and st["last_step"]["soft"] > 0
    # the teacher is untouched and the student changed
    x = ir16.example_inputs(2)
    assert not torch.equal(out.module(*x), pruned.module(*x))


def test_distill_darts_student_is_smaller(insar):
    teacher = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=8,
                          layers=3)
    ctx = PassContext(data=insar, teacher=teacher, progress=False)
    out = Distill(student="darts", student_init_channels=4, epochs=1, batch_size=8, max_steps=1)(teacher, ctx)
    assert out.meta["init_channels"] == 4 and out.parameter_count() < teacher.parameter_count()
    assert out.module(*teacher.example_inputs(2)).shape == (2, 1, 16, 16)


def test_distill_errors(seg_ir, insar):
    with pytest.raises(PassError, match="no stage 'prune-l1' to teach from"):
        Distill(teacher="prune-l1")(seg_ir, PassContext(data=insar, progress=False))
    with pytest.raises(PassError, match="needs a teacher built by the darts frontend"):
        Distill(student="darts")(seg_ir, PassContext(data=insar, teacher=seg_ir, progress=False))
    with pytest.raises(PassError, match="feature layer 'nope' is not a module"):
        Distill(feature_layers=["nope"], epochs=1)(seg_ir, PassContext(data=insar, teacher=seg_ir, progress=False))
    with pytest.raises(ConfigError, match="out of range"):
        Distill(alpha=1.5)
