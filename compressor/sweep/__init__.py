"""Sweeps: many pipeline runs over a search space, several objectives, budgets (`compress sweep`).

- `spec`: sweep.yaml → a validated `SweepSpec` (space over any pipeline path, objectives, constraints,
  budgets, sampler, executor);
- `objectives`: the M-factor (seed 003), and re-exported from `compressor.evaluate.pareto` the weighted sum
  (seed 002 eq. 2), Pareto fronts, non-dominated sorting, crowding distance, hypervolume;
- `samplers`: regularized evolution and policy-gradient RL as Optuna samplers (grid, random, TPE and
  NSGA-II are Optuna's);
- `executors`: trials in this process, in worker processes, or on Ray;
- `figures`: each trial's figures plus the sweep-level ones (M-factor, weighted sum);
- `study`: the loop (an Optuna study in the sweep directory: resumable), `report`: its outputs.
"""
from __future__ import annotations

from typing import Any

__all__ = ["SweepSpec", "run_sweep"]


def __getattr__(name: str) -> Any:  # lazy: `compress --help` need not import optuna
    if name == "SweepSpec":
        from compressor.sweep.spec import SweepSpec

        return SweepSpec
    if name == "run_sweep":
        from compressor.sweep.study import run_sweep

        return run_sweep
    raise AttributeError(f"module 'compressor.sweep' has no attribute {name!r}")
