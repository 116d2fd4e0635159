"""The two search strategies of seed 003 that Optuna lacks, as Optuna samplers.

* :class:`RegularizedEvolutionSampler`: aging evolution (Real et al., "Regularized evolution
  for image classifier architecture search", AAAI 2019).
* :class:`PolicyGradientSampler`: REINFORCE on a factorized softmax policy (after Zoph & Le,
  "Neural architecture search with reinforcement learning", ICLR 2017).

Both keep no state between calls: at each trial they rebuild everything (population,
policy) from the study's completed trials, and draw from ``numpy.random.default_rng([seed,
trial.number])``. So a sweep killed and resumed from its storage (e.g. Optuna's
``JournalStorage``), with a new sampler instance, continues exactly as if it had not
stopped, and a sequential sweep is reproducible from its seed. (With parallel workers the
history a trial sees depends on completion order, as for every history-based sampler.)

Search space: the union of the distributions of the completed trials; a parameter whose
distribution differs between trials, or that no completed trial has yet, is sampled
uniformly at random by ``sample_independent``, as are all parameters of the first trials.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Fitness", "PolicyGradientSampler", "RegularizedEvolutionSampler", "finite_choices"]

Fitness = Callable[[Study, FrozenTrial], float | None]
"""``fitness(study, trial)``: higher is better; None leaves the trial out (e.g. it failed)."""


# --------------------------------------------------------------------------- distributions


def _is_continuous(distribution: BaseDistribution) -> bool:
    return (
        isinstance(distribution, FloatDistribution)
        and distribution.step is None
        and distribution.low < distribution.high
    )


def finite_choices(distribution: BaseDistribution) -> list[Any]:
    """The values a distribution can take, in order: its categorical choices, the integers
    ``low, low+step, …, high``, or the grid of a stepped float. A continuous float has none.
    """
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and not _is_continuous(distribution):
        if distribution.step is None:  # low == high
            return [distribution.low]
        low, high, step = distribution.low, distribution.high, distribution.step
        # Clipped: low + n·step can overshoot high by an ulp, and Optuna rejects it.
        return [min(low + i * step, high) for i in range(round((high - low) / step) + 1)]
    raise ValueError(
        f"{distribution} has no finite list of values; use suggest_categorical or give a step"
    )


def _choice_index(distribution: BaseDistribution, value: Any) -> int:
    """Index of ``value`` in ``finite_choices(distribution)`` (values come from that space)."""
    if isinstance(distribution, CategoricalDistribution):
        return int(distribution.to_internal_repr(value))
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    if distribution.step is None:  # a float with low == high
        return 0
    return int(round((value - distribution.low) / distribution.step))


def _sample_uniform(distribution: BaseDistribution, rng: np.random.Generator) -> Any:
    """A uniform draw: one of the finite choices, or a (log-)uniform continuous float."""
    if _is_continuous(distribution):
        assert isinstance(distribution, FloatDistribution)
        if distribution.log:
            return float(np.exp(rng.uniform(np.log(distribution.low), np.log(distribution.high))))
        return float(rng.uniform(distribution.low, distribution.high))
    choices = finite_choices(distribution)
    return choices[int(rng.integers(len(choices)))]


def _is_mutable(distribution: BaseDistribution) -> bool:
    return _is_continuous(distribution) or len(finite_choices(distribution)) > 1


def _mutate(distribution: BaseDistribution, value: Any, rng: np.random.Generator) -> Any:
    """A different value: a uniform pick among the other choices, or a continuous resample."""
    if _is_continuous(distribution):
        return _sample_uniform(distribution, rng)
    choices = finite_choices(distribution)
    others = [c for i, c in enumerate(choices) if i != _choice_index(distribution, value)]
    return others[int(rng.integers(len(others)))]


def _union_search_space(trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every parameter of ``trials`` whose distribution is the same in all that have it."""
    space: dict[str, BaseDistribution] = {}
    conflicting: set[str] = set()
    for trial in trials:
        for name, distribution in trial.distributions.items():
            if name in conflicting:
                continue
            if space.setdefault(name, distribution) != distribution:
                conflicting.add(name)
                del space[name]
    return dict(sorted(space.items()))


# --------------------------------------------------------------------------- common base


class _HistorySampler(BaseSampler):
    """Rebuilds its state from the completed trials at every call; see the module docstring."""

    def __init__(self, seed: int, fitness: Fitness | None) -> None:
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self._seed = seed
        self._fitness = fitness

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._search_space(study)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # One stream per (trial, parameter), so the draw does not depend on which other
        # parameters were sampled before it, nor on the process.
        rng = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())])
        return _sample_uniform(param_distribution, rng)

    def _search_space(self, study: Study) -> dict[str, BaseDistribution]:
        return _union_search_space(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _rng(self, trial: FrozenTrial) -> np.random.Generator:
        return np.random.default_rng([self._seed, trial.number])

    def _scored_history(self, study: Study) -> list[tuple[FrozenTrial, float]]:
        """``(trial, fitness)`` of the completed trials with a fitness, by trial number.

        The fitness is evaluated afresh over the whole history, so one that depends on all
        trials (the M-factor with ``p_min: trials``, P_min over the trials seen so far) follows them.
        """
        if self._fitness is not None:
            fitness = self._fitness
        elif len(study.directions) > 1:
            raise ValueError(
                f"{type(self).__name__} needs fitness=callable(study, trial) -> float "
                f"(higher is better) for a multi-objective study, e.g. the M-factor of its values"
            )
        else:
            sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0

            def fitness(_: Study, t: FrozenTrial) -> float:
                return sign * float(t.value)  # type: ignore[arg-type]

        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        scored = []
        for t in sorted(trials, key=lambda t: t.number):
            value = fitness(study, t)
            if value is not None and not math.isnan(value):
                scored.append((t, float(value)))
        return scored


# --------------------------------------------------------------------------- evolution


class RegularizedEvolutionSampler(_HistorySampler):
    """Aging (regularized) evolution, Real et al. 2019, Algorithm 1.

    The population is the ``population_size`` most recent completed trials with a fitness:
    each new one pushes out the oldest (aging), whatever its fitness. Until the population
    is full, parameters are drawn uniformly at random. Then each trial draws ``sample_size``
    members without replacement, takes the fittest as parent (the first drawn on ties), and
    copies it with a mutation: one parameter, chosen uniformly, changed to a different value
    (``mutation_prob=None``, as in the paper); or each parameter independently with
    probability ``mutation_prob``, at least one. Finite parameters move to another choice;
    continuous floats are redrawn (log-)uniformly.

    Args:
        population_size: P, >= 1.
        sample_size: S, the tournament size, 1 <= S <= P.
        mutation_prob: None, or the per-parameter mutation probability in (0, 1].
        seed: with the trial number, seeds each trial's draws.
        fitness: ``fitness(study, trial)``, higher is better; defaults to the value
            (negated when minimizing) of a single-objective study.
    """

    def __init__(
        self,
        population_size: int = 20,
        sample_size: int = 5,
        mutation_prob: float | None = None,
        seed: int = 0,
        fitness: Fitness | None = None,
    ) -> None:
        if not (isinstance(population_size, int) and population_size >= 1):
            raise ValueError(f"population_size must be an int >= 1, got {population_size!r}")
        if not (isinstance(sample_size, int) and 1 <= sample_size <= population_size):
            raise ValueError(
                f"sample_size must be an int in [1, population_size={population_size}], "
                f"got {sample_size!r}"
            )
        if mutation_prob is not None and not 0.0 < mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be None or in (0, 1], got {mutation_prob!r}")
        super().__init__(seed, fitness)
        self._population_size = population_size
        self._sample_size = sample_size
        self._mutation_prob = mutation_prob

    def population(self, study: Study) -> list[FrozenTrial]:
        """The current population, oldest first; empty until it has ``population_size``."""
        return [t for t, _ in self._population(self._scored_history(study))]

    def _population(self, history: list[tuple[FrozenTrial, float]]) -> list[tuple[FrozenTrial, float]]:
        return history[-self._population_size:] if len(history) >= self._population_size else []

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        population = self._population(self._scored_history(study))
        if not search_space or not population:
            return {}
        rng = self._rng(trial)
        drawn = rng.choice(len(population), size=self._sample_size, replace=False)
        parent, _ = max((population[i] for i in drawn), key=lambda member: member[1])
        return self._child(parent, search_space, rng)

    def _child(
        self,
        parent: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        # A parameter the parent lacks (a conditional one) is drawn fresh, not "mutated".
        child = {
            name: parent.params[name] if name in parent.params else _sample_uniform(dist, rng)
            for name, dist in search_space.items()
        }
        mutable = [n for n, d in search_space.items() if n in parent.params and _is_mutable(d)]
        if not mutable:
            return child
        if self._mutation_prob is None:  # exactly one, picked below
            chosen = np.zeros(len(mutable), dtype=bool)
        else:
            chosen = rng.random(len(mutable)) < self._mutation_prob
        if not chosen.any():
            chosen[rng.integers(len(mutable))] = True
        for name in (n for n, c in zip(mutable, chosen) if c):
            child[name] = _mutate(search_space[name], child[name], rng)
        return child


# --------------------------------------------------------------------------- policy gradient


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class PolicyGradientSampler(_HistorySampler):
    """REINFORCE with a moving-average baseline (Zoph & Le 2017, eq. 2-3).

    Zoph & Le's controller is an LSTM emitting one decision after another; here the policy
    is factorized, one independent softmax per parameter, ``π_p = softmax(θ_p)`` over
    ``finite_choices`` of its distribution. With a few dozen trials and a handful of
    decisions (seed 003: 9 kernel sizes), an LSTM's extra capacity has nothing to learn
    from, and the factorized policy keeps the replay exact and cheap.

    The policy is rebuilt at each call by replaying the completed trials (with a fitness) in
    trial-number order, starting from ``θ_p = 0`` (uniform). For each trial, with reward
    ``r = fitness(trial)``:

    1. ``b ← r`` if this is the first trial (the baseline starts at the first reward);
    2. ``A = r − b`` (the baseline before it sees ``r``);
    3. for each parameter p the trial has, with ``π_p = softmax(θ_p)``:
       ``θ_p ← θ_p + lr·(A·(onehot(choice_p) − π_p) + entropy·∇H(π_p))``,
       where ``∇H(π)_j = −π_j·(log π_j + H(π))`` is the gradient of the entropy bonus;
    4. ``b ← baseline_decay·b + (1 − baseline_decay)·r``.

    The new trial then draws each parameter from ``softmax(θ_p)``. Every distribution must
    have finite choices (categorical, int, or float with a step).

    Args:
        lr: learning rate, > 0.
        baseline_decay: in [0, 1); the baseline's moving-average decay.
        entropy: >= 0, weight of the entropy bonus that keeps the policy exploring.
        seed: with the trial number, seeds each trial's draws.
        fitness: the reward ``fitness(study, trial)``; defaults to the value (negated when
            minimizing) of a single-objective study.
    """

    def __init__(
        self,
        lr: float = 0.1,
        baseline_decay: float = 0.9,
        entropy: float = 0.0,
        seed: int = 0,
        fitness: Fitness | None = None,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
        if not entropy >= 0:
            raise ValueError(f"entropy must be >= 0, got {entropy!r}")
        super().__init__(seed, fitness)
        self._lr = lr
        self._baseline_decay = baseline_decay
        self._entropy = entropy

    def policy_logits(self, study: Study) -> dict[str, np.ndarray]:
        """θ_p for each parameter of the search space, aligned with ``finite_choices``."""
        return self._replay(self._scored_history(study), self._search_space(study))

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        logits = self._replay(self._scored_history(study), search_space)
        rng = self._rng(trial)
        params = {}
        for name, theta in logits.items():
            probs = np.exp(_log_softmax(theta))
            index = rng.choice(len(probs), p=probs / probs.sum())
            params[name] = finite_choices(search_space[name])[index]
        return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._check_finite(param_name, param_distribution)
        return super().sample_independent(study, trial, param_name, param_distribution)

    def _check_finite(self, name: str, distribution: BaseDistribution) -> None:
        if _is_continuous(distribution):
            raise ValueError(
                f"PolicyGradientSampler needs finite choices but parameter {name!r} is a "
                f"continuous {distribution}; give a list of values or a step"
            )

    def _replay(
        self, history: list[tuple[FrozenTrial, float]], search_space: dict[str, BaseDistribution]
    ) -> dict[str, np.ndarray]:
        for name, distribution in search_space.items():
            self._check_finite(name, distribution)
        theta = {name: np.zeros(len(finite_choices(d))) for name, d in search_space.items()}
        baseline: float | None = None
        for trial, reward in history:
            if baseline is None:
                baseline = reward
            advantage = reward - baseline
            for name, distribution in search_space.items():
                if name not in trial.params:
                    continue
                log_probs = _log_softmax(theta[name])
                probs = np.exp(log_probs)
                grad = -probs * advantage
                grad[_choice_index(distribution, trial.params[name])] += advantage
                if self._entropy:
                    entropy = -float(np.dot(probs, log_probs))
                    grad += self._entropy * (-probs * (log_probs + entropy))
                theta[name] += self._lr * grad
            baseline = self._baseline_decay * baseline + (1.0 - self._baseline_decay) * reward
        return theta
