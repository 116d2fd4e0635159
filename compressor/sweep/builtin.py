"""The built-in sweep samplers, registered with their options (`compressor.registry.SAMPLERS`); importing
this module also registers the built-in executors (`executors.py`). It is a plugin like any other package's
(pyproject's `sweep` entry point): a third-party package registers its own sampler the same way,

    @register_sampler("my-sampler", MyOptions)
    def my_sampler(options, spec):          # spec: the validated SweepSpec
        return SomeOptunaSampler(...)

An options class may set `finite_space = True` (a ClassVar): the spec then refuses continuous ranges (the
sampler enumerates each key's values). A `fitness` option names the figure a scalar sampler maximizes.
Optuna is imported only when a sampler is built, so `compress --help` need not import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.options import option
from compressor.registry import register_sampler
from compressor.sweep import executors  # noqa: F401  (registers local and ray)

if TYPE_CHECKING:
    from compressor.sweep.spec import SweepSpec


@dataclass(frozen=True)
class GridOptions:
    finite_space: ClassVar[bool] = True  # every key's values are enumerated: lists or stepped ranges only


@dataclass(frozen=True)
class RandomOptions:
    seed: int = option(0, "sampler seed", min=0)


@dataclass(frozen=True)
class TPEOptions:
    seed: int = option(0, "sampler seed", min=0)
    n_startup_trials: int = option(10, "random trials before TPE models the space", min=0, max=10_000)
    multivariate: bool = option(True, "model the parameters jointly (optuna's multivariate TPE)")


@dataclass(frozen=True)
class NSGA2Options:
    seed: int = option(0, "sampler seed", min=0)
    population_size: int = option(10, "individuals per generation", min=2, max=10_000)
    mutation_prob: float | None = option(None, "per-parameter mutation probability (default 1/params)", min=0, max=1)
    crossover_prob: float = option(0.9, "probability of crossover", min=0, max=1)


@dataclass(frozen=True)
class EvolutionOptions:
    seed: int = option(0, "sampler seed", min=0)
    population_size: int = option(10, "population: the most recent completed trials (aging)", min=2, max=10_000)
    sample_size: int = option(3, "tournament size: the parent is the fittest of this many", min=1, max=10_000)
    mutation_prob: float | None = option(None, "per-parameter mutation probability (default: exactly one)",
                                         min=0, max=1, min_exclusive=True)
    fitness: str | None = option(None, "figure maximized (minimized when it is a minimize objective); default the "
                                       "first objective")

    def __post_init__(self) -> None:
        if self.sample_size > self.population_size:
            raise ValueError(f"sample_size {self.sample_size} exceeds population_size {self.population_size}")


@dataclass(frozen=True)
class RLOptions:
    finite_space: ClassVar[bool] = True  # the policy holds one logit per value
    seed: int = option(0, "sampler seed", min=0)
    lr: float = option(0.5, "policy learning rate (rewards such as the M-factor lie in [0, 1])", min=0,
                       min_exclusive=True, max=100)
    baseline_decay: float = option(0.9, "moving-average decay of the reward baseline", min=0, max=1,
                                   max_exclusive=True)
    fitness: str | None = option(None, "figure used as the reward; default the first objective")


@register_sampler("grid", GridOptions)
def grid(o: GridOptions, spec: SweepSpec) -> Any:
    """Every combination of the space's values (Optuna's grid)."""
    from compressor.sweep.study import grid_sampler, grid_values

    return grid_sampler(grid_values(spec), seed=0)


@register_sampler("random", RandomOptions)
def random(o: RandomOptions, spec: SweepSpec) -> Any:
    """Independent uniform draws (Optuna's random sampler)."""
    import optuna

    return optuna.samplers.RandomSampler(seed=o.seed)


@register_sampler("tpe", TPEOptions)
def tpe(o: TPEOptions, spec: SweepSpec) -> Any:
    """Tree-structured Parzen estimator (Optuna's TPE)."""
    import optuna

    return optuna.samplers.TPESampler(seed=o.seed, n_startup_trials=o.n_startup_trials, multivariate=o.multivariate)


@register_sampler("nsga2", NSGA2Options)
def nsga2(o: NSGA2Options, spec: SweepSpec) -> Any:
    """NSGA-II over the objectives (Optuna's)."""
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=o.population_size, mutation_prob=o.mutation_prob,
                                         crossover_prob=o.crossover_prob, seed=o.seed)


@register_sampler("evolution", EvolutionOptions)
def evolution(o: EvolutionOptions, spec: SweepSpec) -> Any:
    """Regularized (aging) evolution on one fitness figure (Real et al. 2019)."""
    from compressor.sweep.samplers import RegularizedEvolutionSampler
    from compressor.sweep.study import make_fitness

    return RegularizedEvolutionSampler(population_size=o.population_size, sample_size=o.sample_size,
                                       mutation_prob=o.mutation_prob, seed=o.seed, fitness=make_fitness(spec))


@register_sampler("rl", RLOptions)
def rl(o: RLOptions, spec: SweepSpec) -> Any:
    """Policy-gradient reinforcement learning over categorical choices (REINFORCE with a baseline)."""
    from compressor.sweep.samplers import PolicyGradientSampler
    from compressor.sweep.study import make_fitness

    return PolicyGradientSampler(lr=o.lr, baseline_decay=o.baseline_decay, seed=o.seed, fitness=make_fitness(spec))
