"""Plugins: third-party packages add passes and datasets through the `compressor.plugins` entry points, with
no change to this repository; a plugin that fails to load is one warning line and the rest keeps working; a
copy of the sources without the compressor distribution's metadata keeps its built-ins.

The plugin packages are "installed" the way pip installs them: a module on sys.path (PYTHONPATH of the
subprocess) beside a `<name>-<version>.dist-info` directory holding METADATA and entry_points.txt.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from safetensors.torch import load_file

from compressor import plugins

COMPRESS = Path(sys.executable).with_name("compress")

DEMO_PLUGIN = '''
"""demo_plugin: a pass, a dataset, a search algorithm, a sweep sampler and executor from outside the compiler."""
from dataclasses import dataclass

import torch

from compressor.data import ArrayDataset, DataBundle, DataOptions
from compressor.frontends.darts.algorithms import Darts as PlainDarts
from compressor.ir import TaskSpec
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import (register_dataset, register_executor, register_pass, register_sampler,
                                 register_search)


@dataclass(frozen=True)
class ScaleOptions:
    module: str = option("classifier", "the module whose weights are scaled")
    factor: float = option(2.0, "the constant they are multiplied by")


@register_pass("plugin-scale")
class PluginScale(Pass):
    """Multiply one layer's parameters by a constant."""

    Options = ScaleOptions

    def run(self, ir, ctx):
        with torch.no_grad():
            for p in ir.module.get_submodule(self.options.module).parameters():
                p.mul_(self.options.factor)
        return PassResult(ir, stats={"factor": self.options.factor})


class Blobs:
    """Two classes of 3x8x8 noise around -1 and +1."""

    Options = DataOptions

    @staticmethod
    def build(options, seed=0):
        g = torch.Generator().manual_seed(seed)
        def split(n):
            y = torch.arange(n) % 2
            return ArrayDataset(torch.randn(n, 3, 8, 8, generator=g) + (2.0 * y - 1.0).view(-1, 1, 1, 1), y)
        return DataBundle(name="plugin-blobs", task=TaskSpec("classification", 2), input_shape=(3, 8, 8),
                          input_range=(-4.0, 4.0), train=split(16), val=split(8), test=split(8))


def register_data():
    """The second entry point names this function: loading it registers the dataset."""
    register_dataset("plugin-blobs")(Blobs)


@dataclass(frozen=True)
class NoteOptions:
    note_every: int = option(1, "record a note in the alpha history every this many epochs", min=1)


@register_search("plugin-darts")
class PluginDarts(PlainDarts):
    """Plain DARTS that notes its epochs, with an options block of its own."""

    Options = NoteOptions
    block = "note"

    def epoch_start(self, model, stage, epoch):
        return {"note": float(epoch % self.opts.note.note_every == 0)}


@dataclass(frozen=True)
class CountingOptions:
    seed: int = option(0, "seed of the random draws")


@register_sampler("plugin-random", CountingOptions)
def plugin_random(options, spec):
    """Optuna's random sampler, announced on stderr."""
    import sys

    import optuna

    print(f"PLUGIN-SAMPLER seed={options.seed} objectives={len(spec.objectives)}", file=sys.stderr)
    return optuna.samplers.RandomSampler(seed=options.seed)


@dataclass(frozen=True)
class LabelOptions:
    label: str = option("demo", "a label printed when the executor starts")


@register_executor("plugin-inline", LabelOptions)
def plugin_inline(options):
    """Trials one at a time in this process, announced on stderr."""
    import sys

    from compressor.sweep.executors import InlineExecutor

    print(f"PLUGIN-EXECUTOR {options.label}", file=sys.stderr)
    return InlineExecutor()
'''

BROKEN_PLUGIN = 'raise RuntimeError("boom: this plugin cannot load")\n'

CLASHING_PLUGIN = '''
from compressor.passes_base import Pass
from compressor.registry import register_pass


@register_pass("finetune")
class NotFinetune(Pass):
    """Reuses a built-in pass's name."""
'''

PIPELINE = """\
name: plugged
seed: 0
data: {name: plugin-blobs}
model: {frontend: zoo, model: cls-cnn, width: 4}
passes:
  - plugin-scale: {factor: 3.0}
evaluate: {macs: false, latency: {backends: []}}
"""


SWEEP = """\
name: plugged-sweep
base:
  seed: 0
  data: {name: plugin-blobs}
  model: {frontend: zoo, model: cls-cnn, width: 4}
  evaluate: {macs: false, latency: {backends: []}}
space: {model.width: [2, 4]}
objectives: {params: minimize}
sampler: {plugin-random: {seed: 3}}
executor: {plugin-inline: {label: tiny}}
trials: 2
"""


def install(site: Path, dist: str, module: str, source: str, entry_points: dict[str, str]) -> None:
    """Write `module`.py and the dist-info pip would write for distribution `dist` into `site`."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[compressor.plugins]\n{lines}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install(site, "compressor-demo-plugin", "demo_plugin", DEMO_PLUGIN,
            {"demo": "demo_plugin", "demo-data": "demo_plugin:register_data"})  # a module, and a function
    install(site, "compressor-broken-plugin", "broken_plugin", BROKEN_PLUGIN, {"broken": "broken_plugin"})
    install(site, "compressor-clashing-plugin", "clashing_plugin", CLASHING_PLUGIN, {"clash": "clashing_plugin"})
    return site


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_compress_passes_lists_plugins_with_their_package_and_warns_once_per_failed_plugin(site, tmp_path):
    r = run([str(COMPRESS), "passes"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  ") and line[2] != " "}
    assert lines["plugin-scale"].endswith("  [compressor-demo-plugin: demo_plugin]")
    assert lines["plugin-blobs"].endswith("  [compressor-demo-plugin: demo_plugin]")
    assert "factor: float = 2  the constant they are multiplied by" in r.stdout
    assert lines["prune-l1"].endswith("  [compressor: compressor.passes.prune_l1]")
    assert lines["finetune"].endswith("  [compressor: compressor.passes.finetune]")  # the built-in kept its name
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    broken = [line for line in warnings if "'broken'" in line]
    clash = [line for line in warnings if "'clash'" in line]
    assert len(warnings) == 2 and len(broken) == 1 and len(clash) == 1, r.stderr
    # the plugin's sampler, executor and search algorithm (with its options block) are listed like the built-ins'
    assert lines["plugin-random"].endswith("  [compressor-demo-plugin: demo_plugin]")
    assert lines["plugin-inline"].endswith("  [compressor-demo-plugin: demo_plugin]")
    assert lines["plugin-darts"].endswith("  [compressor-demo-plugin: demo_plugin]")
    assert lines["tpe"].endswith("  [compressor: compressor.sweep.builtin]")
    assert "note:" in r.stdout and "note_every: int = 1  record a note" in r.stdout
    assert "compressor-broken-plugin" in broken[0] and "RuntimeError: boom: this plugin cannot load" in broken[0]
    assert "compressor-clashing-plugin" in clash[0] and "pass 'finetune' is registered twice" in clash[0]


def test_compress_run_uses_a_plugin_pass_and_dataset(site, tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    r = run([str(COMPRESS), "run", "p.yaml", "--quiet"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "plugin-scale{factor=3}" in (tmp_path / "runs/plugged/pipeline.txt").read_text()
    before = load_file(tmp_path / "runs/plugged/00_baseline/weights.safetensors")
    after = load_file(tmp_path / "runs/plugged/01_plugin-scale/weights.safetensors")
    assert after["classifier.weight"].allclose(3.0 * before["classifier.weight"])
    assert after["features.0.0.weight"].equal(before["features.0.0.weight"])
    stages = json.loads((tmp_path / "runs/plugged/report.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["baseline", "plugin-scale"] and "accuracy" in stages[1]["metrics"]


def test_a_plugin_search_algorithm_is_listed_and_its_block_validates(site, tmp_path):
    r = run([str(COMPRESS), "search", "--help"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    help_text = " ".join(r.stdout.split())
    assert "plugin-darts" in help_text and "hpe-darts" in help_text and "d-darts" in help_text
    (tmp_path / "s.yaml").write_text("data: digits\nsearch:\n  algorithm: plugin-darts\n  note: {note_every: 2}\n")
    code = ("from compressor.pipeline import SearchJob; o = SearchJob.from_yaml('s.yaml').options; "
            "print(type(o.block).__name__, o.note.note_every, o.key_data()['note'], o.key_data()['hpe_batch'])")
    r = run([sys.executable, "-c", code], site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NoteOptions", "2", "{'note_every':", "2}", "64"]
    (tmp_path / "s.yaml").write_text("data: digits\nsearch:\n  algorithm: plugin-darts\n  note:\n    note_every: 0\n")
    r = run([str(COMPRESS), "search", "s.yaml"], site, tmp_path)
    assert r.returncode == 2 and "s.yaml:5: search: note: note_every: 0 is out of range; valid: [1, " in r.stderr


def test_a_plugin_sampler_and_executor_run_a_tiny_sweep(site, tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    r = run([str(COMPRESS), "sweep", "s.yaml", "--quiet"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PLUGIN-SAMPLER seed=3 objectives=1" in r.stderr and "PLUGIN-EXECUTOR tiny" in r.stderr
    rows = (tmp_path / "runs/plugged-sweep/trials.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",complete," in row for row in rows[1:]), rows
    (tmp_path / "s.yaml").write_text(SWEEP.replace("plugin-random: {seed: 3}", "plugin-random: {sed: 3}"))
    r = run([str(COMPRESS), "sweep", "s.yaml"], site, tmp_path)
    assert r.returncode == 2 and "unknown plugin-random option 'sed'; did you mean 'seed'?" in r.stderr


def test_the_python_api_finds_plugins_without_a_composition_root(site, tmp_path):
    """A registry lookup loads the plugins: a script that never imported the CLI or a Pipeline sees them."""
    code = ("from compressor.registry import DATASETS, PASSES; "
            "print(PASSES.get_or_error('plugin-scale').__name__, DATASETS.origin('plugin-blobs').package, "
            "'prune-l1' in PASSES.names())")
    r = run([sys.executable, "-c", code], site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["PluginScale", "compressor-demo-plugin", "True"]


def test_without_the_distributions_metadata_the_builtins_still_load(tmp_path):
    """A copy of the sources on sys.path whose compressor distribution declares no entry points (metadata
    missing or older than the entry points) falls back to BUILTIN_PLUGINS."""
    code = textwrap.dedent("""
        from importlib import metadata
        real = metadata.entry_points
        metadata.entry_points = lambda **kw: [ep for ep in real(**kw) if ep.dist.name != "compressor"]
        from compressor.plugins import load_plugins, loaded
        from compressor.registry import DATASETS, EXPORTERS, FRONTENDS, PASSES, SAMPLERS
        assert load_plugins() == []
        print(sorted(p.name for p in loaded()), "prune-l1" in PASSES, "onnx" in EXPORTERS, "zoo" in FRONTENDS,
              "digits" in DATASETS, "tpe" in SAMPLERS)
        from compressor.precision import precision_names
        print("int8-dynamic" in precision_names())
    """)
    r = run([sys.executable, "-c", code], tmp_path, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["['data',", "'exporters',", "'frontends',", "'passes',", "'precisions',", "'sweep']",
                                "True", "True", "True", "True", "True", "True"]


def test_discover_orders_the_builtins_first_and_falls_back_only_without_them():
    ep = metadata.EntryPoint
    theirs = [ep("b", "pkg_b", plugins.GROUP), ep("a", "pkg_a:register", plugins.GROUP)]
    found = plugins.discover(theirs)  # no dist attached: neither is compressor's, so the fallback applies
    assert [(p.name, p.package) for p in found] == [(n, "compressor") for n, _ in plugins.BUILTIN_PLUGINS] + \
        [("a", "?"), ("b", "?")]
    assert found[-2].module == "pkg_a"
    installed = plugins.discover()
    assert [p.value for p in installed if p.package == "compressor"] == [v for _, v in plugins.BUILTIN_PLUGINS]


def test_pyproject_declares_the_builtin_plugins():
    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    declared = doc["project"]["entry-points"][plugins.GROUP]
    assert sorted(declared.items()) == sorted(plugins.BUILTIN_PLUGINS)


def test_pyproject_lists_every_package_folder():
    """A folder with an __init__.py that `packages` misses is absent from a non-editable install (the hierarchical
    frontend was, once)."""
    import tomllib

    root = Path(__file__).parent.parent
    doc = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: Path(path) for name, path in doc["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - set(doc["packages"]) == set()


def test_every_registry_entry_knows_its_package_and_module():
    from compressor.frontends.darts.algorithms import SEARCHES
    from compressor.registry import DATASETS, EXPORTERS, FRONTENDS, PASSES

    assert PASSES.origin("prune-l1") == ("compressor", "compressor.passes.prune_l1")
    assert SEARCHES.origin("hpe-darts") == ("compressor", "compressor.frontends.darts.hpe")
    for reg in (PASSES, EXPORTERS, FRONTENDS, DATASETS, SEARCHES):
        for name in reg.names():
            origin = reg.origin(name)
            assert origin.package == "compressor" and origin.module.startswith("compressor."), (name, origin)
