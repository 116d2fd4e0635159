"""Replay a failed stage from the reproducer a run wrote (`compress run --reproduce DIR`).

A reproducer (`compressor.instruments.ReproducerInstrument`) holds the failing step's name and options,
its input IR, the earlier stages it reads (distill's teacher), the data spec, seed and device, and the
resolved pipeline. Replaying rebuilds exactly that context and runs that one step (after measuring its
input), without the store: no earlier stage is recomputed, nothing is cached. Its output goes to
`DIR/replay/`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.errors import ConfigError
from compressor.instruments import default_instruments, read_reproducer
from compressor.manager import RunResult, Sequential


def replay(path: str | Path, progress: bool = True) -> RunResult:
    """Run the failed step of the reproducer at `path` again; raises what it raises."""
    from compressor.context import PassContext
    from compressor.data import build_data
    from compressor.ir import ModelIR
    from compressor.pipeline import EvaluateOptions, Pipeline
    from compressor.registry import EXPORTERS, PASSES, _load_builtins

    root = Path(path)
    doc = read_reproducer(root)
    _load_builtins()
    out = root / "replay"
    evaluate = EvaluateOptions() if doc.get("evaluate") is None else \
        _options(EvaluateOptions, doc["evaluate"], "evaluate")
    if doc["kind"] == "model":  # the frontend (or its training) failed: rebuild it from the pipeline
        if not (root / "pipeline.yaml").is_file():
            raise ConfigError(f"{root}: the failing stage builds the model, and the reproducer has no pipeline.yaml")
        pipeline = Pipeline.from_yaml(root / "pipeline.yaml")
        pipeline.passes, pipeline.exports = [], []
        return pipeline.compile().run(ctx=pipeline.context(progress), out=out, store=out / ".store", force=True,
                                      evaluate=evaluate, progress=progress,
                                      instruments=_instruments(out, evaluate, progress))
    registry = PASSES if doc["kind"] == "pass" else EXPORTERS
    cls = registry.get_or_error(str(doc["step"]), f"{root}/reproduce.json step")
    obj = cls.from_mapping(doc.get("options") or {}, doc["step"])
    if not doc.get("input"):
        raise ConfigError(f"{root}: the reproducer has no input IR (it had no recipe), so the stage cannot be "
                          "replayed")
    trust = (doc.get("trust") or {}).get("factory") or False  # the factory the failed run itself ran
    ir = ModelIR.load(root / "input", trust_factory=trust)
    data_spec = doc.get("data")
    data = None
    if data_spec:
        spec = dict(data_spec)
        data = build_data(spec.pop("name"), spec, seed=int(doc.get("seed", 0)))
    ctx = PassContext(seed=int(doc.get("seed", 0)), device=str(doc.get("device", "cpu")), data=data,
                      progress=progress, data_spec=data_spec)
    for name in doc.get("refs", []):
        ctx.stages[name] = ModelIR.load(root / "refs" / name, trust_factory=trust)
    ctx.teacher = ctx.stages.get("baseline")
    return Sequential([obj], name=f"reproduce {doc['step']}").run(
        ir, ctx, out=out, store=out / ".store", force=True, evaluate=evaluate, progress=progress,
        instruments=_instruments(out, evaluate, progress))


def _instruments(out: Path, evaluate: Any, progress: bool) -> list[Any]:
    return default_instruments(out, store=out / ".store", evaluate=evaluate, progress=progress, force=True,
                               reproducer=False)


def _options(cls: type, raw: Any, context: str) -> Any:
    from compressor.options import parse_options

    return parse_options(cls, raw, context)
