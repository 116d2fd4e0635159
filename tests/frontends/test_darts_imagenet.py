"""NetworkImageNet (quark0/darts cnn/model.py `NetworkImageNet`) and the darts frontend's `network` option."""
import pytest
import torch
import torch.nn as nn

from compressor.context import PassContext
from compressor.data import DataBundle
from compressor.errors import ConfigError, FrontendError
from compressor.frontends import darts
from compressor.frontends.darts import GENOTYPES, NetworkCIFAR
from compressor.frontends.darts.frontend import Darts
from compressor.frontends.darts.networks import AuxiliaryHeadImageNet, NetworkImageNet
from compressor.frontends.darts.ops import FactorizedReduce
from compressor.ir import ModelIR, TaskSpec
from compressor.pipeline import Pipeline


def _count(model: nn.Module, auxiliary: bool) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if ("auxiliary" in k) == auxiliary)


# The ImageNet "mobile setting" network: C=48, 14 cells, 1000 classes. Expected counts exclude the
# auxiliary head, as the references' utils.count_parameters_in_MB does (`"auxiliary" not in name`).
# Each integer was derived by hand from quark0/darts cnn/model.py + operations.py (per-op formulas:
# SepConv(C,k) = 2(Ck² + C² + 2C), DilConv(C,k) = Ck² + C² + 2C, FactorizedReduce(Ci,Co) = CiCo + 2Co,
# ReLUConvBN 1×1 = CiCo + 2Co; stems, cell preprocessing and the classifier as in the reference), not
# from this implementation; the rounded figures are the papers' ImageNet tables.
REFERENCE_COUNTS = {
    "DARTS_V2": (4_718_752, 4.7),        # DARTS paper, table 3: DARTS (second order), 4.7M
    "PC_DARTS_image": (5_342_464, 5.3),  # PC-DARTS paper, table 4: searched on ImageNet, 5.3M
    "PC_DARTS_cifar": (5_270_560, 5.3),  # PC-DARTS paper, table 4: searched on CIFAR-10, 5.3M
    "PDARTS": (4_944_352, 4.9),          # P-DARTS paper, table 3: searched on CIFAR-10, 4.9M
    "DARTS_V1": (4_510_432, None),       # first order: the papers list no ImageNet row for it
}
# AuxiliaryHeadImageNet on cell 9's output (4 nodes × 4·48 = 768 channels), 1000 classes: conv 1×1 768·128,
# BN(128) 256, conv 2×2 128·768·4, no BN (commented out in the reference), linear 768·1000 + 1000.
AUX_COUNT = 768 * 128 + 256 + 128 * 768 * 4 + 768 * 1000 + 1000  # 1,260,776


def test_parameter_counts_match_the_reference():
    """The one full-size check: construction only, no forward."""
    counts = {}
    for name, (expected, paper_m) in REFERENCE_COUNTS.items():
        model = NetworkImageNet(48, 1000, 14, name == "DARTS_V2", GENOTYPES[name])
        counts[name] = _count(model, auxiliary=False)
        if paper_m is not None:
            assert round(counts[name] / 1e6, 1) == paper_m, name
        if name == "DARTS_V2":
            assert _count(model, auxiliary=True) == AUX_COUNT == 1_260_776
    assert counts == {name: expected for name, (expected, _) in REFERENCE_COUNTS.items()}


def test_structure_follows_the_reference():
    net = NetworkImageNet(8, 10, 6, True, GENOTYPES["DARTS_V2"])
    convs = [m for m in [*net.stem0, *net.stem1] if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(3, 4, (2, 2)), (4, 8, (2, 2)),
                                                                          (8, 8, (2, 2))]
    # stem1 halves the map, so the first cell reduces its s0 input (stem0's output) like after a reduction
    assert isinstance(net.cells[0].preprocess0, FactorizedReduce)
    assert net.cells[0].preprocess0.conv_1.in_channels == 8 and net.cells[0].preprocess0.bn.num_features == 8
    assert [c.reduction for c in net.cells] == [False, False, True, False, True, False]
    assert isinstance(net.cells[3].preprocess0, FactorizedReduce)  # after the first reduction, as in CIFAR
    assert not isinstance(net.cells[1].preprocess0, FactorizedReduce)
    assert isinstance(net.auxiliary_head, AuxiliaryHeadImageNet)
    assert net.auxiliary_head.features[2].in_channels == 4 * 32  # output of cell 2*6//3 = 4 (4 nodes × 4C)
    assert not any(isinstance(m, nn.BatchNorm2d) and m.num_features == 768 for m in net.auxiliary_head.modules())
    assert NetworkImageNet(8, 10, 3, False, GENOTYPES["DARTS_V2"], in_channels=1).stem0[0].in_channels == 1


def test_auxiliary_and_drop_path_like_the_cifar_network():
    torch.manual_seed(0)
    net = NetworkImageNet(8, 10, 3, True, GENOTYPES["DARTS_V2"], drop_path_prob=0.3)
    assert all(c.drop_prob == 0.3 for c in net.cells)
    x = torch.randn(2, 3, 224, 224)  # the aux head needs the 7×7 map of 224×224 inputs, as in the reference
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 10)
    cifar = NetworkCIFAR(8, 10, 3, True, GENOTYPES["DARTS_V2"]).train()
    assert type(cifar(torch.randn(2, 3, 32, 32))) is type(net(x)) is tuple
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b) and a.shape == (2, 10)
    with pytest.raises(ValueError, match=r"drop_path_prob must be in \[0, 1\)"):
        net.drop_path_prob = 1.0
    plain = NetworkImageNet(8, 10, 3, False, GENOTYPES["DARTS_V2"]).train()
    assert plain(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # no aux head: logits alone, in any mode


def test_drop_path_changes_training_outputs_only():
    torch.manual_seed(0)
    net = NetworkImageNet(8, 10, 3, False, GENOTYPES["DARTS_V2"], drop_path_prob=0.5)
    x = torch.randn(4, 3, 64, 64)
    outs = [net.train()(x) for _ in range(2)]
    assert not torch.allclose(*outs)
    net.drop_path_prob = 0.0
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_frontend_builds_and_rebuilds(tmp_path):
    ir = darts.lower("DARTS_V2", task="classification", network="imagenet", in_channels=3, input_size=64,
                     num_classes=10, init_channels=8, layers=3)
    assert isinstance(ir.module, NetworkImageNet) and ir.module(*ir.example_inputs(2)).shape == (2, 10)
    assert ir.recipe.frontend["network"] == "imagenet" and ir.meta["network"] == "imagenet"
    again = Darts.rebuild(ir.recipe.frontend)
    assert isinstance(again, NetworkImageNet)
    assert again.state_dict().keys() == ir.module.state_dict().keys()
    assert sum(p.numel() for p in again.parameters()) == ir.parameter_count()
    back = ModelIR.load(ir.save(tmp_path / "ir"))
    x = ir.example_inputs(2)
    assert isinstance(back.module, NetworkImageNet) and torch.equal(back.module(*x), ir.module(*x))


def test_auto_and_old_recipes_build_the_cifar_network():
    ir = darts.lower("DARTS_V2", task="classification", in_channels=3, input_size=32, num_classes=10,
                     init_channels=4, layers=3)
    assert isinstance(ir.module, NetworkCIFAR) and ir.recipe.frontend["network"] == "cifar"
    old = {k: v for k, v in ir.recipe.frontend.items() if k != "network"}  # a recipe from before the option
    assert isinstance(Darts.rebuild(old), NetworkCIFAR)


def _bundle(kind, shape, classes):
    return DataBundle(name="tiny", task=TaskSpec(kind, classes), input_shape=shape, input_range=(0.0, 1.0),
                      train=[], val=[], test=[])


def test_frontend_option_through_the_pipeline():
    p = Pipeline.from_dict({"model": {"frontend": "darts", "genotype": "PC_DARTS_image", "network": "imagenet",
                                      "init_channels": 8, "layers": 3}})
    ir = p.model.frontend.build(_bundle("classification", (1, 32, 64), 5), PassContext())
    assert isinstance(ir.module, NetworkImageNet) and ir.module.stem0[0].in_channels == 1
    assert ir.module(*ir.example_inputs(2)).shape == (2, 5) and ir.recipe.frontend["network"] == "imagenet"
    with pytest.raises(FrontendError, match="segmentation data always gets the segmentation network"):
        p.model.frontend.build(_bundle("segmentation", (2, 32, 32), 1), PassContext())


@pytest.mark.parametrize("size", [16, 48, 100])
def test_small_or_odd_inputs_rejected(size):
    with pytest.raises(FrontendError, match=rf"multiples of 32 \(at least 32\); got {size}×{size}"):
        darts.lower("DARTS_V2", task="classification", network="imagenet", input_size=size, in_channels=3,
                    num_classes=10, init_channels=8, layers=3)


def test_option_errors():
    with pytest.raises(ConfigError, match="'resnet' is not valid; choose one of 'auto', 'cifar', 'imagenet'"):
        Pipeline.from_dict({"model": {"frontend": "darts", "network": "resnet"}})
    with pytest.raises(FrontendError, match="even init_channels"):
        darts.lower("DARTS_V2", task="classification", network="imagenet", input_size=32, in_channels=3,
                    num_classes=10, init_channels=5, layers=3)
    with pytest.raises(FrontendError, match="auxiliary head .* needs 224 or 256 px inputs .* got 64×64"):
        darts.lower("DARTS_V2", task="classification", network="imagenet", input_size=64, in_channels=3,
                    num_classes=10, init_channels=8, layers=3, auxiliary=True)


def test_imagenet_network_exports_to_verified_onnx(tmp_path):
    """The ImageNet network goes through the onnx exporter, whose export is verified against torch at two batch
    sizes (a mismatch raises ExportError)."""
    from compressor.exporters.onnx import export_onnx

    ir = darts.lower("DARTS_V2", task="classification", network="imagenet", in_channels=3, input_size=64,
                     num_classes=10, init_channels=8, layers=3)
    result = export_onnx(ir, tmp_path / "model.onnx")
    assert result.primary.is_file() and result.info["max_abs_diff"] is not None
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.primary), providers=["CPUExecutionProvider"])
    x = ir.example_inputs(3)[0]
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = ir.module.eval()(x).numpy()
    assert out.shape == (3, 10) and abs(out - ref).max() < 1e-4
