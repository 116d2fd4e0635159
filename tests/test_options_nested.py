"""Nested options blocks (an options dataclass as an option's type) and declared sweep spaces."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from compressor.cli import main
from compressor.config import load_yaml_text
from compressor.errors import ConfigError
from compressor.exporters.onnx import OnnxOptions
from compressor.exporters.tensorrt import TensorRTExporter, TensorRTOptions
from compressor.frontends.darts.search import SearchOptions
from compressor.options import (Range, changed_options, describe_options, format_options, option, options_dict,
                                parse_options, search_space)
from compressor.pipeline import EvaluateOptions, LatencyOptions, Pipeline
from compressor.registry import DATASETS, EXPORTERS, FRONTENDS, PASSES
from compressor.train import TrainOptions


@dataclass(frozen=True)
class Inner:
    steps: int = option(3, "steps", min=1, search=Range(1, 8))
    rate: float = option(0.1, "rate", min=0, max=1, search=[0.1, 0.2])


@dataclass(frozen=True)
class Outer:
    name: str = option("x", "name")
    inner: Inner = option(Inner(), "the inner block")
    maybe: Inner | None = option(None, "an optional inner block")


# ---- parsing -------------------------------------------------------------------------------------

def test_nested_mapping_from_yaml_is_parsed():
    doc = load_yaml_text("outer:\n  inner:\n    steps: 5\n  maybe: {rate: 0.2}\n", "o.yaml")
    o = parse_options(Outer, doc["outer"], "outer")
    assert o.inner == Inner(steps=5) and isinstance(o.inner, Inner)
    assert o.maybe == Inner(rate=0.2)
    assert parse_options(Outer, {}, "outer").inner == Inner() and Outer().maybe is None


def test_nested_error_names_path_and_line():
    text = "model: {frontend: zoo}\nevaluate:\n  split: val\n  latency:\n    batch: 2\n    iters: -1\n"
    with pytest.raises(ConfigError) as exc:
        Pipeline.from_text(text, "pipeline.yaml")
    assert str(exc.value) == "pipeline.yaml:6: evaluate: latency: iters: -1 is out of range; valid: [1, 10000000]"


def test_nested_typo_suggests_the_closest_key():
    text = "model: {frontend: zoo}\nevaluate:\n  latency:\n    itres: 3\n"
    with pytest.raises(ConfigError, match=r"^pipeline\.yaml:4: evaluate: latency: unknown latency option 'itres'; "
                                          r"did you mean 'iters'\?"):
        Pipeline.from_text(text, "pipeline.yaml")
    doc = load_yaml_text("o:\n  inner:\n    step: 2\n", "o.yaml")
    with pytest.raises(ConfigError, match=r"^o\.yaml:3: outer: inner: unknown inner option 'step'; "
                                          r"did you mean 'steps'\?"):
        parse_options(Outer, doc["o"], "outer")


def test_nested_error_of_a_plain_dict_and_of_an_override(tiny_yaml):
    with pytest.raises(ConfigError, match=r"^outer: inner: steps: 0 is out of range; valid: \[1, inf\]"):
        parse_options(Outer, {"inner": {"steps": 0}}, "outer")
    with pytest.raises(ConfigError, match=r"^--set evaluate\.latency\.iters=0: evaluate: latency: iters: 0 is out"):
        Pipeline.from_yaml(tiny_yaml, ["evaluate.latency.iters=0"])


def test_nested_block_must_be_a_mapping_or_an_instance():
    with pytest.raises(ConfigError, match=r"^p\.yaml:2: evaluate: latency: expected a mapping \(LatencyOptions\), "
                                          r"got 3"):
        Pipeline.from_text("model: {frontend: zoo}\nevaluate: {latency: 3}\n", "p.yaml")
    assert parse_options(Outer, {"maybe": None}, "outer").maybe is None


def test_an_instance_is_accepted_as_is():
    lat = LatencyOptions(iters=3)
    ev = parse_options(EvaluateOptions, {"latency": lat}, "evaluate")
    assert ev.latency is lat and ev.latency_options() is lat
    onnx = OnnxOptions(opset=18)
    assert TensorRTExporter(onnx=onnx).options.onnx is onnx


def test_nested_defaults_are_not_shared():
    a, b = Outer(), Outer()
    assert a.inner == b.inner and a.inner is not b.inner
    assert EvaluateOptions().latency.backends is not EvaluateOptions().latency.backends


# ---- the converted blocks keep their old YAML ----------------------------------------------------

def test_old_evaluate_latency_block():
    p = Pipeline.from_text("model: {frontend: zoo}\nevaluate: {split: test, latency: {iters: 3, backends: [torch]}}\n")
    assert isinstance(p.evaluate.latency, LatencyOptions)
    assert p.evaluate.latency_options().iters == 3 and p.evaluate.latency.backends == ["torch-cpu"]


def test_old_tensorrt_onnx_block():
    p = Pipeline.from_text("model: {frontend: zoo}\nexport:\n  - tensorrt: {max_batch: 4, onnx: {opset: 18}}\n")
    opts = p.exports[0].obj.options
    assert isinstance(opts.onnx, OnnxOptions) and opts.onnx.opset == 18 and opts.max_batch == 4
    assert p.to_line().endswith("tensorrt{max_batch=4, onnx={opset=18}}")
    with pytest.raises(ConfigError, match=r"^p\.yaml:3: export\[0\] tensorrt: onnx: opset: 17 is out of range; "
                                          r"valid: \[18, 23\]"):
        Pipeline.from_text("model: {frontend: zoo}\nexport:\n  - tensorrt: {onnx: {opset: 17}}\n", "p.yaml")
    with pytest.raises(ConfigError, match="verify_batches is empty"):
        parse_options(TensorRTOptions, {"onnx": {"verify_batches": []}}, "tensorrt")


def test_old_darts_search_block():
    text = "data: digits\nmodel:\n  frontend: darts\n  search:\n    algorithm: darts\n    epochs: 3\n"
    p = Pipeline.from_text(text, "d.yaml")
    search = p.model.frontend.options.search
    assert isinstance(search, SearchOptions) and (search.algorithm, search.epochs) == ("darts", 3)
    assert p.to_line() == "darts{search={algorithm=darts, epochs=3}}"
    # the algorithm is a label: shown even at its default
    p = Pipeline.from_text("data: digits\nmodel: {frontend: darts, search: {epochs: 2}}\n")
    assert p.to_line() == "darts{search={algorithm=pc-darts, epochs=2}}"
    with pytest.raises(ConfigError, match=r"^d\.yaml:6: model \(darts\): search: unknown search option 'epoch'; "
                                          r"did you mean 'epochs'\?"):
        Pipeline.from_text(text.replace("epochs", "epoch"), "d.yaml")
    with pytest.raises(ConfigError, match="pc-darts needs init_channels divisible by pc.k"):
        Pipeline.from_text("data: digits\nmodel: {frontend: darts, search: {init_channels: 6}}\n")


# ---- plain data and the one-line form ------------------------------------------------------------

def test_options_dict_nests_plain_dicts():
    d = options_dict(EvaluateOptions(latency=LatencyOptions(iters=3)))
    assert type(d["latency"]) is dict and d["latency"]["iters"] == 3 and d["latency"]["backends"] == [
        "torch-cpu", "onnxruntime-cpu"]
    assert json.loads(json.dumps(d)) == d
    assert options_dict(Outer())["maybe"] is None
    assert options_dict(Outer(maybe=Inner()))["maybe"] == {"steps": 3, "rate": 0.1}


def test_format_shows_only_changed_nested_fields():
    assert format_options("evaluate", EvaluateOptions()) == "evaluate"
    ev = EvaluateOptions(batch_size=8, latency=LatencyOptions(iters=5))
    assert changed_options(ev) == {"batch_size": 8, "latency": {"iters": 5}}
    assert format_options("evaluate", ev) == "evaluate{batch_size=8, latency={iters=5}}"
    assert format_options("o", Outer(maybe=Inner())) == "o{maybe={}}"  # given where the default is null
    assert format_options("o", Outer(inner=Inner(rate=0.2)), always=("name",)) == "o{name=x, inner={rate=0.2}}"
    assert format_options("o", Outer(), always=("inner.steps",)) == "o{inner={steps=3}}"


def test_describe_lists_nested_fields():
    infos = {i.name: i for i in describe_options(EvaluateOptions)}
    latency = infos["latency"]
    assert latency.type == "LatencyOptions" and latency.default == LatencyOptions()
    children = {c.name: c for c in latency.children}
    assert list(children) == [i.name for i in describe_options(LatencyOptions)]
    assert children["iters"].default == 30 and children["iters"].help == "timed runs"
    assert infos["split"].children == ()
    outer = {i.name: i for i in describe_options(Outer)}
    assert outer["maybe"].type == "Inner | null" and outer["maybe"].default is None
    assert outer["inner"].children[0].search == Range(1, 8)


def test_compress_passes_lists_nested_fields_and_sweeps():
    out = CliRunner().invoke(main, ["passes"]).output
    lines = out.splitlines()

    def block(parent: str) -> list[str]:
        """The lines indented under the line that starts with `parent`."""
        start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(parent))
        depth = len(lines[start]) - len(lines[start].lstrip())
        below = []
        for ln in lines[start + 1:]:
            if len(ln) - len(ln.lstrip()) <= depth:
                break
            below.append(ln.strip())
        return below

    assert "iters: int = 30  timed runs" in block("latency: LatencyOptions")
    assert any(ln.startswith("epochs: int = 50  search epochs") for ln in block("search: SearchOptions | null"))
    assert any(ln.startswith("opset: int = 20") for ln in block("onnx: OnnxOptions"))
    assert re.search(r"ratio: float = 0\.5  .*  sweep: \[0\.3, 0\.4, 0\.5, 0\.6, 0\.7\]", out)
    assert re.search(r"lr: float = 0\.001  .*  sweep: 0\.0001\.\.0\.01 log", out)
    assert "model.train (baseline training):" in out and "evaluate (metrics and latency" in out
    train = CliRunner().invoke(main, ["passes", "train"]).output
    assert train.startswith("model.train") and "epochs: int = 5" in train and "prune-l1" not in train


# ---- sweep spaces ----------------------------------------------------------------------------------

def _nested(path: str, value: Any) -> dict[str, Any]:
    """{'a': {'b': value}} from 'a.b'."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _declared() -> list[tuple[str, type]]:
    out = [(f"{reg.kind} {name}", reg[name].Options) for reg in (PASSES, FRONTENDS, EXPORTERS, DATASETS)
           for name in reg.names()]
    return out + [("model.train", TrainOptions), ("evaluate", EvaluateOptions), ("search", SearchOptions)]


@pytest.mark.parametrize("what, cls", _declared(), ids=[w for w, _ in _declared()])
def test_every_declared_sweep_value_is_valid(what, cls):
    for path, space in search_space(cls).items():
        values = (space.low, space.high) if isinstance(space, Range) else space
        assert values, f"{what}: {path} has an empty space"
        for value in values:
            opts = parse_options(cls, _nested(path, value), what)
            got = opts
            for part in path.split("."):
                got = getattr(got, part)
            assert got == value, f"{what}: {path}={value!r} parsed as {got!r}"


def test_declared_spaces():
    assert search_space(PASSES["prune-l1"].Options)["ratio"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert search_space(TrainOptions)["lr"] == Range(1e-4, 1e-2, log=True)
    assert search_space(Outer) == {"inner.steps": Range(1, 8), "inner.rate": [0.1, 0.2],
                                   "maybe.steps": Range(1, 8), "maybe.rate": [0.1, 0.2]}
    darts = search_space(FRONTENDS["darts"].Options)
    assert {"init_channels", "layers", "search.algorithm", "search.w_lr"} <= set(darts)
    assert Range(1, 8).integer and not Range(1, 8.0).integer and str(Range(0.001, 0.1, log=True)) == "0.001..0.1 log"


@pytest.mark.parametrize("make, error, fragment", [
    (lambda: option(1, search=[]), ValueError, "empty list"),
    (lambda: option(1, search=[1, 1]), ValueError, "repeats a value"),
    (lambda: option("a", search="ab"), TypeError, "list of values or a Range"),
    (lambda: option(1, search=3), TypeError, "list of values or a Range"),
    (lambda: Range(2, 1), ValueError, "low < high"),
    (lambda: Range(1, 1), ValueError, "low < high"),
    (lambda: Range(0, 1, log=True), ValueError, "log Range needs low > 0"),
    (lambda: Range(1, 10, step=0), ValueError, "step must be > 0"),
    (lambda: Range(1, float("inf")), TypeError, "finite numbers"),
    (lambda: Range(True, 3), TypeError, "finite numbers"),
])
def test_malformed_spaces_raise_at_declaration(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


def test_spaces_that_do_not_fit_their_option_raise():
    @dataclass(frozen=True)
    class FloatRangeOnInt:
        n: int = option(1, "n", search=Range(0.5, 2.5))

    @dataclass(frozen=True)
    class RangeOnStr:
        s: str = option("a", "s", search=Range(1, 2))

    @dataclass(frozen=True)
    class OutOfBounds:
        r: float = option(0.5, "r", min=0, max=1, search=[0.5, 1.5])

    @dataclass(frozen=True)
    class WrongType:
        k: int = option(1, "k", search=[1, "two"])

    with pytest.raises(TypeError, match="FloatRangeOnInt.n: an int option needs a Range of integers"):
        search_space(FloatRangeOnInt)
    with pytest.raises(TypeError, match="RangeOnStr.s: a Range sweeps a number"):
        search_space(RangeOnStr)
    with pytest.raises(ValueError, match=r"search value 1\.5 does not fit its option: OutOfBounds\.r: 1\.5 is out"):
        search_space(OutOfBounds)
    with pytest.raises(ValueError, match="search value 'two' does not fit its option: WrongType.k: expected an int"):
        search_space(WrongType)
