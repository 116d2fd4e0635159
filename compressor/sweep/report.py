"""A sweep's outputs, all regenerated from its study (`compress sweep --report DIR`):

- `trials.csv`, `trials.md`: every finished trial, its option values as columns, its figures, M-factor,
  feasibility, wall time, error;
- `pareto.md`, `pareto.png`: the non-dominated feasible trials over the objectives (2-D projections when
  there are more than two), `hypervolume.png`: hypervolume of the front of the first k trials;
- `mfactor.md`: trials ranked by M_α, with the P_min used (`m_factor.p_min`: the smallest params among all
  completed trials, the space's smallest network, or a given number);
- `budgets/<name>/pipeline.yaml` (+ `run` linking the trial's run directory): each budget's winner;
- `summary.json`, `sweep.md`: all of it in one place.
Nothing here depends on when it is written: a finished sweep re-run rewrites the same files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from compressor.errors import ConfigError
from compressor.store import atomic_path, atomic_write, swap_symlink, write_json
from compressor.sweep.spec import SweepSpec
from compressor.sweep.figures import all_figures, completed, p_min_of
from compressor.sweep.smallest import fixed_p_min

FIG_COLUMNS = ["params", "size_mb", "macs", "latency_ms"]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def trial_values(spec: SweepSpec, trial: Any) -> dict[str, Any]:
    """The trial's active option values by space key (labels of pass-list variants as their names)."""
    out = {}
    inactive = set(trial.user_attrs.get("inactive", ()))
    for p in spec.params:
        if p.key in trial.params and p.key not in inactive:
            raw = trial.params[p.key]
            out[p.key] = raw if p.is_variant or not p.labels else p.value(raw)
    return out


def feasible(spec: SweepSpec, figures: dict[str, float], constraints: list[Any] | None = None) -> bool:
    return all(c.holds(figures) for c in (spec.constraints if constraints is None else constraints))


def _objective_points(spec: SweepSpec, trials: list[Any], figs: dict[int, dict[str, float]]) -> list[list[float]]:
    return [[figs[t.number].get(o.metric.text, math.nan) for o in spec.objectives] for t in trials]


def best_under(spec: SweepSpec, trials: list[Any], figs: dict[int, dict[str, float]], constraints: list[Any]) -> Any:
    """The feasible trial (global constraints and `constraints`) that is best on the first objective, ties
    broken by the next ones, then by trial number."""
    ok = [t for t in trials if feasible(spec, figs[t.number]) and feasible(spec, figs[t.number], constraints)]
    if not ok:
        return None

    def key(t: Any) -> tuple:
        vals = []
        for o in spec.objectives:
            v = figs[t.number].get(o.metric.text, math.nan)
            v = math.inf if not math.isfinite(v) else (-v if o.direction == "maximize" else v)
            vals.append(v)
        return (*vals, t.number)

    return min(ok, key=key)


def p_min_summary(spec: SweepSpec, done: list[Any]) -> tuple[dict[str, Any], str]:
    """(summary entry, one line) of the P_min the report's M values use."""
    fixed = fixed_p_min(spec)
    if fixed is not None:
        return fixed.to_dict(), fixed.describe()
    value = p_min_of(done)
    line = (f"P_min: {value:,.0f} (trials: the smallest params among the {len(done)} completed trials)"
            if value is not None else "P_min: none yet (trials: no completed trial has params)")
    return {"value": value, "source": "trials", "network": {}}, line


def write_sweep_report(spec: SweepSpec, study: Any, sweep_dir: Path) -> dict[str, Path]:
    import optuna

    from compressor.sweep.objectives import hypervolume_history, normalize_for_hv, pareto_front

    sweep_dir = Path(sweep_dir)
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
    finished.sort(key=lambda t: t.number)
    done = sorted(completed(study), key=lambda t: t.number)
    figs = all_figures(spec, done)
    objective_names = [o.metric.text for o in spec.objectives]
    paths: dict[str, Path] = {}

    # ---- trials table --------------------------------------------------------------------------------
    keys = [p.key for p in spec.params]
    extra = [c for c in FIG_COLUMNS + [spec.m_factor.accuracy, "m_factor", "weighted"] if c not in objective_names]
    header = ["trial", "state", *keys, *objective_names, *extra, "feasible", "wall_s", "error"]
    rows = []
    for t in finished:
        f = figs.get(t.number, {})
        values = trial_values(spec, t)
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        rows.append([t.number, state, *[values.get(k) for k in keys], *[f.get(n) for n in objective_names],
                     *[f.get(n) for n in extra], feasible(spec, f) if f else None, t.user_attrs.get("wall_s"),
                     t.user_attrs.get("error")])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[c if isinstance(c, (int, float)) and not isinstance(c, bool) else _fmt(c) for c in r]
                      for r in rows])
    paths["csv"] = sweep_dir / "trials.csv"
    atomic_write(paths["csv"], buf.getvalue())
    paths["trials_md"] = sweep_dir / "trials.md"
    atomic_write(paths["trials_md"], f"# {spec.name}: trials\n\n{_md_table(header, rows)}\n")

    # ---- Pareto front, hypervolume -------------------------------------------------------------------
    ok = [t for t in done if feasible(spec, figs[t.number])]
    points = _objective_points(spec, ok, figs)
    front_idx = pareto_front(points, spec.directions) if points else []
    front = [ok[i] for i in front_idx]
    front.sort(key=lambda t: tuple(figs[t.number].get(n, math.nan) for n in objective_names))
    hv_history: list[float] = []
    if points:
        normalized, reference = normalize_for_hv(points, spec.directions)
        # in completion order; an infeasible trial adds nothing to the volume
        lookup = {t.number: normalized[i] for i, t in enumerate(ok)}
        ordered = [lookup.get(t.number) for t in done]
        hv_history = hypervolume_history(ordered, reference, ["minimize"] * len(objective_names))
    shown = [c for c in ("m_factor", "params", "size_mb") if c not in objective_names]
    fheader = ["trial", *keys, *objective_names, *shown]
    frows = [[t.number, *[trial_values(spec, t).get(k) for k in keys],
              *[figs[t.number].get(n) for n in [*objective_names, *shown]]] for t in front]
    hv_line = (f"Hypervolume of the front (objectives min-max normalized over the feasible trials, reference 1.1 "
               f"each): {hv_history[-1]:.4f} after {len(done)} completed trials.") if hv_history else \
        "No completed feasible trial yet."
    paths["pareto_md"] = sweep_dir / "pareto.md"
    atomic_write(paths["pareto_md"], f"# {spec.name}: Pareto front over {', '.join(f'{o.metric.text} ({o.direction})' for o in spec.objectives)}\n\n"
                               f"{len(front)} non-dominated of {len(ok)} feasible completed trials "
                               f"({len(done)} completed, {len(finished) - len(done)} failed).\n\n"
                               f"{_md_table(fheader, frows)}\n\n{hv_line}\n")
    paths["pareto_png"] = sweep_dir / "pareto.png"
    _plot_front(spec, done, ok, front, figs, paths["pareto_png"])
    paths["hv_png"] = sweep_dir / "hypervolume.png"
    _plot_history(spec, hv_history, paths["hv_png"])

    # ---- M-factor ranking ----------------------------------------------------------------------------
    ranked = sorted(done, key=lambda t: (-figs[t.number].get("m_factor", -math.inf), t.number))
    mrows = [[i + 1, t.number, *[trial_values(spec, t).get(k) for k in keys], figs[t.number].get(spec.m_factor.accuracy),
              figs[t.number].get("params"), figs[t.number].get("m_factor")] for i, t in enumerate(ranked[:20])]
    paths["mfactor_md"] = sweep_dir / "mfactor.md"
    p_min_entry, p_min_line = p_min_summary(spec, done)
    atomic_write(paths["mfactor_md"], f"# {spec.name}: M-factor ranking\n\nM_α = (1+α)·A·S′/(α·A + S′), S′ = P_min/P "
                                f"(seed 003 eq. 8; S′ = 1 for a trial smaller than P_min), α = {spec.m_factor.alpha:g}, "
                                f"A = {spec.m_factor.accuracy}.\n\n{p_min_line}.\n\n"
                                + _md_table(["rank", "trial", *keys, spec.m_factor.accuracy, "params", "M"], mrows) + "\n")

    # ---- budgets ---------------------------------------------------------------------------------------
    winners: dict[str, Any] = {}
    for name, constraints in spec.budgets.items():
        best = best_under(spec, done, figs, constraints)
        winners[name] = best.number if best is not None else None
        if best is not None:
            _write_winner(spec, best, sweep_dir / "budgets" / name, sweep_dir)

    # ---- summary -----------------------------------------------------------------------------------------
    best_m = ranked[0] if ranked else None
    summary = {"name": spec.name, "sampler": spec.sampler, "trials": {"completed": len(done), "failed": len(finished) - len(done)},
               "objectives": [{"figure": o.metric.text, "direction": o.direction} for o in spec.objectives],
               "front": [t.number for t in front], "hypervolume": hv_history[-1] if hv_history else None,
               "hypervolume_history": hv_history,
               "best_m_factor": {"trial": best_m.number, "m_factor": figs[best_m.number].get("m_factor")} if best_m else None,
               "p_min": p_min_entry,
               "budgets": {k: {"constraints": [c.text for c in spec.budgets[k]], "trial": v} for k, v in winners.items()},
               "figures": {str(n): f for n, f in figs.items()}}
    paths["summary"] = sweep_dir / "summary.json"
    write_json(paths["summary"], summary)
    lines = [f"# Sweep {spec.name}", "", f"Sampler {spec.sampler}; {len(done)} completed, "
             f"{len(finished) - len(done)} failed trials. Objectives: "
             + ", ".join(f"{o.metric.text} ({o.direction})" for o in spec.objectives) + ".", "",
             "## Pareto front", "", _md_table(fheader, frows), "", hv_line, "", "## Budgets", ""]
    for name, number in winners.items():
        cs = ", ".join(c.text for c in spec.budgets[name])
        lines.append(f"- {name} ({cs}): " + (f"trial {number}, `budgets/{name}/pipeline.yaml`" if number is not None
                                             else "no trial meets it"))
    if best_m is not None:
        lines += ["", f"Best M-factor: trial {best_m.number}, M = {figs[best_m.number]['m_factor']:.4f} "
                  f"(`mfactor.md`; {p_min_line}). All trials: `trials.md`, `trials.csv`."]
    paths["md"] = sweep_dir / "sweep.md"
    atomic_write(paths["md"], "\n".join(lines) + "\n")
    return paths


def _write_winner(spec: SweepSpec, trial: Any, d: Path, sweep_dir: Path) -> None:
    """The winning trial as a runnable pipeline.yaml (every option resolved), and `run` linking its run."""
    import yaml

    from compressor.pipeline import Pipeline

    # the spec refuses budget names and the journal runs that would leave the sweep directory; this holds for
    # specs and studies built in Python too, before anything is written
    run = trial.user_attrs.get("run")
    for what, path in (("budget directory", d), ("winner's run", sweep_dir / run if isinstance(run, str) else None)):
        if path is not None and not path.resolve().is_relative_to(sweep_dir.resolve()):
            raise ConfigError(f"the {what} {path} is outside the sweep directory {sweep_dir}; budget names and "
                              f"trial runs are single names inside it (letters, digits, - and _)")
    d.mkdir(parents=True, exist_ok=True)
    inactive = set(trial.user_attrs.get("inactive", ()))
    values = {p.key: p.value(trial.params[p.key]) for p in spec.params
              if p.key in trial.params and p.key not in inactive}
    doc = Pipeline.from_dict(spec.trial_doc(values, f"{spec.name}-{d.name}"), source=str(d)).to_dict()
    atomic_write(d / "pipeline.yaml", yaml.safe_dump(doc, sort_keys=False))
    if run:
        swap_symlink(d / "run", os.path.relpath(sweep_dir / run, d))


def _plot_front(spec: SweepSpec, done: list[Any], ok: list[Any], front: list[Any], figs: dict[int, dict[str, float]],
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.metric.text for o in spec.objectives]
    if len(names) == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [t.number for t in done]
        ys = [figs[t.number].get(names[0], math.nan) for t in done]
        ax.scatter(xs, ys, s=14, c="tab:blue", label="trials")
        best, run = [], None
        for y in ys:
            run = y if run is None or (y > run if spec.directions[0] == "maximize" else y < run) else run
            best.append(run)
        ax.plot(xs, best, c="tab:red", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(names[0])
        ax.legend()
    else:
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
        infeasible = [t for t in done if t not in ok]
        for ax, (i, j) in zip(axes[0], pairs):
            for group, style in ((infeasible, dict(c="lightgray", label="infeasible")),
                                 (ok, dict(c="tab:blue", label="feasible")),
                                 (front, dict(c="tab:red", label="Pareto front"))):
                if group:
                    ax.scatter([figs[t.number].get(names[i], math.nan) for t in group],
                               [figs[t.number].get(names[j], math.nan) for t in group], s=16, **style)
            ax.set_xlabel(f"{names[i]} ({spec.directions[i][:3]})")
            ax.set_ylabel(f"{names[j]} ({spec.directions[j][:3]})")
        axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{spec.name}: {spec.sampler}, {len(done)} trials")
    _save(fig, path)


def _plot_history(spec: SweepSpec, history: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(history) + 1), history, c="tab:green")
    ax.set_xlabel("completed trials")
    ax.set_ylabel("hypervolume (normalized)")
    ax.set_title(f"{spec.name}: {spec.sampler}")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Write a figure atomically, without a timestamp (the same sweep gives the same bytes)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # the temp name has no image suffix: say the format
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
