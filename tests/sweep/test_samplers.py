"""Behaviour of the seed-003 samplers: determinism, resumability, the algorithms' rules."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from compressor.sweep.objectives import m_factor
from compressor.sweep.samplers import (
    PolicyGradientSampler,
    RegularizedEvolutionSampler,
    finite_choices,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

KERNELS = [3, 5, 7]
TARGET = [3, 5, 7, 3, 5, 7, 3, 5, 7]  # the optimum: 9 conv1 kernel sizes, as in seed 003


def kernel_objective(trial: optuna.Trial) -> float:
    """Fraction of the 9 kernel sizes that match TARGET (1.0 at the optimum)."""
    return sum(trial.suggest_categorical(f"k{i}", KERNELS) == t for i, t in enumerate(TARGET)) / 9


def make_sampler(kind: str, seed: int = 0, **kwargs):
    if kind == "evolution":
        return RegularizedEvolutionSampler(**{"population_size": 8, "sample_size": 3, **kwargs}, seed=seed)
    return PolicyGradientSampler(**{"lr": 0.5, **kwargs}, seed=seed)


def run(sampler, n_trials: int, objective=kernel_objective, **study_kwargs) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler, **study_kwargs)
    study.optimize(objective, n_trials=n_trials)
    return study


def params_of(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def n_changed(a: dict, b: dict) -> int:
    return sum(a[k] != b[k] for k in a)


# --------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("kind", ["evolution", "rl"])
def test_same_seed_same_sequence(kind):
    first = params_of(run(make_sampler(kind, seed=3), 30))
    assert first == params_of(run(make_sampler(kind, seed=3), 30))
    assert first != params_of(run(make_sampler(kind, seed=4), 30))


@pytest.mark.parametrize("kind", ["evolution", "rl"])
def test_resumed_sweep_continues_exactly(kind, tmp_path):
    straight = params_of(run(make_sampler(kind), 30))

    def storage():
        return JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))

    run(make_sampler(kind), 15, storage=storage(), study_name="sweep")
    resumed = optuna.load_study(study_name="sweep", storage=storage(), sampler=make_sampler(kind))
    resumed.optimize(kernel_objective, n_trials=15)
    assert params_of(resumed) == straight


@pytest.mark.parametrize("kind", ["evolution", "rl"])
def test_multi_objective_with_m_factor_fitness(kind):
    def objective(trial):
        kernels = [trial.suggest_categorical(f"k{i}", KERNELS) for i in range(9)]
        params = sum(k * k for k in kernels) * 1000
        accuracy = 0.5 + 0.05 * sum(k == t for k, t in zip(kernels, TARGET))
        return accuracy, params

    def fitness(study, trial):  # P_min over the trials seen so far
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return m_factor(trial.values[0], trial.values[1], min(t.values[1] for t in done))

    sampler = make_sampler(kind, fitness=fitness)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=25)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 25
    if kind == "evolution":
        members = study.trials[:8]
        assert sampler.population(study) == study.trials[-8:]
        assert min(n_changed(study.trials[8].params, m.params) for m in members) == 1

    bare = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(kind))
    with pytest.raises(ValueError, match="needs fitness=callable") as info:
        bare.optimize(objective, n_trials=1)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- evolution


def test_evolution_child_is_one_mutation_of_tournament_winner():
    population_size, sample_size = 8, 3
    study = run(make_sampler("evolution"), 40)
    trials = study.trials
    for k in range(population_size, 40):
        population = trials[k - population_size:k]  # aging: the most recent ones
        rng = np.random.default_rng([0, k])
        drawn = rng.choice(population_size, size=sample_size, replace=False)
        parent = max((population[i] for i in drawn), key=lambda t: t.value)
        assert n_changed(trials[k].params, parent.params) == 1, k


def test_evolution_population_ages_out_the_fittest():
    space = {f"k{i}": CategoricalDistribution(KERNELS) for i in range(9)}
    sampler = RegularizedEvolutionSampler(population_size=3, sample_size=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for kernels, value in [([7] * 9, 100.0), ([3] * 9, 1.0), ([5] * 9, 2.0), ([3] * 8 + [5], 0.0)]:
        study.add_trial(create_trial(params={f"k{i}": k for i, k in enumerate(kernels)},
                                     distributions=space, value=value))
    assert [t.number for t in sampler.population(study)] == [1, 2, 3]
    study.optimize(kernel_objective, n_trials=1)
    child = list(study.trials[-1].params.values())
    assert child.count(5) == 8  # one mutation away from the fittest of trials 1-3, all 5s


def test_evolution_mutation_prob_can_change_several_params():
    sampler = make_sampler("evolution", mutation_prob=0.5)
    trials = run(sampler, 40).trials
    changes = [min(n_changed(trials[k].params, m.params) for m in trials[k - 8:k]) for k in range(8, 40)]
    assert min(changes) >= 1 and max(changes) > 1


def test_evolution_mixed_and_conditional_space():
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        ratio = trial.suggest_float("ratio", 0.0, 0.9, step=0.1)
        width = trial.suggest_int("width", 8, 64, step=8)
        if trial.suggest_categorical("deep", [False, True]):
            trial.suggest_int("extra", 1, 3)
        return -abs(np.log10(lr) + 2) - ratio + width / 64

    study = run(make_sampler("evolution", population_size=6), 40, objective=objective)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    grid = finite_choices(FloatDistribution(0.0, 0.9, step=0.1))
    for t in study.trials:
        assert 1e-4 <= t.params["lr"] <= 1e-1 and t.params["width"] % 8 == 0
        assert min(abs(t.params["ratio"] - g) for g in grid) < 1e-9
    always = ("lr", "ratio", "width", "deep")
    for k in range(6, 40):
        child = study.trials[k].params
        assert min(sum(child[p] != m.params[p] for p in always) for m in study.trials[k - 6:k]) <= 1


def test_evolution_improves_on_toy_objective():
    values = [t.value for t in run(make_sampler("evolution", population_size=10), 80).trials]
    assert np.mean(values[-20:]) > np.mean(values[:20]) + 0.1


def test_evolution_ignores_failed_pruned_and_unscored_trials():
    def objective(trial):
        value = kernel_objective(trial)
        if trial.number % 5 == 1:
            raise RuntimeError("trial crashed")
        if trial.number % 5 == 2:
            raise optuna.TrialPruned()
        return value

    def fitness(study, trial):
        return None if trial.number % 5 == 3 else trial.value

    study = optuna.create_study(direction="maximize", sampler=make_sampler("evolution", fitness=fitness))
    study.optimize(objective, n_trials=60, catch=(RuntimeError,))
    scored = []
    for trial in study.trials:
        if len(scored) >= 8:
            population = scored[-8:]
            drawn = np.random.default_rng([0, trial.number]).choice(8, size=3, replace=False)
            parent = max((population[i] for i in drawn), key=lambda t: t.value)
            assert n_changed(trial.params, parent.params) == 1, trial.number
        if trial.state == TrialState.COMPLETE and trial.number % 5 != 3:
            scored.append(trial)
    assert len(scored) > 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"population_size": 0}, "population_size must be"),
        ({"population_size": 4, "sample_size": 5}, "sample_size must be"),
        ({"mutation_prob": 0.0}, "mutation_prob must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_evolution_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegularizedEvolutionSampler(**kwargs)


# --------------------------------------------------------------------------- policy gradient


OPS = CategoricalDistribution(["a", "b", "c"])


def add(study, value, state=TrialState.COMPLETE, **params):
    study.add_trial(create_trial(params=params, distributions={n: OPS for n in params},
                                 value=value if state == TrialState.COMPLETE else None, state=state))


def softmax(theta):
    e = np.exp(theta - theta.max())
    return e / e.sum()


def test_rl_update_matches_hand_computation():
    sampler = PolicyGradientSampler(lr=0.5, baseline_decay=0.9)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    add(study, 1.0, op="a")  # b = 1, A = 0: no change; b stays 1
    np.testing.assert_allclose(sampler.policy_logits(study)["op"], [0, 0, 0])
    add(study, 0.0, op="b")  # A = 0 − 1 = −1: θ = 0.5·(−1)·(onehot(b) − 1/3); b = 0.9
    theta = np.array([1 / 6, -1 / 3, 1 / 6])
    np.testing.assert_allclose(sampler.policy_logits(study)["op"], theta)
    add(study, 2.0, op="c")  # A = 2 − 0.9 = 1.1 (baseline before this reward)
    theta = theta + 0.5 * 1.1 * (np.array([0, 0, 1]) - softmax(theta))
    np.testing.assert_allclose(sampler.policy_logits(study)["op"], theta)


def test_rl_entropy_bonus_is_the_entropy_gradient():
    def entropy(theta):
        p = softmax(theta)
        return -np.sum(p * np.log(p))

    def numeric_grad(f, x, h=1e-6):
        return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])

    sampler = PolicyGradientSampler(lr=0.5, baseline_decay=0.9, entropy=0.3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for value, op in [(1.0, "a"), (0.0, "b"), (2.0, "c")]:
        add(study, value, op=op)
    theta = np.array([1 / 6, -1 / 3, 1 / 6])  # the entropy gradient is 0 at the uniform policy
    grad = 1.1 * (np.array([0, 0, 1]) - softmax(theta)) + 0.3 * numeric_grad(entropy, theta)
    np.testing.assert_allclose(sampler.policy_logits(study)["op"], theta + 0.5 * grad, atol=1e-8)


def test_rl_ignores_failed_pruned_and_unscored_trials():
    def fitness(study, trial):
        return None if trial.user_attrs.get("skip") else trial.value

    noisy = optuna.create_study(direction="maximize")
    add(noisy, 1.0, op="a")
    add(noisy, 0.0, state=TrialState.FAIL, op="b")
    add(noisy, 0.0, state=TrialState.PRUNED, op="b")
    noisy.add_trial(create_trial(params={"op": "b"}, distributions={"op": OPS}, value=-5.0,
                                 user_attrs={"skip": True}))
    add(noisy, 2.0, op="c")
    clean = optuna.create_study(direction="maximize")
    add(clean, 1.0, op="a")
    add(clean, 2.0, op="c")
    sampler = PolicyGradientSampler(lr=0.5, fitness=fitness)
    expected = sampler.policy_logits(clean)["op"]
    assert not np.allclose(expected, 0)
    np.testing.assert_allclose(sampler.policy_logits(noisy)["op"], expected)


def test_rl_minimize_negates_the_reward():
    sampler = PolicyGradientSampler(lr=0.5)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    add(study, 1.0, op="a")
    add(study, 0.0, op="b")  # lower is better: b is reinforced
    theta = sampler.policy_logits(study)["op"]
    assert theta[1] > theta[0] and theta[1] > theta[2]


def test_rl_samples_from_the_policy():
    study = optuna.create_study(direction="maximize")
    add(study, 0.0, op="a")
    for _ in range(3):
        add(study, 1.0, op="c")
    sampler = PolicyGradientSampler(lr=5.0)
    probs = softmax(sampler.policy_logits(study)["op"])
    assert probs[2] > 0.9
    study.sampler = sampler
    study.optimize(lambda t: float(t.suggest_categorical("op", OPS.choices) == "c"), n_trials=20)
    assert sum(t.params["op"] == "c" for t in study.trials[4:]) >= 15


def test_rl_improves_on_toy_objective():
    values = [t.value for t in run(make_sampler("rl"), 80).trials]
    assert np.mean(values[-20:]) > np.mean(values[:20]) + 0.1


def test_rl_rejects_continuous_floats():
    with pytest.raises(ValueError, match="needs finite choices but parameter 'lr'") as info:
        run(PolicyGradientSampler(), 1, objective=lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True))
    assert "\n" not in str(info.value)
    study = optuna.create_study()
    study.add_trial(create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=0))
    with pytest.raises(ValueError, match="give a list of values or a step"):
        PolicyGradientSampler().policy_logits(study)


def test_rl_handles_int_and_stepped_float():
    def objective(trial):
        return trial.suggest_int("width", 8, 32, step=8) / 32 - trial.suggest_float("ratio", 0, 0.3, step=0.1)

    sampler = PolicyGradientSampler(lr=0.5)
    study = run(sampler, 20, objective=objective)
    logits = sampler.policy_logits(study)
    assert [len(logits["width"]), len(logits["ratio"])] == [4, 4]
    assert {t.params["width"] for t in study.trials} <= {8, 16, 24, 32}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": 0.0}, "lr must be"), ({"baseline_decay": 1.0}, "baseline_decay must be"),
     ({"entropy": -0.1}, "entropy must be")],
)
def test_rl_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyGradientSampler(**kwargs)


# --------------------------------------------------------------------------- finite_choices


def test_finite_choices():
    assert finite_choices(CategoricalDistribution(["x", 1, None])) == ["x", 1, None]
    assert finite_choices(IntDistribution(2, 10, step=4)) == [2, 6, 10]
    assert finite_choices(IntDistribution(1, 8, log=True)) == list(range(1, 9))
    grid = finite_choices(FloatDistribution(0.0, 0.3, step=0.1))
    assert grid == pytest.approx([0.0, 0.1, 0.2, 0.3]) and grid[-1] <= 0.3
    assert finite_choices(FloatDistribution(0.5, 0.5)) == [0.5]
    with pytest.raises(ValueError, match="no finite list of values"):
        finite_choices(FloatDistribution(0.0, 1.0))


def test_search_space_is_the_union_without_conflicts():
    study = optuna.create_study()
    narrow, wide = CategoricalDistribution([3, 5]), CategoricalDistribution(KERNELS)
    width, other_width = IntDistribution(8, 64), IntDistribution(8, 32)
    for params, distributions, state in [
        ({"k": 3, "w": 8}, {"k": narrow, "w": width}, TrialState.COMPLETE),
        ({"k": 7, "extra": 5}, {"k": wide, "extra": wide}, TrialState.COMPLETE),
        ({"w": 8}, {"w": other_width}, TrialState.FAIL),  # not completed: does not count
    ]:
        value = 0.0 if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(params=params, distributions=distributions, value=value, state=state))
    space = RegularizedEvolutionSampler().infer_relative_search_space(study, study.trials[0])
    assert space == {"extra": wide, "w": width}  # 'k' changed distribution: sampled independently
