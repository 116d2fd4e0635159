"""The zoo's vision models: vit, resnet, mobilenet-v2 (compressor.frontends.vision)."""
import pytest
import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle, build_data
from compressor.errors import ConfigError, FrontendError
from compressor.frontend import input_spec_from, lower
from compressor.frontends.vision import (
    BasicBlock, InvertedResidual, MobileNetV2, ResNet, VisionTransformer,
)
from compressor.frontends.zoo import Zoo
from compressor.ir import TaskSpec


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", {}, seed=0)


def synthetic(shape, num_classes=5, n=4):
    """A tiny classification bundle of random images of `shape` (C, H, W)."""
    ds = ArrayDataset(torch.rand(n, *shape), torch.arange(n) % num_classes)
    return DataBundle("synthetic", TaskSpec("classification", num_classes), tuple(shape), (0.0, 1.0), ds, ds, ds)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Parameter counts at the zoo defaults (width 16) on digits (1×8×8, 10 classes):
# vit: dim 64, depth 12, 4 heads, patch 2 (16 patches + cls), MLP 128.
#   patch conv 1·64·4+64 = 320, cls 64, pos 17·64 = 1088; per block 2 LN 256 + qkv 64·192+192 = 12480
#   + proj 4160 + fc1 8320 + fc2 8256 = 33472, ×12 = 401664; final LN 128, head 650 → 403,914.
# resnet: ResNet-20 with 1 input channel: 272,474 (see below) − 2·16·9 stem weights = 272,186.
DIGITS_PARAMS = {"vit": 403_914, "resnet": 272_186, "mobilenet-v2": 590_122, "cls-cnn": 8_026}


@pytest.mark.parametrize("model", list(DIGITS_PARAMS))
def test_zoo_builds_on_digits(digits, model):
    ir = Zoo(model=model).build(digits, PassContext())
    out = ir.module(*ir.example_inputs(batch=3))
    assert out.shape == (3, 10)
    assert ir.parameter_count() == DIGITS_PARAMS[model]
    assert ir.meta["model"] == model


@pytest.mark.parametrize("model, options", [
    ("vit", {"width": 4, "depth": 2, "heads": 2, "patch_size": 4}),
    ("vit", {"width": 4, "depth": 1}),  # default patch size 2 below 32 px
    ("resnet", {"width": 4, "depth": 1}),
    ("mobilenet-v2", {"width": 8}),
])
def test_zoo_builds_on_synthetic_rgb(model, options):
    ir = Zoo(model=model, **options).build(synthetic((3, 12, 12)), PassContext())
    assert ir.module(*ir.example_inputs(batch=2)).shape == (2, 5)
    assert {k: v for k, v in ir.meta.items() if k in ("depth", "heads", "patch_size")} == \
        {k: v for k, v in options.items() if k != "width"}


def test_resnet20_param_count():
    # ResNet-20 (depth 3) at width 16, 3 input channels, 10 classes, projection (1×1 conv + BN) shortcuts:
    #   stem conv 3·16·9 = 432 + BN 32                                            =     464
    #   layer1: 3 × (2 convs 16·16·9 + 2 BN 2·32)                                 =  14,016
    #   layer2: block 0 16·32·9 + 32·32·9 + 2 BN 128 + shortcut 16·32 + BN 64       =  14,528
    #           blocks 1-2: 2 × (2 · 32·32·9 + 128)                               =  37,120
    #   layer3: block 0 32·64·9 + 64·64·9 + 2 BN 256 + shortcut 32·64 + BN 128      =  57,728
    #           blocks 1-2: 2 × (2 · 64·64·9 + 256)                               = 147,968
    #   fc 64·10 + 10                                                             =     650
    #                                                                             = 272,474
    # (the 0.27M usually quoted; identity shortcuts with zero padding would be 2,752 fewer: 269,722)
    model = ResNet(3, 10, width=16, depth=3)
    assert n_params(model) == 272_474
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 9 + 2  # stem, 18 block convs, 2 projections
    assert [name for name, m in model.named_modules() if isinstance(m, BasicBlock) and m.downsample is not None] \
        == ["layer2.0", "layer3.0"]


def test_resnet_ir_is_the_eager_module():
    model = ResNet(3, 10, width=4, depth=2)
    ir = lower(model, [input_spec_from((3, 8, 8), None)], TaskSpec("classification", 10))
    assert ir.module is model and isinstance(ir.module.layer1[0].relu2, nn.ReLU)
    assert ir.module(*ir.example_inputs(2)).shape == (2, 10)


def test_mobilenet_v2_paper_config():
    # width 32 is the paper's (and torchvision's) MobileNetV2: 3,504,872 parameters at 1000 classes.
    assert n_params(MobileNetV2(3, 1000, (224, 224), width=32)) == 3_504_872
    blocks = [m for m in MobileNetV2(3, 10, (32, 32), width=32).modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_res_connect for b in blocks) == 10


@pytest.mark.parametrize("hw, final", [((8, 8), 4), ((32, 32), 4), ((224, 224), 7), ((5, 5), 5)])
def test_mobilenet_v2_strides_on_small_inputs(hw, final):
    model = MobileNetV2(1, 10, hw, width=8).eval()
    with torch.no_grad():
        feats = model.features(torch.rand(1, 1, *hw))
    assert feats.shape[-2:] == (final, final)
    assert feats.shape[1] == model.last_channel == 320  # max(64, 1280·8/32)


def test_vit_attention_is_found_by_the_fused_qkv_adapter(digits):
    from compressor.adapters import find_attention

    ir = Zoo(model="vit").build(digits, PassContext())
    found = find_attention(ir.module)
    assert [p for p, _ in found] == [f"blocks.{i}.attn" for i in range(12)]
    assert {a.name for _, a in found} == {"fused-qkv"}


def test_vit_ir_equals_eager():
    torch.manual_seed(0)
    model = VisionTransformer(3, 7, (12, 12), dim=16, depth=3, num_heads=2, patch_size=3).eval()
    x = torch.rand(4, 3, 12, 12)
    with torch.no_grad():
        eager = model(x)
    ir = lower(model, [input_spec_from((3, 12, 12), None)], TaskSpec("classification", 7))
    with torch.no_grad():
        assert torch.equal(ir.module(x), eager)


def test_vit_bad_patch_size(digits):
    with pytest.raises(FrontendError) as err:
        Zoo(model="vit", patch_size=3).build(digits, PassContext())
    msg = str(err.value)
    assert "\n" not in msg
    assert "patch_size 3 does not divide the input size 8×8; valid: 1, 2, 4, 8" in msg


@pytest.mark.parametrize("options, fragment", [
    ({"model": "resnet", "heads": 2}, "option 'heads' applies only to zoo model(s) vit, not to 'resnet'"),
    ({"model": "mobilenet-v2", "depth": 2}, "option 'depth' applies only to zoo model(s) vit, resnet, not to"),
    ({"model": "cls-cnn", "patch_size": 2}, "option 'patch_size' applies only to zoo model(s) vit"),
    ({"model": "vit", "heads": 3}, "heads 3 does not divide vit's embedding dim 64 (4·width); valid: 1, 2, 4,"),
    ({"model": "vit", "depth": 0}, "depth: 0 is out of range"),
])
def test_zoo_option_errors(options, fragment):
    with pytest.raises(ConfigError) as err:
        Zoo(**options)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
