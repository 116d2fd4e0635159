import pytest
import torch

from compressor.context import PassContext
from compressor.data import DataBundle
from compressor.errors import ConfigError, FrontendError
from compressor.frontends import darts
from compressor.frontends.darts import GENOTYPES, NetworkCIFAR, NetworkSegmentation
from compressor.frontends.darts.networks import AuxiliaryHeadCIFAR
from compressor.ir import TaskSpec
from compressor.pipeline import Pipeline

NAMES = list(GENOTYPES)


@pytest.fixture(scope="module")
def seg_irs():
    return {n: darts.lower(n, task="segmentation", in_channels=2, input_size=32, init_channels=4, layers=3)
            for n in NAMES}


def test_darts_v2_parameter_count():
    # quark0/darts NetworkCIFAR(36, 10, 20, auxiliary=False, DARTS_V2): the paper's "3.3M"
    # (the reference's count_parameters_in_MB excludes the auxiliary head, so it reports the same number).
    model = NetworkCIFAR(36, 10, 20, False, GENOTYPES["DARTS_V2"])
    n = sum(p.numel() for p in model.parameters())
    assert n == 3_349_342
    assert round(n / 1e6, 1) == 3.3
    aux = NetworkCIFAR(36, 10, 20, True, GENOTYPES["DARTS_V2"])
    assert sum(p.numel() for k, p in aux.named_parameters() if not k.startswith("auxiliary_head")) == n


@pytest.mark.parametrize("name", NAMES)
def test_classification_builds_and_traces(name):
    ir = darts.lower(name, task="classification", in_channels=3, input_size=32, num_classes=10,
                     init_channels=8, layers=5)
    x = ir.example_inputs(2)
    assert ir.module(*x).shape == (2, 10)
    assert ir.meta["genotype"] == name and ir.meta["genotype_json"] == GENOTYPES[name].to_dict()
    assert isinstance(ir.module, NetworkCIFAR) and ir.recipe.frontend["genotype"] == GENOTYPES[name].to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_segmentation_builds_and_traces(seg_irs, name):
    ir = seg_irs[name]
    assert ir.task == TaskSpec("segmentation", 1)
    assert ir.module(*ir.example_inputs(3)).shape == (3, 1, 32, 32)
    assert ir.meta["init_channels"] == 4 and ir.meta["layers"] == 3


def test_segmentation_resolutions_100():
    net = NetworkSegmentation(2, 3, GENOTYPES["PC_DARTS_cifar"]).eval()
    sizes = []
    net.cells[0].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    net.cells[1].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    net.cells[2].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        assert net(torch.randn(1, 2, 100, 100)).shape == (1, 1, 100, 100)
    assert sizes == [100, 50, 25]


@pytest.mark.parametrize("reductions", [0, 1])
def test_segmentation_fewer_reductions(reductions):
    net = NetworkSegmentation(4, 3, GENOTYPES["DARTS_V2"], reductions=reductions).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, 12, 12)).shape == (1, 1, 12, 12)


def test_auxiliary_and_drop_path_only_in_training():
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 3, True, GENOTYPES["DARTS_V2"], drop_path_prob=0.3)
    assert isinstance(net.auxiliary_head, AuxiliaryHeadCIFAR)
    assert all(c.drop_prob == 0.3 for c in net.cells)
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 10)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b) and a.shape == (2, 10)
    with pytest.raises(ValueError, match=r"drop_path_prob must be in \[0, 1\)"):
        net.drop_path_prob = 1.0


def test_odd_sizes_rejected():
    with pytest.raises(FrontendError, match="divisible by 4; got 30×30"):
        darts.lower("DARTS_V2", task="segmentation", input_size=30, init_channels=4, layers=3)


def test_python_api_example_signature():
    ir = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=4, cells=3)
    assert ir.meta["layers"] == 3 and ir.module(*ir.example_inputs(1)).shape == (1, 1, 16, 16)


def _bundle(kind, shape, classes):
    return DataBundle(name="tiny", task=TaskSpec(kind, classes), input_shape=shape, input_range=(0.0, 1.0),
                      train=[], val=[], test=[])


def test_frontend_through_pipeline(tmp_path):
    p = Pipeline.from_dict({"model": {"frontend": "darts", "genotype": "DARTS_V1", "init_channels": 4, "layers": 3}})
    frontend = p.model.frontend
    assert frontend.describe().startswith("darts{genotype=DARTS_V1")
    ir = frontend.build(_bundle("segmentation", (2, 16, 16), 1), PassContext())
    assert ir.module(*ir.example_inputs(2)).shape == (2, 1, 16, 16)
    assert ir.meta["frontend"] == "darts" and ir.meta["genotype"] == "DARTS_V1"
    ir = frontend.build(_bundle("classification", (1, 8, 8), 10), PassContext())
    assert ir.module(*ir.example_inputs(2)).shape == (2, 10)
    path = tmp_path / "g.json"
    GENOTYPES["PDARTS"].save(path)
    p = Pipeline.from_dict({"model": {"frontend": "darts", "genotype": str(path), "init_channels": 4, "layers": 3}})
    assert p.model.frontend.build(_bundle("segmentation", (2, 8, 8), 1), PassContext()).meta["genotype"] == "g"


@pytest.mark.parametrize("model, fragment", [
    ({"genotype": "PC_DARTS_cifr"}, "unknown genotype 'PC_DARTS_cifr'; did you mean 'PC_DARTS_cifar'"),
    ({"layers": 2}, r"layers: 2 is out of range"),
    ({"drop_path_prob": 1.0}, r"drop_path_prob: 1.0 is out of range"),
    ({"genotyp": "DARTS_V2"}, "did you mean 'genotype'"),
])
def test_frontend_validation(model, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Pipeline.from_dict({"model": {"frontend": "darts", **model}})


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch(seg_irs, tmp_path, name):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime as ort

    from compressor.exporters.onnx import export_onnx

    ir = seg_irs[name]
    res = export_onnx(ir, tmp_path / "m.onnx", dynamo=False, simplify=False)
    assert res.info["verified"]
    sess = ort.InferenceSession(str(res.primary), providers=["CPUExecutionProvider"])
    x = ir.example_inputs(3, seed=1)[0]
    with torch.no_grad():
        want = ir.module(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_prune_l1_on_darts_segmentation():
    from compressor.passes import PruneL1

    ir = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=16, init_channels=4, layers=3)
    before = ir.parameter_count()
    following = PruneL1(ratio=0.5, exclude_depthwise=False)(ir)
    frozen = PruneL1(ratio=0.5)(ir)
    x = ir.example_inputs(2)
    assert following.module(*x).shape == frozen.module(*x).shape == (2, 1, 16, 16)
    assert ir.parameter_count() == before  # the input IR is untouched
    assert before > frozen.parameter_count() > following.parameter_count()
