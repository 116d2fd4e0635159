"""The instruments the pass manager (`compressor.manager`) calls around every step.

`default_instruments` gives a run's usual set, in the order their hooks run:
store (load or compute-and-save), measure, timing, progress, dump-IR (opt-in), report, reproducer.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from compressor.steps import Instrument, Run, StageRun, stable_hash
from compressor.options import options_dict
from compressor.precision import get_precision
from compressor.errors import StoreError
from compressor.store import (
    Store,
    atomic_write,
    link_stage,
    read_json,
    read_metrics,
    sealed_record,
    swap_dir,
    temp_path,
    write_json,
    write_metrics,
)

log = logging.getLogger(__name__)

REPRODUCE_DIR = "reproduce"
REPRODUCE_FILE = "reproduce.json"


class Say:
    """Progress lines on stderr; silent when progress is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def view_name(s: StageRun) -> str:
    return f"{s.index:02d}_{s.name}"


@contextlib.contextmanager
def store_errors(store: Store, what: str) -> Iterator[None]:
    """An OSError of the store itself as a StoreError naming the store, not the run's --out."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if isinstance(exc.filename, str) else ""
        raise StoreError(f"store {store.root}: cannot {what}{where} ({exc.strerror or exc}); check the store "
                         "directory (--store)") from None


class StoreInstrument(Instrument):
    """Stages live in the content-addressed store; the run directory links to them (`NN_name`).

    Before a step: take its key's lock (held until the step is measured), then load it when finished and
    intact, or open its directory in the store (resuming an interrupted attempt). After: save and commit
    it. At the end of a successful run, view links of stages this run no longer has are removed (the
    stages stay in the store)."""

    def __init__(self, run_dir: Path, store: str | Path | None = None, force: bool = False) -> None:
        self.run_dir = run_dir
        self.store = Store(store if store is not None else run_dir.parent / ".store")
        self.force = force
        self.views: set[str] = set()

    def enter_run(self, run: Run) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "pipeline.txt", " | ".join(s.label for s in run.steps) + "\n")

    def before_stage(self, run: Run, s: StageRun) -> None:
        view = view_name(s)
        self.views.add(view)
        with store_errors(self.store, "take a stage lock"):
            s.resources.enter_context(self.store.lock(s.key))
        with store_errors(self.store, "read a stage"):
            info = None if self.force else self.store.finished(s.key)
        if info is not None:
            out = s.step.load(self.store.dir(s.key), info, s.input, run.trust)
            if out is not None:
                s.output, s.cached = out, True
                self._show(s, view, self.store.dir(s.key))
                return
        d, s.resumed = self.store.begin(s.key, self.force)
        self._show(s, view, d)

    def _show(self, s: StageRun, view: str, d: Path) -> None:
        """Link the run's view to the stage and record the link in the store (under the key's lock), so
        that `cache prune` keeps the stage while the link shows it."""
        s.dir = link_stage(self.run_dir, view, d)
        self.store.add_referrer(s.key, s.dir)

    def after_stage(self, run: Run, s: StageRun) -> None:
        if s.cached:
            return
        assert s.output is not None
        d = self.store.dir(s.key)
        with store_errors(self.store, "save a stage"):
            out = s.step.save(s.output, d)
            shutil.rmtree(d / "checkpoints", ignore_errors=True)  # scratch until the stage is done
            self.store.commit(s.key, {"name": s.name, "label": s.label, "kind": s.kind,
                                      "seconds": round(time.perf_counter() - s.start, 3), **out.info},
                              files=out.files)

    def exit_run(self, run: Run, ok: bool) -> None:
        if not ok:
            return
        for child in self.run_dir.iterdir():  # this run's own stale view entries
            if child.name[:2].isdigit() and child.name[2:3] == "_" and child.name not in self.views:
                if child.is_symlink():
                    child.unlink()
                elif child.is_dir():
                    shutil.rmtree(child)  # an old-layout stage folder of this run


class MeasureInstrument(Instrument):
    """After each step: task metrics, params, MACs, size and latency through the step's runtime. Kept per
    evaluation setting in the stage's directory (`metrics-<eval key>.json`), so runs sharing a stage but
    measuring it differently do not overwrite each other."""

    def __init__(self, evaluate: Any = None) -> None:
        from compressor.evaluate.options import EvaluateOptions

        self.ev = evaluate if evaluate is not None else EvaluateOptions()
        self.lat = self.ev.latency_options()
        self.eval_key = stable_hash({"evaluate": options_dict(self.ev), "latency": options_dict(self.lat)})

    def after_stage(self, run: Run, s: StageRun) -> None:
        stage = sealed_record(s.dir, s.key) if s.dir is not None else None
        record = read_metrics(s.dir, self.eval_key, stage) if s.dir is not None and stage is not None else None
        if record is None:
            record = measure(s, run.ctx, self.ev, self.lat)
            record["seconds"] = (stage or {}).get("seconds", round(time.perf_counter() - s.start, 3))
            if s.dir is not None and stage is not None:
                write_metrics(s.dir, self.eval_key, stage, record)
        record["options"] = s.step.options()  # typed option values, not only the label
        s.record = record


class TimingInstrument(Instrument):
    """Wall time of each step (load or compute, plus measurement), and `timing.json` in the run directory."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir

    def after_stage(self, run: Run, s: StageRun) -> None:
        s.seconds = time.perf_counter() - s.start

    def exit_run(self, run: Run, ok: bool) -> None:
        if self.run_dir is not None and ok:
            rows = [{"index": s.index, "name": s.name, "cached": s.cached, "wall_s": round(s.seconds, 3)}
                    for s in run.stages]
            write_json(self.run_dir / "timing.json", rows)


class ProgressInstrument(Instrument):
    """One line when a step starts computing and one when it is done (with its metrics and size)."""

    def __init__(self, say: Say) -> None:
        self.say = say

    def enter_run(self, run: Run) -> None:
        self.say(f"pipeline: {' | '.join(s.label for s in run.steps)}")
        if run.run_dir is not None:
            self.say(f"run directory: {run.run_dir}")

    def before_stage(self, run: Run, s: StageRun) -> None:
        if not s.cached:
            verb = "resuming" if s.resumed else "exporting" if s.kind == "export" else "running"
            self.say(f"[{s.index + 1}/{s.total}] {s.label}: {verb}")

    def after_stage(self, run: Run, s: StageRun) -> None:
        m = s.record.get("metrics", {})
        shown = "".join(f"; {k} {100 * v:.2f}" for k, v in m.items()
                        if isinstance(v, (int, float)))  # not per_class_iou's table
        size = f"; {s.record['size_bytes'] / 1e6:.3f} MB" if "size_bytes" in s.record else ""
        self.say(f"[{s.index + 1}/{s.total}] {s.label}: {'cached' if s.cached else f'done in {s.seconds:.1f}s'}"
                 f"{shown}{size}")


class DumpIRInstrument(Instrument):
    """After each IR step, `dump/NN_name.txt`: what `compress inspect` shows, then the module as printed by
    torch (MLIR's print-ir-after-all)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "dump"

    def after_stage(self, run: Run, s: StageRun) -> None:
        if s.kind == "export" or s.ir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / f"{view_name(s)}.txt", f"{s.ir.summary()}\n\n{s.ir.module}\n")


class ReportInstrument(Instrument):
    """report.md / report.json / report.png from every stage's record, at the end of a successful run."""

    def __init__(self, run_dir: Path, say: Say) -> None:
        self.run_dir, self.say = run_dir, say

    def exit_run(self, run: Run, ok: bool) -> None:
        if not ok or not all(s.record for s in run.stages):
            return
        from compressor.report import write_report

        run.report = write_report([s.record for s in run.stages], self.run_dir, title=run.title)
        self.say(f"report: {run.report['md']}")


class ReproducerInstrument(Instrument):
    """On a failed step, `<run dir>/reproduce/`: the resolved pipeline, the failing step (name, options),
    its input IR and the stages it reads, so `compress run --reproduce DIR` replays that step alone
    (MLIR's crash reproducers). A successful run removes a stale one."""

    def __init__(self, run_dir: Path, say: Say, evaluate: Any = None) -> None:
        self.dir, self.say, self.evaluate = run_dir / REPRODUCE_DIR, say, evaluate

    def stage_failed(self, run: Run, s: StageRun, exc: BaseException) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, StoreError):  # Ctrl-C; a damaged store: not the
            return                                                          # step's failure
        import yaml

        tmp = temp_path(self.dir)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ctx = run.ctx
        refs = {name: ctx.stages[name] for name in s.step.references() if name in ctx.stages}
        if "baseline" in s.step.references() and "baseline" not in refs and ctx.teacher is not None:
            refs["baseline"] = ctx.teacher
        saved_input = s.input is not None and _save_ir(s.input, tmp / "input")
        for name, ir in refs.items():
            _save_ir(ir, tmp / "refs" / name)
        doc = {"format": 1, "index": s.index, "kind": s.kind, "step": s.name, "label": s.label,
               "options": s.step.options(), "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:2000],
               "seed": ctx.seed, "device": ctx.device, "data": ctx.data_spec, "input": bool(saved_input),
               "refs": sorted(refs), "trust": {"frontend": run.trust.frontend, "factory": run.trust.factory},
               "evaluate": options_dict(self.evaluate) if self.evaluate is not None else None}
        write_json(tmp / REPRODUCE_FILE, doc)
        if run.pipeline is not None:
            (tmp / "pipeline.yaml").write_text(yaml.safe_dump(run.pipeline.to_dict(), sort_keys=False))
        swap_dir(tmp, self.dir)
        self.say(f"reproducer: {self.dir} (replay the failing stage with: compress run --reproduce {self.dir})")

    def exit_run(self, run: Run, ok: bool) -> None:
        if ok and (self.dir / REPRODUCE_FILE).is_file():
            shutil.rmtree(self.dir, ignore_errors=True)


def _save_ir(ir: Any, d: Path) -> bool:
    from compressor.errors import FrontendError

    try:
        ir.save(d)
        return True
    except FrontendError as exc:  # an IR without a recipe cannot be written
        log.warning("reproducer: %s not saved: %s", d.name, exc)
        return False


def default_instruments(run_dir: str | Path | None, *, store: str | Path | None = None, evaluate: Any = None,
                        progress: bool = True, force: bool = False, dump_ir: bool = False,
                        reproducer: bool = True) -> list[Instrument]:
    """A run's instruments, for `Sequential.run(..., instruments=...)`: with a run directory, store + measure +
    timing + progress (+ dump-IR) + report + reproducer; without one, measure + timing + progress (nothing
    is written). `evaluate` is an EvaluateOptions (None: its defaults)."""
    say = Say(progress)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is None:
        return [MeasureInstrument(evaluate), TimingInstrument(), ProgressInstrument(say)]
    out: list[Instrument] = [StoreInstrument(run_dir, store, force), MeasureInstrument(evaluate),
                             TimingInstrument(run_dir), ProgressInstrument(say)]
    if dump_ir:
        out.append(DumpIRInstrument(run_dir))
    out.append(ReportInstrument(run_dir, say))
    if reproducer:
        out.append(ReproducerInstrument(run_dir, say, evaluate))
    return out


# ---- measurement -------------------------------------------------------------------------------------

def eval_loader(ctx: Any, ev: Any) -> Any:
    from torch.utils.data import Subset

    from compressor.data import make_loader

    ds = ctx.data.split(ev.split)
    if ev.max_samples and ev.max_samples < len(ds):
        ds = Subset(ds, range(ev.max_samples))
    return make_loader(ds, ev.batch_size, shuffle=False, num_workers=ctx.data.num_workers)


def measure(s: StageRun, ctx: Any, ev: Any, lat: Any) -> dict[str, Any]:
    """A stage's record: task metrics, params, MACs, size, latency. The step's runtime measures it (torch
    for an IR, the exporter for its artifact): nothing here knows a file type."""
    from compressor.evaluate.stats import count_macs, count_params

    assert s.output is not None
    ir, step = s.output.ir, s.step
    runtime = step.runtime(ir)
    artifact = step.artifact_path(s.output, s.dir)
    macs = None
    if ev.macs:
        import copy

        # a module at a cast precision other than float32 (fp16) is counted on a float copy
        module = ir.module if get_precision(ir.precision).input_dtype is None else copy.deepcopy(ir.module).float()
        macs = count_macs(module, tuple(x.float() for x in ir.example_inputs(batch=1)))
    metrics: dict[str, Any] = {}
    skipped_metrics: str | None = None
    if ctx.data is not None:
        metrics, skipped_metrics = runtime.evaluate(artifact, eval_loader(ctx, ev), ir, threads=lat.threads,
                                                    progress=ctx.progress)
    if s.output.artifact is None:
        size, rel = ir.state_bytes(), (s.dir.name if s.dir is not None else s.name)
    else:
        size = sum((s.output.artifact.parent / f).stat().st_size for f in s.output.files or [s.output.artifact.name])
        rel = f"{s.dir.name if s.dir is not None else s.name}/{s.output.artifact.name}"
    latency, skipped = measure_latency(runtime, artifact, lat) if lat.enabled else ({}, {})
    record = {"index": s.index, "name": s.name, "label": s.label, "kind": s.kind, "artifact": rel,
              "precision": ir.precision, "metrics": metrics, "params": count_params(ir.module), "macs": macs,
              "size_bytes": size, "latency": latency, "latency_skipped": skipped}
    if lat.predict:
        record["latency_pred"], record["latency_pred_skipped"] = predict_latency(ir, s, lat)
    if skipped_metrics is not None:
        record["metrics_skipped"] = skipped_metrics
    stats = ir.history[-1].stats if s.kind == "pass" and ir.history else {}
    if stats.get("note"):  # what a pass wants the reader to know (e.g. prune-dario: "both" found no attention)
        record["note"] = stats["note"]
    produced = getattr(s.step.obj, "produces", None) if s.kind == "pass" else None
    if produced is not None:  # what the precision the pass produces reports (int8: its mixed-precision table)
        record.update(get_precision(produced).stage_record(stats))
    return record


def predict_latency(ir: Any, s: StageRun, lat: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Predicted latency (ms) on each of `lat.predict`'s backends from the per-block latency table kept in the
    stage store, and why a backend got none."""
    from compressor.evaluate.latency_table import predict_ir_latency

    store = Path(s.dir).resolve().parent if s.dir is not None else None
    pred: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for backend in lat.predict:
        value = predict_ir_latency(ir, backend, lat.batch, store, lat.threads)
        if isinstance(value, str):
            skipped[backend] = value
        else:
            pred[backend] = round(value, 6)
    return pred, skipped


def measure_latency(runtime: Any, artifact: Path | None, opts: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Latency on each configured backend the runtime has: ({backend: stats}, {backend: why skipped}). A
    backend that cannot run on this machine is skipped with its reason; other errors propagate."""
    from compressor.evaluate.latency import BackendUnavailable

    latency: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for backend in [b for b in opts.backends if b in runtime.latency_backends]:
        try:
            stats = runtime.latency(artifact, backend, opts)
        except BackendUnavailable as exc:
            log.info("latency on %s skipped: %s", backend, exc)
            skipped[backend] = str(exc)
            continue
        latency[backend] = stats.to_dict()
    return latency, skipped


def read_reproducer(path: Path) -> dict[str, Any]:
    """The reproduce.json of the reproducer directory `path`, validated field by field
    (`compressor.schema.REPRODUCER`): a malformed one is one ConfigError naming the field."""
    from compressor import schema
    from compressor.errors import ConfigError

    file = path / REPRODUCE_FILE
    where = f"give the '{REPRODUCE_DIR}' folder a failed run wrote, e.g. runs/<name>/{REPRODUCE_DIR}"
    doc = schema.load_json(file, REPRODUCE_FILE, max_bytes=schema.REPRODUCE_MAX_BYTES, fix=where) \
        if file.is_file() else None
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise ConfigError(f"{path}: not a reproducer directory (no valid {REPRODUCE_FILE}); {where}")
    return schema.validate(doc, schema.REPRODUCER, str(file), fix=f"the reproducer was altered; {where}")


__all__ = ["DumpIRInstrument", "MeasureInstrument", "ProgressInstrument", "ReportInstrument",
           "ReproducerInstrument", "StoreInstrument", "TimingInstrument", "default_instruments", "measure",
           "read_reproducer"]
