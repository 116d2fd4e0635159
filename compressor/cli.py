"""`compress`: the command-line edge of the compiler.

Errors the compiler raises on purpose (CompressError) become one line on stderr and exit code 2;
`--debug` shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

import click

from compressor.clikit import OneLineGroup, handle_errors
from compressor.errors import ConfigError
from compressor.evaluate.backends import AUTO, BACKENDS, describe_auto
from compressor.precision import cast_names

EPILOG = """\b
Examples:
  compress run samples/quickstart.yaml                 # run a pipeline, write runs/quickstart/
  compress run p.yaml --set passes.prune-l1.ratio=0.4   # override an option, re-run from that pass
  compress validate p.yaml                              # check a pipeline without running it
  compress sweep samples/sweep_mfactor.yaml             # many trials, objectives, Pareto front, budgets
  compress passes                                       # every pass and its options
  compress inspect runs/quickstart/01_prune-l1          # recipe, tensors per module, history
  compress cache ls                                     # the stage store the runs share
  compress bench runs/quickstart/04_onnx/model.onnx     # latency (onnxruntime; no torch needed)
  compress genotype distance DARTS_V2 PDARTS            # architecture distance (D-DARTS metric M)
"""


@contextlib.contextmanager
def writes_to(run_dir: Path) -> Iterator[None]:
    """A run's OSErrors (disk full, permission denied, a path component that is a file) as one line
    naming the path and the OS's reason."""
    try:
        yield
    except BrokenPipeError:  # stdout closed early (`| head`): click handles it
        raise
    except OSError as exc:
        name = exc.filename if isinstance(exc.filename, str) else None
        reason = exc.strerror or str(exc)
        if name is not None and not Path(name).resolve().is_relative_to(run_dir.resolve()):
            raise ConfigError(f"cannot access {name}: {reason}") from exc
        raise ConfigError(f"cannot write {name or run_dir}: {reason}; pass --out a writable directory with "
                          f"free space") from exc


class CompressGroup(OneLineGroup):
    """`compress`: its own commands, and the command groups plugins register (`register_command`: the darts
    frontend's `genotype`). Plugins load only when a name is not one of the own commands, or for the listing,
    so that `compress bench` stays free of torch."""

    def _mount_plugins(self) -> None:
        from compressor.plugins import load_plugins
        from compressor.registry import COMMANDS

        load_plugins()
        for name in COMMANDS.names():
            if name not in self.commands:
                self.add_command(COMMANDS[name], name)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name not in self.commands:
            self._mount_plugins()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._mount_plugins()
        return super().list_commands(ctx)


class RegistryHelp(click.Command):
    """A command whose help names registry entries: `{searches}`, `{search_frontends}`, `{samplers}` and
    `{executors}` in its docstring are filled from the registries (after loading the plugins) when the help
    is shown."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from compressor.frontend import searching
        from compressor.registry import EXECUTORS, SAMPLERS, SEARCHES

        lists = {"searches": SEARCHES.names, "search_frontends": searching, "samplers": SAMPLERS.names,
                 "executors": EXECUTORS.names}
        text = self.help or ""
        for key, names in lists.items():
            if "{" + key + "}" in text:
                text = text.replace("{" + key + "}", " | ".join(names()))
        original, self.help = self.help, text
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = original


@click.group(cls=CompressGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="compressor")
def main(debug: bool, verbose: int) -> None:
    """compressor: a compiler for model compression.

    A pipeline (YAML) names a frontend that produces a model, passes that compress it (prune-l1,
    finetune, fp16, ...) and exporters (onnx). After every stage it measures task metrics,
    parameters, MACs, artifact size and latency, and writes report.md / report.json / report.png.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: runs/<pipeline name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pipeline value, e.g. model.train.epochs=2 or passes.prune-l1.ratio=0.4 (repeatable).")
@click.option("--force", is_flag=True, help="Recompute every stage, ignoring finished ones.")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Stage store shared by runs (default: .store beside the run directory, e.g. runs/.store).")
@click.option("--dump-ir", is_flag=True, help="After each stage, write dump/NN_name.txt: its IR summary and module.")
@click.option("--reproduce", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Replay only the failed stage of a reproducer (the reproduce/ folder a failed run wrote).")
@click.option("--trust-factory", is_flag=True,
              help="With --reproduce: allow rebuilding a stage whose recipe calls a user factory "
                   "('package.module:callable'): that imports and runs its code, so only for sources you trust.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@handle_errors
def run(pipeline: Path | None, out: Path | None, overrides: tuple[str, ...], force: bool, store: Path | None,
        dump_ir: bool, reproduce: Path | None, trust_factory: bool, quiet: bool) -> None:
    """Run PIPELINE: build, compress, export, measure, report.

    Finished stages are kept in the stage store; running again resumes after the last finished
    stage, and a changed option re-runs from the stage it belongs to. When a stage fails, the run
    writes a reproducer (runs/<name>/reproduce/: the resolved pipeline, the stage, its input IR);
    `compress run --reproduce runs/<name>/reproduce` replays that stage alone (add --trust-factory when
    it rebuilds a user factory, i.e. runs code the reproducer names).
    """
    if reproduce is not None:
        if pipeline is not None or overrides or out is not None:
            raise ConfigError("--reproduce DIR replays a stage on its own; give it without PIPELINE, --set or --out")
        from compressor.reproduce import replay

        with writes_to(reproduce):
            result = replay(reproduce, progress=not quiet, trust_factory=trust_factory)
        click.echo(result.report["md"].read_text())
        return
    if trust_factory:  # a run rebuilds its own pipeline's factory without being asked
        raise ConfigError("--trust-factory applies to --reproduce DIR only; a run of PIPELINE calls its own "
                          "factory without it")
    if pipeline is None:
        raise ConfigError("missing PIPELINE; give a pipeline file (e.g. compress run samples/quickstart.yaml) or "
                          "--reproduce DIR")
    from compressor.pipeline import Pipeline

    p = Pipeline.from_yaml(pipeline, overrides)
    with writes_to(p.run_dir(out)):
        result = p.run(out=out, progress=not quiet, force=force, store=store, dump_ir=dump_ir)
        report = result.report["md"].read_text()
    click.echo(report)


@main.command(cls=RegistryHelp)
@click.argument("sweep", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Sweep directory (default: runs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a sweep value, e.g. sampler.name=random or trials=10 (repeatable).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Run up to this many trials (default: trials:).")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Stage store the trials share (default: .store beside the sweep directory).")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Only regenerate the outputs of the sweep in DIR from its study.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@handle_errors
def sweep(sweep: Path | None, out: Path | None, overrides: tuple[str, ...], trials: int | None, store: Path | None,
          report_dir: Path | None, quiet: bool) -> None:
    """Run SWEEP: trials of a base pipeline over a search space, several objectives, budgets.

    SWEEP names a base pipeline (a file or inline), a space over pipeline paths (lists, ranges,
    'declared' for an option's declared space, or named pass-list variants), objectives (iou,
    accuracy, params, size_mb, macs, latency_ms@backend, m_factor, weighted), constraints and
    budgets, a sampler ({samplers}) and an executor ({executors}).
    Everything is validated before the first trial. Trials share the stage store, so trials
    that differ only in a late pass reuse the earlier stages. The study lives in the sweep
    directory: re-running continues a killed sweep, and a finished one only rewrites its report.
    Outputs: trials.csv/md, pareto.md/png, hypervolume.png, mfactor.md, budgets/<name>/pipeline.yaml,
    sweep.md. See samples/sweep_mfactor.yaml and samples/sweep_insar.yaml.
    """
    if report_dir is not None:
        if sweep is not None or overrides or out is not None:
            raise ConfigError("--report DIR regenerates an existing sweep's outputs; give it without SWEEP, --set or --out")
        from compressor.sweep.report import write_sweep_report
        from compressor.sweep.study import load_sweep

        spec, study = load_sweep(report_dir)
        with writes_to(report_dir):
            paths = write_sweep_report(spec, study, report_dir)
        click.echo(paths["md"].read_text())
        return
    if sweep is None:
        raise ConfigError("missing SWEEP; give a sweep file (e.g. compress sweep samples/sweep_mfactor.yaml) or "
                          "--report DIR")
    from compressor.sweep.spec import SweepSpec
    from compressor.sweep.study import run_sweep

    spec = SweepSpec.from_yaml(sweep, overrides)
    sweep_dir = out if out is not None else Path("runs") / spec.name
    with writes_to(sweep_dir):
        result = run_sweep(spec, out=sweep_dir, store=store, progress=not quiet, trials=trials)
    click.echo(result.report["md"].read_text())


@main.command(cls=RegistryHelp)
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Search directory (default: runs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value, e.g. search.epochs=2 or search.algorithm=darts (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@handle_errors
def search(config: Path, out: Path | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Run an architecture search alone (DARTS family by default) and write genotype.json.

    CONFIG holds name, seed, device, a data: block, optionally frontend: (one that searches:
    {search_frontends}; default darts) and a search: block (algorithm: {searches}; epochs,
    init_channels, layers, ..., and the algorithm's own block, e.g. hpe: {ops_per_edge: [8, 5, 3,
    1]}; `compress passes search` lists them). The search checkpoints every epoch: re-running resumes
    it. Build the result with `model: {frontend: darts, genotype: DIR/genotype.json}` in a pipeline.
    """
    from compressor.pipeline import SearchJob

    job = SearchJob.from_yaml(config, overrides)
    with writes_to(job.run_dir(out)):
        result = job.run(out=out, progress=not quiet)
    for line in result.summary():
        click.echo(line)


@main.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a pipeline value.")
@handle_errors
def validate(pipeline: Path, overrides: tuple[str, ...]) -> None:
    """Check PIPELINE without building anything; print it as one line."""
    from compressor.pipeline import Pipeline

    p = Pipeline.from_yaml(pipeline, overrides)
    click.echo(f"ok: {p.to_line()}")


@main.command()
@click.argument("pattern", default="*")
def passes(pattern: str) -> None:
    """List passes, exporters, frontends, datasets, sweep samplers and executors (each with its options and the
    package and module it comes from), search algorithms with their option blocks, and the pipeline's option
    blocks (PATTERN filters names)."""
    from compressor.frontend import searching
    from compressor.options import describe_options
    from compressor.pipeline import EvaluateOptions
    from compressor.plugins import load_plugins
    from compressor.registry import DATASETS, EXECUTORS, EXPORTERS, FRONTENDS, PASSES, SAMPLERS, SEARCHES
    from compressor.train import TrainOptions

    load_plugins()
    sections = [("passes", PASSES), ("exporters", EXPORTERS), ("frontends", FRONTENDS), ("datasets", DATASETS),
                ("sweep samplers (sampler:)", SAMPLERS), ("sweep executors (executor:)", EXECUTORS)]
    for title, reg in sections:
        names = reg.names(pattern)
        if not names:
            continue
        click.echo(f"{title}:")
        for name in names:
            obj, origin = reg[name], reg.origin(name)
            doc = (obj.__doc__ if reg in (SAMPLERS, EXECUTORS) else None) or \
                (sys.modules[obj.__module__].__doc__ or obj.__doc__ or "")
            doc_lines = doc.strip().splitlines()
            click.echo(f"  {name}  {doc_lines[0] if doc_lines else ''}  [{origin.package}: {origin.module}]")
            _echo_options(describe_options(obj.Options), "      ")
        click.echo("")
    algorithms = SEARCHES.names(pattern)  # the common options are the search block's (below); each has its own block
    if algorithms:
        click.echo("search algorithms (search.algorithm; each one's own options go in its block, search.<block>):")
        for name in algorithms:
            cls, origin = SEARCHES[name], SEARCHES.origin(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            click.echo(f"  {name}  {doc[0] if doc else ''}  [{origin.package}: {origin.module}]")
            infos = describe_options(cls.Options)
            if infos:
                click.echo(f"      {cls.block_name()}:")
                _echo_options(infos, "          ")
        click.echo("")
    # option blocks that are no registered object: (path in the YAML, declaration, what it configures)
    blocks = [("model.train", TrainOptions, "baseline training"),
              ("evaluate", EvaluateOptions, "metrics and latency of every stage")]
    blocks += [("search", FRONTENDS[name].search_options, f"the search block of compress search, frontend {name}")
               for name in searching()]
    for path, cls, what in blocks:
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.rsplit(".", 1)[-1], pattern):
            click.echo(f"{path} ({what}):")
            _echo_options(describe_options(cls), "      ")
            click.echo("")


def _echo_options(infos: Any, indent: str) -> None:
    """One line per option (type, default, help, sweep space); a nested block's fields indented below it."""
    from compressor.options import format_space, format_value

    for info in infos:
        parts = [f"{indent}{info.name}: {info.type}"]
        if info.required:
            parts.append(" (required)")
        elif not (info.children and info.default is not None):  # a nested block's fields show its defaults
            parts.append(f" = {format_value(info.default)}")
        parts.append(f"  {info.help}")
        if info.search is not None:
            parts.append(f"  sweep: {format_space(info.search)}")
        click.echo("".join(parts))
        _echo_options(info.children, indent + "    ")


@main.group()
def cache() -> None:
    """The stage store that runs share (default runs/.store): list it, prune what no run shows."""


@cache.command("ls")
@click.option("--store", type=click.Path(path_type=Path), default=Path("runs/.store"), show_default=True)
@handle_errors
def cache_ls(store: Path) -> None:
    """One line per stage: key, stage name, size, state, and the links that show it (run directories,
    sweep trials, anywhere --out put them)."""
    from compressor.store import Store, references

    st = Store(store)
    refs = references(st)
    entries = st.entries()
    for e in entries:
        rec = e["record"] or {}
        state = "finished" if rec else "unfinished"
        if e["problem"]:
            state = "damaged"
        shown = refs.get(e["key"], [])
        runs = ", ".join(_short_path(Path(x).parent, st.root.parent) for x in shown[:3]) or "-"
        if len(shown) > 3:
            runs += f" (+{len(shown) - 3} more)"
        click.echo(f"{e['key']}  {str(rec.get('name', '?')):<14} {e['bytes'] / 1e6:9.3f} MB  {state:<10}  runs: {runs}")
    click.echo(f"{len(entries)} stages, {sum(e['bytes'] for e in entries) / 1e6:.3f} MB in {store}")


def _short_path(p: Path, *bases: Path) -> str:
    """`p` relative to the first of `bases` (then the working directory) it is below, else as it is."""
    for base in (*bases, Path.cwd()):
        try:
            return str(p.relative_to(base.absolute()))
        except ValueError:
            continue
    return str(p)


@cache.command("prune")
@click.option("--store", type=click.Path(path_type=Path), default=Path("runs/.store"), show_default=True)
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted and what is kept, and why.")
@click.option("--quiet", is_flag=True, help="Only the summary line.")
@handle_errors
def cache_prune(store: Path, dry_run: bool, quiet: bool) -> None:
    """Delete the stages that no link shows.

    Every link the store served is recorded in it (runs, sweep trials, budget winners' runs, runs whose
    --out is elsewhere), and links under the store's parent directory are found too. A stage that a link
    shows, or that a running run holds (its lock), is kept; each line says what is kept or deleted, and
    why.
    """
    from compressor.store import Store, prune

    st = Store(store)
    if not st.root.is_dir():
        raise ConfigError(f"no stage store at {store}; give --store the .store directory of your runs "
                          "(default runs/.store)")
    decisions = prune(st, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    if not quiet:
        for d in decisions:
            click.echo(f"{verb if d.delete else 'keep':<12} {d.key}  {d.name:<14} {d.bytes / 1e6:9.3f} MB  {d.why}")
    gone = [d for d in decisions if d.delete]
    click.echo(f"{verb} {len(gone)} stages, {sum(d.bytes for d in gone) / 1e6:.3f} MB; kept {len(decisions) - len(gone)}")


@main.group(cls=OneLineGroup)
def data() -> None:
    """Data and models to try the compiler on: small generated examples."""


# spelled out so that `compress --help` does not import numpy (tests/test_examples.py checks they agree)
EXAMPLE_KINDS = ("image-folder", "segmentation-folder", "hf-classifier", "hf-segmenter")


@data.command("make-example")
@click.argument("kind", metavar="KIND", type=click.Choice(EXAMPLE_KINDS))
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed (same seed, same bytes).")
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=8, max=1024),
              help="Image side in pixels.")
@click.option("--force", is_flag=True, help="Write into a non-empty DIR, replacing the example's own files there.")
@handle_errors
def data_make_example(kind: str, directory: Path, seed: int, size: int, force: bool) -> None:
    """Write a small generated example of KIND into DIR.

    \b
    image-folder         DIR/<split>/<class>/<i>.png: 3 classes of 32x32 RGB patterns, 60/21/21 images
    segmentation-folder  DIR/<split>/images/<id>.png + masks/<id>.png (0-2 classes, 255 = ignore)
    hf-classifier        a tiny Hugging Face ViT (3 labels) + preprocessor_config.json, for the hf frontend
    hf-segmenter         a tiny Hugging Face Segformer (3 labels) + preprocessor_config.json
    """
    from compressor.examples import KINDS, make_example

    with writes_to(directory):
        files = make_example(kind, directory, seed=seed, size=size, force=force)
    click.echo(f"wrote {len(files)} files of the {kind} example to {directory}; use it as "
               + KINDS[kind].usage.format(dir=directory))


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@handle_errors
def inspect(artifact: Path) -> None:
    """Print a stage directory (an IR: format, inputs, task, precision, recipe and edits, tensors per
    module, pass history) or an .onnx file (inputs, outputs, opset, operators, weights).

    Nothing is rebuilt or executed: the IR's module is described from its ir.json and the header of
    its weights.safetensors, so inspecting a stage never runs the code a recipe names. Pickled files
    (.pt) are refused.
    """
    from compressor.plugins import load_plugins
    from compressor.registry import EXPORTERS

    integrity = _verify(artifact)
    load_plugins()
    if artifact.is_file():  # an exporter's artifact: that exporter describes it
        for name in EXPORTERS.names():
            exporter = EXPORTERS.get(name)
            if artifact.suffix.lower() in exporter.suffixes:
                click.echo(exporter.describe_artifact(artifact))
                click.echo(f"integrity: {integrity}")
                return
    from compressor.ir import describe_directory

    click.echo(describe_directory(artifact))
    click.echo(f"integrity: {integrity}")


def _verify(artifact: Path) -> str:
    """The artifact checked against the sha256 values recorded beside it (the stage's sealed stage.json,
    or an IR's weights hash in ir.json): one line saying what was verified, or why it is unverified.
    A mismatch raises "corrupt: X does not match ..." (exit 2). Reads files only; runs nothing."""
    from compressor.store import verify_artifact

    if not artifact.exists():
        return "unverified: missing"
    return verify_artifact(artifact)


# from the backend table, a module of plain data: importing the CLI stays click-only
BENCH_BACKENDS = (AUTO, *BACKENDS)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--backend", "backends", multiple=True, type=click.Choice(BENCH_BACKENDS),
              help=f"Backend; repeat for several in one table (default: {AUTO}, by artifact: {describe_auto()}).")
@click.option("--precision", type=click.Choice(cast_names()), default=None,
              help="torch backends: time a float or half copy (default: the IR's precision).")
@click.option("--cuda-graphs", is_flag=True, help="torch-cuda: capture the forward in a CUDA graph and replay it.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Intra-op threads (default: runtime's).")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed runs.")
@click.option("--iters", default=100, show_default=True, type=click.IntRange(min=1), help="Timed runs (at least).")
@click.option("--min-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Keep timing until this many seconds have passed (at most 10 x --iters runs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table: one object, or a list of them for several backends.")
@click.option("--trust-factory", is_flag=True,
              help="Allow rebuilding a stage whose recipe calls a user factory ('package.module:callable'): "
                   "that imports and runs its code, so only for sources you trust.")
@handle_errors
def bench(artifact: Path, backends: tuple[str, ...], precision: str | None, cuda_graphs: bool, batch: int,
          threads: int | None, warmup: int, iters: int, min_seconds: float, as_json: bool,
          trust_factory: bool) -> None:
    """Time ARTIFACT (model.onnx, model.engine or a stage directory): SingleStream-style median / p90 /
    p99 latency and throughput at --batch (not an MLPerf-compliant measurement).

    For an .onnx or .engine file this path imports neither torch nor the rest of the compiler, so
    it runs on an edge device that has only numpy and onnxruntime or tensorrt.
    """
    import json

    from compressor.bench import format_metadata, format_stats_table, run_bench_many

    integrity = _verify(artifact)
    stats = run_bench_many(artifact, backends or ("auto",), batch=batch, threads=threads, warmup=warmup,
                           iters=iters, min_seconds=min_seconds, precision=precision, cuda_graphs=cuda_graphs,
                           trust_factory=trust_factory)
    for s in stats:
        s.extra["integrity"] = integrity
    if as_json:
        dicts = [s.to_dict() for s in stats]
        click.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    else:
        click.echo(format_stats_table(stats))
        for line in format_metadata(stats):  # what the model expects (preprocess) and predicts (task)
            click.echo(line)
        click.echo(f"integrity: {integrity}")


if __name__ == "__main__":
    main()
