"""A sweep's figures per trial: the raw figures its run measured plus the sweep-level ones (the M-factor, the
weighted sum). The study driver, its samplers' fitness and the report read them from here, with P_min from
`sweep_p_min`: the sweep's fixed one (`m_factor.p_min: space` or a number, `compressor.sweep.smallest`), else
the smallest params among the trials given (`p_min: trials`, the default).
"""
from __future__ import annotations

from typing import Any

from compressor.sweep.objectives import m_factor, weighted_sum
from compressor.sweep.smallest import fixed_p_min
from compressor.sweep.spec import DERIVED, TASK_METRICS, SweepSpec


def completed(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def trial_figures(spec: SweepSpec, figures: dict[str, float], p_min: float | None) -> dict[str, float]:
    """A trial's raw figures plus the sweep-level ones: m_factor with `p_min` (`sweep_p_min`) and the weighted
    sum of seed 002's eq. 2. A trial with fewer params than P_min (possible with a fixed P_min) counts P_min as
    its own params, so S' = 1 and M stays in [0, 1]."""
    out = dict(figures)
    acc, params = out.get(spec.m_factor.accuracy), out.get("params")
    if acc is not None and params and p_min:
        out["m_factor"] = m_factor(min(max(acc, 0.0), 1.0), params, min(p_min, params), spec.m_factor.alpha)
    if spec.weights and all(k in out for k in spec.weights):
        directions = {k: direction_of(spec, k) for k in spec.weights}
        out["weighted"] = weighted_sum({k: out[k] for k in spec.weights}, spec.weights, directions)
    return out


def direction_of(spec: SweepSpec, figure: str) -> str:
    """The direction of a figure: its objective's, else maximize for task metrics and the sweep-level scores
    (m_factor, weighted: higher is better) and minimize for the rest. A weighted term adds a figure that is
    maximized and subtracts one that is minimized; the samplers' fitness negates a minimized one."""
    for o in spec.objectives:
        if o.metric.text == figure:
            return o.direction
    return "maximize" if figure.split("@")[0] in (*TASK_METRICS, *DERIVED) else "minimize"


def p_min_of(trials: list[Any]) -> float | None:
    """The smallest params among `trials` (None when none has params)."""
    sizes = [t.user_attrs.get("figures", {}).get("params") for t in trials]
    sizes = [s for s in sizes if s]
    return min(sizes) if sizes else None


def sweep_p_min(spec: SweepSpec, trials: list[Any]) -> float | None:
    """The P_min of `spec`'s M-factor: its fixed one (`p_min: space` or a number), which does not move as trials
    arrive, else (`p_min: trials`) the smallest params among `trials`."""
    fixed = fixed_p_min(spec)
    return float(fixed.value) if fixed is not None else p_min_of(trials)


def all_figures(spec: SweepSpec, trials: list[Any]) -> dict[int, dict[str, float]]:
    """Figures of each completed trial, m_factor with the sweep's P_min over all of them (the final ranking)."""
    p_min = sweep_p_min(spec, trials)
    return {t.number: trial_figures(spec, t.user_attrs.get("figures", {}), p_min) for t in trials}
