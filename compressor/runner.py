"""Runs a Pipeline: it compiles to a `compressor.manager.Sequential` (frontend, passes, exporters), run
with the default instruments (`compressor.instruments`).

Stages live in the content-addressed store (`compressor.store`, default `.store` beside the run
directory, e.g. `runs/.store/<key>/`); the run directory is the human view:
```
runs/<name>/
  pipeline.txt             the pipeline, one line
  00_baseline -> ../.store/<key>/   ir.json  weights.safetensors  stage.json  metrics-<eval key>.json
  01_prune-l1 -> ../.store/<key>/
  03_onnx     -> ../.store/<key>/   model.onnx  stage.json  metrics-<eval key>.json
  report.json  report.md  report.png  timing.json
  reproduce/               only after a failed stage: replay it with `compress run --reproduce`
```
Each stage has a key: a hash of (previous stage's key, stage name, options, the stage's own code
version, the versions of the packages it uses); the first stage hashes the data and model spec. A
stage whose key is in the store, finished and intact (every file's sha256 as recorded), is loaded
instead of recomputed; a changed option changes that stage's key and every later key. Two runs sharing a
prefix of stages share those stages; concurrent runs compute a stage once (per-key lock). A kill in the
middle of a stage leaves it unfinished in the store, and the next run of that key resumes it from its
training checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.manager import RunResult, stable_hash, versions

__all__ = ["RunResult", "run_pipeline", "stable_hash", "versions"]


def run_pipeline(pipeline: Any, out: str | Path | None = None, progress: bool = True, force: bool = False,
                 store: str | Path | None = None, dump_ir: bool = False) -> RunResult:
    """Run `pipeline` into `out` (default runs/<name>), its stages in `store` (default `.store` beside it)."""
    run_dir = pipeline.run_dir(out)
    return pipeline.compile().run(ctx=pipeline.context(progress=progress), out=run_dir, store=store,
                                  evaluate=pipeline.evaluate, progress=progress, force=force, dump_ir=dump_ir,
                                  title=f"{pipeline.name}: {pipeline.to_line()}", pipeline=pipeline)
