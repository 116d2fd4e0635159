"""The nas pass: a frontend's search replaces the model inside a pipeline (search → build → [inherit] → train)."""
from __future__ import annotations

import json

import pytest
import torch

from compressor.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEARCH = {"stage_channels": [8, 16, 24], "stage_strides": [1, 2, 2], "stem_channels": 8, "max_depth": 2,
          "width_mults": [0.5, 1.0], "epochs": 1, "max_steps": 2, "batch_size": 16, "bn_batches": 1,
          "population": 4, "generations": 1}


def _pipe(nas: dict, passes: list | None = None) -> dict:
    return {"name": "p", "seed": 0,
            "data": {"name": "insar-synthetic", "size": 16, "n_train": 32, "n_val": 16, "n_test": 8},
            "model": {"frontend": "zoo", "model": "seg-cnn", "width": 8, "train": {"epochs": 1, "max_steps": 1}},
            "passes": [{"nas": nas}, *(passes or [])], "export": []}


def test_nas_builds_the_budget_winner_with_the_supernets_weights_and_caches(tmp_path) -> None:
    from safetensors.torch import load_file

    from compressor.frontends.hierarchical.genotypes import HierGenotype
    from compressor.frontends.hierarchical.networks import HierarchicalNet
    from compressor.frontends.hierarchical.supernet import Supernet, SupernetSpace
    from compressor.pipeline import Pipeline

    pipe = _pipe({"search": SEARCH, "budget": 1, "init": "supernet", "epochs": 0},
                 [{"distill": {"teacher": "baseline", "epochs": 1, "max_steps": 1}}])
    result = Pipeline.from_dict(pipe).run(out=tmp_path / "run", progress=False)
    stage = tmp_path / "run" / "01_nas"
    winner = HierGenotype.load(stage / "search" / "genotype_budget1.json")
    doc = json.loads((stage / "stage.json").read_text())["history"]["stats"]
    assert doc["genotype"] == "search/genotype_budget1.json" and doc["budget"] == 1 and doc["epochs"] == 0
    assert isinstance(result.ir.module, HierarchicalNet) and result.ir.module.genotype == winner
    # init: supernet: the winner's convolutions are the supernet's slices (only BatchNorm was re-estimated)
    space = SupernetSpace(((8, 1), (16, 2), (24, 2)), 8, max_depth=2, width_mults=(0.5, 1.0))
    supernet = Supernet(space, 2, 1, segmentation=True)
    supernet.load_state_dict(load_file(str(next((tmp_path / ".store" / ".searches").iterdir()) /
                                           "supernet.safetensors")))
    expected = supernet.extract(winner, (16, 16)).state_dict()
    from compressor.ir import ModelIR

    nas_ir = ModelIR.load(stage)
    got = nas_ir.module.state_dict()
    convs = [k for k, v in expected.items() if k.endswith("weight") and v.ndim == 4]
    assert convs and all(torch.equal(got[k], expected[k]) for k in convs)
    assert not torch.equal(got["stem.body.1.running_mean"], expected["stem.body.1.running_mean"])
    # a second run reuses the stage; another budget trains another winner from the same, finished search
    searched = next((tmp_path / ".store" / ".searches").iterdir()) / "evolution.json"
    before = searched.stat().st_mtime_ns
    Pipeline.from_dict(pipe).run(out=tmp_path / "run", progress=False)
    other = _pipe({"search": SEARCH, "budget": 3, "init": "supernet", "epochs": 0})
    result3 = Pipeline.from_dict(other).run(out=tmp_path / "run3", progress=False)
    assert searched.stat().st_mtime_ns == before
    winner3 = HierGenotype.load(tmp_path / "run3" / "01_nas" / "search" / "genotype_budget3.json")
    assert result3.ir.module.genotype == winner3


@pytest.mark.parametrize("nas, message", [
    ({"search": {"stage_channelz": [8]}}, "nas: search: unknown search option 'stage_channelz'"),
    ({"frontend": "zoo"}, "nas: frontend: frontend zoo does not search; frontends that do:"),
    ({"model": {"genotype": "mobile-small"}}, "nas: model: genotype is the search's winner; remove it"),
    ({"init": "warm"}, "init"),
])
def test_nas_options_are_checked_in_one_line(nas, message) -> None:
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError) as exc:
        Pipeline.from_dict(_pipe(nas))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_budget_beyond_the_searchs_is_one_line(tmp_path) -> None:
    from compressor.pipeline import Pipeline

    with pytest.raises(ConfigError, match=r"nas: budget 4 but the search has 3 budgets; give 1..3 or null"):
        Pipeline.from_dict(_pipe({"search": SEARCH, "budget": 4})).run(out=tmp_path / "run", progress=False)
