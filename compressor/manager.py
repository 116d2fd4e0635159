"""The pass manager: a chain of steps run with instruments (TVM's `Sequential` and `PassInstrument`).

A pipeline compiles to a `Sequential` (`Pipeline.compile()`): the model step (the frontend, plus
training), then its passes, then its exporters. A Python chain is the same object; run with the usual
instruments (`compressor.instruments.default_instruments(out)`, what `Pipeline.run` passes), it gets
the same caching, measurement and report as `compress run`:

    chain = Sequential([PruneL1(ratio=0.5), Finetune(epochs=2), OnnxExporter()])
    chain.run(ir, ctx, out="runs/x", instruments=default_instruments("runs/x"))

The manager itself only orders steps and threads the IR through them; it imports no instrument and
reads no pipeline file. Everything around a step is an instrument its caller passes, called in order
before and after each step, on a failure, and at the start and end of the run:
- store: load a finished step from the content-addressed store by its key, or compute it there and save it;
- measure: task metrics, parameters, MACs, size and latency through the step's runtime;
- progress, timing, dump-IR, report; reproducer: on a failure, the resolved pipeline and the failing
  step's input IR, replayed by `compress run --reproduce DIR`.

A step knows how to compute, save and load its own output and which runtime measures it (`Runtime`:
torch for an IR, the exporter itself for an artifact), so no core file knows a pass, an exporter or
a file suffix by name.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from compressor.context import PassContext
from compressor.errors import CompressError, ConfigError, ExportError, FrontendError, PassError
from compressor.ir import ModelIR
# the steps and the run records, re-exported: `from compressor.manager import Instrument, ...` keeps working
from compressor.steps import (ExportStep, InputStep, Instrument, ModelStep, PassStep, Run, RunResult, Runtime,
                              StageRun, Step, StepOutput, Trust, as_step, ir_content_hash, stable_hash, versions)

__all__ = ["ExportStep", "InputStep", "Instrument", "ModelStep", "PassStep", "Run", "RunResult", "Runtime",
           "Sequential", "StageRun", "Step", "StepOutput", "Trust", "as_step", "ir_content_hash", "stable_hash",
           "versions"]

log = logging.getLogger(__name__)


def _exit_error(s: StageRun, exc: SystemExit) -> CompressError:
    """The one-line error for code that called sys.exit() while stage `s` computed or was measured (the
    CLI would otherwise end with that code, 0 included, and no output)."""
    cls = {"model": FrontendError, "export": ExportError}.get(s.kind, PassError)
    return cls(f"stage {s.index} '{s.name}' ({s.kind}): code it ran called sys.exit({exc.code!r}); a model's "
               "factory and forward, and a pass, must return or raise, not exit: fix that code")


class Sequential:
    """Steps run in order with instruments. `steps` may hold a model step first (a pipeline's frontend);
    otherwise `run(ir)` starts from the given IR, recorded as stage 0 ('input') so that the report shows
    what each step cost and gained against it."""

    def __init__(self, steps: Sequence[Any], name: str = "chain") -> None:
        self.steps = [as_step(s) for s in steps]
        self.name = name
        for i, step in enumerate(self.steps):
            if step.kind == "model" and i > 0:
                raise ConfigError(f"{name}: a model step must come first, found one at {i}")

    def to_line(self) -> str:
        return " | ".join(s.label for s in self.steps)

    def __call__(self, ir: ModelIR, ctx: PassContext | None = None) -> ModelIR:
        """Run every step on `ir` in memory (no store, no measurement): the chain as one pass."""
        return self.run(ir, ctx, progress=False).ir

    def run(self, ir: ModelIR | None = None, ctx: PassContext | None = None, *, out: str | Path | None = None,
            instruments: Sequence[Instrument] = (), progress: bool = True, title: str | None = None,
            pipeline: Any = None) -> RunResult:
        """Run the chain with the caller's `instruments` (none: in memory, nothing stored, measured or
        written). `out` is the run directory those instruments write (`default_instruments(out)`: the
        store, measurement, report, reproducer); the manager writes nothing itself, so `out` without
        instruments is refused. `pipeline` (opaque here) is what a reproducer instrument records."""
        if out is not None and not instruments:
            raise ConfigError(f"{self.name}: run(out={str(out)!r}) writes through instruments, and none were given; "
                              "pass instruments=compressor.instruments.default_instruments(out) (store, "
                              "measurement, report), or leave out `out` to run in memory")
        instruments = list(instruments)
        ctx = ctx if ctx is not None else PassContext(progress=progress)
        ctx.progress = progress
        steps = list(self.steps)
        if not steps or steps[0].kind != "model":
            if ir is None:
                raise ConfigError(f"{self.name}: give the IR to start from (run(ir, ctx)), or a pipeline's "
                                  "model step first")
            steps.insert(0, InputStep(ir))
        elif ir is not None:
            raise ConfigError(f"{self.name}: the chain builds its own model (step 0 is {steps[0].label}); "
                              "do not pass an IR")
        run_dir = Path(out) if out is not None else None
        if ctx.root_dir is None:
            ctx.root_dir = run_dir  # a stage's scratch outside the store (the darts frontend's search)
        first = steps[0]
        trust = first.trust() if isinstance(first, (ModelStep, InputStep)) else Trust("")
        built = {f for s in steps[1:] for f in getattr(s.obj, "builds_frontends", lambda: ())()}
        if built - {trust.frontend, "torch"}:
            trust = replace(trust, also=tuple(sorted(built - {trust.frontend, "torch"})))
        run = Run(ctx, run_dir, steps, title or f"{self.name}: {' | '.join(s.label for s in steps)}",
                  pipeline, trust)
        for i in instruments:
            i.enter_run(run)
        ok = False
        try:
            current = self._run_steps(run, instruments)
            ok = True
        finally:
            for i in instruments:
                i.exit_run(run, ok)
        return RunResult(run_dir, run.stages, run.report, current)

    def _run_steps(self, run: Run, instruments: list[Instrument]) -> ModelIR:
        ctx = run.ctx
        current: ModelIR | None = None
        prev: str | None = None
        for index, step in enumerate(run.steps):
            s = StageRun(index, step, step.key(prev), current, len(run.steps))
            with s.resources:
                try:
                    try:
                        for i in instruments:
                            i.before_stage(run, s)
                        if s.output is None:
                            s.output = self._compute(step, s, ctx)
                        for i in instruments:
                            i.after_stage(run, s)
                    except SystemExit as exc:  # user code (a factory, a forward) exited: a failure, not success
                        raise _exit_error(s, exc) from exc
                except BaseException as exc:
                    for i in reversed(instruments):
                        try:
                            i.stage_failed(run, s, exc)
                        except Exception as inner:  # an instrument's failure never hides the step's
                            log.warning("instrument %s failed on %s: %s", type(i).__name__, step.name, inner)
                    raise
            run.stages.append(s)
            current, prev = s.output.ir, s.key
            if step.kind != "export":
                ctx.stages[step.name] = current
            if step.kind == "model":
                ctx.teacher = current
        assert current is not None
        return current

    @staticmethod
    def _compute(step: Step, s: StageRun, ctx: PassContext) -> StepOutput:
        """Run the step with its directory as the context's run directory (training checkpoints land there,
        so a killed step resumes). Without a store, an exporter writes into a fresh temporary folder and
        the context keeps its own run directory."""
        if s.dir is None:
            if step.kind != "export":
                return step.compute(s.input, ctx, ctx.run_dir or Path.cwd())
            s.dir = Path(tempfile.mkdtemp(prefix=f"compressor-{step.name}-"))
            log.info("%s writes into %s (no store)", step.name, s.dir)
        saved = ctx.run_dir
        ctx.run_dir = s.dir
        try:
            return step.compute(s.input, ctx, s.dir)
        finally:
            ctx.run_dir = saved
