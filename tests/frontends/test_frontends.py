from pathlib import Path

import pytest
import torch

from compressor.context import PassContext
from compressor.errors import ConfigError, FrontendError
from compressor.frontend import input_spec_from, lower
from compressor.frontends.torch import TorchModel
from compressor.frontends.zoo import ClsCNN, SegCNN, Zoo
from compressor.ir import TaskSpec

HERE = str(Path(__file__).parent)
SPEC = dict(input_shape=[2, 16, 16], task="segmentation", num_classes=1, search_path=HERE)


def test_lower_keeps_the_eager_module(seg_ir):
    x = seg_ir.example_inputs(batch=2)
    assert type(seg_ir.module) is SegCNN  # the author's class, not a traced graph
    assert seg_ir.module(*x).shape == (2, 1, 32, 32)


class Untraceable(torch.nn.Module):
    """Python that torch.fx cannot trace: a branch on a tensor value, int() of a size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 1)

    def forward(self, x):
        if x.dtype != torch.float32:
            x = x.float()
        n = int(x.shape[-1])
        y = self.conv(x)
        return y if float(y.detach().abs().sum()) >= 0 else y[..., :n]


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x[:, :1] + torch.rand_like(x[:, :1])


def test_lower_takes_untraceable_models_and_checks_determinism():
    ir = lower(Untraceable(), [input_spec_from((2, 8, 8), None)], TaskSpec("segmentation", 1))
    assert ir.module(*ir.example_inputs(2)).shape == (2, 1, 8, 8)
    with pytest.raises(FrontendError, match="different outputs for the same input"):
        lower(Noisy(), [input_spec_from((2, 8, 8), None)], TaskSpec("segmentation", 1))


def test_torch_frontend_ignores_leaf_modules_with_a_warning(caplog):
    with caplog.at_level("WARNING"):
        ir = TorchModel(factory="userpkg_models:tiny_seg", leaf_modules=["Conv2d"], **SPEC).build(None, PassContext())
    assert ir.recipe.frontend["factory"] == "userpkg_models:tiny_seg"
    assert sum("leaf_modules is ignored" in r.message for r in caplog.records) == 1


def test_seg_cnn_odd_sizes():
    ir = lower(SegCNN(2, 4), [input_spec_from((2, 25, 25), None)], TaskSpec("segmentation", 1))
    assert ir.module(*ir.example_inputs(1)).shape == (1, 1, 25, 25)


def test_lower_rejects_wrong_channels():
    with pytest.raises(FrontendError, match=r"does not accept inputs of shape \[\[None, 3, 8, 8\]\]"):
        lower(ClsCNN(1, 10, 4), [input_spec_from((3, 8, 8), None)], TaskSpec("classification", 10))


def test_lower_rejects_wrong_output():
    with pytest.raises(FrontendError, match=r"needs \(2, 5\)"):
        lower(ClsCNN(1, 10, 4), [input_spec_from((1, 8, 8), None)], TaskSpec("classification", 5))


def test_torch_frontend_builds_user_model():
    ir = TorchModel(factory="userpkg_models:tiny_seg", **SPEC).build(None, PassContext())
    assert ir.meta["factory"] == "userpkg_models:tiny_seg"
    assert ir.parameter_count() == 2 * 4 * 9 + 4 + 4 + 1


def test_torch_frontend_weights(tmp_path):
    import userpkg_models  # importable: the previous test put HERE on sys.path  # noqa: F401

    ir = TorchModel(factory="userpkg_models:tiny_seg", **SPEC).build(None, PassContext())
    ref = TorchModel(factory="userpkg_models:tiny_seg", **SPEC).build(None, PassContext(seed=1))
    path = tmp_path / "w.pt"
    torch.save({"state_dict": ref.module.state_dict()}, path)
    loaded = TorchModel(factory="userpkg_models:tiny_seg", weights=str(path), **SPEC).build(None, PassContext())
    x = ir.example_inputs(2)
    assert torch.equal(loaded.module(*x), ref.module(*x))
    assert not torch.equal(ir.module(*x), ref.module(*x))


@pytest.mark.parametrize("factory, kwargs, fragment", [
    ("nopkg_xyz:f", {}, "cannot import 'nopkg_xyz'"),
    ("userpkg_models:missing", {}, "has no attribute 'missing'"),
    ("userpkg_models:not_a_module", {}, "not a torch.nn.Module"),
    ("userpkg_models:raises", {}, "failed: RuntimeError: boom"),
    ("userpkg_models:tiny_seg", {"channels": 3}, "does not accept inputs"),
])
def test_torch_frontend_errors(factory, kwargs, fragment):
    with pytest.raises(FrontendError, match=fragment):
        TorchModel(factory=factory, kwargs=kwargs, **SPEC).build(None, PassContext())


def test_torch_frontend_bad_weights(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"other": torch.zeros(3)}, bad)
    with pytest.raises(FrontendError, match="do not fit the model"):
        TorchModel(factory="userpkg_models:tiny_seg", weights=str(bad), **SPEC).build(None, PassContext())
    with pytest.raises(FrontendError, match="does not exist"):
        TorchModel(factory="userpkg_models:tiny_seg", weights=str(tmp_path / "no.pt"), **SPEC).build(None, PassContext())


def test_factory_spec_validated():
    with pytest.raises(ConfigError, match="package.module:callable"):
        TorchModel(factory="no_colon")


def test_zoo_unknown_model():
    with pytest.raises(ConfigError, match="did you mean 'seg-cnn'"):
        Zoo(model="seg-cn")
