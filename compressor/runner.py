"""Runs a Pipeline: frontend → passes → exporters, evaluating after every stage.

Stages live in the content-addressed store (`compressor.store`, default `.store` beside the run
directory, e.g. `runs/.store/<key>/`); the run directory is the human view:
```
runs/<name>/
  pipeline.txt             the pipeline, one line
  00_baseline -> ../.store/<key>/   ir.json  weights.safetensors  stage.json  metrics-<eval key>.json
  01_prune-l1 -> ../.store/<key>/
  03_onnx     -> ../.store/<key>/   model.onnx  stage.json  metrics-<eval key>.json
  report.json  report.md  report.png
```
Each stage has a key: a hash of (previous stage's key, stage name, options, package versions); the
first stage hashes the data and model spec. A stage whose key is in the store, finished and intact
(every file's sha256 as recorded), is loaded instead of recomputed; a changed option changes that
stage's key and every later key. Two runs sharing a prefix of stages share those stages; concurrent
runs compute a stage once (per-key lock). A kill in the middle of a stage leaves it unfinished in the
store, and the next run of that key resumes it from its training checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from compressor.context import PassContext
from compressor.ir import IR_JSON, WEIGHTS, ModelIR
from compressor.options import options_dict
from compressor.store import STAGE_FILE, Store, link_stage, read_json, write_json

log = logging.getLogger(__name__)



def versions(packages: tuple[str, ...] = ("torch",)) -> dict[str, str]:
    """Installed versions of compressor and `packages` (what a stage declares it uses)."""
    out = {}
    for pkg in ("compressor", *packages):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageOutcome:
    index: int
    name: str
    label: str
    kind: str
    dir: Path
    cached: bool
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path
    stages: list[StageOutcome]
    report: dict[str, Path]
    ir: ModelIR

    @property
    def cached(self) -> list[bool]:
        return [s.cached for s in self.stages]


class Reporter:
    """Progress lines at the edge; silent when progress is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def _clean_stale(run_dir: Path, keep: set[str]) -> None:
    """Drop this run's own view entries of stages it no longer has (the stages stay in the store)."""
    for child in run_dir.iterdir():
        if child.name[:2].isdigit() and child.name[2:3] == "_" and child.name not in keep:
            if child.is_symlink():
                child.unlink()
            elif child.is_dir():
                shutil.rmtree(child)  # an old-layout stage folder of this run


def run_pipeline(pipeline: Any, out: str | Path | None = None, progress: bool = True, force: bool = False,
                 store: str | Path | None = None) -> RunResult:
    """Run `pipeline` into `out` (default runs/<name>), its stages in `store` (default `.store` beside it)."""
    from compressor.data import build_data
    from compressor.report import write_report

    run_dir = Path(out) if out is not None else Path("runs") / pipeline.name
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = Store(store if store is not None else run_dir.parent / ".store")
    say = Reporter(progress)
    total = len(pipeline.stages())
    say(f"pipeline: {pipeline.to_line()}")
    say(f"run directory: {run_dir} (stages in {stages.root})")
    write_text_atomic(run_dir / "pipeline.txt", pipeline.to_line() + "\n")

    data = build_data(pipeline.data.name, options_dict(pipeline.data.options), seed=pipeline.seed) \
        if pipeline.data is not None else None
    ctx = PassContext(seed=pipeline.seed, device=pipeline.device, data=data, run_dir=run_dir, progress=progress,
                      root_dir=run_dir, data_spec=pipeline.data.as_data() if pipeline.data else None)
    def stage_key(obj: Any, **parts: Any) -> str:
        """What determines a stage: `parts` (its input's key, name, options), its own code version and
        the versions of the packages it declares, nothing else."""
        return stable_hash({**parts, "version": obj.version, "versions": versions(obj.packages)})

    ev = pipeline.evaluate
    eval_key = stable_hash({"evaluate": options_dict(ev), "latency": options_dict(ev.latency_options())})

    outcomes: list[StageOutcome] = []
    keep: set[str] = set()

    def ir_stage(index: int, name: str, label: str, kind: str, key: str, compute: Any, record: Any) -> ModelIR:
        """Load the finished stage `key` from the store, or compute it there (resuming an interrupted attempt)."""
        view = f"{index:02d}_{name}"
        keep.add(view)
        start = time.perf_counter()
        with stages.lock(key):
            ir = None if force else _load_cached(stages, key, pipeline)
            cached = ir is not None
            if ir is None:
                d, resumed = stages.begin(key, force)
                link_stage(run_dir, view, d)
                say(f"[{index + 1}/{total}] {label}: {'resuming' if resumed else 'running'}")
                ctx.run_dir = d
                try:
                    ir = compute()
                finally:
                    ctx.run_dir = run_dir
                ir.save(d)
                shutil.rmtree(d / "checkpoints", ignore_errors=True)  # scratch until the stage is done
                stages.commit(key, {"name": name, "label": label, "kind": kind,
                                    "seconds": round(time.perf_counter() - start, 3), **record(ir)},
                              files=[IR_JSON, WEIGHTS])
            d = link_stage(run_dir, view, stages.dir(key))
            outcomes.append(_evaluate_stage(index, name, label, kind, d, ir, None, cached, start, ctx, ev, eval_key,
                                            say, total))
        ctx.stages[name] = ir
        return ir

    # ---- stage 0: frontend (+ training) ----------------------------------------------------
    front = pipeline.model.frontend
    key = stage_key(front, data=pipeline.data.as_data() if pipeline.data else None, model=pipeline.model.as_data(),
                    seed=pipeline.seed)

    def build() -> ModelIR:
        ir = pipeline.model.frontend.build(data, ctx)
        if pipeline.model.train is not None:
            ir = _train_baseline(ir, pipeline.model.train, ctx, ctx.run_dir)
        return ir

    ir = ir_stage(0, "baseline", pipeline.model.describe(), "model", key, build,
                  lambda ir: {"versions": versions(front.packages)})
    outcomes[-1].record["options"] = pipeline.model.as_data()  # typed option values, not only the label
    ctx.teacher = ir

    # ---- passes ----------------------------------------------------------------------------
    index = 1
    for stage in pipeline.passes:
        key = stage_key(stage.obj, prev=key, pass_=stage.name, options=stage.obj.options_dict())
        ir = ir_stage(index, stage.name, stage.describe(), "pass", key, lambda s=stage, i=ir: s.obj(i, ctx),
                      lambda ir: {"history": ir.history[-1].__dict__ if ir.history else None})
        outcomes[-1].record["options"] = stage.obj.options_dict()
        index += 1

    # ---- exporters (each takes the final IR) ------------------------------------------------
    for stage in pipeline.exports:
        ekey = stage_key(stage.obj, prev=key, export=stage.name, options=stage.obj.options_dict())
        view = f"{index:02d}_{stage.name}"
        keep.add(view)
        start = time.perf_counter()
        with stages.lock(ekey):
            info = None if force else stages.finished(ekey)
            cached = info is not None
            if info is None:
                d, _ = stages.begin(ekey, force)
                link_stage(run_dir, view, d)
                say(f"[{index + 1}/{total}] {stage.describe()}: exporting")
                result = stage.obj.export(ir, d, ctx)
                info = stages.commit(ekey, {"name": stage.name, "label": stage.describe(), "kind": "export",
                                            "primary": result.primary.name, "files": [p.name for p in result.files],
                                            "info": result.info, "seconds": round(time.perf_counter() - start, 3)},
                                     files=[p.name for p in result.files])
            d = link_stage(run_dir, view, stages.dir(ekey))
            outcomes.append(_evaluate_stage(index, stage.name, stage.describe(), "export", d, ir, d / info["primary"],
                                            cached, start, ctx, ev, eval_key, say, total, exporter=stage.obj))
        outcomes[-1].record["options"] = stage.obj.options_dict()
        index += 1

    _clean_stale(run_dir, keep)
    title = f"{pipeline.name}: {pipeline.to_line()}"
    report = write_report([o.record for o in outcomes], run_dir, title=title)
    say(f"report: {report['md']}")
    return RunResult(run_dir, outcomes, report, ir)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load_cached(stages: Store, key: str, pipeline: Any) -> ModelIR | None:
    """A finished, intact stage's IR, rebuilt only from a recipe of this pipeline's own frontend (a torch
    recipe only for this pipeline's factory: rebuilding it runs that code). A stage that cannot be loaded
    is recomputed, with a warning that says why."""
    from compressor.errors import FrontendError
    from compressor.ir import read_document

    if stages.finished(key) is None:
        return None
    d = stages.dir(key)
    own = pipeline.model.frontend
    try:
        doc, _ = read_document(d)
        name = (doc["recipe"] or {}).get("frontend", {}).get("name")
        if name != own.name:
            raise FrontendError(f"its recipe names frontend '{name}', this pipeline's is '{own.name}'")
        return ModelIR.load(d, trust_factory=getattr(own.options, "factory", False) or False)
    except FrontendError as exc:
        log.warning("stage %s is recomputed: %s", d.name, exc)
        return None


def _train_baseline(ir: ModelIR, opts: Any, ctx: PassContext, d: Path) -> ModelIR:
    from compressor.train import train_stage

    start = time.perf_counter()
    result = train_stage(ctx, ir.module, ir.task, opts, offset=0, name="train", desc="train")
    ir.meta["train"] = {"epochs": opts.epochs, "final_loss": round(result.final_loss, 5),
                        "seconds": round(time.perf_counter() - start, 1)}
    return ir


def _eval_loader(ctx: PassContext, ev: Any) -> Any:
    from torch.utils.data import Subset

    from compressor.data import make_loader

    ds = ctx.data.split(ev.split)
    if ev.max_samples and ev.max_samples < len(ds):
        ds = Subset(ds, range(ev.max_samples))
    return make_loader(ds, ev.batch_size, shuffle=False)


def _evaluate_stage(index: int, name: str, label: str, kind: str, d: Path, ir: ModelIR, artifact: Path | None,
                    cached: bool, start: float, ctx: PassContext, ev: Any, eval_key: str, say: Reporter,
                    total: int, exporter: Any = None) -> StageOutcome:
    info = read_json(d / STAGE_FILE) or {}
    stage_key = info.get("key")
    metrics_file = d / f"metrics-{eval_key}.json"  # per evaluation setting: runs sharing the stage may differ
    saved = read_json(metrics_file)
    if saved and saved.get("eval_key") == eval_key and saved.get("stage_key") == stage_key:
        record = saved["record"]
    else:
        record = _measure(index, name, label, kind, d, ir, artifact, ctx, ev, exporter)
        record["seconds"] = info.get("seconds", round(time.perf_counter() - start, 3))
        write_json(metrics_file, {"eval_key": eval_key, "stage_key": stage_key, "record": record})
    seconds = time.perf_counter() - start
    m = record.get("metrics", {})
    shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in m.items() if v is not None)
    say(f"[{index + 1}/{total}] {label}: {'cached' if cached else f'done in {seconds:.1f}s'}; "
        f"{shown}; {record['size_bytes'] / 1e6:.3f} MB")
    return StageOutcome(index, name, label, kind, d, cached, seconds, record)


def _measure(index: int, name: str, label: str, kind: str, d: Path, ir: ModelIR, artifact: Path | None,
             ctx: PassContext, ev: Any, exporter: Any = None) -> dict[str, Any]:
    """A stage's record: task metrics, params, MACs, size, latency. An IR stage is measured in torch; an
    exporter's artifact through that exporter's own runtime (the runner knows no file type)."""
    import torch

    from compressor.evaluate.metrics import evaluate_module
    from compressor.evaluate.stats import count_macs, count_params

    lat_opts = ev.latency_options()
    fp32 = ir.module if ir.precision == "fp32" else None
    macs = None
    if ev.macs:
        import copy

        module = fp32 if fp32 is not None else copy.deepcopy(ir.module).float()
        macs = count_macs(module, ir.example_inputs(batch=1) if fp32 is not None else
                          tuple(x.float() for x in ir.example_inputs(batch=1)))
    metrics: dict[str, Any] = {}
    metrics_skipped: str | None = None
    if artifact is None:
        if ctx.data is not None:
            dtype = torch.float16 if ir.precision == "fp16" else None
            metrics = evaluate_module(ir.module, _eval_loader(ctx, ev), ir.task, device="cpu", dtype=dtype,
                                      progress=ctx.progress, desc=f"evaluate {name}")
        size = ir.state_bytes()
        rel = d.name
    else:
        if ctx.data is not None:
            metrics, metrics_skipped = exporter.evaluate(artifact, _eval_loader(ctx, ev), ir, threads=lat_opts.threads,
                                                         progress=ctx.progress)
        info = read_json(d / STAGE_FILE) or {}
        size = sum((d / f).stat().st_size for f in info.get("files", [artifact.name]))
        rel = f"{d.name}/{artifact.name}"
    latency, skipped = _latency(ir, artifact, lat_opts, exporter) if lat_opts.enabled else ({}, {})
    record = {"index": index, "name": name, "label": label, "kind": kind, "artifact": rel,
              "precision": ir.precision, "metrics": metrics, "params": count_params(ir.module), "macs": macs,
              "size_bytes": size, "latency": latency, "latency_skipped": skipped}
    if metrics_skipped is not None:
        record["metrics_skipped"] = metrics_skipped
    note = ir.history[-1].stats.get("note") if kind == "pass" and ir.history else None
    if note:  # what a pass wants the reader to know (e.g. prune-dario: "both" found no attention)
        record["note"] = note
    return record


def _latency(ir: ModelIR, artifact: Path | None, opts: Any, exporter: Any = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Latency of this stage on each configured backend that applies (torch-* for an IR stage, the
    exporter's `latency_backends` for its artifact): ({backend: stats}, {backend: why skipped}). A backend
    that cannot run on this machine is skipped with its reason; other errors propagate."""
    from compressor.evaluate.latency import BackendUnavailable, latency_ir

    latency: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    applies = ("torch-cpu", "torch-cuda") if artifact is None else exporter.latency_backends
    for backend in [b for b in opts.backends if b in applies]:
        try:
            if artifact is None:  # the IR at its own precision (fp16 IRs in fp16)
                stats = latency_ir(ir, backend, batch=opts.batch, threads=opts.threads, warmup=opts.warmup,
                                   iters=opts.iters, min_seconds=opts.min_seconds,
                                   cuda_graphs=opts.cuda_graphs and backend == "torch-cuda")
            else:
                stats = exporter.latency(artifact, backend, opts)
        except BackendUnavailable as exc:
            log.info("latency on %s skipped: %s", backend, exc)
            skipped[backend] = str(exc)
            continue
        latency[backend] = stats.to_dict()
    return latency, skipped
