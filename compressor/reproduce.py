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
from compressor.plugins import load_plugins


def replay(path: str | Path, progress: bool = True, trust_factory: bool = False) -> RunResult:
    """Run the failed step of the reproducer at `path` again; raises what it raises.

    A reproducer may come from someone else, so rebuilding a user factory it names (its input IR's,
    its refs', its pipeline's `torch` frontend, or its `torch-dataset` data) needs `trust_factory`;
    without it that is refused in one line naming the factory, before anything runs."""
    from compressor.context import PassContext
    from compressor.data import build_data, data_factory
    from compressor.ir import ModelIR
    from compressor.pipeline import EvaluateOptions, Pipeline
    from compressor.registry import EXPORTERS, PASSES

    root = Path(path)
    doc = read_reproducer(root)
    load_plugins()
    out = root / "replay"
    evaluate = EvaluateOptions() if doc.get("evaluate") is None else \
        _options(EvaluateOptions, doc["evaluate"], "evaluate")
    if doc["kind"] == "model":  # the frontend (or its training) failed: rebuild it from the pipeline
        if not (root / "pipeline.yaml").is_file():
            raise ConfigError(f"{root}: the failing stage builds the model, and the reproducer has no pipeline.yaml")
        pipeline = Pipeline.from_yaml(root / "pipeline.yaml")
        pipeline.passes, pipeline.exports = [], []
        chain = pipeline.compile()
        data_spec = pipeline.data.as_data() if pipeline.data else None
        _check_trust(root, [("its pipeline.yaml's model", chain.steps[0].trust().factory),
                            ("its pipeline.yaml's data", data_factory(data_spec))], trust_factory)
        return chain.run(ctx=pipeline.context(progress), out=out, progress=progress,
                         instruments=_instruments(out, evaluate, progress))
    registry = PASSES if doc["kind"] == "pass" else EXPORTERS
    cls = registry.get_or_error(doc["step"], f"{root}/reproduce.json step")
    obj = cls.from_mapping(doc.get("options") or {}, doc["step"])
    if not doc.get("input"):
        raise ConfigError(f"{root}: the reproducer has no input IR (it had no recipe), so the stage cannot be "
                          "replayed")
    irs = [("its input IR", root / "input")] + [(f"its ref '{name}'", root / "refs" / name)
                                                for name in doc.get("refs", [])]
    _check_trust(root, [(what, _factory(d)) for what, d in irs] + [("its data", data_factory(doc.get("data")))],
                 trust_factory)
    ir = ModelIR.load(root / "input", trust_factory=trust_factory)
    data_spec = doc.get("data")
    data = None
    if data_spec:
        spec = dict(data_spec)
        data = build_data(spec.pop("name"), spec, seed=doc.get("seed", 0))
    ctx = PassContext(seed=doc.get("seed", 0), device=doc.get("device", "cpu"), data=data,
                      progress=progress, data_spec=data_spec)
    for _, d in irs[1:]:
        ctx.stages[d.name] = ModelIR.load(d, trust_factory=trust_factory)
    ctx.teacher = ctx.stages.get("baseline")
    return Sequential([obj], name=f"reproduce {doc['step']}").run(
        ir, ctx, out=out, progress=progress, instruments=_instruments(out, evaluate, progress))


def _factory(ir_dir: Path) -> str | None:
    """The user factory that rebuilding the IR in `ir_dir` would call (read from its ir.json, nothing run)."""
    from compressor.ir import Recipe, read_document

    recipe = read_document(ir_dir)[0]["recipe"]
    return recipe["frontend"].get("factory") if recipe is not None and Recipe(**recipe).runs_user_code() else None


def _check_trust(root: Path, needs: list[tuple[str, str | None]], trust_factory: bool) -> None:
    """Refuse, before anything is imported, to rebuild a user factory the reproducer names without consent."""
    for what, factory in needs:
        if factory is not None and not trust_factory:
            raise ConfigError(f"{root}: replaying rebuilds {what} by calling the user factory '{factory}', which "
                              "imports and runs its code; add --trust-factory (compress run --reproduce DIR "
                              "--trust-factory) only if you trust where this reproducer came from")


def _instruments(out: Path, evaluate: Any, progress: bool) -> list[Any]:
    return default_instruments(out, store=out / ".store", evaluate=evaluate, progress=progress, force=True,
                               reproducer=False)


def _options(cls: type, raw: Any, context: str) -> Any:
    from compressor.options import parse_options

    return parse_options(cls, raw, context)
