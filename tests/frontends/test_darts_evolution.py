"""The `evolution` search (frontends/darts/evolution.py): single-path supernet training, candidates scored
with inherited weights and re-estimated BN, genome operators, NSGA-II selection, budgets, end to end."""
import json
import re

import pytest
import torch
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.frontends.darts.algorithms import SEARCHES
from compressor.frontends.darts.evolution import (
    OPS, CandidateEvaluator, Evolution, PathNetwork, budget_winner, canonical, crossover, default_budgets,
    distinct_inputs, fitness, mutate, network_costs, parameter_bytes, peak_activation_bytes, preserved_bn,
    random_genotype, reestimate_bn, repair_cell, select_survivors, tournament,
)
from compressor.frontends.darts.frontend import lower_genotype
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.networks import NetworkCIFAR
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search import CHECKPOINT, SearchOptions, Stage, run_search, task_loss_fn
from compressor.frontends.darts.search_space import CONCAT, SearchNetwork, edge_inputs
from compressor.options import parse_options
from compressor.sweep.objectives import non_dominated_sort

TINY = dict(algorithm="evolution", epochs=1, batch_size=16, init_channels=4, layers=3, max_steps=2,
            evolution=dict(population=4, generations=2, bn_batches=1))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and on a shared machine more threads mostly wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _geno(normal, reduce=None) -> Genotype:
    return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce or normal, reduce_concat=CONCAT)


NO_POOLS = _geno([("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("sep_conv_5x5", 2),
                  ("skip_connect", 1), ("dil_conv_5x5", 3), ("sep_conv_3x3", 2), ("skip_connect", 4)],
                 [("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 1), ("skip_connect", 2),
                  ("sep_conv_5x5", 0), ("sep_conv_3x3", 3), ("dil_conv_5x5", 2), ("skip_connect", 4)])


# ---- genome operators -------------------------------------------------------------------------------
def test_operators_always_yield_valid_canonical_genotypes():
    gen = torch.Generator().manual_seed(0)
    pop = [random_genotype(gen) for _ in range(50)]
    for i in range(400):
        a, b = pop[i % 50], pop[(7 * i + 3) % 50]
        for g in (crossover(a, b, gen), mutate(a, 0.3, gen), mutate(crossover(a, b, gen), 1.0, gen)):
            g.validate()
            assert distinct_inputs(g) and canonical(g) == g
            assert all(op in OPS for op, _ in g.normal + g.reduce)


def test_random_genotypes_cover_the_space():
    gen = torch.Generator().manual_seed(1)
    seen = [random_genotype(gen) for _ in range(200)]
    ops = {op for g in seen for op, _ in g.normal + g.reduce}
    assert ops == set(OPS) and "none" not in ops
    assert {j for g in seen for _, j in g.normal[6:]} == {0, 1, 2, 3, 4}  # node 3 takes inputs 0..4
    assert len(set(seen)) == 200


def test_repair_makes_invalid_pairs_valid():
    gen = torch.Generator().manual_seed(2)
    bad = [("sep_conv_3x3", 1), ("skip_connect", 1),  # same input twice
           ("none", 0), ("max_pool_3x3", 7),  # an op outside the space, an input out of range
           ("sep_conv_5x5", 2), ("dil_conv_3x3", 3), ("avg_pool_3x3", 4), ("avg_pool_3x3", 4)]
    for _ in range(50):
        cell = repair_cell(bad, gen)
        canonical(_geno(cell)).validate()
        assert distinct_inputs(_geno(cell))
        assert cell[4:6] == tuple(bad[4:6])  # valid nodes are left alone
        assert {cell[0][0], cell[1][0]} == {"sep_conv_3x3", "skip_connect"}  # repair re-draws the input only


def test_dedup_compares_a_nodes_pairs_unordered():
    a = NO_POOLS
    swapped = _geno([a.normal[1], a.normal[0]] + list(a.normal[2:]), list(a.reduce))
    assert swapped != a and canonical(swapped) == canonical(a)
    assert len({canonical(g) for g in (a, swapped)}) == 1
    other = _geno([("sep_conv_5x5", 0)] + list(a.normal[1:]), list(a.reduce))
    assert canonical(other) != canonical(a)


def test_crossover_takes_whole_pairs_from_either_parent():
    gen = torch.Generator().manual_seed(3)
    a = canonical(NO_POOLS)
    # the same inputs at every position, other ops: no repair, so each child pair is exactly a's or b's
    b = canonical(_geno([(OPS[(OPS.index(op) + 1) % len(OPS)], j) for op, j in a.normal],
                        [(OPS[(OPS.index(op) + 2) % len(OPS)], j) for op, j in a.reduce]))
    took = set()
    for _ in range(30):
        child = crossover(a, b, gen)
        for kind in ("normal", "reduce"):
            for k, pair in enumerate(getattr(child, kind)):
                assert pair in (getattr(a, kind)[k], getattr(b, kind)[k])
                took.add(pair == getattr(a, kind)[k])
    assert took == {True, False}


def test_mutation_probability():
    gen = torch.Generator().manual_seed(4)
    a = canonical(NO_POOLS)
    assert all(mutate(a, 0.0, gen) == a for _ in range(10))
    assert all(mutate(a, 1.0, gen) != a for _ in range(10))


# ---- memory -----------------------------------------------------------------------------------------
def test_peak_activation_bytes_hand_computed():
    # input 1×1×4×4 float32 = 64 B; conv1 → 4×4×4 = 256 B; ReLU → another 256 B while conv1's output is
    # alive; conv2 → 1×4×4 = 64 B while the ReLU output is alive; Flatten is a view (adds nothing)
    def net(inplace: bool) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(inplace=inplace),
                             nn.Conv2d(4, 1, 1, bias=False), nn.Flatten())

    x = torch.randn(1, 1, 4, 4)
    assert peak_activation_bytes(net(False), x) == 64 + 256 + 256  # input + conv1 + relu
    assert peak_activation_bytes(net(True), x) == 64 + 256 + 64  # in place: input + conv1/relu + conv2
    m = net(False).train()
    peak_activation_bytes(m, x)
    assert m.training  # modes restored
    assert parameter_bytes(net(False)) == (1 * 4 * 9 + 4 * 1) * 4


def test_network_costs_of_a_lowered_network():
    net = NetworkCIFAR(4, 10, 3, False, NO_POOLS, in_channels=1).eval()
    c = network_costs(net, (1, 8, 8), latency_device="cpu")
    assert c["memory"] == c["param_bytes"] + c["activation_bytes"] and c["param_bytes"] == 4 * c["params"]
    assert c["macs"] > 0 and c["activation_bytes"] > 64 * 4 * 3 * 4 and c["latency"] > 0  # > the stem output


# ---- weight sharing ---------------------------------------------------------------------------------
def _copy_path_weights(supernet: SearchNetwork, net: nn.Module, genotype: Genotype) -> None:
    """Load the supernet's weights (and BN statistics) of the path `genotype` into the discrete network."""
    starts = {}
    for e, (node, j) in enumerate(edge_inputs()):
        starts.setdefault(node, e)
    src, sd = supernet.state_dict(), net.state_dict()
    for key in sd:
        m = re.fullmatch(r"cells\.(\d+)\._ops\.(\d+)\.(.*)", key)
        if m:
            c, p, rest = int(m[1]), int(m[2]), m[3]
            op, j = (genotype.reduce if supernet.cells[c].reduction else genotype.normal)[p]
            key_src = f"cells.{c}._ops.{starts[p // 2] + j}._ops.{PRIMITIVES.index(op)}.{rest}"
        else:
            key_src = key
        if key_src in src:  # the supernet's ops are affine=False: the discrete BN keeps weight 1, bias 0
            sd[key] = src[key_src].clone()
    net.load_state_dict(sd)


def test_path_forward_is_the_lowered_network_on_the_supernets_weights():
    torch.manual_seed(0)
    supernet = SearchNetwork(4, 10, 3, in_channels=1)
    x = torch.randn(6, 1, 8, 8)
    reestimate_bn(supernet, NO_POOLS, [torch.randn(8, 1, 8, 8)])  # non-trivial BN statistics
    net = NetworkCIFAR(4, 10, 3, False, NO_POOLS, in_channels=1)
    _copy_path_weights(supernet, net, NO_POOLS)
    supernet.eval(), net.eval()
    with torch.no_grad():
        assert torch.allclose(supernet(x, genotype=NO_POOLS), net(x), atol=1e-5, rtol=1e-4)
    path = PathNetwork(supernet, NO_POOLS)  # inherits: the very same parameters, nothing copied
    assert [id(p) for p in path.parameters()] == [id(p) for p in supernet.parameters()]


def test_weight_step_trains_only_the_sampled_path(digits):
    opts = SearchOptions.of(**TINY)
    algo = Evolution(opts, task_loss_fn("classification"))
    st = Stage(algo, digits, 0, None, None, "cpu")
    before = {n: p.detach().clone() for n, p in st.model.named_parameters()}
    x = torch.stack([digits.train[i][0] for i in range(8)])
    y = torch.stack([torch.as_tensor(digits.train[i][1]) for i in range(8)])
    state = torch.get_rng_state()
    algo.weight_step(st, x, y)
    torch.set_rng_state(state)
    path = random_genotype()  # the path the step drew from torch's generator
    used = set()
    for c, cell in enumerate(st.model.cells):
        starts = {}
        for e, (node, j) in enumerate(edge_inputs()):
            starts.setdefault(node, e)
        for p, (op, j) in enumerate(path.reduce if cell.reduction else path.normal):
            used.add(f"cells.{c}._ops.{starts[p // 2] + j}._ops.{PRIMITIVES.index(op)}.")
    moved = {n for n, p in st.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    op_params = {n for n in before if "._ops." in n}
    assert moved & op_params and all(any(n.startswith(u) for u in used) for n in moved & op_params)
    assert not moved & {"alphas_normal", "alphas_reduce"}
    assert {"stem.0.weight", "classifier.weight"} <= moved


# ---- candidate evaluation ---------------------------------------------------------------------------
def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_bn_reestimation_changes_statistics_not_weights():
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, in_channels=1)
    before = _state(net)
    with preserved_bn(net):
        reestimate_bn(net, NO_POOLS, [torch.randn(8, 1, 8, 8) * 3 + 1])
        after = _state(net)
        assert net.stem[1].momentum is None and net.training
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "stem.1.running_mean" in changed and "stem.1.running_var" in changed
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert all(torch.equal(before[k], v) for k, v in _state(net).items())  # restored
    assert net.stem[1].momentum == 0.1


def test_evaluator_leaves_the_supernet_untouched_and_candidates_independent(digits):
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, in_channels=1).train()
    before = _state(net)
    evaluate = CandidateEvaluator(net, digits, 64, 2, seed=0)
    gen = torch.Generator().manual_seed(5)
    a, b = random_genotype(gen), random_genotype(gen)
    va = dict(evaluate(a))
    evaluate(b)
    evaluate.cache.clear()
    assert evaluate(a) == va  # scoring b in between changed nothing a sees
    assert all(torch.equal(before[k], v) for k, v in _state(net).items()) and net.training
    assert 0.0 <= va["metric"] <= 1.0 and va["macs"] > 0 and va["memory"] > va["param_bytes"]


# ---- selection and budgets --------------------------------------------------------------------------
# metric (max) and MACs (min): A..D are mutually non-dominated (front 0), E is dominated by B (front 1),
# F by E (front 2). Crowding in front 0 (sorted by metric: C B D A; by MACs: C B D A): A and C are
# extremes (inf), B = (0.85−0.7)/0.2 + (90−10)/90 = 1.639, D = (0.9−0.8)/0.2 + (100−50)/90 = 1.056.
POP = [{"metric": 0.9, "macs": 100.0}, {"metric": 0.8, "macs": 50.0}, {"metric": 0.7, "macs": 10.0},
       {"metric": 0.85, "macs": 90.0}, {"metric": 0.6, "macs": 60.0}, {"metric": 0.5, "macs": 200.0}]


def test_selection_on_a_hand_made_population():
    ranks, crowd = fitness(POP, ["metric", "macs"])
    assert ranks == [0, 0, 0, 0, 1, 2]
    assert crowd[0] == crowd[2] == float("inf")
    assert crowd[1] == pytest.approx(0.75 + 80 / 90) and crowd[3] == pytest.approx(0.5 + 50 / 90)
    assert select_survivors(POP, 3, ["metric", "macs"]) == [0, 2, 1]  # the last front cut by crowding
    assert select_survivors(POP, 5, ["metric", "macs"]) == [0, 2, 1, 3, 4]
    # eq. 2 with λ_macs = 1000 per million MACs: A .8, D .76, B .75, C .69, E .54, F .3
    ranks, _ = fitness(POP, ["metric", "macs"], {"metric": 1.0, "macs": 1000.0})
    assert ranks == [0, 2, 3, 1, 4, 5]
    assert select_survivors(POP, 3, ["metric", "macs"], {"metric": 1.0, "macs": 1000.0}) == [0, 3, 1]


def test_binary_tournament():
    gen = torch.Generator().manual_seed(6)
    assert all(tournament([1, 0], [0.0, 0.0], gen) == 1 for _ in range(10))  # lower rank
    assert all(tournament([0, 0], [0.5, float("inf")], gen) == 1 for _ in range(10))  # then less crowded
    wins = [tournament([0, 1, 2, 3], [0.0] * 4, gen) for _ in range(200)]
    assert 3 not in wins and wins.count(0) > wins.count(1) > wins.count(2)


def test_budgets():
    assert default_budgets([10.0, 40.0, 70.0]) == [30.0, 50.0, 70.0]
    vals = [dict(v, memory=1.0) for v in POP]
    assert budget_winner(vals, 5.0) is None
    assert budget_winner(vals, 10.0) == 2 and budget_winner(vals, 60.0) == 1 and budget_winner(vals, 1e9) == 0


def test_options_are_checked():
    def parse(**raw):
        return parse_options(SearchOptions, {"algorithm": "evolution", **raw}, "search")

    assert parse().evolution.population == 16 and parse().warmup == parse().epochs  # α never steps
    for raw, match in [({"evolution": {"population": 1}}, "population"), ({"evolution": {"budgets": [-1.0]}}, "budgets"),
                       ({"order": 2}, "order 2"), ({"evolution": {"objectives": ["macs", "memory"]}}, "metric"),
                       ({"evolution": {"scalarize": {"latency": 1.0}}}, "evolution.scalarize"),
                       ({"evolution": {"scalarize": {"metric": 0.0}}}, "evolution.scalarize"), ({"warmup_epochs": 2}, "warmup")]:
        with pytest.raises(ConfigError, match=match) as exc:
            parse(**raw)
        assert "\n" not in str(exc.value)
    assert SEARCHES["evolution"] is Evolution


# ---- end to end -------------------------------------------------------------------------------------
def _check_run(out, res, objectives=("metric", "macs", "memory")):
    doc = json.loads((out / "evolution.json").read_text())
    pop = doc["population"]
    assert len(pop) == TINY["evolution"]["population"] and len(doc["history"]) == TINY["evolution"]["generations"] + 1
    assert all(h["hypervolume"] >= 0 for h in doc["history"])
    points = [[m["objectives"][o] for o in objectives] for m in pop]
    fronts = non_dominated_sort(points, [doc["directions"][o] for o in objectives])
    assert [m["rank"] for m in pop] == [next(r for r, f in enumerate(fronts) if i in f) for i in range(len(pop))]
    assert [m["rank"] for m in pop] == sorted(m["rank"] for m in pop)  # best first
    files = sorted(p.name for p in out.glob("genotype_budget*.json"))
    assert files == [f"genotype_budget{k}.json" for k in (1, 2, 3)]
    for b in doc["budgets"]:
        assert b["objectives"]["macs"] <= b["macs_budget"]
        Genotype.load(out / b["file"])
    macs = [m["objectives"]["macs"] for m in pop]
    assert doc["budgets"][-1]["macs_budget"] == max(macs)
    assert Genotype.load(out / "genotype.json") == Genotype.load(out / "genotype_budget3.json") == res.genotype
    assert distinct_inputs(res.genotype)
    return doc


def test_search_end_to_end_classification(digits, tmp_path):
    res = run_search(SearchOptions.of(**TINY), digits, tmp_path, progress=False)
    doc = _check_run(tmp_path, res)
    assert doc["metric"] == "accuracy" and doc["network"] == {"init_channels": 4, "layers": 3,
                                                              "input_shape": [1, 8, 8]}
    # usable as a pipeline's model.genotype: the darts frontend lowers it
    ir = lower_genotype(str(tmp_path / "genotype.json"), task="classification", in_channels=1, input_size=8,
                        num_classes=10, init_channels=4, layers=3)
    assert ir.meta["genotype_json"] == res.genotype.to_dict()
    # reproducible: the same seed gives the same supernet, the same evolution and the same winners
    again = run_search(SearchOptions.of(**TINY), digits, tmp_path / "again", progress=False)
    assert json.loads((tmp_path / "again" / "evolution.json").read_text()) == doc
    assert again.genotype == res.genotype
    # the evolution block only acts after the epochs: another evolution re-runs on the trained supernet
    more = run_search(SearchOptions.of(**{**TINY, "evolution": {**TINY["evolution"], "generations": 3, "budgets": (1e9,)}}), digits, tmp_path,
                      progress=False)
    assert more.epochs_run == 0 and more.resumed_from == 1
    doc3 = json.loads((tmp_path / "evolution.json").read_text())
    assert len(doc3["history"]) == 4 and [b["file"] for b in doc3["budgets"]] == ["genotype_budget1.json"]
    assert sorted(p.name for p in tmp_path.glob("genotype_budget*.json")) == ["genotype_budget1.json"]
    best = max(doc3["population"], key=lambda m: m["objectives"]["metric"])["objectives"]["metric"]
    assert doc3["budgets"][0]["objectives"]["metric"] >= best  # the best metric of every scored candidate


def test_search_end_to_end_segmentation_scalarized(insar, tmp_path):
    opts = SearchOptions.of(**{**TINY, "batch_size": 4, "evolution": {**TINY["evolution"], "scalarize": {"metric": 1.0, "macs": 1.0}}})
    res = run_search(opts, insar, tmp_path, progress=False)
    doc = json.loads((tmp_path / "evolution.json").read_text())
    assert doc["metric"] == "iou"
    ranks = [m["rank"] for m in doc["population"]]
    scores = [m["scalarized"] for m in doc["population"]]
    assert scores == sorted(scores, reverse=True) and ranks == sorted(ranks)
    assert Genotype.load(tmp_path / "genotype.json") == res.genotype


def test_resume_matches_uninterrupted(digits, tmp_path):
    opts = {**TINY, "epochs": 2, "evolution": {**TINY["evolution"], "population": 2, "generations": 0}}
    run_search(SearchOptions.of(**opts), digits, tmp_path / "a", progress=False)
    run_search(SearchOptions.of(**{**opts, "epochs": 1}), digits, tmp_path / "b", progress=False)
    run_search(SearchOptions.of(**opts), digits, tmp_path / "b", progress=False)
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["stage_state"]["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["stage_state"]["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)  # the same paths were sampled
