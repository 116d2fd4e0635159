import json

import pytest

from compressor.errors import ConfigError
from compressor.frontends.darts.genotypes import GENOTYPES, SOURCES, Genotype, get_genotype, load, save

G = GENOTYPES["DARTS_V2"]


def test_published():
    assert set(GENOTYPES) == {"DARTS_V1", "DARTS_V2", "PC_DARTS_cifar", "PC_DARTS_image", "PDARTS"}
    assert set(SOURCES) == set(GENOTYPES)
    for g in GENOTYPES.values():
        assert len(g.normal) == 8 and len(g.reduce) == 8 and g.normal_concat == (2, 3, 4, 5)
        g.validate()
    assert GENOTYPES["PC_DARTS_cifar"].normal[0] == ("sep_conv_3x3", 1)
    assert GENOTYPES["DARTS_V2"].normal[-1] == ("dil_conv_3x3", 2)


def test_json_round_trip(tmp_path):
    for g in GENOTYPES.values():
        assert Genotype.from_json(g.to_json()) == g
        assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    path = tmp_path / "sub" / "g.json"
    save(G, path)
    assert load(path) == G
    assert get_genotype(str(path)) == G
    assert not list(path.parent.glob("*.tmp"))


def test_accepts_lists_and_ranges():
    g = Genotype(normal=[list(p) for p in G.normal], normal_concat=range(2, 6), reduce=list(G.reduce),
                 reduce_concat=[2, 3, 4, 5])
    assert g == G and hash(g) == hash(G)


def _with(**changes):
    d = G.to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize("changes, fragment", [
    ({"normal": [["sep_conv_3x4", 0]] + G.to_dict()["normal"][1:]},
     r"normal\[0\]: unknown op 'sep_conv_3x4'; did you mean 'sep_conv_3x3'\?"),
    ({"reduce": G.to_dict()["reduce"][:7]}, r"reduce has 7 \(op, input\) pairs; a cell needs exactly 2 per node"),
    ({"normal": G.to_dict()["normal"][:4] + [["skip_connect", 5]] + G.to_dict()["normal"][5:]},
     r"normal\[4\] \('skip_connect', 5\): node 2 may only take inputs 0\.\.3"),
    ({"normal_concat": [2, 3, 4, 6]}, r"normal_concat has 6, out of range: valid states are 0\.\.5"),
    ({"reduce": [["none", 0]] + G.to_dict()["reduce"][1:]}, r"reduce\[0\] uses 'none'"),
    ({"normal": [["sep_conv_3x3"]] * 8}, r"expected an \[op, input_index\] pair"),
])
def test_validation_errors(changes, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        Genotype.from_dict(_with(**changes))
    assert "\n" not in str(info.value)


def test_validate_method_directly():
    bad = Genotype(normal=G.normal[:6], normal_concat=(2, 3, 4, 5), reduce=G.reduce, reduce_concat=(2, 3, 4, 5))
    with pytest.raises(ConfigError, match=r"normal_concat has 5, out of range: valid states are 0\.\.4"):
        bad.validate()


def test_unknown_key_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'normal_concat'"):
        Genotype.from_dict({**G.to_dict(), "normal_concta": [2]})
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load(p)


def test_get_genotype_errors(tmp_path):
    assert get_genotype("PDARTS") is GENOTYPES["PDARTS"]
    with pytest.raises(ConfigError, match="unknown genotype 'PC_DARTS_cifr'; did you mean 'PC_DARTS_cifar'"):
        get_genotype("PC_DARTS_cifr")
    with pytest.raises(ConfigError, match="no genotype file at"):
        get_genotype(str(tmp_path / "missing.json"))


# ---- per-cell genotypes (D-DARTS) ------------------------------------------------------------------
def _per_cell(g, n):
    """A CellsGenotype holding `g`'s normal and reduce genes at the DARTS layout of n cells."""
    from compressor.frontends.darts.genotypes import CellsGenotype

    reduce_at = (n // 3, 2 * n // 3)
    cells = [g.reduce if i in reduce_at else g.normal for i in range(n)]
    return CellsGenotype(tuple(cells), tuple(g.normal_concat for _ in range(n)), reduce_at).validate()


def test_per_cell_genotype_round_trips_and_lowers_like_the_two_cell_one(tmp_path):
    import torch

    from compressor.frontends.darts.networks import NetworkCIFAR, NetworkSegmentation

    pc = _per_cell(G, 8)
    assert Genotype.from_dict(json.loads(pc.to_json())) == pc
    save(pc, tmp_path / "pc.json")
    assert get_genotype(str(tmp_path / "pc.json")) == pc
    for build in (lambda g: NetworkCIFAR(8, 10, 8, False, g), lambda g: NetworkSegmentation(8, 8, g)):
        torch.manual_seed(0)
        a = build(G).eval()
        torch.manual_seed(0)
        b = build(pc).eval()
        assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
        x = torch.randn(2, 3 if isinstance(a, NetworkCIFAR) else 2, 32, 32)
        assert torch.equal(a(x), b(x))


def test_per_cell_genes_and_algorithm_2_in_the_network():
    from compressor.frontends.darts.genotypes import CellsGenotype
    from compressor.frontends.darts.networks import NetworkCIFAR
    from compressor.frontends.darts.ops import SepConv

    ops = ["sep_conv_3x3", "max_pool_3x3", "skip_connect", "dil_conv_3x3", "avg_pool_3x3"]
    cells = tuple(((ops[i], 0), (ops[i], 1)) + G.normal[2:] for i in range(5))
    g = CellsGenotype(cells, tuple(G.normal_concat for _ in range(5)), (1, 3)).validate()
    net = NetworkCIFAR(8, 10, 5, False, g)
    assert [type(c._ops[0]).__name__ for c in net.cells] == ["SepConv", "MaxPool2d", "Identity", "DilConv",
                                                               "AvgPool2d"]
    deep = NetworkCIFAR(8, 10, 11, False, g)  # Algorithm 2: 5 → 11 cells, reductions at 3 and 7
    first = [type(c._ops[0]).__name__ for c in deep.cells]
    assert first == ["SepConv", "SepConv", "SepConv", "MaxPool2d", "Identity", "Identity", "Identity",
                     "DilConv", "AvgPool2d", "AvgPool2d", "AvgPool2d"]
    assert isinstance(deep.cells[0]._ops[0], SepConv)
    with pytest.raises(ConfigError, match="set layers to 5 or more"):
        NetworkCIFAR(8, 10, 4, False, g)
    odd = CellsGenotype(cells, tuple(G.normal_concat for _ in range(5)), (2, 3)).validate()
    with pytest.raises(ConfigError, match="reductions"):
        NetworkCIFAR(8, 10, 5, False, odd)


@pytest.mark.parametrize("doc,match", [
    ({"cells": [], "reduce_at": []}, "cells is empty"),
    ({"cells": [{"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "concat": [2]}]}, "missing key 'reduce_at'"),
    ({"cells": [{"pairs": [["sep_conv_3x3", 0]], "concat": [2]}], "reduce_at": []}, "exactly 2 per node"),
    ({"cells": [{"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]}], "reduce_at": []}, "keys pairs and concat"),
    ({"cells": [{"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "concat": [2]}], "reduce_at": [3]},
     "increasing cell indices"),
    ({"cells": [{"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "concat": [2]}], "reduce_at": [], "x": 1},
     "per-cell genotype key"),
])
def test_per_cell_genotype_errors_are_one_line(doc, match):
    with pytest.raises(ConfigError, match=match) as e:
        Genotype.from_dict(doc)
    assert "\n" not in str(e.value)
