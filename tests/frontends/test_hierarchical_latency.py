"""The hierarchical space on a latency table: parts cover the whole network, the real onnxruntime path runs."""
from __future__ import annotations

import math
import random

import pytest
import torch

from compressor.evaluate.latency_table import LatencyTable
from compressor.frontends.hierarchical import GENOTYPES, HierarchicalNet
from compressor.frontends.hierarchical.genotypes import HierGenotype, sample_genotype
from compressor.frontends.hierarchical.latency import (HeadConfig, check_predictor, latency_parts, make_part,
                                                       part_inputs)


@pytest.mark.parametrize("segmentation", [False, True])
@pytest.mark.parametrize("name", ["mobile-small", "mobilenet-v2"])
def test_parts_are_the_whole_network(name, segmentation):
    g = GENOTYPES[name]
    parts = latency_parts(g, (3, 32, 32), 10, segmentation)
    assert isinstance(parts[-1], HeadConfig) and parts[0].name == "stem"
    modules = [make_part(c) for c in parts]
    net = HierarchicalNet(g, 3, 10, segmentation, input_hw=(32, 32))
    assert sum(p.numel() for m in modules for p in m.parameters()) == sum(p.numel() for p in net.parameters())
    head = modules[-1].eval()
    out = head(*[torch.randn(2, *s) for s in part_inputs(parts[-1])])
    assert tuple(out.shape) == ((2, 10, 32, 32) if segmentation else (2, 10))


def test_sampled_genotypes_are_valid_and_seeded():
    a = [sample_genotype(random.Random(3)).to_dict() for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(0)
    for _ in range(20):
        g = sample_genotype(rng, stages=3, max_depth=3)
        assert HierGenotype.from_dict(g.to_dict()) == g
        assert all(st.blocks[0].op != "skip" for st in g.stages)


def test_check_predictor_runs_on_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    result = check_predictor(tmp_path, n=4, input_shape=(3, 16, 16), warmup=1, iters=3, rounds=1, threads=1)
    assert -1.0 <= result["rho"] <= 1.0 or math.isnan(result["rho"])
    assert math.isfinite(result["mape"]) and len(result["measured_ms"]) == 4
    assert all(v > 0 for v in result["measured_ms"]) and result["parts_measured"] > 0
    # the same networks again: nothing left to measure in the stored table
    parts = [p for g in result["genotypes"] for p in latency_parts(HierGenotype.from_dict(g), (3, 16, 16), 10)]
    table = LatencyTable.load_or_measure(tmp_path, "onnxruntime-cpu", (3, 16, 16), 1, parts, make_part,
                                         part_inputs=part_inputs, threads=1)
    assert table.measured == 0 and table.predict(parts[:3]) > 0
