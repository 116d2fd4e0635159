"""Hostile sweeps: budget names that would write outside the sweep directory, spec values that crashed the
parser, a fuzz of the spec parser (hypothesis), and study journals that are not a sweep's. Each is one line
`error: ...` on stderr with exit code 2, before any trial runs or anything is written."""
from __future__ import annotations

import math

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening import assert_one_line_error, invoke

from compressor.errors import CompressError, ConfigError
from compressor.sweep.report import write_sweep_report
from compressor.sweep.spec import SweepSpec
from compressor.sweep.study import JOURNAL, _write_spec, open_study

from .test_sweep import _fake_study, sweep_doc

# trials: 1, so that a spec wrongly accepted runs one trial, not four, before the test fails
ONE = {"trials": 1}


def _sweep_file(tmp_path, **changes):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep_doc(**{**ONE, **changes}), sort_keys=False))
    return path


def _budget_line(path, name: str) -> int:
    """The line of budget `name`'s key in the file (yaml's own marks: '' is written as `? ''`)."""
    root = yaml.compose(path.read_text())
    budgets = next(v for k, v in root.value if k.value == "budgets")
    return next(k.start_mark.line + 1 for k, _ in budgets.value if k.value == name)


# ---- A: budget names are single directory names -----------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "..", ""])
def test_budget_names_that_leave_the_sweep_directory_are_refused(tmp_path, name):
    path = _sweep_file(tmp_path, budgets={name: ["params <= 5"], "edge": ["params <= 9"]})
    out = tmp_path / "sw"
    r = invoke("sweep", path, "--out", out)
    assert_one_line_error(r, f"{path}:{_budget_line(path, name)}: budgets: {name!r} must be letters, digits, - and _")
    assert not out.exists() and not (tmp_path / "x").exists()  # nothing written, inside or out


def test_the_report_refuses_a_budget_or_run_outside_the_sweep_directory(tmp_path):
    """Defence in depth: a spec built in Python skips the parser's check, and a study's `run` is data."""
    spec = SweepSpec.from_dict(sweep_doc(objectives={"accuracy": "maximize"}, budgets={"b": ["params <= 1500"]}),
                               source=str(tmp_path / "s.yaml"))
    sweep_dir = tmp_path / "deep" / "d"
    sweep_dir.mkdir(parents=True)
    study = _fake_study(spec, sweep_dir, [(3, {"accuracy": 0.9, "params": 1000.0})])
    spec.budgets = {"../../escape": spec.budgets["b"]}
    with pytest.raises(ConfigError, match="budget directory .* is outside the sweep directory"):
        write_sweep_report(spec, study, sweep_dir)
    assert not (tmp_path / "deep" / "escape").exists()

    spec.budgets = {"b": spec.budgets["../../escape"]}
    dists = {p.key: p.distribution for p in spec.params}
    other = tmp_path / "other"
    other.mkdir()
    study = open_study(spec, other)
    study.add_trial(optuna.trial.create_trial(
        params={"model.kernels.0": 3, "model.kernels.1": 3, "model.kernels.2": 3}, distributions=dists,
        values=[0.9], user_attrs={"figures": {"accuracy": 0.9, "params": 1000.0}, "run": "../../../outside"}))
    with pytest.raises(ConfigError, match="winner's run .* is outside the sweep directory"):
        write_sweep_report(spec, study, other)
    assert not (other / "budgets" / "b").exists()


# ---- C: values that crashed the parser or were accepted ----------------------------------------------------

@pytest.mark.parametrize("changes, fragment", [
    ({"space": {".": [1]}}, "'.' is not a pipeline path"),
    ({"space": {"..": [1]}}, "'..' is not a pipeline path"),
    ({"constraints": ["params <= 1.2.3"]}, "the bound '1.2.3' is not a finite number"),
    ({"constraints": ["params <= ."]}, "the bound '.' is not a finite number"),
    ({"budgets": {"edge": ["params <= 1.2.3"]}}, "edge: 'params <= 1.2.3': the bound '1.2.3' is not a finite number"),
    ({"budgets": {"edge": ["params <= ."]}}, "edge: 'params <= .': the bound '.' is not a finite number"),
    ({"constraints": ["params <= 1e999"]}, "the bound '1e999' is not a finite number"),
    ({"budgets": {"edge": ["params >= -1e999"]}}, "the bound '-1e999' is not a finite number"),
    ({"space": {"model.width": {"low": 2, "high": 4, "step": 10}}}, "step 10 is larger than the range [2, 4]"),
    ({"space": {"model.train.lr": {"low": 0.01, "high": 0.02, "step": 0.5}}}, "step 0.5 is larger than the range"),
    ({"space": {"model.width": {"low": 2, "high": 10**400}}}, "low, high and step must be finite numbers"),
    ({"objectives": {"params": {"a": 1}}}, "direction {'a': 1} is not valid; choose maximize or minimize"),
    ({"objectives": {"params": ["minimize"]}}, "direction ['minimize'] is not valid; choose maximize or minimize"),
    ({"sampler": {"name": ["tpe"]}}, "unknown sampler"),
    ({"weighted": {"weights": {"params": 10**400}}}, "weight of params must be a finite number"),
], ids=lambda v: None if isinstance(v, dict) else v[:40])
def test_spec_values_that_crashed_are_one_line(tmp_path, changes, fragment):
    path = _sweep_file(tmp_path, **changes)
    out = tmp_path / "sw"
    assert_one_line_error(invoke("sweep", path, "--out", out), fragment)
    assert not out.exists()


# ---- C: fuzz the parser --------------------------------------------------------------------------------

WORDS = ["1.2.3", ".", "..", "1e999", "-1e999", "nan", "inf", "maximize", "minimize", "max", "params", "accuracy",
         "m_factor", "size_mb", "latency_ms@x", "params <= 5", "params <= 1.2.3", "accuracy >= .", "../x", "a/b",
         "/abs", "", " ", "declared", "grid", "random", "tpe", "nsga2", "evolution", "rl", "local", "ray",
         "model.width", "low"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10), st.integers(-10**400, 10**400),
                    st.floats(allow_nan=True), st.sampled_from(WORDS), st.text(max_size=4))


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(WORDS), inner, max_size=3))


VALUES = st.recursive(SCALARS, _nested, max_leaves=8)
RANGES = st.dictionaries(st.sampled_from(["low", "high", "step", "log"]), SCALARS, max_size=4)
SPACE_KEYS = st.sampled_from(["model.width", "model.kernels.0", "model.train.lr", "seed", "passes", "export",
                              "passes.prune-l1.ratio", ".", "..", "model..x", "model.[0]", "a/b"])
BOUNDS = st.one_of(st.text("0123456789.eE+-", max_size=8), st.sampled_from(WORDS))
CONSTRAINTS = st.lists(st.builds("{} {} {}".format, st.sampled_from(["params", "accuracy", "x", "size_mb"]),
                                 st.sampled_from(["<=", ">=", "<", ">", "=="]), BOUNDS), max_size=2)
# one or two top-level keys changed at a time, so that most documents get past the first check to the deeper ones
FIGURES = st.sampled_from(["params", "accuracy", "m_factor", "weighted", "iou", "x"])
BUDGET_NAMES = st.one_of(st.sampled_from(WORDS), st.text(max_size=4))
CHANGES = st.one_of(
    st.tuples(st.just("space"), st.one_of(VALUES, st.dictionaries(
        SPACE_KEYS, st.one_of(VALUES, RANGES, st.just("declared")), min_size=1, max_size=2))),
    st.tuples(st.just("objectives"), st.one_of(VALUES, st.dictionaries(FIGURES, VALUES, max_size=2))),
    st.tuples(st.just("constraints"), st.one_of(VALUES, CONSTRAINTS)),
    st.tuples(st.just("budgets"), st.one_of(VALUES, st.dictionaries(BUDGET_NAMES, st.one_of(VALUES, CONSTRAINTS),
                                                                    max_size=2))),
    st.tuples(st.just("sampler"), st.one_of(VALUES, st.fixed_dictionaries(
        {"name": st.sampled_from(["grid", "random", "tpe", "nsga2", "evolution", "rl"])},
        optional={k: SCALARS for k in ("seed", "population_size", "sample_size", "fitness", "mutation_prob", "lr")}))),
    st.tuples(st.sampled_from(["trials", "stage", "name", "executor", "m_factor", "weighted"]), VALUES),
    st.tuples(st.just("m_factor"), st.fixed_dictionaries({}, optional={
        "p_min": st.one_of(SCALARS, st.sampled_from(["space", "trials"])), "alpha": SCALARS, "accuracy": SCALARS})),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGES, min_size=1, max_size=2))
def test_fuzzed_specs_raise_only_project_errors(changes):
    """Any sweep document is accepted or refused with one of the project's errors (~5 ms a document)."""
    try:
        spec = SweepSpec.from_dict(sweep_doc(**dict(changes)), source="fuzz.yaml")
    except CompressError as exc:
        assert "\n" not in str(exc)
        return
    # an accepted spec holds only finite bounds and single-name budgets
    assert all(math.isfinite(c.bound) for cs in [spec.constraints, *spec.budgets.values()] for c in cs)
    assert all(name and "/" not in name and name != ".." for name in spec.budgets)


# ---- D: study journals that are not a sweep's -------------------------------------------------------------

def _sweep_dir(tmp_path):
    spec = SweepSpec.from_dict(sweep_doc(objectives={"accuracy": "maximize"}), source=str(tmp_path / "s.yaml"))
    d = tmp_path / "sw"
    d.mkdir()
    _write_spec(spec, d)
    return spec, d


@pytest.mark.parametrize("journal, fragment", [
    (b"\xff\xfe\x00garbage\n", "(UnicodeDecodeError"),
    (b"hello, I am text\n", "(JSONDecodeError"),
    (b'{"op_code": 99}\n', "(AssertionError: Should not reach.)"),
    (b'{"a": 1}\n', "(KeyError: 'op_code')"),
    (b"[1, 2]\n", "(TypeError"),
], ids=["binary", "text", "unknown-op", "no-op", "json-list"])
def test_report_of_an_unreadable_journal_is_one_line(tmp_path, journal, fragment):
    _, d = _sweep_dir(tmp_path)
    (d / JOURNAL).write_bytes(journal)
    r = invoke("sweep", "--report", d)
    assert_one_line_error(r, f"{d / JOURNAL} is not a readable sweep study {fragment}")
    assert "delete it and run `compress sweep SWEEP --out" in r.stderr
    assert not (d / "trials.csv").exists()


@pytest.mark.parametrize("attrs, fragment", [
    ({"figures": "x"}, "trial 0 has figures 'x', not figure: number"),
    ({"figures": {"accuracy": "high"}}, "trial 0 has figures {'accuracy': 'high'}"),
    ({"figures": {"accuracy": 0.5}, "run": "../../../outside"}, "trial 0 has run '../../../outside', not a trial "
                                                                "directory inside the sweep"),
    ({"figures": {"accuracy": 0.5}, "inactive": 3}, "trial 0 has inactive 3, not a list of space keys"),
], ids=["figures-string", "figure-string", "run-outside", "inactive-int"])
def test_report_of_a_journal_with_foreign_trial_attributes_is_one_line(tmp_path, attrs, fragment):
    spec, d = _sweep_dir(tmp_path)
    study = open_study(spec, d)
    dists = {p.key: p.distribution for p in spec.params}
    study.add_trial(optuna.trial.create_trial(params={k: v.choices[0] for k, v in dists.items()}, distributions=dists,
                                              values=[0.5], user_attrs=attrs))
    r = invoke("sweep", "--report", d)
    assert_one_line_error(r, f"{d / JOURNAL} is not a readable sweep study ({fragment}")
    assert not (d / "trials.csv").exists()
