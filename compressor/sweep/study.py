"""Run a sweep: an Optuna study in the sweep directory, trials as pipeline runs sharing the stage store.

```
runs/<sweep>/
  sweep.yaml        the resolved sweep (base pipeline inlined)
  study.journal     Optuna's journal file storage: every trial, its parameters, figures and state
  trials/0007/      each trial's run directory (stage links into the shared store, report)
  trials.csv trials.md pareto.md pareto.png hypervolume.png mfactor.md summary.json sweep.md
  budgets/<name>/pipeline.yaml  (+ run -> ../../trials/NNNN)   the winner of each budget
```

Resume: a killed sweep re-run continues; trials it left RUNNING are marked failed ("interrupted") and
queued again with the same parameters. A finished sweep re-run runs nothing and rewrites the same
report. Only one `compress sweep` drives a sweep directory at a time (a lock file).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from compressor.errors import ConfigError
from compressor.sweep.figures import completed, direction_of, sweep_p_min, trial_figures
from compressor.sweep.smallest import PMin, fixed_p_min
from compressor.sweep.spec import SweepSpec, row_figures

log = logging.getLogger(__name__)

JOURNAL = "study.journal"
SPEC_FILE = "sweep.yaml"


@dataclass
class SweepResult:
    dir: Path
    study: Any
    report: dict[str, Path]
    ran: int  # trials run by this call


# ---- figures ------------------------------------------------------------------------------------------

def make_fitness(spec: SweepSpec) -> Callable[[Any, Any], float | None]:
    """The scalar evolution and RL maximize: the sampler's `fitness` figure, else the first objective (negated
    when minimized). Recomputed over all completed trials at each call, so that with `p_min: trials` the
    M-factor's P_min follows the trials as they arrive (with `space` or a number it is fixed)."""
    from compressor.sweep.spec import Metric

    text = getattr(spec.sampler_options, "fitness", None)
    metric = Metric.parse(text, "sampler fitness") if text else spec.objectives[0].metric
    sign = -1.0 if direction_of(spec, metric.text) == "minimize" else 1.0

    def fitness(study: Any, trial: Any) -> float | None:
        import optuna

        if trial.state != optuna.trial.TrialState.COMPLETE:
            return None
        figs = trial_figures(spec, trial.user_attrs.get("figures", {}), sweep_p_min(spec, completed(study)))
        value = figs.get(metric.text)
        return None if value is None or not math.isfinite(value) else sign * value

    return fitness


# ---- samplers -----------------------------------------------------------------------------------------

def grid_values(spec: SweepSpec) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, list[Any]] = {}
    for p in spec.params:
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            out[p.key] = list(d.choices)
        elif isinstance(d, IntDistribution):
            out[p.key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            out[p.key] = [round(d.low + i * d.step, 12) for i in range(n + 1)]
    return out


def grid_size(spec: SweepSpec) -> int:
    return math.prod(len(v) for v in grid_values(spec).values())


def make_sampler(spec: SweepSpec) -> Any:
    """The spec's sampler, built by its registered factory."""
    from compressor.registry import SAMPLERS

    return SAMPLERS.get_or_error(spec.sampler, "sampler").make(spec.sampler_options, spec)


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid, asked and told by the sweep loop: the loop stops at the grid's size itself
        (`Study.stop`, which the grid calls once exhausted, works only inside `optimize`)."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass

    return GridSampler


def grid_sampler(*args: Any, **kwargs: Any) -> Any:
    return _grid_sampler_class()(*args, **kwargs)


# ---- the study ----------------------------------------------------------------------------------------

def _unreadable(sweep_dir: Path, why: str) -> ConfigError:
    return ConfigError(f"{sweep_dir / JOURNAL} is not a readable sweep study ({why}); restore it from a copy, or "
                       f"delete it and run `compress sweep SWEEP --out {sweep_dir}` to start over")


def open_study(spec: SweepSpec, sweep_dir: Path, create: bool = True) -> Any:
    """The sweep's study (Optuna journal file in the sweep directory); refuses one started by another sweep."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = sweep_dir / JOURNAL
    if not create and not journal.is_file():
        raise ConfigError(f"{sweep_dir}: no {JOURNAL} here; give the directory a `compress sweep` wrote")
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                    sampler=make_sampler(spec), load_if_exists=True)
        mark = study.user_attrs.get("fingerprint")
    except (ValueError, KeyError, TypeError, AssertionError, IndexError, AttributeError) as exc:
        # optuna replays the journal line by line and fails on garbage with whatever its parser meets: a
        # UnicodeDecodeError or JSONDecodeError (both ValueErrors), a KeyError for a missing field, or
        # "AssertionError: Should not reach." for an unknown operation
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise _unreadable(sweep_dir, type(exc).__name__ + (f": {reason}" if reason else "")) from None
    if mark is None:
        study.set_user_attr("fingerprint", spec.fingerprint())
    elif mark != spec.fingerprint():
        raise ConfigError(f"{sweep_dir} holds a sweep with another base, space or objectives; give this one a new "
                          f"--out (or delete {journal} to start over)")
    _keep_p_min(spec, study, sweep_dir)
    return study


def _keep_p_min(spec: SweepSpec, study: Any, sweep_dir: Path) -> None:
    """`p_min: space`: the study records the P_min it started with (`p_min`), and a resumed sweep or a rewritten
    report uses that one, so the M values do not change with the code that builds the network."""
    if spec.m_factor.p_min != "space":
        return
    raw = study.user_attrs.get("p_min")
    if raw is None:
        study.set_user_attr("p_min", fixed_p_min(spec).to_dict())  # type: ignore[union-attr]
        return
    recorded = PMin.from_dict(raw)
    if recorded is None or recorded.source != "space":
        raise _unreadable(sweep_dir, f"p_min {raw!r:.80}, not a recorded P_min of the space")
    if spec.resolved_p_min is not None and spec.resolved_p_min.value != recorded.value:
        log.warning("the space's smallest network now has %s params; this sweep keeps the P_min it started with "
                    "(%s)", f"{spec.resolved_p_min.value:,}", f"{recorded.value:,}")
    spec.resolved_p_min = recorded


@contextlib.contextmanager
def driving(sweep_dir: Path) -> Iterator[None]:
    """One driver per sweep directory: a second `compress sweep` on it stops with one line."""
    import fcntl

    with open(sweep_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another compress sweep is running in {sweep_dir}; wait for it, or give --out "
                              "another directory") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recover_interrupted(study: Any) -> int:
    """Trials left RUNNING by a killed sweep: failed as 'interrupted' and queued again with their parameters."""
    import optuna

    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        optuna.trial.Trial(study, t._trial_id).set_user_attr("interrupted", True)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    return len(stale)


def counted(study: Any) -> int:
    """Trials that count towards `trials`: completed ones and real failures (not interrupted ones)."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("interrupted"))


def suggest(spec: SweepSpec, trial: Any) -> dict[str, Any]:
    """Sample the trial's values. Every key is sampled, so that every sampler sees one fixed space (NSGA-II
    and the grid only recombine parameters present in every trial); a key whose pass is not in the chosen
    pass-list variant is then inactive: not applied, listed in the trial's `inactive` attribute, blank in
    the tables. Trials that differ only in inactive keys are the same pipeline, loaded from the store."""
    import copy

    from optuna.distributions import CategoricalDistribution, FloatDistribution

    values: dict[str, Any] = {}
    inactive: list[str] = []
    doc = copy.deepcopy(spec.base)
    for p in sorted(spec.params, key=lambda q: not q.is_variant):
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            raw = trial.suggest_categorical(p.key, d.choices)
        elif isinstance(d, FloatDistribution):
            raw = trial.suggest_float(p.key, d.low, d.high, log=d.log, step=d.step)
        else:
            raw = trial.suggest_int(p.key, d.low, d.high, log=d.log, step=d.step)
        if not p.applies(doc):
            inactive.append(p.key)
            continue
        values[p.key] = p.value(raw)
        if p.is_variant:
            doc = spec._with(doc, p, values[p.key])
    if inactive:
        trial.set_user_attr("inactive", inactive)
    return values


def run_sweep(spec: SweepSpec, out: str | Path | None = None, store: str | Path | None = None,
              progress: bool = True, trials: int | None = None) -> SweepResult:
    """Run (or continue) `spec` into `out` (default runs/<name>); trials' stages in `store` (default `.store`
    beside the sweep directory, shared with every run there)."""
    import optuna

    from compressor.pipeline import check_run_dir
    from compressor.progress import progress_bar
    from compressor.store import write_json
    from compressor.sweep.executors import make_executor, trial_payload
    from compressor.sweep.report import write_sweep_report

    sweep_dir = Path(out) if out is not None else Path("runs") / spec.name
    check_run_dir(sweep_dir)
    fixed = fixed_p_min(spec)  # p_min: space builds the smallest network here, before the study or any trial
    if fixed is not None and spec.m_factor.p_min == "space":
        log.info("%s", fixed.describe())
    sweep_dir.mkdir(parents=True, exist_ok=True)
    store_dir = Path(store) if store is not None else sweep_dir.parent / ".store"
    target = min(trials or spec.trials, grid_size(spec)) if spec.sampler == "grid" else (trials or spec.trials)
    ran = 0
    with driving(sweep_dir):
        study = open_study(spec, sweep_dir)
        _write_spec(spec, sweep_dir)
        retried = recover_interrupted(study)
        if retried:
            log.warning("%d trial(s) interrupted by a previous kill are run again", retried)
        executor = make_executor(spec.executor, spec.executor_options)
        pending: dict[cf.Future, tuple[Any, dict[str, Any]]] = {}
        bar = progress_bar(total=target, initial=min(counted(study), target), desc=f"sweep {spec.name}",
                           disable=not progress, unit="trial")
        try:
            while True:
                while len(pending) < executor.capacity and counted(study) + len(pending) < target:
                    trial = study.ask()
                    values = suggest(spec, trial)
                    doc = spec.trial_doc(values, f"{spec.name}-{trial.number:04d}")
                    out_dir = sweep_dir / "trials" / f"{trial.number:04d}"
                    trial.set_user_attr("run", str(out_dir.relative_to(sweep_dir)))
                    pending[executor.submit(trial_payload(doc, out_dir, store_dir, executor.threads))] = (trial, values)
                if not pending:
                    break
                done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    trial, values = pending.pop(future)
                    _tell(spec, study, trial, future.result())
                    ran += 1
                    bar.update(1)
        finally:
            bar.close()
            executor.close()
        write_json(sweep_dir / "state.json", {"trials": counted(study), "target": target})
        report = write_sweep_report(spec, study, sweep_dir)
    return SweepResult(sweep_dir, study, report, ran)


def _tell(spec: SweepSpec, study: Any, trial: Any, result: dict[str, Any]) -> None:
    import optuna

    trial.set_user_attr("wall_s", round(result.get("wall_s", 0.0), 3))
    if not result.get("ok"):
        trial.set_user_attr("error", result.get("error", "failed"))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.info("trial %d failed: %s", trial.number, result.get("error"))
        return
    rows = result["rows"]
    row = next((r for r in reversed(rows) if r.get("name") == spec.stage), None) if spec.stage else rows[-1]
    figures = row_figures(row or {})
    figures["wall_s"] = round(result.get("wall_s", 0.0), 3)
    trial.set_user_attr("figures", figures)
    trial.set_user_attr("stage", (row or {}).get("name"))
    figs = trial_figures(spec, figures, sweep_p_min(spec, [*completed(study), _Figs(figures)]))
    values = [figs.get(o.metric.text) for o in spec.objectives]
    missing = [o.metric.text for o, v in zip(spec.objectives, values) if v is None or not math.isfinite(v)]
    if missing:
        trial.set_user_attr("error", f"figure(s) {', '.join(missing)} not measured on stage "
                                     f"'{(row or {}).get('name')}' (a latency backend skipped there?)")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    for c in spec.constraints:  # feasible when <= 0; TPE and NSGA-II read them (Trial.set_constraint)
        trial.set_constraint(c.text, min(c.slack(figs), 1e300))
    study.tell(trial, values)


class _Figs:
    """A trial not yet told, as `sweep_p_min` reads trials."""

    def __init__(self, figures: dict[str, float]) -> None:
        self.user_attrs = {"figures": figures}


def _write_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    import yaml

    from compressor.store import atomic_write

    atomic_write(sweep_dir / SPEC_FILE, yaml.safe_dump(spec.document, sort_keys=False))


def load_sweep(sweep_dir: Path) -> tuple[SweepSpec, Any]:
    """A sweep directory's spec and study (for `compress sweep --report DIR`). A journal that optuna cannot
    replay, or whose trials hold attributes of other types than a sweep writes, is refused in one line."""
    spec_file = Path(sweep_dir) / SPEC_FILE
    if not spec_file.is_file():
        raise ConfigError(f"{sweep_dir}: no {SPEC_FILE} here; give the directory a `compress sweep` wrote")
    spec = SweepSpec.from_yaml(spec_file)
    study = open_study(spec, Path(sweep_dir), create=False)
    for trial in study.get_trials(deepcopy=False):
        bad = _malformed(spec, trial)
        if bad:
            raise _unreadable(Path(sweep_dir), f"trial {trial.number} has {bad}")
    return spec, study


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _malformed(spec: SweepSpec, trial: Any) -> str | None:
    """What in a journal's trial the report cannot read, or None. A sweep writes `figures` as figure -> number,
    `inactive` as a list of space keys, `run` as trials/NNNN and `wall_s` as a number; a categorical value must
    be one of its key's choices. Anything else came from an edited or foreign journal."""
    attrs = trial.user_attrs
    figures, inactive, run = attrs.get("figures", {}), attrs.get("inactive", []), attrs.get("run")
    if not isinstance(figures, dict) or not all(isinstance(k, str) and _number(v) for k, v in figures.items()):
        return f"figures {figures!r:.80}, not figure: number"
    if not isinstance(inactive, list) or not all(isinstance(k, str) for k in inactive):
        return f"inactive {inactive!r:.80}, not a list of space keys"
    if run is not None and (not isinstance(run, str) or Path(run).is_absolute() or ".." in Path(run).parts):
        return f"run {run!r:.80}, not a trial directory inside the sweep (trials/NNNN)"
    if "wall_s" in attrs and not _number(attrs["wall_s"]):
        return f"wall_s {attrs['wall_s']!r:.80}, not a number"
    for p in spec.params:
        if p.labels and p.key in trial.params and trial.params[p.key] not in p.labels:
            return f"{p.key} = {trial.params[p.key]!r:.80}, not one of its choices"
    return None
