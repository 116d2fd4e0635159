"""Variable-input genotypes (a variable number of (op, input) pairs per node) and the D-DARTS threshold
parsings that give them (thesis, seed 001, 4.2.1: σ(α) ≥ 0.85): the genotype form and its one-line
errors, the networks (parameter count by hand, ONNX export), the parsing on hand-made weights and
α, the search option, and the architecture distance over them."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main
from compressor.errors import ConfigError
from compressor.frontends.darts.ddarts import CellwiseSearchNetwork, parse_cell
from compressor.frontends.darts.distance import cell_distance, cell_points, genotype_cell, network_distance
from compressor.frontends.darts.genotypes import GENOTYPES, CellsGenotype, Genotype, get_genotype, split_nodes
from compressor.frontends.darts.networks import NetworkCIFAR, NetworkSegmentation
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_space import full_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V2 = GENOTYPES["DARTS_V2"]
# normal: node 0 = sep_conv_3x3(s1); node 1 = skip(s0) + dil_conv_3x3(node 0) + max_pool(s1)
# reduce: node 0 = skip(s1) (stride 2: a FactorizedReduce); node 1 = max_pool(s0) + dil_conv_3x3(node 0)
VAR = Genotype(normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2), ("max_pool_3x3", 1)],
               normal_concat=[2, 3], normal_nodes=[1, 3],
               reduce=[("skip_connect", 1), ("max_pool_3x3", 0), ("dil_conv_3x3", 2)],
               reduce_concat=[2, 3], reduce_nodes=[1, 2]).validate()


# ---- the genotype form ---------------------------------------------------------------------------
def test_variable_genotype_json_round_trip_and_the_darts_form_unchanged(tmp_path):
    d = VAR.to_dict()
    assert d["normal_nodes"] == [1, 3] and d["reduce_nodes"] == [1, 2]
    assert Genotype.from_dict(json.loads(json.dumps(d))) == VAR and VAR.variable and VAR.steps == 2
    assert split_nodes(VAR.normal, VAR.normal_nodes) == (
        (("sep_conv_3x3", 1),), (("skip_connect", 0), ("dil_conv_3x3", 2), ("max_pool_3x3", 1)))
    VAR.save(tmp_path / "var.json")
    assert get_genotype(str(tmp_path / "var.json")) == VAR
    # node sizes of all 2s are the DARTS form: equal, same hash, same JSON as without them
    explicit = Genotype(**V2.to_dict(), normal_nodes=[2, 2, 2, 2], reduce_nodes=(2, 2, 2, 2)).validate()
    assert explicit == V2 and hash(explicit) == hash(V2) and explicit.to_dict() == V2.to_dict()
    assert not V2.variable and "normal_nodes" not in V2.to_dict()
    assert Genotype.from_dict({**V2.to_dict(), "normal_nodes": [2, 2, 2, 2]}) == V2
    # per cell: only the variable cells carry "nodes"
    pc = CellsGenotype((VAR.normal, V2.normal[:4], VAR.reduce), ((2, 3),) * 3, (2,), (VAR.normal_nodes, None, (1, 2)))
    doc = pc.validate().to_dict()
    assert [c.get("nodes") for c in doc["cells"]] == [[1, 3], None, [1, 2]]
    assert Genotype.from_dict(doc) == pc and pc.node_sizes(1) == (2, 2)
    assert CellsGenotype(pc.cells, pc.concat, (2,), (None, None, None)) == CellsGenotype(pc.cells, pc.concat, (2,))


def _var(**change):
    return {**VAR.to_dict(), **change}


@pytest.mark.parametrize("doc, message", [
    (_var(normal_nodes=[0, 4]),
     "genotype normal_nodes[0] is 0: every node needs at least 1 (op, input) pair; give node 0 an input or remove "
     "the node"),
    (_var(normal_nodes=[1, 2]),
     "genotype normal_nodes [1, 2] counts 3 (op, input) pairs but normal has 4; the node sizes are the number of "
     "pairs of each node in order, so they must sum to 4"),
    (_var(normal=[["dil_conv_3x3", 2], ["skip_connect", 0], ["sep_conv_3x3", 1], ["max_pool_3x3", 1]]),
     "genotype normal[0] ('dil_conv_3x3', 2): node 0 may only take inputs 0..1 (0 = cell k-2, 1 = cell k-1, "
     "i ≥ 2 = node i-2)"),
    (_var(reduce=[["skip_connect", 1], ["max_pool_3x4", 0], ["dil_conv_3x3", 2]]),
     "genotype reduce[1]: unknown op 'max_pool_3x4'; did you mean 'max_pool_3x3'?"),
    (_var(normal=[["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["max_pool_3x3", 1]]),
     "genotype normal[2] ('skip_connect', 0) repeats normal[1] in node 1: an edge holds each op once; remove one "
     "of them"),
    (_var(reduce_nodes=[]), "reduce_nodes: expected a non-empty list of integer node sizes such as [1, 3, 2, 2]"),
    (_var(normal=[["sep_conv_3x3", 1], ["none", 0], ["dil_conv_3x3", 2], ["max_pool_3x3", 1]]),
     "genotype normal[1] uses 'none'"),
])
def test_variable_genotype_errors_are_one_line_and_name_the_json_path(doc, message):
    with pytest.raises(ConfigError) as e:
        Genotype.from_dict(doc, "g.json")
    text = str(e.value)
    assert text.startswith("g.json: ") and message in text and "\n" not in text


@pytest.mark.parametrize("cell, message", [
    ({"pairs": [["sep_conv_3x3", 0]], "concat": [2], "nodes": [0]},
     "cells[0].nodes[0] is 0: every node needs at least 1"),
    ({"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 2]], "concat": [2, 3], "nodes": [1, 2]},
     "genotype cells[0].nodes [1, 2] counts 3 (op, input) pairs but cells[0] has 2"),
    ({"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 3]], "concat": [2, 3], "nodes": [1, 1]},
     "genotype cells[0][1] ('sep_conv_3x3', 3): node 1 may only take inputs 0..2"),
    ({"pairs": [["sep_conv_3x3", 0]], "concat": [2], "nodes": "1"}, "cells[0].nodes: expected a non-empty list"),
])
def test_per_cell_variable_errors(cell, message):
    with pytest.raises(ConfigError) as e:
        Genotype.from_dict({"cells": [cell], "reduce_at": []})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_per_cell_node_sizes_of_the_darts_form_and_a_count_mismatch():
    two = {"pairs": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "concat": [2]}
    assert Genotype.from_dict({"cells": [{**two, "nodes": [2]}], "reduce_at": []}) == \
        Genotype.from_dict({"cells": [two], "reduce_at": []})  # one node of 2 pairs: the DARTS form
    with pytest.raises(ConfigError, match=r"^genotype has 3 cells but 2 node-size entries; give one per cell"):
        CellsGenotype((VAR.normal,) * 3, ((2, 3),) * 3, (1,), ((1, 3), None)).validate()


# ---- networks -------------------------------------------------------------------------------------
def test_variable_cells_parameter_count_by_hand():
    """NetworkCIFAR(C=4, 10 classes, 3 cells: normal, reduce, reduce) of VAR, counted module by module.
    Affine BN: 2C; SepConv 3×3: 2·(9C + C²) + 2·2C; DilConv 3×3: 9C + C² + 2C; ReLUConvBN(a, b): ab + 2b;
    FactorizedReduce(a, b): ab + 2b; pools and identities: 0."""
    def sep3(c): return 2 * (9 * c + c * c) + 4 * c
    def dil3(c): return 9 * c + c * c + 2 * c
    def rcb(a, b): return a * b + 2 * b
    fr = rcb
    stem = 3 * 12 * 9 + 2 * 12                                # Conv3×3 3 → 3C = 12, BN
    cell0 = rcb(12, 4) + rcb(12, 4) + sep3(4) + dil3(4)       # normal, C = 4: 2·4 = 8 channels out
    cell1 = rcb(12, 8) + rcb(8, 8) + fr(8, 8) + dil3(8)       # reduce, C = 8: skip at stride 2; 16 out
    cell2 = fr(8, 16) + rcb(16, 16) + fr(16, 16) + dil3(16)   # reduce after a reduction: preprocess0 reduces
    head = 32 * 10 + 10
    assert (stem, cell0, cell1, cell2, head) == (348, 292, 424, 1168, 330)
    net = NetworkCIFAR(4, 10, 3, False, VAR)
    assert [sum(p.numel() for p in c.parameters()) for c in net.cells] == [cell0, cell1, cell2]
    assert sum(p.numel() for p in net.parameters()) == stem + cell0 + cell1 + cell2 + head == 2562
    assert [type(m).__name__ for m in net.cells[0]._ops] == ["SepConv", "Identity", "DilConv", "MaxPool2d"]
    assert net.cells[0]._node_ranges == ((0, 1), (1, 4)) and net.cells[1]._node_ranges == ((0, 1), (1, 3))


def test_variable_cell_computes_each_node_as_the_sum_of_its_pairs():
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 3, False, VAR).eval()
    cell = net.cells[0]
    s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)
    with torch.no_grad():
        p0, p1 = cell.preprocess0(s0), cell.preprocess1(s1)
        n0 = cell._ops[0](p1)
        n1 = p0 + cell._ops[2](n0) + cell._ops[3](p1)
        assert torch.allclose(cell(s0, s1), torch.cat([n0, n1], 1), atol=1e-6)
    # the DARTS form builds what it always built: DARTS_V2's 3.3M network
    assert sum(p.numel() for p in NetworkCIFAR(36, 10, 20, False, V2).parameters()) == 3_349_342


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_variable_genotype_lowers_and_exports_to_onnx_matching_torch(tmp_path, task):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from compressor.exporters.onnx import export_onnx
    from compressor.frontends.darts import lower

    path = tmp_path / "var.json"
    VAR.save(path)
    ir = lower(str(path), task=task, in_channels=2, input_size=16, num_classes=3, init_channels=4, layers=3)
    assert ir.recipe.frontend["genotype"] == VAR.to_dict() and ir.meta["genotype_json"]["normal_nodes"] == [1, 3]
    assert isinstance(ir.module, NetworkCIFAR if task == "classification" else NetworkSegmentation)
    res = export_onnx(ir, tmp_path / "m.onnx", dynamo=False, simplify=False)
    assert res.info["verified"]
    sess = ort.InferenceSession(str(res.primary), providers=["CPUExecutionProvider"])
    x = ir.example_inputs(2, seed=1)[0]
    with torch.no_grad():
        want = ir.module(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == ((2, 3) if task == "classification" else (2, 3, 16, 16))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_the_supernet_path_refuses_a_variable_genotype():
    from compressor.frontends.darts.search_space import SearchNetwork

    net = SearchNetwork(4, 3, 3, in_channels=1)
    with pytest.raises(ValueError, match="variable number per node"):
        net(torch.randn(1, 1, 8, 8), genotype=VAR)


# ---- parsing --------------------------------------------------------------------------------------
OPS = list(PRIMITIVES)
OFFSETS = [0, 2, 5, 9]  # each node's first edge


def hand_weights():
    """σ(α) of one cell: 0.01 everywhere but
    node 0: edge (0,0) sep_conv_3x3 0.90, skip 0.86; edge (0,1) dil_conv_3x3 0.95 and none 0.99 (never kept);
    node 1: nothing ≥ 0.85: max_pool on (1,2) 0.60 is its strongest, sep_conv_5x5 on (1,0) 0.50;
    node 2: edge (2,0) sep_conv_3x3 0.97, sep_conv_5x5 0.92, dil_conv_5x5 0.88; edge (2,3) avg_pool 0.90;
    node 3: skip on (3,4) exactly 0.85 (kept: σ ≥ threshold), sep_conv_3x3 on (3,1) 0.849 (not)."""
    w = np.full((14, len(OPS)), 0.01)
    for node, j, op, v in [(0, 0, "sep_conv_3x3", 0.90), (0, 0, "skip_connect", 0.86), (0, 1, "dil_conv_3x3", 0.95),
                           (0, 1, "none", 0.99), (1, 2, "max_pool_3x3", 0.60), (1, 0, "sep_conv_5x5", 0.50),
                           (2, 0, "sep_conv_3x3", 0.97), (2, 0, "sep_conv_5x5", 0.92), (2, 0, "dil_conv_5x5", 0.88),
                           (2, 3, "avg_pool_3x3", 0.90), (3, 4, "skip_connect", 0.85), (3, 1, "sep_conv_3x3", 0.849)]:
        w[OFFSETS[node] + j][OPS.index(op)] = v
    return w


def test_threshold_parsings_on_hand_made_weights():
    w, prims = hand_weights(), full_space()
    pairs, nodes = parse_cell(w, prims, "threshold", 0.85)
    assert nodes == (3, 1, 4, 1)
    assert pairs == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0),     # strongest first
                     ("max_pool_3x3", 2),                                                # none passes: the strongest
                     ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("avg_pool_3x3", 3), ("dil_conv_5x5", 0),
                     ("skip_connect", 4)]                                                # 0.85 ≥ 0.85
    # FairDARTS edge: ≤ 2 ops per edge (dil_conv_5x5, the third op of edge (2,0), goes)
    pairs, nodes = parse_cell(w, prims, "edge", 0.85)
    assert nodes == (3, 1, 3, 1) and ("dil_conv_5x5", 0) not in pairs
    # FairDARTS sparse: the 2 DARTS edges, 1 op each; node 3's second edge (3,1) at 0.849 fails: 1 pair
    pairs, nodes = parse_cell(w, prims, "sparse", 0.85)
    assert nodes == (2, 1, 2, 1)
    assert pairs == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 2), ("sep_conv_3x3", 0),
                     ("avg_pool_3x3", 3), ("skip_connect", 4)]
    # a lower threshold keeps more; 0 keeps every non-none op (7 per edge)
    assert parse_cell(w, prims, "threshold", 0.5)[1] == (3, 2, 4, 2)
    assert parse_cell(w, prims, "threshold", 0.0)[1] == tuple(7 * (2 + i) for i in range(4))
    # darts: 2 per node, as derive_cell
    pairs, nodes = parse_cell(w, prims, "darts")
    assert nodes is None and len(pairs) == 8 and pairs[:2] == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0)]
    with pytest.raises(ValueError, match="valid: darts, threshold, edge, sparse"):
        parse_cell(w, prims, "fair")


def test_cellwise_supernet_parses_its_alpha_with_the_threshold():
    """A hand-made α (the logit of hand_weights in cell 0, -5 elsewhere: σ ≈ 0.0067): σ(α) is what the
    parsing reads."""
    torch.manual_seed(0)
    net = CellwiseSearchNetwork(4, 3, 3, in_channels=1, parsing="threshold", threshold=0.85)
    w = hand_weights()
    w[OFFSETS[3] + 4][OPS.index("skip_connect")] = 0.86  # off the boundary: float32 α rounds σ
    with torch.no_grad():
        net.alphas_cells.fill_(-5.0)
        net.alphas_cells[0] = torch.logit(torch.tensor(w, dtype=torch.float32))
    g = net.genotype().validate()
    assert g.reduce_at == (1, 2) and g.nodes[0] == (3, 1, 4, 1)
    assert g.cells[0] == tuple(parse_cell(w, full_space(), "threshold", 0.85)[0])
    # cells 1 and 2: every σ ≈ 0.0067 < 0.85, so each node keeps its single strongest op (ties: input 0,
    # then primitive order after none: max_pool_3x3)
    assert g.nodes[1] == g.nodes[2] == (1, 1, 1, 1)
    assert g.cells[1] == (("max_pool_3x3", 0),) * 4
    net.parsing = "darts"
    assert net.genotype().nodes is None
    with pytest.raises(ValueError, match="unknown parsing 'fair'"):
        CellwiseSearchNetwork(4, 3, 3, in_channels=1, parsing="fair")
    # the threshold genotype builds its network
    assert NetworkCIFAR(4, 3, 3, False, g, in_channels=1)(torch.randn(1, 1, 8, 8)).shape == (1, 3)


def test_parsing_option_defaults_and_keys():
    from compressor.frontends.darts.search import SearchOptions

    default = SearchOptions.of(algorithm="d-darts")
    assert default.ddarts.parsing == "darts" and default.ddarts.threshold == 0.85
    keys = default.key_data()
    assert "dd_parsing" not in keys and "dd_threshold" not in keys and keys["dd_w01"] == 8.0  # keys as before
    assert default.key_data(complete=True)["dd_parsing"] == "darts"
    chosen = SearchOptions.of(algorithm="d-darts", ddarts={"parsing": "threshold", "threshold": 0.9})
    assert chosen.key_data()["dd_parsing"] == "threshold" and chosen.key_data()["dd_threshold"] == 0.9
    assert "dd_parsing" not in SearchOptions.of(algorithm="pc-darts").key_data()
    with pytest.raises(ConfigError) as e:
        SearchOptions.of(algorithm="d-darts", ddarts={"parsing": "treshold"})
    assert str(e.value) == ("search: ddarts: parsing: 'treshold' is not valid; choose one of 'darts', 'threshold', "
                            "'edge', 'sparse'")
    with pytest.raises(ConfigError, match="threshold: 1.5 is out of range"):
        SearchOptions.of(algorithm="d-darts", ddarts={"threshold": 1.5})


@pytest.fixture(scope="module")
def few_digits():
    from compressor.data import build_data

    return build_data("digits", {"max_samples": 48})


def test_threshold_search_end_to_end(tmp_path, few_digits):
    """A 3-cell d-darts search with threshold parsing at 0.5 (σ(α) ≈ 0.5 after one step: many ops pass)
    writes a variable-input genotype, records it in the α history, and finds its folder again."""
    from compressor.frontends.darts.frontend import lower_genotype
    from compressor.frontends.darts.search import SearchOptions, run_search

    opts = SearchOptions.of(algorithm="d-darts", init_channels=4, layers=3, batch_size=8, epochs=1, max_steps=1,
                            ddarts={"parsing": "threshold", "threshold": 0.5})
    res = run_search(opts, few_digits, tmp_path / "s", progress=False)
    g = res.genotype
    assert isinstance(g, CellsGenotype) and len(g.cells) == 3 and g.variable
    assert Genotype.load(tmp_path / "s" / "genotype.json") == g
    history = json.loads((tmp_path / "s" / "alpha_history.json").read_text())
    assert Genotype.from_dict(history[-1]["genotype"]) == g
    ir = lower_genotype(g, task="classification", in_channels=1, input_size=8, num_classes=10, init_channels=4,
                        layers=3)
    assert ir.module(*ir.example_inputs(2)).shape == (2, 10)
    # the finished folder is found again with the same options (the stored options hold dd_parsing)
    assert run_search(opts, few_digits, tmp_path / "s", progress=False).epochs_run == 0


def test_algorithm_2_repeats_variable_cells():
    torch.manual_seed(0)
    net = CellwiseSearchNetwork(4, 10, 5, in_channels=1, parsing="threshold", threshold=0.5)
    with torch.no_grad():
        net.alphas_cells.normal_(0, 1)
    g = net.genotype().validate()
    assert g.variable and g.reduce_at == (1, 3)
    deep = NetworkCIFAR(4, 10, 8, False, g, in_channels=1)  # 5 → 8 cells: searched cells [0, 0, 1, 2, 2, 3, 4, 4]
    source = [0, 0, 1, 2, 2, 3, 4, 4]
    assert [len(c._ops) for c in deep.cells] == [len(g.cells[i]) for i in source]
    assert [tuple(end - start for start, end in c._node_ranges) for c in deep.cells] == \
        [g.node_sizes(i) for i in source]
    assert deep(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# ---- distance -------------------------------------------------------------------------------------
L4 = 12  # the edge encoding's 12 indices


def test_distance_of_variable_cells_by_hand():
    """A: node 0 = sep_conv_3x3(1); node 1 = sep_conv_3x3(0) + skip(0) + max_pool(2).
    B: the same without the skip. Edge encoding: A's edge (1,0) holds {sep_conv_3x3, skip}, nearest to
    B's {sep_conv_3x3} point by the skip bit: 0.8215 / 12; B ⊂ A's points otherwise. Positional: 2 nodes
    have 2 + 3 = 5 edges, 60 indices; the same one bit differs: 0.8215 / 60."""
    a = {"pairs": [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("max_pool_3x3", 2)],
         "nodes": [1, 3]}
    b = {"pairs": [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 2)], "nodes": [1, 2]}
    assert cell_distance(a, b) == pytest.approx(0.8215 / L4, abs=1e-15)
    assert cell_distance(b, a) == cell_distance(a, b)
    assert cell_distance(a, b, "positional") == pytest.approx(0.8215 / 60, abs=1e-15)
    assert len(cell_points(a, encoding="positional")) == 4  # edges (0,0) and (1,1) are both the zero vector
    # the same pairs split into other nodes are another cell (positional), and a 2-per-node cell is at the
    # same distance with or without its node sizes
    moved = {"pairs": a["pairs"], "nodes": [2, 2]}
    with pytest.raises(ConfigError, match=r"node 0 may only take inputs 0\.\.1"):
        cell_distance(a, {"pairs": [("sep_conv_3x3", 2), *a["pairs"][1:]], "nodes": [1, 3]})
    assert cell_distance(a, moved, "positional") > 0
    assert cell_distance({"pairs": V2.normal, "nodes": [2, 2, 2, 2]}, GENOTYPES["PDARTS"].normal) == \
        cell_distance(V2.normal, GENOTYPES["PDARTS"].normal)
    with pytest.raises(ConfigError, match=r"cell A: nodes \[1, 2\] count 3 pairs but the cell has 4") as e:
        cell_distance({"pairs": a["pairs"], "nodes": [1, 2]}, b)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cell A has 2 nodes"):
        cell_distance(a, V2.normal)


def test_network_distance_and_cli_accept_variable_genotypes(tmp_path):
    other = Genotype(normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2)], normal_concat=[2, 3],
                     normal_nodes=[1, 2], reduce=VAR.reduce, reduce_concat=[2, 3], reduce_nodes=[1, 2]).validate()
    # normal: VAR's node 1 also has max_pool on edge (1,1). Edge encoding: its point {max_pool} is 2 bits from
    # each of other's points {sep_conv_3x3}, {skip}, {dil_conv_3x3}; the nearest is {skip} (the smallest score):
    # (82.96 + 82.15) / 100 / 12. The reduce cells are equal.
    want_normal = (0.8215 + 0.8296) / L4
    assert cell_distance(genotype_cell(VAR, "normal"), genotype_cell(other, "normal")) == pytest.approx(want_normal)
    assert network_distance(VAR, other) == pytest.approx(want_normal / 2)
    assert network_distance(VAR, VAR) == 0
    cells = CellsGenotype((VAR.normal, VAR.reduce, VAR.reduce), ((2, 3),) * 3, (1, 2),
                          (VAR.normal_nodes, VAR.reduce_nodes, VAR.reduce_nodes)).validate()
    assert network_distance(VAR, cells) == 0  # VAR expanded to 3 cells (reductions at 1 and 2) is `cells`
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    VAR.save(pa)
    other.save(pb)
    r = CliRunner().invoke(main, ["genotype", "distance", str(pa), str(pb)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [f"distance {pa} -> {pb}: {want_normal / 2:.6f} distance units (edge encoding)",
                                     f"  normal {want_normal:.6f}  reduce {0:.6f}"]
    r = CliRunner().invoke(main, ["genotype", "distance", str(pa), "DARTS_V2"])
    assert r.exit_code == 2 and "cell A has 2 nodes (4 pairs) and cell B 4 (8 pairs)" in r.output
    # positional: 5 edges, 60 indices; VAR's max_pool on edge (1,1) is 1 bit from other's empty (1,1)
    assert network_distance(VAR, other, "positional") == pytest.approx(0.8296 / 60 / 2, abs=1e-15)
