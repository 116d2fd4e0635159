"""The hierarchical supernet: elastic slicing, BN recalibration and weight inheritance (`supernet.py`)."""
from __future__ import annotations

import random

import torch

from compressor.frontends.hierarchical.supernet import Supernet, SupernetSpace, recalibrate_bn

SPACE = SupernetSpace(stages=((8, 1), (16, 2)), stem_channels=8, max_depth=2, width_mults=(0.5, 1.0))


def _net() -> Supernet:
    torch.manual_seed(0)
    return Supernet(SPACE, 3, 5)


def _batches(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 16, 16, generator=g) for _ in range(n)]


def test_elastic_slices_have_the_expected_shapes() -> None:
    net = _net()
    block = net.stages[1][0]  # max cin 8 (stage 0 at width 1.0), max cout 16, max hidden 8 * 6
    assert tuple(block.depthwise.conv.weight.shape) == (48, 1, 7, 7)
    assert tuple(block.depthwise.weight(24, 24, 3).shape) == (24, 1, 3, 3)
    assert tuple(block.depthwise.weight(48, 48, 5).shape) == (48, 1, 5, 5)
    # the 3×3 kernel is the centre of the 7×7 one
    assert torch.equal(block.depthwise.weight(24, 24, 3), block.depthwise.conv.weight[:24, :, 2:5, 2:5])
    assert tuple(block.expand.weight(8, 24).shape) == (24, 8, 1, 1)
    assert tuple(block.project.weight(24, 8).shape) == (8, 24, 1, 1)
    g = SPACE.genotype([2, 1], [0.5, 1.0], [[(5, 3), (3, 6)], [(7, 3)]])
    sub = net.extract(g)
    convs = [m.weight.shape for m in sub.stages[1][0].body if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(s) for s in convs] == [(24, 8, 1, 1), (24, 1, 7, 7), (16, 24, 1, 1)]
    assert net(torch.randn(2, 3, 16, 16), g).shape == (2, 5)
    import pytest

    from compressor.frontends.hierarchical.genotypes import GENOTYPES, HierGenotype

    with pytest.raises(ValueError, match="not a candidate of this supernet: it has 5 stages"):
        net.extract(HierGenotype(8, GENOTYPES["mobile-small"].stages))


def test_recalibration_changes_stats_and_inherited_network_matches() -> None:
    net = _net()
    rng = random.Random(0)
    batches, x = _batches(), torch.randn(2, 3, 16, 16)
    bn = net.stages[0][0].expand.bn
    with torch.no_grad():  # stale statistics, as training leaves them
        bn.running_mean.fill_(3.0)
    for g in [SPACE.largest(), SPACE.smallest(), SPACE.sample(rng), SPACE.sample(rng)]:
        recalibrate_bn(net, batches, g)
        assert not torch.equal(bn.running_mean[:24], torch.full((24,), 3.0))
        with torch.no_grad():
            out_super = net(x, g)
        sub = net.extract(g)
        recalibrate_bn(sub, batches)
        with torch.no_grad():
            out_sub = sub(x)
        torch.testing.assert_close(out_sub, out_super, atol=1e-5, rtol=1e-4)


SEARCH = ("name: s\nfrontend: hierarchical\ndata: {name: digits}\n"
          "search: {stage_channels: [8, 16], stage_strides: [1, 2], stem_channels: 8, max_depth: 2, "
          "width_mults: [0.5, 1.0], epochs: 1, max_steps: 3, batch_size: 32, bn_batches: 1, population: 4, "
          "generations: 2}\n")


def test_compress_search_writes_one_genotype_per_budget_that_the_frontend_loads(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from compressor.cli import main
    from compressor.frontends.hierarchical.genotypes import HierGenotype
    from compressor.pipeline import Pipeline

    cfg = tmp_path / "s.yaml"
    cfg.write_text(SEARCH)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["search", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "genotype:" in r.output and "budget 3" in r.output
    doc = json.loads((out / "evolution.json").read_text())
    assert len(doc["hypervolume"]) == 3 and len(doc["population"]) == 4
    b = doc["budgets"]
    assert b[1] == 2 * b[0] and b[2] == 4 * b[0]
    winners = [HierGenotype.load(out / f"genotype_budget{k}.json") for k in (1, 2, 3)]
    for w, budget, info in zip(winners, b, doc["winners"]):
        assert SPACE.contains(w) is None and info["macs"] <= budget
    assert HierGenotype.load(out / "genotype.json") == winners[-1]
    pipe = {"name": "p", "seed": 0, "data": {"name": "digits"},
            "model": {"frontend": "hierarchical", "genotype": str(out / "genotype_budget1.json"),
                      "train": {"epochs": 1, "batch_size": 64, "max_steps": 1}},
            "passes": [], "export": []}
    result = Pipeline.from_dict(pipe).run(out=tmp_path / "run", progress=False)
    assert sum(1 for m in result.ir.module.modules() if type(m).__name__ == "Block") == \
        1 + sum(s.depth for s in winners[0].stages)


def test_search_options_are_checked() -> None:
    import pytest

    from compressor.frontends.hierarchical.evolution import HierarchicalSearchOptions

    with pytest.raises(ValueError, match="one stride per stage"):
        HierarchicalSearchOptions(stage_channels=(8, 16), stage_strides=(1,))
    with pytest.raises(ValueError, match="subset of 3, 6"):
        HierarchicalSearchOptions(expansions=(1, 6))
    with pytest.raises(ValueError, match="include metric"):
        HierarchicalSearchOptions(objectives=("macs", "memory"))


def test_latency_objective_and_budgets_from_the_latency_table(digits, tmp_path) -> None:
    import json

    from compressor.frontends.hierarchical.evolution import HierarchicalSearchOptions, run_search

    def fake_ms(module, shapes) -> float:  # a stand-in for onnxruntime timing: proportional to the parameters
        return 1e-3 * (1 + sum(p.numel() for p in module.parameters()))

    opts = HierarchicalSearchOptions(stage_channels=(8, 16), stage_strides=(1, 2), stem_channels=8, max_depth=2,
                                     width_mults=(0.5, 1.0), epochs=1, max_steps=2, batch_size=32, bn_batches=1,
                                     population=4, generations=1, objectives=("metric", "macs", "latency"),
                                     budgets=(1e9,), latency_budgets=(1e9,))
    result = run_search(opts, digits, tmp_path / "out", measure=fake_ms)
    doc = json.loads((tmp_path / "out" / "evolution.json").read_text())
    assert all(p["latency"] > 0 for p in doc["population"])
    assert result.genotype_path is not None and doc["winners"][0]["latency"] > 0
    assert list((tmp_path / "out" / ".store" / ".tables").glob("latency-*.json"))
    # a latency budget below every candidate's latency leaves that budget without a winner
    from compressor.frontends.hierarchical.evolution import budget_winners

    scored = [{"metric": 0.5, "macs": 10.0, "memory": 1.0, "latency": 2.0},
              {"metric": 0.7, "macs": 20.0, "memory": 1.0, "latency": 3.0}]
    assert budget_winners(scored, ["metric", "macs"], [30.0, 30.0], [1.0, 2.5]) == [None, 0]


SEG_SPACE = SupernetSpace(stages=((8, 1), (16, 2), (24, 2)), stem_channels=8, max_depth=2, width_mults=(0.5, 1.0))


def test_segmentation_supernet_slices_the_decoder_and_matches_its_extracted_network() -> None:
    torch.manual_seed(0)
    net = Supernet(SEG_SPACE, 2, 1, segmentation=True)
    # skips before the two stride-2 stages: the stage-0 output (max 8) and the stage-1 output (max 16)
    assert net.skip_at == (1, 2)
    step = net.decoder[0]  # deepest (max 24) + the stage-1 skip (max 16) → 16
    assert tuple(step.conv.weight.shape) == (16, 40, 3, 3)
    w = step.weight(16, 8)  # a candidate at half width: deeper 16 of 24, skip 8 of 16
    assert torch.equal(w[:, :16], step.conv.weight[:8, :16]) and torch.equal(w[:, 16:], step.conv.weight[:8, 24:32])
    rng = random.Random(3)
    batches, x = [torch.randn(4, 2, 16, 16) for _ in range(2)], torch.randn(2, 2, 16, 16)
    for g in [SEG_SPACE.largest(), SEG_SPACE.smallest(), SEG_SPACE.sample(rng), SEG_SPACE.sample(rng)]:
        recalibrate_bn(net, batches, g)
        with torch.no_grad():
            out_super = net(x, g)
        assert out_super.shape == (2, 1, 16, 16)
        sub = net.extract(g, (16, 16))
        recalibrate_bn(sub, batches)
        with torch.no_grad():
            torch.testing.assert_close(sub(x), out_super, atol=1e-5, rtol=1e-4)


def test_decoder_macs_equal_the_counted_macs_of_the_decoder() -> None:
    from compressor.evaluate.stats import count_macs
    from compressor.frontends.hierarchical.blocks import block_configs
    from compressor.frontends.hierarchical.evolution import network_macs
    from compressor.frontends.hierarchical.latency import DecoderHead, decoder_macs, head_config

    g = SEG_SPACE.genotype([1, 2, 1], [1.0, 0.5, 1.0], [[(3, 3)], [(5, 6), (3, 3)], [(7, 3)]])
    cfg = head_config(g, block_configs(g, (2, 16, 16)), 1, segmentation=True)
    # by hand: widths stem 8, stage0 8, stage1 8 (16 × 0.5), stage2 24; skips stage0 out (8 @ 16×16) and
    # stage1 out (8 @ 8×8); steps 24+8 → 8 at 8×8, 8+8 → 8 at 16×16, head 8 → 1 at 16×16
    assert decoder_macs(cfg) == 9 * 32 * 8 * 64 + 9 * 16 * 8 * 256 + 8 * 256
    head = DecoderHead(cfg)
    counted = count_macs(head, (torch.zeros(1, 24, 4, 4), torch.zeros(1, 8, 16, 16), torch.zeros(1, 8, 8, 8)))
    assert counted == decoder_macs(cfg)
    from compressor.frontends.hierarchical.networks import genotype_macs

    assert network_macs(g, (2, 16, 16), 1, True) == genotype_macs(g, (2, 16, 16)) + decoder_macs(cfg)


def test_search_on_segmentation_data_scores_iou_and_writes_winners(tmp_path) -> None:
    import json

    from compressor.data import build_data
    from compressor.frontends.hierarchical.evolution import HierarchicalSearchOptions, run_search
    from compressor.frontends.hierarchical.genotypes import HierGenotype

    data = build_data("insar-synthetic", {"size": 16, "n_train": 32, "n_val": 16, "n_test": 8}, seed=0)
    opts = HierarchicalSearchOptions(stage_channels=(8, 16, 24), stage_strides=(1, 2, 2), stem_channels=8,
                                     max_depth=2, width_mults=(0.5, 1.0), epochs=1, max_steps=2, batch_size=16,
                                     bn_batches=1, population=4, generations=1)
    result = run_search(opts, data, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "evolution.json").read_text())
    assert all(0.0 <= p["metric"] <= 1.0 for p in doc["population"])
    assert doc["budgets"][0] >= 1 and result.genotype_path is not None
    assert SEG_SPACE.contains(HierGenotype.load(result.genotype_path)) is None
