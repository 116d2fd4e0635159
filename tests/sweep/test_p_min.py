"""m_factor.p_min: trials | space | <number>. `space` on seed 003's space is the all-3×3 ResNet, counted here by
hand and by building that ResNet directly; a fixed P_min does not move as trials arrive; invalid values and
spaces without a smallest network are refused in one line before any trial."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_hardening import assert_one_line_error, invoke

from compressor.errors import ConfigError
from compressor.frontends.vision import ResNet
from compressor.sweep import smallest
from compressor.sweep.figures import sweep_p_min, trial_figures
from compressor.sweep.objectives import m_factor
from compressor.sweep.report import write_sweep_report
from compressor.sweep.smallest import PMin, fixed_p_min, probe_values
from compressor.sweep.spec import SweepSpec
from compressor.sweep.study import make_fitness, open_study, run_sweep

from .test_sweep import BASE, SPACE, _fake_study, sweep_doc

ROOT = Path(__file__).resolve().parents[2]
VALID = ("write trials (the smallest model among the finished trials), space (the smallest network of the sweep's "
         "space) or a positive whole parameter count such as 272474")
INSTEAD = "so the space defines no smallest network; write p_min: trials (the smallest model among the finished " \
          "trials) or a parameter count"


def resnet_params(c_in: int, classes: int, w: int, kernels: list[int]) -> int:
    """Parameters of the zoo's CIFAR ResNet by hand: stem conv3×3 + BN; 3 stages of len(kernels)/3 BasicBlocks
    (conv k×k + BN, conv 3×3 + BN, a 1×1 conv + BN shortcut where the channels change); the linear head."""
    depth = len(kernels) // 3
    total = c_in * w * 9 + 2 * w
    inp = w
    for stage, out in enumerate((w, 2 * w, 4 * w)):
        for i in range(depth):
            k = kernels[stage * depth + i]
            cin = inp if i == 0 else out
            total += cin * out * k * k + 2 * out + out * out * 9 + 2 * out
            if cin != out:
                total += cin * out + 2 * out
        inp = out
    return total + 4 * w * classes + classes


def test_hand_count_is_the_built_resnet_and_the_papers_p_min():
    assert resnet_params(1, 10, 8, [3] * 9) == sum(p.numel() for p in ResNet(1, 10, 8, 3, [3] * 9).parameters())
    assert resnet_params(1, 10, 8, [3] * 9) == 68_642
    k = [3, 5, 7, 3, 7, 5, 5, 3, 7]
    assert resnet_params(1, 10, 8, k) == sum(p.numel() for p in ResNet(1, 10, 8, 3, k).parameters())
    # seed 003's Table 1 is consistent with P_min = 272,474: the all-3×3 ResNet-20 (widths 16/32/64) on
    # CIFAR-10's 3×32×32 images
    assert resnet_params(3, 10, 16, [3] * 9) == 272_474


def test_space_p_min_of_seed_003_is_the_all_3x3_resnet():
    spec = SweepSpec.from_yaml(ROOT / "samples" / "sweep_mfactor.yaml", ["m_factor.p_min=space"])
    pm = fixed_p_min(spec)
    direct = sum(p.numel() for p in ResNet(1, 10, 8, 3, [3] * 9).parameters())  # digits: 1×8×8, 10 classes
    assert pm.value == direct == resnet_params(1, 10, 8, [3] * 9)
    assert pm.source == "space" and pm.network == {f"model.kernels.{i}": 3 for i in range(9)}
    assert pm.describe() == ("P_min: 68,642 (space: the smallest network of the space, model.kernels.0..8=3)")
    assert sweep_p_min(spec, []) == direct and fixed_p_min(spec) is pm  # resolved once per spec


def test_space_picks_each_keys_smallest_value_whatever_its_direction():
    # base kernels [5, 3, 7], width 8: the smallest network is kernels all 3 and width 4
    base = {**BASE, "model": {**BASE["model"], "kernels": [5, 3, 7], "width": 8}}
    spec = SweepSpec.from_dict(sweep_doc(base=base, m_factor={"p_min": "space"},
                                         space={"model.kernels.0": [7, 5, 3], "model.width": [8, 4, 6],
                                                "model.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}))
    pm = fixed_p_min(spec)
    assert pm.network == {"model.kernels.0": 3, "model.width": 4}  # model.train.lr does not shape the network
    assert pm.value == resnet_params(1, 10, 4, [3, 3, 7])


def test_probe_values_of_ranges():
    spec = SweepSpec.from_dict(sweep_doc(space={"model.width": {"low": 2, "high": 6},
                                                "model.seed": {"low": 1, "high": 41, "step": 5},
                                                "model.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}))
    width, seed, lr = spec.params
    assert probe_values(width) == [2, 3, 4, 5, 6]
    assert probe_values(seed) == [1, 6, 11, 16, 21, 26, 31, 36, 41]
    assert len(probe_values(lr)) == 9 and probe_values(lr)[0] == 1.0e-4 and probe_values(lr)[-1] == 1.0e-2
    assert probe_values(lr)[4] == pytest.approx(1.0e-3)  # log-spaced


# ---- a number, and a fixed P_min that does not move --------------------------------------------------------

OBJECTIVES = {"accuracy": "maximize", "params": "minimize"}  # what `_fake_study` tells from the rows


class _Trial:
    def __init__(self, figures):
        self.user_attrs = {"figures": figures}


@pytest.mark.parametrize("p_min", [1000, "space"])
def test_fixed_p_min_does_not_move_as_trials_arrive(p_min):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": p_min}))
    fixed = 1000 if p_min == 1000 else resnet_params(1, 10, 4, [3, 3, 3])
    first = {"accuracy": 0.8, "params": 4.0 * fixed}
    one = [_Trial(first)]
    three = [_Trial(first), _Trial({"accuracy": 0.5, "params": 2.0 * fixed}),
             _Trial({"accuracy": 0.4, "params": 1.5 * fixed})]
    m1 = trial_figures(spec, first, sweep_p_min(spec, one))["m_factor"]
    m3 = trial_figures(spec, first, sweep_p_min(spec, three))["m_factor"]
    assert m1 == m3 == pytest.approx(2 * 0.8 * 0.25 / 1.05)  # S' = 1/4 with 1 and with 3 finished trials
    # with p_min: trials it moves: P_min is the trial's own params, then 1.5·fixed
    moving = SweepSpec.from_dict(sweep_doc())
    assert trial_figures(moving, first, sweep_p_min(moving, one))["m_factor"] == pytest.approx(2 * 0.8 / 1.8)
    assert trial_figures(moving, first, sweep_p_min(moving, three))["m_factor"] == pytest.approx(
        2 * 0.8 * 0.375 / 1.175)


def test_a_number_is_used_verbatim_and_capped_at_a_smaller_trial(tmp_path):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": 1200}, objectives=OBJECTIVES,
                                         sampler={"name": "evolution", "population_size": 2, "sample_size": 2,
                                                  "fitness": "m_factor"}),
                               source=str(tmp_path / "s.yaml"))
    rows = [(3, {"accuracy": 0.9, "params": 2000.0}), (5, {"accuracy": 0.8, "params": 1000.0}),
            (7, {"accuracy": 0.6, "params": 2400.0})]
    (tmp_path / "d").mkdir()
    write_sweep_report(spec, _fake_study(spec, tmp_path / "d", rows), tmp_path / "d")
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    figures = summary["figures"]
    assert figures["0"]["m_factor"] == pytest.approx(2 * 0.9 * 0.6 / 1.5)      # S' = 1200/2000
    assert figures["1"]["m_factor"] == pytest.approx(2 * 0.8 * 1.0 / 1.8)      # 1000 < P_min: S' = 1 (capped)
    assert figures["2"]["m_factor"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)      # S' = 1200/2400
    assert summary["p_min"] == {"value": 1200, "source": "given", "network": {}}
    assert "P_min: 1,200 (given)." in (tmp_path / "d" / "mfactor.md").read_text()
    (tmp_path / "e").mkdir()
    study = _fake_study(spec, tmp_path / "e", rows[:1])
    fitness = make_fitness(spec)  # evolution's fitness: m_factor, with P_min = 1200
    assert fitness(study, study.get_trials()[0]) == pytest.approx(2 * 0.9 * 0.6 / 1.5)


def test_the_report_of_a_space_sweep_keeps_one_p_min_from_1_to_3_trials(tmp_path):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, objectives=OBJECTIVES),
                               source=str(tmp_path / "s.yaml"))
    p_min = resnet_params(1, 10, 4, [3, 3, 3])
    rows = [(5, {"accuracy": 0.9, "params": 2.0 * p_min}), (3, {"accuracy": 0.5, "params": 1.5 * p_min}),
            (7, {"accuracy": 0.4, "params": 3.0 * p_min})]
    seen = []
    for n in (1, 3):
        d = tmp_path / f"d{n}"
        d.mkdir()
        study = _fake_study(spec, d, rows[:n])
        assert study.user_attrs["p_min"] == {"value": p_min, "source": "space",
                                             "network": {k: 3 for k in ("model.kernels.0", "model.kernels.1",
                                                                       "model.kernels.2")}}
        write_sweep_report(spec, study, d)
        seen.append(json.loads((d / "summary.json").read_text())["figures"]["0"]["m_factor"])
    assert seen[0] == seen[1] == pytest.approx(2 * 0.9 * 0.5 / 1.4)
    text = (tmp_path / "d3" / "mfactor.md").read_text()
    assert f"P_min: {p_min:,} (space: the smallest network of the space, model.kernels.0..2=3)." in text


def test_a_resumed_space_sweep_uses_its_recorded_p_min_without_building(tmp_path, monkeypatch):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, objectives=OBJECTIVES),
                               source=str(tmp_path / "s.yaml"))
    (tmp_path / "d").mkdir()
    _fake_study(spec, tmp_path / "d", [(3, {"accuracy": 0.9, "params": 5000.0})])
    again = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, objectives=OBJECTIVES),
                                source=str(tmp_path / "s.yaml"))

    def no_build(_spec):
        raise AssertionError("built again")

    monkeypatch.setattr(smallest, "smallest_network", no_build)
    open_study(again, tmp_path / "d", create=False)
    assert again.resolved_p_min == PMin(resnet_params(1, 10, 4, [3, 3, 3]), "space",
                                        {"model.kernels.0": 3, "model.kernels.1": 3, "model.kernels.2": 3})


def test_a_space_sweep_runs_end_to_end(tmp_path):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, trials=2, sampler={"name": "random", "seed": 0}),
                               source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "sw", store=tmp_path / ".store", progress=False)
    p_min = resnet_params(1, 10, 4, [3, 3, 3])
    for t in result.study.get_trials():
        f = t.user_attrs["figures"]
        assert t.values[0] == pytest.approx(m_factor(f["accuracy"], f["params"], min(p_min, f["params"])))
    assert json.loads((tmp_path / "sw" / "summary.json").read_text())["p_min"]["value"] == p_min


# ---- refused in one line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["smallest", "Space", 0, -5, 272474.5, True, None, [1], 10**16])
def test_invalid_p_min_is_one_line(value):
    with pytest.raises(ConfigError) as exc:
        SweepSpec.from_dict(sweep_doc(m_factor={"p_min": value}))
    assert str(exc.value) == f"m_factor: p_min {value!r} is not valid; {VALID}"


def test_invalid_p_min_through_the_cli_names_the_line(tmp_path):
    doc = sweep_doc(m_factor={"accuracy": "accuracy", "p_min": "smallest"}, trials=1)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "p_min" in t)
    r = invoke("sweep", path, "--out", tmp_path / "sw")
    assert_one_line_error(r, f"{path}:{line}: m_factor: p_min 'smallest' is not valid; {VALID}")
    assert not (tmp_path / "sw").exists()


CLS = {**BASE, "model": {"frontend": "zoo", "model": "cls-cnn", "width": 4, "train": {"epochs": 1}}}
DARTS = {**BASE, "model": {"frontend": "darts", "search": {"epochs": 1}, "init_channels": 4, "layers": 3,
                            "train": {"epochs": 1}}}
VIT = {**BASE, "model": {"frontend": "zoo", "model": "vit", "width": 4, "depth": 1, "train": {"epochs": 1}}}


@pytest.mark.parametrize("changes, where, why", [
    ({"base": CLS, "space": {"model.model": ["cls-cnn", "vit"]}}, "space",
     "model.model chooses among [cls-cnn, vit], values that are not numbers and have no size order"),
    ({"base": {**BASE, "passes": ["prune-l1"]}}, "m_factor",
     "the sweep reads params at the last stage, after passes (prune-l1) that can change the network's size "
     "(stage: baseline reads the built network)"),
    ({"space": {**SPACE, "passes": {"plain": [], "pruned": [{"prune-l1": {"ratio": 0.5}}, "finetune"]}}}, "m_factor",
     "the sweep reads params at the last stage, after passes (prune-l1, finetune) that can change"),
    ({"base": {**BASE, "passes": ["finetune"], "export": ["onnx"]}, "stage": "onnx"}, "m_factor",
     "the sweep reads params at stage 'onnx', after passes (finetune) that can change"),
    ({"base": DARTS, "space": {"model.init_channels": [4, 8]}}, "m_factor",
     "the base's network comes out of an architecture search (model.search) and is known only once the search "
     "has run"),
])
def test_a_space_without_a_smallest_network_is_refused_before_anything_is_built(changes, where, why, monkeypatch):
    monkeypatch.setattr(smallest, "smallest_network", lambda _s: pytest.fail("built"))
    with pytest.raises(ConfigError) as exc:
        SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, **changes))
    text = str(exc.value)
    assert text.startswith(f"{where}: m_factor.p_min: space: {why}") and text.endswith(INSTEAD) and "\n" not in text


def test_reading_the_baseline_stage_allows_passes():
    spec = SweepSpec.from_dict(sweep_doc(base={**BASE, "passes": ["prune-l1"]}, stage="baseline",
                                         m_factor={"p_min": "space"}))
    assert fixed_p_min(spec).value == resnet_params(1, 10, 4, [3, 3, 3])


def test_a_size_not_monotone_in_a_key_is_refused_before_any_trial(tmp_path):
    # vit on 8×8 digits: the patch embedding grows with the patch, the position embedding shrinks
    spec = SweepSpec.from_dict(sweep_doc(base=VIT, space={"model.patch_size": [1, 2, 8]}, m_factor={"p_min": "space"}),
                               source=str(tmp_path / "s.yaml"))
    with pytest.raises(ConfigError) as exc:
        run_sweep(spec, out=tmp_path / "sw", store=tmp_path / ".store", progress=False)
    assert str(exc.value) == (f"space: m_factor.p_min: space: the network's parameter count is not monotone in "
                              f"model.patch_size (1: 3,514, 2: 2,794, 8: 3,514), {INSTEAD}")
    assert not (tmp_path / "sw").exists()  # refused before the study or any trial


def test_keys_whose_effects_on_size_interact_are_refused(tmp_path):
    # a user model whose hidden width is 5 at (a, b) = (2, 2), 2 with one of them at 1, and 10 with both at 1
    (tmp_path / "interacting_model.py").write_text(
        "import torch.nn as nn\n"
        "def make(a=2, b=2):\n"
        "    h = {(1, 1): 10, (1, 2): 2, (2, 1): 2, (2, 2): 5}[(a, b)]\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, h), nn.Linear(h, 10))\n")
    base = {**BASE, "model": {"frontend": "torch", "factory": "interacting_model:make", "kwargs": {"a": 2, "b": 2},
                              "search_path": str(tmp_path), "train": {"epochs": 1}}}
    spec = SweepSpec.from_dict(sweep_doc(base=base, space={"model.kwargs.a": [1, 2], "model.kwargs.b": [1, 2]},
                                         m_factor={"p_min": "space"}), source="s.yaml")
    with pytest.raises(ConfigError) as exc:
        fixed_p_min(spec)
    params = {h: 64 * h + h + 10 * h + 10 for h in (2, 10)}
    assert str(exc.value) == (f"s.yaml: m_factor.p_min: space: the keys' effects on size interact (all at their "
                              f"smallest values: {params[10]:,} params, more than model.kwargs.a alone at its "
                              f"smallest: {params[2]:,}), {INSTEAD}")


def test_a_journal_with_a_foreign_p_min_is_one_line(tmp_path):
    spec = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, objectives=OBJECTIVES),
                               source=str(tmp_path / "s.yaml"))
    (tmp_path / "d").mkdir()
    study = _fake_study(spec, tmp_path / "d", [(3, {"accuracy": 0.9, "params": 5000.0})])
    study.set_user_attr("p_min", {"value": -3, "source": "space", "network": {}})
    again = SweepSpec.from_dict(sweep_doc(m_factor={"p_min": "space"}, objectives=OBJECTIVES),
                                source=str(tmp_path / "s.yaml"))
    with pytest.raises(ConfigError) as exc:
        open_study(again, tmp_path / "d", create=False)
    assert str(exc.value).startswith(f"{tmp_path / 'd' / 'study.journal'} is not a readable sweep study (p_min "
                                     "{'value': -3, 'source': 'space', 'network': {}}, not a recorded P_min of the "
                                     "space); restore it from a copy")
