import json
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from compressor.errors import ConfigError
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import PRIMITIVES, SepConv, reference_ops
from compressor.frontends.darts.search import (
    SearchOptions, arch_grads_first_order, arch_grads_second_order, lambda_alignment, lambda_perturbations,
    linear_ramp, pdarts_dropout, pdarts_limit_skips, pdarts_shrink, run_search, task_loss_fn, weight_gradients,
)
from compressor.frontends.darts.search_space import (
    NUM_EDGES, MixedOp, SearchCell, SearchNetwork, cat_shuffle, channel_shuffle, derive_cell, full_space,
)
from compressor.options import parse_options

ALGORITHMS = ["darts", "pc-darts", "p-darts", "lambda-darts", "em-darts"]
TINY = dict(epochs=1, batch_size=8, init_channels=4, layers=3, max_steps=2)


def _skips(pairs):
    return sum(op == "skip_connect" for op, _ in pairs)


# ---- end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_search_end_to_end_classification(algorithm, digits, tmp_path):
    extra = {"pdarts": {"stages": (3, 3, 3)}} if algorithm == "p-darts" else {}
    opts = SearchOptions.of(algorithm=algorithm, **TINY, **extra)
    res = run_search(opts, digits, tmp_path, progress=False)
    res.genotype.validate()
    assert res.genotype_path == tmp_path / "genotype.json"
    assert Genotype.load(res.genotype_path) == res.genotype
    assert res.genotype.normal_concat == (2, 3, 4, 5) == res.genotype.reduce_concat
    history = json.loads(res.alpha_history_path.read_text())
    assert len(history) == (3 if algorithm == "p-darts" else 1)
    assert np.allclose(np.sum(history[-1]["normal"], axis=1), 1.0, atol=1e-4)
    assert res.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.epochs_run == len(history) and res.resumed_from == 0


@pytest.mark.parametrize("algorithm,order", [("pc-darts", 1), ("darts", 2)])
def test_search_end_to_end_segmentation(algorithm, order, insar, tmp_path):
    opts = SearchOptions.of(algorithm=algorithm, order=order, epochs=1, batch_size=4, init_channels=4, layers=3,
                         max_steps=2, warmup_epochs=0)
    res = run_search(opts, insar, tmp_path, progress=False)
    res.genotype.validate()
    assert (tmp_path / "alpha_history.png").is_file()


def test_segmentation_supernet_shapes():
    net = SearchNetwork(4, 1, 5, task="segmentation", in_channels=2, partial_k=4, edge_norm=True)
    out = net(torch.randn(2, 2, 16, 16))
    assert out.shape == (2, 1, 16, 16)


def test_resume_and_finished(digits, tmp_path):
    opts = dict(algorithm="darts", **{**TINY, "epochs": 1})
    first = run_search(SearchOptions.of(**opts), digits, tmp_path, progress=False)
    assert first.resumed_from == 0 and first.epochs_run == 1
    second = run_search(SearchOptions.of(**{**opts, "epochs": 2}), digits, tmp_path, progress=False)
    assert second.resumed_from == 1 and second.epochs_run == 1
    assert [h["epoch"] for h in json.loads(second.alpha_history_path.read_text())] == [1, 2]
    third = run_search(SearchOptions.of(**{**opts, "epochs": 2}), digits, tmp_path, progress=False)
    assert third.epochs_run == 0 and third.resumed_from == 2 and third.genotype == second.genotype
    with pytest.raises(ConfigError, match="init_channels"):
        run_search(SearchOptions.of(**{**opts, "epochs": 3, "init_channels": 8}), digits, tmp_path, progress=False)


def test_resume_matches_uninterrupted(digits, tmp_path):
    opts = dict(algorithm="darts", **{**TINY, "epochs": 2, "max_steps": 1})
    straight = run_search(SearchOptions.of(**opts), digits, tmp_path / "a", progress=False)
    run_search(SearchOptions.of(**{**opts, "epochs": 1}), digits, tmp_path / "b", progress=False)
    resumed = run_search(SearchOptions.of(**opts), digits, tmp_path / "b", progress=False)
    a = json.loads(straight.alpha_history_path.read_text())[-1]["normal"]
    b = json.loads(resumed.alpha_history_path.read_text())[-1]["normal"]
    assert np.allclose(a, b, atol=1e-6)


def test_options_validation():
    with pytest.raises(ConfigError, match="pdarts.keep"):
        parse_options(SearchOptions, {"algorithm": "p-darts", "pdarts": {"keep": [5, 3, 2]}}, "search")
    with pytest.raises(ConfigError, match="divisible by pc.k"):
        parse_options(SearchOptions, {"algorithm": "pc-darts", "init_channels": 6}, "search")
    o = parse_options(SearchOptions, {"algorithm": "pc-darts", "epochs": 50}, "search")
    assert o.warmup == 15 and o.arch_lr == 6e-4
    assert parse_options(SearchOptions, {"algorithm": "darts"}, "search").arch_lr == 3e-4


# ---- search space and derivation --------------------------------------------------------------
def test_alpha_shape_and_init():
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, in_channels=1)
    assert net.alphas_normal.shape == (NUM_EDGES, len(PRIMITIVES)) == net.alphas_reduce.shape
    assert net.alphas_normal.abs().max() < 1e-2
    arch = {id(p) for p in net.arch_parameters()}
    assert not arch & {id(p) for p in net.weight_parameters()}


def test_derive_cell_excludes_none_and_keeps_top_two():
    prims = full_space()
    w = np.full((NUM_EDGES, len(PRIMITIVES)), 0.1)
    none, sep, skip = PRIMITIVES.index("none"), PRIMITIVES.index("sep_conv_3x3"), PRIMITIVES.index("skip_connect")
    w[:, none] = 0.9  # `none` never counts
    # node 1 (edges 2, 3, 4): edge 4 (input 2) strongest via sep, edge 2 (input 0) next via skip
    w[4, sep], w[2, skip], w[3, sep] = 0.5, 0.4, 0.2
    gene = derive_cell(w, prims)
    assert gene[2:4] == [("sep_conv_3x3", 2), ("skip_connect", 0)]
    assert all(op != "none" for op, _ in gene)


def test_edge_weights_enter_derivation():
    net = SearchNetwork(4, 10, 3, in_channels=1, partial_k=4, edge_norm=True)
    sep = PRIMITIVES.index("sep_conv_3x3")
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[2, sep] = 3.0  # node 1: inputs 0 and 1 have the strongest ops ...
        net.alphas_normal[3, sep] = 3.0
        net.alphas_normal[4, sep] = 2.0
        net.betas_normal.zero_()
        net.betas_normal[4] = 5.0  # ... but input 2 dominates the node's edge weights
    w = net.arch_weights()
    without = derive_cell(w["normal"], net.primitives_normal)
    with_edges = net.genotype().normal
    assert 2 not in [j for _, j in without[2:4]]
    assert 2 in [j for _, j in with_edges[2:4]]


# ---- PC-DARTS ---------------------------------------------------------------------------------
def test_partial_channels_ops_see_c_over_k():
    net = SearchNetwork(8, 10, 3, in_channels=1, partial_k=4, edge_norm=True)
    seen = {}
    normal_cell = next(c for c in net.cells if not c.reduction)
    reduce_cell = next(c for c in net.cells if c.reduction)
    for name, cell in (("normal", normal_cell), ("reduce", reduce_cell)):
        mixed = cell._ops[0]
        conv = mixed._ops[PRIMITIVES.index("sep_conv_3x3")].op[1]
        conv.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0].shape[1]))
    net(torch.randn(2, 1, 16, 16))
    assert seen == {"normal": 8 // 4, "reduce": 16 // 4}
    # the bypass keeps the other 3/4 of the channels (pooled on reduction edges)
    op = MixedOp(8, 2, PRIMITIVES, partial_k=4)
    assert op(torch.randn(2, 8, 8, 8), torch.full((len(PRIMITIVES),), 0.1)).shape == (2, 8, 4, 4)


def test_channel_shuffle_permutation():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    out = channel_shuffle(x, 4).flatten().tolist()
    # output channel j*g + i holds input channel i*(C/g) + j
    assert out == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle(channel_shuffle(x, 4), 2).flatten().tolist() == list(range(8))


def test_cat_shuffle_is_cat_then_shuffle():
    first, rest = torch.randn(2, 3, 4, 5), torch.randn(2, 9, 4, 5)
    assert torch.equal(cat_shuffle(first, rest, 4), channel_shuffle(torch.cat([first, rest], 1), 4))


# ---- the CPU fast paths compute the reference function ---------------------------------------------
def _step_results(net, x, loss_fn):
    """Output, α gradients and weight gradients of one forward/backward, and the BN statistics after it."""
    for p in net.parameters():
        p.grad = None
    out = net(x)
    loss_fn(out, torch.zeros_like(out) if out.shape[1] == 1 and out.ndim == 4 else torch.arange(len(x)) % 3).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out.detach(), grads, {n: b.clone() for n, b in net.named_buffers()}


@pytest.mark.parametrize("task,k,edge_norm", [("classification", 4, True), ("classification", 1, False),
                                              ("segmentation", 2, False)])
def test_fast_cpu_ops_compute_the_reference_function(task, k, edge_norm):
    """Channels-last convolution pairs and max pools and the shared ReLU (ops.fast_cpu_ops): same
    output, gradients and BN statistics as the reference NCHW ops, to float rounding."""
    torch.manual_seed(0)
    net = SearchNetwork(8, 3 if task == "classification" else 1, 4, task=task, in_channels=3, partial_k=k,
                        edge_norm=edge_norm).train()
    state = {n: t.clone() for n, t in net.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    loss_fn = task_loss_fn(task)
    layouts = []
    sep = next(m for m in net.modules() if isinstance(m, SepConv))
    hook = sep.op[1].register_forward_pre_hook(
        lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    fast = _step_results(net, x, loss_fn)
    net.load_state_dict(state)
    with reference_ops():
        ref = _step_results(net, x, loss_fn)
    hook.remove()
    assert layouts == [True, False]  # the fast path ran channels-last, the reference NCHW
    assert torch.allclose(fast[0], ref[0], rtol=1e-5, atol=1e-6)
    assert fast[1].keys() == ref[1].keys() and len(fast[1]) == len(list(net.parameters()))
    for n in ref[1]:
        scale = float(ref[1][n].abs().max()) + 1e-12
        assert float((fast[1][n] - ref[1][n]).abs().max()) <= 1e-4 * scale, n
    for n in ref[2]:
        assert torch.allclose(fast[2][n].float(), ref[2][n].float(), rtol=1e-5, atol=1e-6), n


def test_fast_cpu_ops_keep_the_state_dict_keys():
    """The fast paths wrap no parameters: a supernet's keys are the reference layout's (HPE-DARTS
    inherits weights by these names; checkpoints load across versions)."""
    net = SearchNetwork(8, 3, 3)
    keys = set(net.state_dict())
    assert "cells.0._ops.0._ops.1.1.running_mean" in keys  # max pool's BN: Sequential(pool, BN)
    assert "cells.0._ops.0._ops.4.op.1.weight" in keys  # sep_conv_3x3's first depthwise conv
    assert not any(".module." in k for k in keys)


# ---- DARTS second order -----------------------------------------------------------------------
def _smooth(module):
    """ReLU → Softplus, so that the loss is smooth and a finite difference converges (a ReLU
    supernet of this size crosses activation kinks within any usable step)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Softplus())
        else:
            _smooth(child)
    return module


def test_second_order_gradient_matches_exact_unrolled_gradient():
    torch.manual_seed(0)
    smooth_ops = [["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"]] * NUM_EDGES
    net = _smooth(SearchNetwork(2, 3, 3, in_channels=1, primitives_normal=smooth_ops,
                                primitives_reduce=smooth_ops)).double()
    net.train()
    loss_fn = task_loss_fn("classification")
    xt, yt = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    xv, yv = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    eta = 0.5
    approx, _ = arch_grads_second_order(net, loss_fn, xt, yt, xv, yv, eta)
    first, _ = arch_grads_first_order(net, loss_fn, xv, yv)

    # exact: d/dα L_val(w − η ∇_w L_train(w, α), α) by double backprop
    named = net.named_weight_parameters()
    names, w = [n for n, _ in named], [p for _, p in named]
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    g = torch.autograd.grad(loss_fn(functional_call(net, dict(buffers), (xt,)), yt), w, create_graph=True,
                            allow_unused=True)
    w_virtual = {n: p - eta * (gi if gi is not None else 0) for n, p, gi in zip(names, w, g)}
    lv = loss_fn(functional_call(net, {**buffers, **w_virtual}, (xv,)), yv)
    exact = torch.autograd.grad(lv, net.arch_parameters())
    for a, e, f in zip(approx, exact, first):
        assert (a - e).norm() < 1e-2 * e.norm()  # finite-difference HVP with R = 0.01/‖v‖
        assert (f - e).norm() > 0.3 * e.norm()  # the unrolled term matters: order 2 ≠ order 1


# ---- P-DARTS ----------------------------------------------------------------------------------
def test_pdarts_shrink_keeps_strongest_ops():
    probs = np.tile(np.linspace(0.05, 0.4, len(PRIMITIVES)), (NUM_EDGES, 1))  # later primitives stronger
    kept = pdarts_shrink(probs, full_space(), 5)
    assert all(p == PRIMITIVES[3:] for p in kept)
    again = pdarts_shrink(np.tile([0.5, 0.1, 0.2, 0.15, 0.05], (NUM_EDGES, 1)), kept, 3)
    assert all(p == ["skip_connect", "sep_conv_5x5", "dil_conv_3x3"] for p in again)
    assert pdarts_shrink(np.tile([0.9, 0.05, 0.05], (NUM_EDGES, 1)), [["none", "a", "b"]] * NUM_EDGES, 1,
                         drop_none=True)[0] == ["a"]


def test_pdarts_limit_skips():
    prims = [["none", "skip_connect", "sep_conv_3x3"]] * NUM_EDGES
    probs = np.tile([0.1, 0.6, 0.3], (NUM_EDGES, 1))
    probs[:, 1] += np.linspace(0, 0.01, NUM_EDGES)  # distinct skip strengths
    assert _skips(derive_cell(probs, prims)) == 8
    gene = pdarts_limit_skips(probs, prims, 2)
    assert _skips(gene) == 2
    assert {op for op, _ in gene} == {"skip_connect", "sep_conv_3x3"}
    assert _skips(pdarts_limit_skips(probs, prims, 0)) == 0


def test_pdarts_stages_shrink_space_and_limit_skips(digits, tmp_path):
    opts = SearchOptions.of(algorithm="p-darts", pdarts={"stages": (3, 3, 4), "keep": (5, 3, 1), "max_skips": 1},
                            **{**TINY, "layers": 3})
    res = run_search(opts, digits, tmp_path, progress=False)
    history = json.loads(res.alpha_history_path.read_text())
    assert [h["stage"] for h in history] == [0, 1, 2]
    assert [h["layers"] for h in history] == [3, 3, 4]
    for h, n_ops in zip(history, (8, 5, 3)):
        assert {len(p) for p in h["primitives_normal"]} == {n_ops} == {len(p) for p in h["primitives_reduce"]}
        assert np.asarray(h["normal"]).shape == (NUM_EDGES, n_ops)
    # the ops kept after stage 0 are the 5 strongest of its final α on each edge
    w0, p0 = np.asarray(history[0]["normal"]), history[0]["primitives_normal"]
    assert history[1]["primitives_normal"] == pdarts_shrink(w0, p0, 5)
    assert _skips(res.genotype.normal) <= 1


def test_pdarts_skip_dropout_schedule_and_module():
    assert pdarts_dropout(0.4, 0, 25, 10) == pytest.approx(0.4 * 24 / 25)
    assert pdarts_dropout(0.4, 12, 25, 10) == pytest.approx(0.4 * math.exp(-0.4))
    op = MixedOp(4, 1, PRIMITIVES, skip_dropout=0.5)
    skip = op._ops[PRIMITIVES.index("skip_connect")]
    assert isinstance(skip[1], torch.nn.Dropout)
    op.set_skip_dropout(0.1)
    assert skip[1].p == 0.1


# ---- λ-DARTS ----------------------------------------------------------------------------------
def test_lambda_perturbation_is_gradient_of_alignment():
    torch.manual_seed(0)
    gs = [torch.randn(NUM_EDGES, 8, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    flat = [g.reshape(-1) for g in gs]
    lam = sum(torch.nn.functional.cosine_similarity(flat[i], flat[j], dim=0)
              for i in range(4) for j in range(i + 1, 4)) / 6
    exact = torch.autograd.grad(lam, gs)
    for p, e in zip(lambda_perturbations([g.detach() for g in gs]), exact):
        torch.testing.assert_close(p, e)
    assert lambda_alignment([g.detach() for g in gs]) == pytest.approx(float(lam.detach()))


def test_lambda_regularizer_changes_weight_gradient():
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 5, in_channels=1)  # 3 normal cells
    net.train()
    loss_fn = task_loss_fn("classification")
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))

    def grads(lam):
        torch.manual_seed(1)
        stats = weight_gradients(net, loss_fn, x, y, lam=lam)
        return [p.grad.clone() for p in net.weight_parameters() if p.grad is not None], stats

    plain, s0 = grads(0.0)
    zero_lambda_path, _ = grads(1e-12)
    reg, s1 = grads(0.5)
    assert "alignment" in s1 and s1["loss"] == pytest.approx(s0["loss"])
    diff = sum(float((a - b).norm()) for a, b in zip(plain, reg))
    assert diff > 1e-4
    assert sum(float((a - b).norm()) for a, b in zip(plain, zero_lambda_path)) < 1e-6
    assert linear_ramp(0.125, 0, 50) == 0 and linear_ramp(0.125, 49, 50) == 0.125


# ---- EM-DARTS ---------------------------------------------------------------------------------
def test_em_mutation_schedule():
    assert [linear_ramp(0.3, e, 4) for e in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_em_mutated_edge_outputs_one_parametric_op(p):
    torch.manual_seed(0)
    cell = SearchCell(8, 8, 4, False, False, full_space())
    cell.train()
    calls = []
    for op in cell._ops:
        op.register_forward_hook(lambda m, inp, out: calls.append((m, inp, out)))
    w = torch.softmax(torch.randn(NUM_EDGES, len(PRIMITIVES)), -1)
    cell(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8), w, None, mutation_prob=p)
    assert len(calls) == NUM_EDGES
    parametric = {PRIMITIVES.index(n) for n in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")}
    for m, (h, weights, mutate), out in calls:
        if p == 0.0:
            assert mutate is None
            continue
        assert mutate in parametric
        torch.manual_seed(0)
        torch.testing.assert_close(out, m._ops[mutate](h))
        assert not torch.allclose(out, m.forward(h, weights))  # forward(): no hook re-entry


# ---- integration: the darts frontend's search block and `compress search` -------------------------
def test_pipeline_search_block_is_cached_beside_stages(tmp_path):
    from compressor.pipeline import Pipeline

    doc = {"data": {"name": "insar-synthetic", "size": 16, "n_train": 16, "n_val": 8, "n_test": 8},
           "model": {"frontend": "darts", "init_channels": 4, "layers": 3,
                     "search": {"algorithm": "pc-darts", "epochs": 1, "init_channels": 4, "layers": 3,
                                "batch_size": 8}},
           "evaluate": {"latency": {"enabled": False}, "macs": False}}
    p = Pipeline.from_dict(doc)
    assert p.to_line().startswith("darts{search={algorithm=pc-darts, epochs=1")
    first = p.run(out=tmp_path, progress=False)
    assert first.ir.meta["genotype"] == "searched:pc-darts"
    searches = list(tmp_path.glob("search-*/genotype.json"))
    assert len(searches) == 1
    # retraining the baseline (a changed train block) reuses the finished search
    doc["model"]["train"] = {"epochs": 1, "batch_size": 8}
    again = Pipeline.from_dict(doc).run(out=tmp_path, progress=False)
    assert again.cached == [False]
    assert list(tmp_path.glob("search-*/genotype.json")) == searches
    assert again.ir.meta["genotype_json"] == first.ir.meta["genotype_json"]


def test_genotype_and_search_are_exclusive():
    from compressor.errors import ConfigError
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError, match="either genotype .* or search"):
        Pipeline.from_dict({"data": "digits", "model": {"frontend": "darts", "genotype": "DARTS_V2", "search": {}}})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        Pipeline.from_dict({"data": "digits", "model": {"frontend": "darts", "search": {"epoch": 1}}})


def test_compress_search_cli(tmp_path):
    from click.testing import CliRunner

    from compressor.cli import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\ndata: {name: digits}\nsearch: {algorithm: darts, epochs: 1, init_channels: 4, "
                   "layers: 3, batch_size: 16, max_steps: 2}\n")
    r = CliRunner().invoke(main, ["search", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "genotype.json").is_file() and "genotype:" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: digits}\nsearch: {algorithm: pcdarts}\n")
    r = CliRunner().invoke(main, ["search", str(bad)])
    assert r.exit_code == 2 and "unknown search algorithm 'pcdarts'; did you mean 'pc-darts'?" in r.output
    assert "valid: d-darts, darts, em-darts, evolution, hpe-darts" in r.output  # the registry's names


# ---- the architecture distance along the search, and the early end of a stage (D-DARTS §4.2.4) ----------
def test_history_records_the_genotype_distance_and_a_stable_stage_ends_early(digits, tmp_path):
    frozen = {**TINY, "epochs": 6, "max_steps": 1, "algorithm": "darts", "warmup_epochs": 6}  # α never steps
    res = run_search(SearchOptions.of(**frozen, stop_stable_epochs=2, stop_min_epochs=3), digits, tmp_path / "a",
                     progress=False)
    history = json.loads(res.alpha_history_path.read_text())
    assert res.epochs_run == 3 and len(history) == 3 and history[-1]["stopped_early"]
    assert history[0]["distance_prev"] is None and history[0]["unchanged"] is None
    assert [h["distance_prev"] for h in history[1:]] == [0.0, 0.0] and all(h["unchanged"] for h in history[1:])
    assert Genotype.from_dict(history[-1]["genotype"]) == res.genotype
    # off by default: all 6 epochs; with α moving fast the genotype changes and the distance shows it
    full = run_search(SearchOptions.of(**frozen), digits, tmp_path / "b", progress=False)
    assert full.epochs_run == 6
    moving = {**frozen, "warmup_epochs": 0, "a_lr": 0.5, "max_steps": 2}
    h = json.loads(run_search(SearchOptions.of(**moving), digits, tmp_path / "c", progress=False)
                   .alpha_history_path.read_text())
    changed = [e for e in h[1:] if not e["unchanged"]]
    assert changed and any(e["distance_prev"] > 0 for e in changed)  # the edge encoding may miss a move


def test_a_search_folder_of_an_older_version_resumes_when_new_options_keep_their_defaults(digits, tmp_path):
    """An option added later (here: pretend d-darts's dd_w01 and the finished-result file did not exist) reads
    as its default, so an upgrade does not orphan a half-done search; a non-default value still refuses."""
    from compressor.frontends.darts.search import CHECKPOINT, RESULT

    out = tmp_path / "s"
    run_search(SearchOptions.of(**TINY), digits, out, progress=False)
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    del ckpt["options"]["dd_w01"]
    torch.save(ckpt, out / CHECKPOINT)
    (out / RESULT).unlink()  # not finished yet: the loop resumes from the checkpoint
    res = run_search(SearchOptions.of(**{**TINY, "epochs": 2}), digits, out, progress=False)
    assert res.resumed_from == 1 and res.epochs_run == 1
    with pytest.raises(ConfigError, match=r"different options \(pc_k\)"):
        (out / RESULT).unlink()
        run_search(SearchOptions.of(**{**TINY, "epochs": 3, "pc": {"k": 2}}), digits, out, progress=False)
