"""Architecture search in the DARTS space: one loop, seven algorithms (seed 000 sections 2.3, 4.1-4.2;
seed 004: hpe-darts; seed 002: evolution).

`run_search(options, data, out_dir)` searches the DARTS space (see `search_space.py`) on `data`
and writes `genotype.json`, the α history (`alpha_history.json`, `alpha_history.png`), a checkpoint
after every epoch (`search_checkpoint.pt`; a re-run resumes after the last finished epoch) and
`search_result.json` (a re-run of a finished search returns it at once). Time is recorded per epoch in the
α history (`train_s`: the α and weight steps; `score_s`: the algorithm's `epoch_start` hook, where hpe-darts
scores its ops) and per stage in `search_result.json`'s `stages` (`_stage_times`: training, scoring, and
the stage's wall time).

The train split is cut in two, deterministically (first `train_portion` for the weights w, the rest
for α), as in the references. Each step: an α step on an α batch (after `warmup_epochs`), then a
w step on a w batch. w: SGD (momentum 0.9, wd 3e-4) with a cosine schedule from `w_lr` to
`w_lr_min` over the epochs; α: Adam (betas 0.5, 0.999; wd 1e-3). Gradients of w are clipped at
`grad_clip`.

The algorithms (darts first and second order, pc-darts, p-darts, lambda-darts, em-darts,
hpe-darts, evolution) are classes registered in `algorithms.py` (hpe-darts in `hpe.py`, evolution
in `evolution.py`); this loop calls their hooks (supernet, α step, weight step, epoch start, stage
end, derivation) and owns everything they share: data splits, the weights' schedule, resumption,
progress bars, the α history and its plot. An algorithm without α (evolution) trains its weights on
the whole train split and derives its genotype in `finish`, which may write files of its own into
`out_dir` (evolution: evolution.json and one genotype per MACs budget). Its `evolution:` block only acts
in `finish`, after the epochs, so it may change on resume: a re-run with another `evolution:` block
re-runs the evolution on the trained supernet without retraining it.

Checkpoints and finished results record the options in their flat form (`SearchOptions.key_data`, the
form from before each algorithm had its block), so that folders written before the blocks still resume.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from compressor.data import DataBundle, make_loader
from compressor.errors import ConfigError
# the algorithms' building blocks, re-exported: the mechanism tests and earlier callers import them from here
from compressor.frontends.darts.algorithms import (  # noqa: F401
    arch_grads_first_order, arch_grads_second_order, lambda_alignment, lambda_perturbations, linear_ramp,
    pdarts_dropout, pdarts_limit_skips, pdarts_shrink, weight_gradients,
)
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.gradients import LossFn
from compressor.frontends.darts.ops import PRIMITIVES
# the options and the hooks' Stage live with the algorithms' base class; re-exported for callers of this module
from compressor.frontends.darts.search_base import Objective, SearchOptions, Stage  # noqa: F401
from compressor.frontends.darts.search_space import SearchNetwork
from compressor.store import atomic_path, atomic_write
from compressor.train import segmentation_loss

log = logging.getLogger(__name__)

CHECKPOINT = "search_checkpoint.pt"
RESULT = "search_result.json"
HISTORY = "alpha_history.json"
PLOT = "alpha_history.png"
GENOTYPE = "genotype.json"

# Options that may change between a run and its resumption, by their flat names (`key_data`): the evolution
# block's act only after the epochs.
_RESUMABLE = {"epochs", "max_steps", "stop_stable_epochs", "stop_min_epochs", "evo_population", "evo_generations", "evo_children", "evo_mutation_prob",
              "evo_bn_batches", "evo_objectives", "evo_scalarize", "evo_budgets", "evo_net_channels",
              "evo_net_layers"}


@dataclass
class SearchResult:
    genotype: Genotype
    out_dir: Path
    genotype_path: Path
    alpha_history_path: Path
    plot_path: Path
    seconds: float
    epochs_run: int
    resumed_from: int
    stage_seconds: list[dict[str, Any]] = field(default_factory=list)  # per stage: see `_stage_times`

    def summary(self) -> list[str]:
        """What `compress search` prints: the files, the epochs and the genotype."""
        return [f"genotype: {self.genotype_path}",
                f"alpha history: {self.alpha_history_path} ({self.plot_path.name})",
                f"epochs run: {self.epochs_run} (resumed after {self.resumed_from}); {self.seconds:.1f} s",
                self.genotype.to_json() if hasattr(self.genotype, "to_json") else str(self.genotype)]


# ---- losses ---------------------------------------------------------------------------------------
def task_loss_fn(kind: str) -> LossFn:
    if kind == "segmentation":
        return lambda logits, y: segmentation_loss(logits.float(), y.float())
    return lambda logits, y: F.cross_entropy(logits.float(), y.long())


# ---- α history ------------------------------------------------------------------------------------
def _history_entry(model: SearchNetwork, epoch: int, stage: int, stats: dict[str, float],
                   previous: dict[str, Any] | None) -> dict[str, Any]:
    """One epoch of the α history: the weights, the genotype they derive, and its architecture distance
    M to the previous epoch's (D-DARTS eq. 4.8, `distance.py`: "distance_prev" in the edge encoding;
    "unchanged": the positional encoding's 0, i.e. the same cells; both null for the first epoch)."""
    from compressor.frontends.darts.distance import network_distance

    w = model.arch_weights()
    genotype = model.genotype()
    entry: dict[str, Any] = {"epoch": epoch, "stage": stage, "layers": model.layers,
                             "normal": np.round(w["normal"], 6).tolist(), "reduce": np.round(w["reduce"], 6).tolist(),
                             "primitives_normal": model.primitives_normal, "primitives_reduce": model.primitives_reduce,
                             "genotype": genotype.to_dict(), "distance_prev": None, "unchanged": None}
    if previous is not None and "genotype" in previous:
        before = Genotype.from_dict(previous["genotype"])
        if type(before) is type(genotype):
            entry["distance_prev"] = round(network_distance(genotype, before), 6)
            entry["unchanged"] = network_distance(genotype, before, "positional") == 0
    if "edge_normal" in w:
        entry["edge_normal"] = np.round(w["edge_normal"], 6).tolist()
        entry["edge_reduce"] = np.round(w["edge_reduce"], 6).tolist()
    entry.update({k: float(v) for k, v in stats.items()})
    return entry


def _stable(history: Sequence[dict[str, Any]], stage: int, epoch_in_stage: int, opts: SearchOptions) -> bool:
    """Whether the stage ends early (`stop_stable_epochs`): its last that many epochs each derived the
    genotype of the epoch before, and it has run at least `stop_min_epochs` epochs."""
    n = opts.stop_stable_epochs
    if n == 0 or epoch_in_stage < opts.stop_min_epochs or epoch_in_stage >= opts.stage_epochs[stage] or \
            len(history) < n:
        return False
    return all(h["stage"] == stage and h.get("unchanged") for h in history[-n:])


def plot_alpha_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean softmax(α) per primitive over the edges that hold it, per epoch, normal and reduce cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax_i, kind in enumerate(("normal", "reduce")):
        ax = fig.add_subplot(1, 2, ax_i + 1)
        for name in PRIMITIVES:
            xs, ys = [], []
            for h in history:
                vals = [row[k] for row, prims in zip(h[kind], h[f"primitives_{kind}"])
                        for k, p in enumerate(prims) if p == name]
                if vals:
                    xs.append(h["epoch"])
                    ys.append(sum(vals) / len(vals))
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set_title(f"{kind} cell: mean softmax(α) over edges")
        ax.set_xlabel("epoch")
        ax.margins(y=0.1)  # autoscale: early in a search the weights differ in the third decimal
        if ax_i == 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _atomic_json(doc: Any, path: Path) -> None:
    atomic_write(path, json.dumps(doc, indent=1) + "\n")


def _atomic_torch(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ---- the loop -------------------------------------------------------------------------------------
def _check_data(opts: SearchOptions, data: DataBundle) -> None:
    if data.task.kind not in ("classification", "segmentation"):
        raise ConfigError(f"search supports classification and segmentation data, got task {data.task.kind!r}")
    if len(data.input_shape) != 3:
        raise ConfigError(f"search needs image inputs (C, H, W); data {data.name} has input shape {data.input_shape}")
    h, w = data.input_shape[-2:]
    if h % 4 or w % 4:
        raise ConfigError(f"the supernet reduces the input twice, so height and width must be divisible by 4; "
                          f"data {data.name} is {h}×{w}: resize or crop it")
    if data.task.kind == "segmentation" and data.task.num_classes != 1:
        raise ConfigError(f"segmentation search predicts 1 logit per pixel; got num_classes={data.task.num_classes}")
    if len(data.train) < 2:
        raise ConfigError(f"search splits the train split into a weight half and an α half; data {data.name} has "
                          f"{len(data.train)} training sample(s): give it at least 2")


def _split(train, portion: float) -> tuple[Subset, Subset]:
    n = len(train)
    cut = min(max(1, int(math.floor(portion * n))), n - 1)
    return Subset(train, list(range(cut))), Subset(train, list(range(cut, n)))


def _structural(opts: SearchOptions) -> dict[str, Any]:
    return {k: v for k, v in opts.key_data().items() if k not in _RESUMABLE}


def _differing(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The option names whose stored value differs from the current one. An option the stored run did
    not know (added by a later version) counts as its default, so that an upgrade does not orphan a
    search folder whose options it only extends."""
    defaults = SearchOptions(algorithm=current.get("algorithm", "pc-darts")).key_data(complete=True)
    names = set(stored) | set(current)
    return sorted(k for k in names
                  if stored.get(k, defaults.get(k)) != current.get(k, defaults.get(k)) or k not in defaults)


def _result(out_dir: Path, genotype: Genotype, seconds: float, epochs_run: int, resumed_from: int,
            stage_seconds: list[dict[str, Any]] | None = None) -> SearchResult:
    return SearchResult(genotype=genotype, out_dir=out_dir, genotype_path=out_dir / GENOTYPE,
                        alpha_history_path=out_dir / HISTORY, plot_path=out_dir / PLOT, seconds=seconds,
                        epochs_run=epochs_run, resumed_from=resumed_from, stage_seconds=list(stage_seconds or []))


def _stage_times(times: list[dict[str, Any]], stage: int) -> dict[str, Any]:
    """The time record of `stage` (created at zero): `epochs` run, `train_s` (the epochs' α and weight
    steps), `score_s` (the algorithm's hooks around them: `epoch_start`, `stage_end`, and for the last stage
    the derivation `finish`; hpe-darts scores and prunes its ops there) and `seconds` (the stage's wall time:
    those, plus building its supernet and writing the checkpoint and α history after each epoch)."""
    while len(times) <= stage:
        times.append({"stage": len(times), "epochs": 0, "train_s": 0.0, "score_s": 0.0, "seconds": 0.0})
    return times[stage]


def _rounded(times: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in t.items()} for t in times]


def run_search(options: SearchOptions, data: DataBundle, out_dir: Path, device: str = "cpu",
               progress: bool = True) -> SearchResult:
    """Search `data` with `options`; write genotype.json, the α history and its plot into `out_dir`.

    Re-running with the same `out_dir` resumes after the last finished epoch (only `epochs` and
    `max_steps` may differ from the interrupted run); a finished search returns its stored result."""
    from compressor.progress import progress_bar as tqdm  # one line per bar when stderr is not a terminal

    opts = options
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, result_path = out_dir / CHECKPOINT, out_dir / RESULT
    n_stages = len(opts.stages)
    stage_epochs = opts.stage_epochs
    total = sum(stage_epochs)

    if result_path.is_file() and (out_dir / GENOTYPE).is_file():
        doc = json.loads(result_path.read_text())
        if isinstance(doc.get("options"), dict) and not _differing(doc["options"], opts.key_data()):
            log.info("search: %s already holds a finished search; returning it", out_dir)
            return _result(out_dir, Genotype.load(out_dir / GENOTYPE), doc["seconds"], 0, doc["epochs_done"],
                           doc.get("stages"))

    _check_data(opts, data)
    algo = opts.algorithm_class(opts, task_loss_fn(data.task.kind))
    w_split, a_split = _split(data.train, opts.train_portion) if algo.split_train else (data.train, data.train)

    stage_i, epoch_in_stage, done, history, seconds = 0, 0, 0, [], 0.0
    times: list[dict[str, Any]] = []  # per stage, see `_stage_times`
    ckpt = None
    if ckpt_path.is_file():
        try:  # tensors and plain data only: a checkpoint never unpickles code
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"search checkpoint {ckpt_path} is not a plain checkpoint ({first[:160]}); it was not "
                              "loaded: delete it to restart the search") from None
        diff = _differing(ckpt["options"], _structural(opts))
        if diff:
            raise ConfigError(f"{out_dir} holds a search with different options ({', '.join(diff)}); only "
                              f"{', '.join(sorted(_RESUMABLE))} may change on resume: use a fresh out_dir or the "
                              f"same options")
        stage_i, epoch_in_stage, done = ckpt["stage"], ckpt["epoch_in_stage"], ckpt["done"]
        history, seconds = ckpt["history"], ckpt["seconds"]
        times = ckpt.get("stage_times", [])  # none in checkpoints from before the per-stage times
        st = Stage(algo, data, stage_i, ckpt["stage_state"]["primitives_normal"],
                   ckpt["stage_state"]["primitives_reduce"], device)
        st.load_state_dict(ckpt["stage_state"])
        torch.set_rng_state(ckpt["rng"].cpu())
        log.info("search: resumed from %s after epoch %d", ckpt_path, done)
    else:
        t0 = time.perf_counter()
        st = Stage(algo, data, 0, None, None, device)
        _stage_times(times, 0)["seconds"] += time.perf_counter() - t0
    resumed_from = done
    start = time.perf_counter()

    dtype = next(st.model.parameters()).dtype
    epochs_run = 0
    while True:
        if epoch_in_stage >= stage_epochs[stage_i]:  # the stage is over: the next one (p-darts, hpe-darts) or stop
            if stage_i + 1 >= n_stages:
                break
            t0 = time.perf_counter()
            pn, pr = algo.stage_end(st.model, stage_i)
            t1 = time.perf_counter()
            rec = _stage_times(times, stage_i)
            rec["score_s"] += t1 - t0
            rec["seconds"] += t1 - t0
            stage_i, epoch_in_stage = stage_i + 1, 0
            st = Stage(algo, data, stage_i, pn, pr, device)
            _stage_times(times, stage_i)["seconds"] += time.perf_counter() - t1
            log.info("search: %s stage %d: %d cells, %d ops per edge", opts.algorithm, stage_i + 1,
                     opts.stages[stage_i], len(st.model.primitives_normal[0]))
            continue
        if done >= total:
            break
        e = epoch_in_stage
        model = st.model
        t_epoch = time.perf_counter()
        lr = st.set_lr(opts)
        warm = e < opts.warmup
        # every history entry has the same keys; an algorithm without a λ or a mutation records 0
        schedule = {"lr": lr, "lambda": 0.0, "mutation_prob": 0.0, **algo.epoch_start(model, stage_i, e)}
        t_steps = time.perf_counter()

        w_loader = make_loader(w_split, opts.batch_size, shuffle=True, seed=opts.seed + done)
        a_loader = make_loader(a_split, opts.batch_size, shuffle=True, seed=opts.seed + done + 7919)
        a_iter = iter(a_loader)
        steps = len(w_loader) if opts.max_steps == 0 else min(opts.max_steps, len(w_loader))
        sums = {"loss": 0.0, "val_loss": 0.0, "alignment": 0.0}
        counts = {"loss": 0, "val_loss": 0, "alignment": 0}
        bar = tqdm(total=steps, desc=f"{opts.algorithm} {done + 1}/{total}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        model.train()
        for step, (x, y) in enumerate(w_loader):
            if step >= steps:
                break
            x, y = x.to(device, dtype=dtype), y.to(device)
            if not warm:
                try:
                    xv, yv = next(a_iter)
                except StopIteration:
                    a_iter = iter(a_loader)
                    xv, yv = next(a_iter)
                xv, yv = xv.to(device, dtype=dtype), yv.to(device)
                sums["val_loss"] += algo.arch_step(st, x, y, xv, yv, lr)
                counts["val_loss"] += 1
            for k, v in algo.weight_step(st, x, y).items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4f}")
        bar.close()
        t_trained = time.perf_counter()
        st.epoch += 1
        epoch_in_stage += 1
        done += 1
        epochs_run += 1
        epoch_stats = {k: sums[k] / counts[k] for k in sums if counts[k]}
        epoch_stats.update(schedule)
        epoch_stats.update({"score_s": t_steps - t_epoch, "train_s": t_trained - t_steps})
        history.append(_history_entry(model, done, stage_i, epoch_stats, history[-1] if history else None))
        log.info("search %s epoch %d/%d loss %.4f genotype %s", opts.algorithm, done, total,
                 epoch_stats.get("loss", float("nan")), history[-1]["genotype"])
        if _stable(history, stage_i, epoch_in_stage, opts):
            log.info("search: stage %d's genotype unchanged for %d epochs: ending the stage after epoch %d of %d",
                     stage_i + 1, opts.stop_stable_epochs, epoch_in_stage, stage_epochs[stage_i])
            history[-1]["stopped_early"] = True
            epoch_in_stage = stage_epochs[stage_i]
        rec = _stage_times(times, stage_i)
        rec["epochs"] += 1
        rec["score_s"] += t_steps - t_epoch
        rec["train_s"] += t_trained - t_steps
        rec["seconds"] += time.perf_counter() - t_epoch  # before the checkpoint: it records the times so far
        seconds_now = seconds + time.perf_counter() - start
        t_saved = time.perf_counter()
        _atomic_torch({"options": _structural(opts), "stage": stage_i, "epoch_in_stage": epoch_in_stage,
                       "done": done, "history": history, "seconds": seconds_now, "rng": torch.get_rng_state(),
                       "stage_state": st.state_dict(), "stage_times": times}, ckpt_path)
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)
        rec["seconds"] += time.perf_counter() - t_saved

    t0 = time.perf_counter()
    genotype = algo.finish(st.model, data, out_dir, device, progress).validate()
    rec = _stage_times(times, stage_i)
    rec["score_s"] += time.perf_counter() - t0
    rec["seconds"] += time.perf_counter() - t0
    genotype.save(out_dir / GENOTYPE)
    seconds_total = seconds + time.perf_counter() - start
    if not (out_dir / HISTORY).is_file():
        _atomic_json(history, out_dir / HISTORY)
        plot_alpha_history(history, out_dir / PLOT)
    _atomic_json({"genotype": genotype.to_dict(), "seconds": seconds_total, "epochs_done": done,
                  "stages": _rounded(times), "options": opts.key_data()}, result_path)
    return _result(out_dir, genotype, seconds_total, epochs_run, resumed_from, _rounded(times))
