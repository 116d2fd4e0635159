"""The D-DARTS architecture distance M (seed 001 section 4.1.5): Algorithm 3, the point encoding,
the Hausdorff cell distance, eq. 4.8, the alpha-history form and `compress genotype distance`."""
import json
import random

import pytest
from click.testing import CliRunner

from compressor.cli import main
from compressor.errors import ConfigError
from compressor.frontends.darts.distance import (OP_SCORES, cell_distance, cell_points, expand_cells,
                                                 history_distances, network_distance, weighted_hamming)
from compressor.frontends.darts.genotypes import GENOTYPES, Genotype
from compressor.frontends.darts.ops import PRIMITIVES

V2 = GENOTYPES["DARTS_V2"]
L = 14 * 12  # indices of a 4-node cell's points: 14 edges x 12 ops
DARTS_OPS = [p for p in PRIMITIVES if p != "none"]


def random_cell(rng: random.Random, nodes: int = 4) -> list[tuple[str, int]]:
    """Two distinct inputs per node (as DARTS derives), ops from the 7 DARTS ops."""
    return [(rng.choice(DARTS_OPS), i) for j in range(nodes) for i in rng.sample(range(j + 2), 2)]


def random_genotype(rng: random.Random) -> Genotype:
    return Genotype(random_cell(rng), (2, 3, 4, 5), random_cell(rng), (2, 3, 4, 5)).validate()


def mutate(rng: random.Random, g: Genotype) -> Genotype:
    """g with one op replaced in one cell type, so that triples include near neighbours."""
    kind = rng.choice(["normal", "reduce"])
    cell = list(getattr(g, kind))
    k = rng.randrange(len(cell))
    cell[k] = (rng.choice(DARTS_OPS), cell[k][1])
    return Genotype(**{**g.to_dict(), kind: cell})


def test_table_4_1():
    assert len(OP_SCORES) == 12 and list(OP_SCORES)[:2] == ["conv_3x1_1x3", "conv_7x1_1x7"]
    assert OP_SCORES["sep_conv_5x5"] == 84.87 and OP_SCORES["skip_connect"] == 82.15
    assert set(DARTS_OPS) <= set(OP_SCORES)


def test_weighted_hamming_by_hand():
    # indices 1 and 2 differ: (0.25 + 2) / 4
    assert weighted_hamming([1, 0, 1, 0], [1, 1, 0, 0], [0.5, 0.25, 2, 4]) == pytest.approx(0.5625, abs=1e-15)
    assert weighted_hamming([1, 0], [1, 0], [3, 3]) == 0
    with pytest.raises(ConfigError, match="one length"):
        weighted_hamming([1, 0], [1], [1, 1])


def test_edge_encoding_by_hand():
    """The default: a cell is the set of its used edges' 12-bit op vectors (no position)."""
    points = cell_points(V2.normal)
    ops = list(OP_SCORES)
    assert points == {tuple(1 if k == ops.index(op) else 0 for k in range(12))
                      for op in ("sep_conv_3x3", "skip_connect", "dil_conv_3x3")}
    # edge (0, 0): sep_conv_3x3 -> max_pool_3x3. sep_conv_3x3 stays on other edges, so A ⊂ B: only B's
    # max_pool point is away, nearest to A's skip_connect point (2 indices differ): (82.96 + 82.15) / 100 / 12
    b = [("max_pool_3x3", 0), *V2.normal[1:]]
    assert cell_distance(V2.normal, b) == pytest.approx((0.8296 + 0.8215) / 12, abs=1e-12)
    assert cell_distance(b, V2.normal) == cell_distance(V2.normal, b)
    # a pseudo-metric: the same ops moved to other edges are at 0 (the positional encoding separates them)
    moved = [*V2.normal[:7], ("dil_conv_3x3", 3)]
    assert cell_distance(V2.normal, moved) == 0 and cell_distance(V2.normal, moved, "positional") > 0
    with pytest.raises(ConfigError, match="valid: edge, positional"):
        cell_distance(V2.normal, b, "hamming")


def test_positional_encoding_one_point_per_edge():
    points = cell_points(V2.normal, encoding="positional")
    assert len(points) == 9  # 8 used edges, and the zero vector for the 6 unused ones
    assert all(len(p) == L for p in points) and tuple([0] * L) in points
    ones = sorted(p.index(1) for p in points if any(p))
    sep3, dil3 = list(OP_SCORES).index("sep_conv_3x3"), list(OP_SCORES).index("dil_conv_3x3")
    assert ones[0] == 0 * 12 + sep3  # edge 0 = (node 0, input 0)
    assert ones[-1] == (2 + 3 + 4 + 2) * 12 + dil3  # node 3's offset is 2 + 3 + 4, input 2
    assert all(sum(p) <= 1 for p in points)
    # a set: the order of a node's two pairs does not matter
    swapped = [V2.normal[1], V2.normal[0], *V2.normal[2:]]
    assert cell_points(swapped, encoding="positional") == points


def test_one_changed_op_by_hand_positional():
    """Edge (node 0, input 0): sep_conv_3x3 in A, max_pool_3x3 in B; the other 7 points and the zero
    vector are shared (distance 0). A's moved point is nearest to B's zero vector: only its sep_conv_3x3
    index differs, so 0.8319 / 168 (B's point on that edge differs in 2 indices, any other point in
    more). Likewise B's moved point is at 0.8296 / 168 from A. The symmetric Hausdorff takes the max."""
    b = [("max_pool_3x3", 0), *V2.normal[1:]]
    assert cell_distance(V2.normal, b, "positional") == pytest.approx(0.8319 / L, abs=1e-12)
    assert cell_distance(b, V2.normal, "positional") == pytest.approx(0.8319 / L, abs=1e-12)


def test_published_genotypes_zero_to_themselves_positive_to_others():
    names = list(GENOTYPES)
    for enc in ("edge", "positional"):
        for x in names:
            assert network_distance(GENOTYPES[x], GENOTYPES[x], enc) == 0
            assert network_distance(GENOTYPES[x], Genotype.from_json(GENOTYPES[x].to_json()), enc) == 0
            for y in names:
                if x != y:
                    assert network_distance(GENOTYPES[x], GENOTYPES[y], enc) > 0


def test_same_ops_on_other_edges_is_not_zero():
    """The edge's position is in the vector: moving an op to another input is a change (a position-free
    encoding would give 0 here and M would not separate the two cells)."""
    moved = [*V2.normal[:7], ("dil_conv_3x3", 3)]
    assert cell_distance(V2.normal, moved, "positional") == pytest.approx(0.8296 / L, abs=1e-12)


@pytest.mark.parametrize("enc", ["edge", "positional"])
def test_metric_axioms_on_random_triples(enc):
    rng = random.Random(20240611)
    for t in range(240):
        a = random_genotype(rng)
        b = mutate(rng, a) if t % 2 else random_genotype(rng)
        c = mutate(rng, b) if t % 3 else random_genotype(rng)
        ab, ba, ac, bc = (network_distance(a, b, enc), network_distance(b, a, enc), network_distance(a, c, enc),
                          network_distance(b, c, enc))
        assert ab == ba
        assert ac <= ab + bc + 1e-12 and ab <= ac + bc + 1e-12 and bc <= ab + ac + 1e-12
        assert (ab == 0) == (cell_points(a.normal, encoding=enc) == cell_points(b.normal, encoding=enc) and
                             cell_points(a.reduce, encoding=enc) == cell_points(b.reduce, encoding=enc))


def test_expand_cells_and_per_cell_mean():
    g = random_genotype(random.Random(3))
    op = "skip_connect" if g.normal[0][0] != "skip_connect" else "max_pool_3x3"
    h = Genotype(**{**g.to_dict(), "normal": [(op, g.normal[0][1]), *g.normal[1:]]})  # normal differs, reduce not
    cells = expand_cells(g, 8)
    assert [i for i, c in enumerate(cells) if c == g.reduce] == [2, 5]
    assert all(c == g.normal for i, c in enumerate(cells) if i not in (2, 5))
    assert [i for i, c in enumerate(expand_cells(g, 14)) if c == g.reduce] == [4, 9]
    dn, dr = cell_distance(g.normal, h.normal), cell_distance(g.reduce, h.reduce)
    assert dn > 0 and dr == 0  # so (dn + dr) / 2, the Genotype form, would not pass below
    expected = (6 * dn + 2 * dr) / 8
    assert network_distance(expand_cells(g, 8), expand_cells(h, 8)) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ConfigError, match="layers must be"):
        expand_cells(g, 2)


@pytest.mark.parametrize("a, b, fragment", [
    ([("conv_9x9", 0), *V2.normal[1:]], V2.normal, "'conv_9x9' has no score in Table 4.1"),
    (V2.normal, V2.normal[:6], "cell A has 4 nodes (8 pairs) and cell B 3"),
    (V2.normal, [("sep_conv_3x3", 2), *V2.normal[1:]], "node 0 may only take inputs 0..1"),
])
def test_cell_errors(a, b, fragment):
    with pytest.raises(ConfigError) as exc:
        cell_distance(a, b)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    if "conv_9x9" in fragment:
        assert "bottleneck_1x3x1" in str(exc.value)  # lists the valid ops


def test_network_errors():
    with pytest.raises(ConfigError, match="A has 8 cells and B 5"):
        network_distance(expand_cells(V2, 8), expand_cells(V2, 5))
    assert network_distance(V2, expand_cells(V2, 8)) == 0  # a Genotype is expanded to the other's cells
    with pytest.raises(ConfigError, match="one cell"):
        network_distance(V2.normal, V2.normal)


# ---- alpha history --------------------------------------------------------------------------------
def cell_rows(cell, prims=PRIMITIVES, extra=()):
    """Softmax-like rows making derive_cell pick `cell`: 0.9 on each chosen (edge, op), 0.01 elsewhere;
    `extra` adds (node, input, op, weight)."""
    offsets = [sum(2 + j for j in range(n)) for n in range(4)]
    rows = [[0.01] * len(prims) for _ in range(14)]
    for k, (op, i) in enumerate(cell):
        rows[offsets[k // 2] + i][list(prims).index(op)] = 0.9
    for node, i, op, w in extra:
        rows[offsets[node] + i][list(prims).index(op)] = w
    return rows


def entry(epoch, normal, edge_normal=None):
    e = {"epoch": epoch, "stage": 0, "normal": cell_rows(normal, extra=[(1, 2, "avg_pool_3x3", 0.5)]),
         "reduce": cell_rows(V2.reduce), "primitives_normal": [PRIMITIVES] * 14,
         "primitives_reduce": [PRIMITIVES] * 14}
    if edge_normal is not None:
        e["edge_normal"], e["edge_reduce"] = edge_normal, [1.0] * 14
    return e


def tiny_history():
    """Epoch 1: DARTS_V2. Epoch 2: edge (0, 0) sep_conv_3x3 → sep_conv_5x5 (84.87). Epoch 3: same α,
    but PC-DARTS β on edge (1, 1) = 0.1 makes node 1 take input 2 (avg_pool_3x3, 0.5 > 0.9·0.1)
    instead of input 1 (sep_conv_3x3, 83.19)."""
    n1 = [("sep_conv_5x5", 0), *V2.normal[1:]]
    beta = [1.0] * 14
    beta[2 + 1] = 0.1  # node 1's edges start at 2
    return [entry(1, V2.normal), entry(2, n1), entry(3, n1, beta)]


def test_history_distances_by_hand():
    h = tiny_history()
    # only normal cells change; the reduce distance is 0, so M is half the normal distance
    d01, d12, d02 = 0.8487 / L / 2, 0.8319 / L / 2, 0.8487 / L / 2
    prev, first = history_distances(h, encoding="positional"), history_distances(h, to="first", encoding="positional")
    assert prev[0] is None and prev[1:] == pytest.approx([d01, d12], abs=1e-12)
    assert first == pytest.approx([0.0, d01, d02], abs=1e-12)
    with pytest.raises(ConfigError, match="valid: previous, first"):
        history_distances(h, to="last")
    del h[1]["primitives_reduce"]
    with pytest.raises(ConfigError, match="entry 1: missing 'primitives_reduce'"):
        history_distances(h)


# ---- the command line ---------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_cli_distance_and_help():
    r = invoke("genotype", "distance", "DARTS_V2", "DARTS_V2")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("distance DARTS_V2 -> DARTS_V2: 0.000000 distance units (edge encoding)")
    r = invoke("genotype", "distance", "DARTS_V2", "PDARTS")
    assert r.exit_code == 0, r.output
    m, dn, dr = (network_distance(V2, GENOTYPES["PDARTS"]), cell_distance(V2.normal, GENOTYPES["PDARTS"].normal),
                 cell_distance(V2.reduce, GENOTYPES["PDARTS"].reduce))
    assert r.output.splitlines() == [f"distance DARTS_V2 -> PDARTS: {m:.6f} distance units (edge encoding)",
                                     f"  normal {dn:.6f}  reduce {dr:.6f}"]
    text = " ".join(invoke("genotype", "distance", "--help").output.split())
    assert "distance units" in text and "0.08-0.2" in text and "compare our values with each other" in text


def test_cli_history(tmp_path):
    path = tmp_path / "alpha_history.json"
    path.write_text(json.dumps(tiny_history()))
    r = invoke("genotype", "distance", "--history", path, "--encoding", "positional")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["epoch", "stage", "to", "previous", "to", "first"] and len(lines) == 4
    assert lines[1].split() == ["1", "0", "-", "0.000000"]
    assert lines[3].split() == ["3", "0", f"{0.8319 / L / 2:.6f}", f"{0.8487 / L / 2:.6f}"]


def write_genotype(path, **change):
    path.write_text(json.dumps({**V2.to_dict(), **change}))
    return path


@pytest.mark.parametrize("case, fragment", [
    ("unknown-op", "unknown op 'conv_9x9'"),
    ("unknown-name", "unknown genotype 'DARTS_V3'; did you mean 'DARTS_V2'?"),
    ("cell-count", "cell A has 4 nodes (8 pairs) and cell B 5 (10 pairs)"),
    ("history-and-pair", "--history PATH measures one search on its own"),
    ("missing-b", "missing A or B"),
    ("bad-history", "not valid JSON"),
])
def test_cli_errors_one_line_exit_2(tmp_path, case, fragment):
    if case == "unknown-op":
        args = [write_genotype(tmp_path / "g.json", normal=[["conv_9x9", 0], *V2.to_dict()["normal"][1:]]), "DARTS_V2"]
    elif case == "unknown-name":
        args = ["DARTS_V3", "DARTS_V2"]
    elif case == "cell-count":
        five = V2.to_dict()["normal"] + [["skip_connect", 0], ["sep_conv_3x3", 5]]
        args = ["DARTS_V2", write_genotype(tmp_path / "g5.json", normal=five, normal_concat=[2, 3, 4, 5, 6])]
    elif case == "history-and-pair":
        args = ["DARTS_V2", "--history", tmp_path / "h.json"]
    elif case == "missing-b":
        args = ["DARTS_V2"]
    else:
        (tmp_path / "h.json").write_text("[{")
        args = ["--history", tmp_path / "h.json"]
    r = invoke("genotype", "distance", *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1 and fragment in r.output
