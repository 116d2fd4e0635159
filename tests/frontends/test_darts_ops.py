import pytest
import torch
import torch.fx

from compressor.frontends.darts.ops import OPS, PRIMITIVES, FactorizedReduce, Identity, SepConv, Zero


def test_primitives_order():
    assert PRIMITIVES == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                          "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    assert list(OPS) == PRIMITIVES


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shapes(name, stride):
    op = OPS[name](6, stride, True).eval()
    x = torch.randn(2, 6, 8, 8)
    assert op(x).shape == (2, 6, 8 // stride, 8 // stride)


def test_skip_connect_is_identity_or_factorized_reduce():
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)
    assert isinstance(OPS["skip_connect"](4, 2, True), FactorizedReduce)


def test_reference_structure():
    sep = OPS["sep_conv_3x3"](4, 2, True)
    assert isinstance(sep, SepConv)
    convs = [m for m in sep.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [4, 1, 4, 1] and convs[0].stride == (2, 2) and convs[2].stride == (1, 1)
    dil = OPS["dil_conv_5x5"](4, 1, True)
    dw = next(m for m in dil.modules() if isinstance(m, torch.nn.Conv2d))
    assert dw.dilation == (2, 2) and dw.padding == (4, 4) and dw.groups == 4
    assert OPS["avg_pool_3x3"](4, 1, True).count_include_pad is False
    assert OPS["skip_connect"](4, 2, False).bn.weight is None  # affine flag honoured


def test_zero_values():
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(Zero(1)(x), torch.zeros(1, 3, 6, 6))
    assert torch.equal(Zero(2)(x), torch.zeros(1, 3, 3, 3))


@pytest.mark.parametrize("module", [FactorizedReduce(4, 6), Zero(1), Zero(2)], ids=["fr", "zero1", "zero2"])
def test_traceable(module):
    module.eval()
    gm = torch.fx.symbolic_trace(module)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(gm(x), module(x))


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(ValueError, match="even number of output channels"):
        FactorizedReduce(4, 5)
