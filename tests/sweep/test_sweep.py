"""`compress sweep`: validation before any trial, every sampler end to end on a tiny space, resume after a
kill, failing trials, the report (Pareto front, M-factor, budgets) against hand-computed values."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import main
from compressor.errors import ConfigError
from compressor.sweep.spec import SweepSpec
from compressor.sweep.study import JOURNAL, open_study, run_sweep

BASE = {"name": "b", "seed": 0, "data": {"name": "digits", "train_fraction": 0.3, "val_fraction": 0.2},
        "model": {"frontend": "zoo", "model": "resnet", "width": 4, "depth": 1, "kernels": [3, 3, 3],
                  "train": {"epochs": 1, "batch_size": 128}},
        "evaluate": {"batch_size": 256, "macs": False, "latency": {"backends": []}}}
SPACE = {"model.kernels.0": [3, 5, 7], "model.kernels.1": [3, 5], "model.kernels.2": [3, 5]}


def sweep_doc(**changes):
    doc = {"name": "t", "base": BASE, "space": SPACE, "objectives": {"m_factor": "maximize"},
           "m_factor": {"accuracy": "accuracy"}, "trials": 4}
    doc.update(changes)
    return doc


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("shared") / ".store"  # trials of every test here share stages


@pytest.mark.parametrize("sampler", [
    "grid", {"name": "random", "seed": 1}, {"name": "tpe", "n_startup_trials": 2}, {"name": "nsga2", "population_size": 2},
    {"name": "evolution", "population_size": 2, "sample_size": 2}, {"name": "rl", "lr": 0.5}])
def test_every_sampler_runs_a_tiny_sweep(tmp_path, store, sampler):
    objectives = {"accuracy": "maximize", "params": "minimize"} if sampler != "grid" else {"m_factor": "maximize"}
    spec = SweepSpec.from_dict(sweep_doc(sampler=sampler, objectives=objectives), source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "sw", store=store, progress=False)
    trials = [t for t in result.study.get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 4 and result.ran == 4
    for t in trials:
        assert set(t.params) == set(SPACE) and t.user_attrs["figures"]["params"] > 0
        assert len(t.values) == len(objectives)
    text = (tmp_path / "sw" / "trials.csv").read_text().splitlines()
    assert text[0].startswith("trial,state,model.kernels.0,model.kernels.1,model.kernels.2,") and len(text) == 5
    assert (tmp_path / "sw" / "pareto.png").stat().st_size > 1000
    again = run_sweep(spec, out=tmp_path / "sw", store=store, progress=False)  # finished: runs nothing
    assert again.ran == 0 and (tmp_path / "sw" / "trials.csv").read_text().splitlines() == text


def test_grid_covers_the_grid_once(tmp_path, store):
    spec = SweepSpec.from_dict(sweep_doc(sampler="grid", trials=100), source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "g", store=store, progress=False)
    combos = {tuple(t.params[k] for k in SPACE) for t in result.study.get_trials()}
    assert len(combos) == 12 == result.ran  # 3 × 2 × 2, each once, trials capped at the grid size


def test_interrupted_trials_are_failed_and_retried(tmp_path, store):
    spec = SweepSpec.from_dict(sweep_doc(sampler={"name": "random", "seed": 3}, trials=3), source=str(tmp_path / "s.yaml"))
    (tmp_path / "r").mkdir()
    study = open_study(spec, tmp_path / "r")
    stale = study.ask()  # a trial a killed sweep left RUNNING
    for key in SPACE:
        stale.suggest_categorical(key, SPACE[key])
    params = dict(stale.params)
    result = run_sweep(spec, out=tmp_path / "r", store=store, progress=False)
    trials = result.study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["interrupted"] is True
    assert trials[1].params == params and trials[1].user_attrs["retry_of"] == 0  # retried first
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    assert "| 0 | interrupted |" in (tmp_path / "r" / "trials.md").read_text()


def test_kill_9_then_resume_finishes_the_sweep(tmp_path, store):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(sweep_doc(sampler={"name": "random", "seed": 5}, trials=6, name="killed")))
    cmd = [sys.executable, "-m", "compressor.cli", "sweep", str(f), "--out", str(tmp_path / "k"), "--store", str(store),
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (tmp_path / "k" / "trials" / "0002").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["trials"]["completed"] == 6


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, store):
    (tmp_path / "flaky.py").write_text(textwrap.dedent("""\
        import torch.nn as nn
        def make(hidden=8, fail=False):
            if fail:
                raise RuntimeError("this model cannot be built")
            return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        """))
    base = {**BASE, "model": {"frontend": "torch", "factory": "flaky:make", "search_path": str(tmp_path),
                              "kwargs": {"hidden": 8, "fail": False}, "train": {"epochs": 1}}}
    spec = SweepSpec.from_dict(sweep_doc(base=base, space={"model.kwargs.fail": [True, False],
                                                          "model.kwargs.hidden": [4, 8]},
                                         sampler="grid", objectives={"accuracy": "maximize"}),
                               source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "f", store=store, progress=False)
    states = {(t.params["model.kwargs.fail"], t.params["model.kwargs.hidden"]): t for t in result.study.get_trials()}
    assert len(states) == 4
    for (fail, _), t in states.items():
        assert t.state.name == ("FAIL" if fail else "COMPLETE")
        if fail:
            assert "this model cannot be built" in t.user_attrs["error"] and "\n" not in t.user_attrs["error"]
    assert "this model cannot be built" in (tmp_path / "f" / "trials.md").read_text()


# ---- the report against hand-computed values -----------------------------------------------------------

def _fake_study(spec, sweep_dir, rows):
    """A study of completed trials with given figures (no pipeline runs)."""
    import optuna

    study = open_study(spec, sweep_dir)
    dists = {p.key: p.distribution for p in spec.params}
    for i, (k0, figures) in enumerate(rows):
        values = [figures[o.metric.text] for o in spec.objectives]
        study.add_trial(optuna.trial.create_trial(params={"model.kernels.0": k0, "model.kernels.1": 3, "model.kernels.2": 3},
                                                  distributions=dists, values=values,
                                                  user_attrs={"figures": figures, "run": f"trials/{i:04d}"}))
    return study


def test_report_front_mfactor_and_budgets_by_hand(tmp_path):
    from compressor.sweep.report import write_sweep_report

    spec = SweepSpec.from_dict(sweep_doc(objectives={"accuracy": "maximize", "params": "minimize"},
                                         budgets={"small": ["params <= 1500"], "none": ["params <= 10"]},
                                         constraints=["accuracy >= 0.5"]),
                               source=str(tmp_path / "s.yaml"))
    rows = [(3, {"accuracy": 0.9, "params": 2000.0}),   # front
            (5, {"accuracy": 0.8, "params": 1000.0}),   # front
            (7, {"accuracy": 0.7, "params": 1500.0}),   # dominated by trial 1
            (3, {"accuracy": 0.4, "params": 500.0})]    # infeasible (accuracy < 0.5), not on the front
    (tmp_path / "d").mkdir()
    study = _fake_study(spec, tmp_path / "d", rows)
    write_sweep_report(spec, study, tmp_path / "d")
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert sorted(summary["front"]) == [0, 1]
    # M with P_min = 500 (the smallest completed trial), α = 1: 2·A·S'/(A + S')
    expect = {0: 2 * 0.9 * 0.25 / (0.9 + 0.25), 1: 2 * 0.8 * 0.5 / 1.3, 2: 2 * 0.7 * (1 / 3) / (0.7 + 1 / 3),
              3: 2 * 0.4 * 1.0 / 1.4}
    for n, m in expect.items():
        assert summary["figures"][str(n)]["m_factor"] == pytest.approx(m)
    assert summary["best_m_factor"]["trial"] == 1  # 0.6154 > 0.5714 (trial 3) > 0.4...
    assert summary["budgets"]["small"]["trial"] == 1  # feasible and params <= 1500: trials 1, 2; best accuracy: 1
    assert summary["budgets"]["none"]["trial"] is None
    winner = yaml.safe_load((tmp_path / "d" / "budgets" / "small" / "pipeline.yaml").read_text())
    assert winner["model"]["kernels"] == [5, 3, 3]
    assert os.readlink(tmp_path / "d" / "budgets" / "small" / "run") == "../../trials/0001"
    assert 0 < summary["hypervolume"] and summary["hypervolume_history"] == sorted(summary["hypervolume_history"])


# ---- validation: one line before any trial -------------------------------------------------------------

@pytest.mark.parametrize("changes, fragment", [
    ({"space": {"passes.prune-l1.ratio": [0.5]}}, "no pass list of the sweep has 'prune-l1'"),
    ({"space": {"model.kernels.0": [3, 4]}}, "model.kernels.0 = 4 gives an invalid pipeline"),
    ({"space": {"modle.width": [4]}}, "did you mean 'model'?"),
    ({"objectives": {"iou": "maximize"}}, "'iou' is not measured for this task"),
    ({"objectives": {"acuracy": "maximize"}}, "did you mean 'accuracy'?"),
    ({"objectives": {"latency_ms": "minimize"}}, "needs latency, but the base pipeline measures none"),
    ({"objectives": {"params": "upward"}}, "choose maximize or minimize"),
    ({"sampler": "annealing"}, "unknown sampler 'annealing'"),
    ({"sampler": {"name": "evolution", "population_size": 2, "sample_size": 5}}, "sample_size 5 exceeds"),
    ({"sampler": "grid", "space": {"model.width": {"low": 2.0, "high": 8.0}}}, "the grid sampler needs finite values"),
    ({"sampler": "rl", "space": {"model.width": {"low": 2.0, "high": 8.0}}}, "the rl sampler needs finite values"),
    ({"constraints": ["params < lots"]}, "expected 'figure <= number'"),
    ({"trials": 0}, "expected an integer in [1, 100000]"),
    ({"objectives": {"weighted": "maximize"}}, "'weighted' needs weighted"),
    ({"space": {"passes": {"a": "fp16"}}}, "each variant of 'passes' is a list"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, changes, fragment):
    with pytest.raises(ConfigError) as info:
        SweepSpec.from_dict(sweep_doc(**changes), source=str(tmp_path / "s.yaml"))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_declared_spaces_and_pass_list_variants(tmp_path):
    base = {**BASE, "passes": [{"prune-l1": {"ratio": 0.5}}, "finetune"]}
    spec = SweepSpec.from_dict(sweep_doc(base=base, space={
        "passes": {"ft": [{"prune-l1": {"ratio": 0.5}}, {"finetune": {"epochs": 1}}], "plain": [{"finetune": {"epochs": 1}}]},
        "passes.prune-l1.ratio": "declared", "model.train.lr": None}), source=str(tmp_path / "s.yaml"))
    by_key = {p.key: p for p in spec.params}
    from compressor.passes.prune_l1 import PruneL1Options
    from compressor.options import search_space
    from compressor.train import TrainOptions

    assert list(by_key["passes.prune-l1.ratio"].distribution.choices) == search_space(PruneL1Options)["ratio"]
    assert by_key["model.train.lr"].distribution.log is True
    assert by_key["model.train.lr"].distribution.low == search_space(TrainOptions)["lr"].low
    plain = spec.trial_doc({"passes": by_key["passes"].value("plain")}, "x")
    assert plain["passes"] == [{"finetune": {"epochs": 1}}] and not by_key["passes.prune-l1.ratio"].applies(plain)
    ft = spec.trial_doc({"passes": by_key["passes"].value("ft"), "passes.prune-l1.ratio": 0.3}, "x")
    assert ft["passes"][0] == {"prune-l1": {"ratio": 0.3}}


def test_cli_report_regenerates_and_bad_dirs_are_one_line(tmp_path, store):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_doc(sampler={"name": "random", "seed": 2}, trials=2, name="cli")))
    runner = CliRunner()
    res = runner.invoke(main, ["sweep", str(spec_file), "--out", str(tmp_path / "c"), "--store", str(store), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "# Sweep cli" in res.stdout
    before = (tmp_path / "c" / "trials.csv").read_text()
    (tmp_path / "c" / "trials.csv").unlink()
    res = runner.invoke(main, ["sweep", "--report", str(tmp_path / "c")])
    assert res.exit_code == 0 and (tmp_path / "c" / "trials.csv").read_text() == before
    assert (tmp_path / "c" / JOURNAL).is_file()
    res = runner.invoke(main, ["sweep", "--report", str(tmp_path)])
    assert res.exit_code == 2 and "no sweep.yaml here" in res.stderr
    other = tmp_path / "o.yaml"
    other.write_text(yaml.safe_dump(sweep_doc(name="cli", objectives={"accuracy": "maximize"})))
    res = runner.invoke(main, ["sweep", str(other), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "holds a sweep with another base, space or objectives" in res.stderr


def test_ray_executor_runs_two_trials(tmp_path, store):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'compressor[ray]')")
    spec = SweepSpec.from_dict(sweep_doc(sampler={"name": "random", "seed": 4}, trials=2,
                                         executor={"ray": {"cpus": 1, "max_concurrent": 2}}),
                               source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "ray", store=store, progress=False)
    assert sum(t.state.name == "COMPLETE" for t in result.study.get_trials()) == 2


def test_local_workers_run_trials_in_processes(tmp_path, store):
    spec = SweepSpec.from_dict(sweep_doc(sampler={"name": "random", "seed": 6}, trials=2,
                                         executor={"local": {"workers": 2}}), source=str(tmp_path / "s.yaml"))
    result = run_sweep(spec, out=tmp_path / "w", store=store, progress=False)
    assert sum(t.state.name == "COMPLETE" for t in result.study.get_trials()) == 2
