"""Documents read back from disk (a stage's ir.json and safetensors header, a reproducer's reproduce.json,
genotype and alpha-history JSON) and the torch frontend's inputs, tampered with as a hostile-input audit
did: each case goes through the real CLI and ends in exit code 2 and ONE stderr line naming the field,
with no traceback. Also: `compress run --reproduce` runs a factory the reproducer names only with
--trust-factory, and code that calls sys.exit() inside a stage is an error, not a success."""
from __future__ import annotations

import json
import shutil
import struct
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from click.testing import CliRunner, Result

from compressor.cli import main
from compressor.errors import CompressError
from compressor.frontends.darts.genotypes import DARTS_V2
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.ir import IR_JSON, WEIGHTS, InputSpec
from compressor.schema import MAX_EXAMPLE_ELEMENTS, load_json, nesting_depth, parse_json

DEEP = "[" * 100_000 + "]" * 100_000
FAST_EVAL = {"macs": False, "latency": {"enabled": False}}


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="compress")


def assert_one_line(r: Result, *fragments: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.output


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small zoo stage directory (ir.json + weights.safetensors), written once for the module."""
    from compressor.frontend import input_spec_from, lower
    from compressor.frontends.zoo import SegCNN
    from compressor.ir import TaskSpec

    torch.manual_seed(0)
    recipe = {"name": "zoo", "options": {"model": "seg-cnn", "width": 4}, "in_channels": 2, "num_classes": 1,
              "input_hw": [16, 16]}
    ir = lower(SegCNN(2, 4), [input_spec_from((2, 16, 16), (-3.1416, 3.1416))], TaskSpec("segmentation", 1),
               recipe=recipe)
    return ir.save(tmp_path_factory.mktemp("stage") / "stage")


def copy_stage(stage: Path, to: Path, change: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    shutil.copytree(stage, to)
    if change is not None:
        doc = json.loads((to / IR_JSON).read_text())
        change(doc)
        (to / IR_JSON).write_text(json.dumps(doc))
    return to


def _input(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["inputs"][0].update(changes)


def _pop_input(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["inputs"][0].pop(key)


def _shape_dim(i: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["inputs"][0]["shape"].__setitem__(i, value)


# ---- ir.json: compress inspect and compress bench -------------------------------------------------

IR_CASES = {
    "task-empty": (lambda d: d.update(task={}), "task: missing key 'kind'; expected a mapping with keys kind and "
                                                "num_classes"),
    "task-string": (lambda d: d.update(task="segmentation"), "task: expected a mapping with keys kind and num_classes, "
                                                             "got 'segmentation'"),
    "inputs-string": (lambda d: d.update(inputs="input"), "inputs: expected a non-empty list"),
    "input-without-shape": (_pop_input("shape"), "inputs[0]: missing key 'shape'"),
    "shape-negative": (_shape_dim(1, -3), "inputs[0].shape[1]: expected a positive integer, got -3"),
    "shape-string": (_shape_dim(2, "16"), "inputs[0].shape[2]: expected a positive integer, got '16'"),
    "dtype-int8": (_input(dtype="int8"), "inputs[0].dtype: expected one of 'float32', 'float16', got 'int8'"),
    "value-range-strings": (_input(value_range=["low", "high"]),
                            "inputs[0].value_range[0]: expected a finite number, got 'low'"),
    "meta-list": (lambda d: d.update(meta=["a"]), "meta: expected a mapping, got [\"a\"]"),
    "history-string": (lambda d: d.update(history=["prune-l1"]), "history[0]: expected a mapping with keys name, "
                                                                 "options, seconds and changed"),
    "history-lacks-keys": (lambda d: d.update(history=[{"name": "prune-l1"}]), "history[0]: missing key 'options'"),
    "recipe-string": (lambda d: d.update(recipe="zoo"), "recipe: expected a mapping with keys frontend, got 'zoo'"),
    "frontend-lacks-options": (lambda d: d["recipe"]["frontend"].pop("options"),
                               "recipe.frontend: missing key 'options'"),
    "edits-string": (lambda d: d["recipe"].update(edits="prune"), "recipe.edits: expected a list"),
    "edit-without-kind": (lambda d: d["recipe"].update(edits=[{"ratio": 0.5}]), "recipe.edits[0]: missing key 'kind'"),
    "edit-kind-number": (lambda d: d["recipe"].update(edits=[{"kind": 3}]),
                         "recipe.edits[0].kind: expected a non-empty string, got 3"),
    "huge-shape": (_input(shape=[1, 100_000, 100_000, 100_000]),
                   "inputs[0].shape: [1, 100000, 100000, 100000] is 1,000,000,000,000,000 elements at batch 1; "
                   f"an example input holds at most {MAX_EXAMPLE_ELEMENTS:,}"),
    "deep-array": (lambda d: d.update(meta="@DEEP@"), "ir.json nests deeper than 100 levels"),
}


@pytest.mark.parametrize("command", [["inspect"], ["bench", "--iters", "1", "--warmup", "0", "--min-seconds", "0"]],
                         ids=["inspect", "bench"])
@pytest.mark.parametrize("case", list(IR_CASES))
def test_tampered_ir_json(stage, tmp_path, case, command):
    change, fragment = IR_CASES[case]
    d = copy_stage(stage, tmp_path / "stage", change)
    (d / IR_JSON).write_text((d / IR_JSON).read_text().replace('"@DEEP@"', DEEP))
    r = invoke(command[0], d, *command[1:])
    assert_one_line(r, f"{d / IR_JSON}", fragment, "re-run it")


def test_untampered_stage_inspects_and_benches(stage):
    """The control: the stage the cases tamper with is valid."""
    assert invoke("inspect", stage).exit_code == 0
    r = invoke("bench", stage, "--iters", "1", "--warmup", "0", "--min-seconds", "0")
    assert r.exit_code == 0, r.output


# ---- the safetensors header: compress inspect (it reads the header without loading tensors) --------

def _rewrite_header(path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    """Rewrite the JSON header of a safetensors file (the tensor data kept); returns the first tensor's name."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    change(header[name])
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return name


@pytest.mark.parametrize("change, fragment", [
    (lambda t: t.update(shape="4x2"), "shape: expected a list of non-negative integers, got '4x2'"),
    (lambda t: t.update(dtype="F128"), "dtype: expected one of 'F64', 'F32'"),
    (lambda t: t.update(data_offsets=[0, 10 ** 9]), "data_offsets: [0, 1000000000] does not hold"),
], ids=["shape-string", "dtype-unknown", "offsets-past-the-file"])
def test_tampered_safetensors_header(stage, tmp_path, change, fragment):
    from compressor.store import sha256_file

    d = copy_stage(stage, tmp_path / "stage")
    name = _rewrite_header(d / WEIGHTS, change)
    copy_stage(d, tmp_path / "crafted", lambda doc: doc["weights"].update(sha256=sha256_file(d / WEIGHTS)))
    d = tmp_path / "crafted"  # a crafted stage records its weights' own hash
    r = invoke("inspect", d)
    assert_one_line(r, f"{d / WEIGHTS} header: [{json.dumps(name)}].{fragment}")


# ---- reproduce.json and --trust-factory: compress run --reproduce DIR -----------------------------

USER_MODELS = textwrap.dedent("""\
    import sys
    from pathlib import Path

    import torch.nn as nn


    def tiny(marker=None):
        if marker:
            Path(marker).write_text("the factory ran")
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


    class Exits(nn.Module):
        def __init__(self, code):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 1)
            self.code = code

        def forward(self, x):
            if self.code == 0:
                sys.exit(0)
            raise SystemExit(self.code)


    def exits(code=0):
        return Exits(code)
    """)


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("userpkg")
    (d / "docs_user_models.py").write_text(USER_MODELS)
    return d


def reproducer(root: Path, input_ir: Path | None, **changes: Any) -> Path:
    """A reproducer directory as a failed fp16 stage leaves it (reproduce.json + its input IR)."""
    root.mkdir(parents=True)
    if input_ir is not None:
        shutil.copytree(input_ir, root / "input")
    doc = {"format": 1, "index": 1, "kind": "pass", "step": "fp16", "label": "fp16", "options": {},
           "error": "RuntimeError: boom", "seed": 0, "device": "cpu", "data": None, "input": input_ir is not None,
           "refs": [], "trust": {"frontend": "zoo", "factory": None}, "evaluate": FAST_EVAL}
    doc.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del doc[key]
    (root / "reproduce.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("changes, fragment", [
    ({"kind": ...}, "reproduce.json: missing key 'kind'"),
    ({"step": ...}, "reproduce.json: missing key 'step'"),
    ({"seed": "abc"}, "reproduce.json: seed: expected an integer, got 'abc'"),
    ({"data": "insar-synthetic"}, "reproduce.json: data: expected a mapping with keys name, got 'insar-synthetic'"),
    ({"data": {"n_train": 8}}, "reproduce.json: data: missing key 'name'"),
    ({"trust": ["zoo"]}, "reproduce.json: trust: expected a mapping with keys frontend and factory"),
], ids=["no-kind", "no-step", "seed-string", "data-string", "data-without-name", "trust-list"])
def test_tampered_reproduce_json(stage, tmp_path, changes, fragment):
    root = reproducer(tmp_path / "reproduce", stage, **changes)
    assert_one_line(invoke("run", "--reproduce", root, "--quiet"), fragment, "the reproducer was altered")
    assert not (root / "replay").exists()  # nothing written


def test_valid_reproducer_replays(stage, tmp_path):
    """The control: the reproducer the cases tamper with replays its stage."""
    root = reproducer(tmp_path / "reproduce", stage)
    r = invoke("run", "--reproduce", root, "--quiet")
    assert r.exit_code == 0, r.output
    assert "| fp16" in r.stdout


def _torch_stage(user_pkg: Path, to: Path, marker: Path) -> Path:
    from compressor.context import PassContext
    from compressor.frontends.torch import TorchModel

    ir = TorchModel(factory="docs_user_models:tiny", kwargs={"marker": str(marker)}, search_path=str(user_pkg),
                    input_shape=[2, 16, 16], task="segmentation", num_classes=1).build(None, PassContext())
    marker.unlink()  # building it ran the factory; only the replay may run it again
    return ir.save(to)


def test_reproducer_runs_a_user_factory_only_with_trust_factory(user_pkg, tmp_path):
    marker = tmp_path / "marker"
    ir_dir = _torch_stage(user_pkg, tmp_path / "ir", marker)
    trust = {"frontend": "torch", "factory": "docs_user_models:tiny"}  # what the failed run recorded
    root = reproducer(tmp_path / "reproduce", ir_dir, trust=trust)
    r = invoke("run", "--reproduce", root, "--quiet")
    assert_one_line(r, "its input IR", "user factory 'docs_user_models:tiny'", "--trust-factory")
    assert not marker.exists() and not (root / "replay").exists()
    r = invoke("run", "--reproduce", root, "--quiet", "--trust-factory")
    assert r.exit_code == 0, r.output
    assert marker.exists() and "| fp16" in r.stdout


def test_reproducer_of_a_model_stage_needs_trust_factory_for_its_pipeline(user_pkg, tmp_path):
    marker = tmp_path / "marker"
    root = reproducer(tmp_path / "reproduce", None, kind="model", step="baseline")
    (root / "pipeline.yaml").write_text(json.dumps({
        "name": "docs", "model": {"frontend": "torch", "factory": "docs_user_models:tiny",
                                  "kwargs": {"marker": str(marker)}, "search_path": str(user_pkg),
                                  "input_shape": [2, 16, 16], "task": "segmentation", "num_classes": 1},
        "evaluate": FAST_EVAL}))
    r = invoke("run", "--reproduce", root, "--quiet")
    assert_one_line(r, "its pipeline.yaml's model", "user factory 'docs_user_models:tiny'", "--trust-factory")
    assert not marker.exists()
    r = invoke("run", root / "pipeline.yaml", "--trust-factory")
    assert_one_line(r, "--trust-factory applies to --reproduce DIR only")


# ---- genotype JSON and alpha histories: compress genotype distance, a darts pipeline -----------------

GENOTYPE_FILES: dict[str, tuple[bytes, str]] = {
    "binary": (bytes(range(128, 256)), "the genotype is not UTF-8 text (byte 0x80 at offset 0"),
    "utf16-bom": (DARTS_V2.to_json().encode("utf-16"), "the genotype is UTF-16 or UTF-32 text"),
    "deep": (DEEP.encode(), "the genotype nests deeper than 100 levels"),
}


@pytest.mark.parametrize("case", list(GENOTYPE_FILES))
def test_unreadable_genotype_file(tmp_path, case):
    data, fragment = GENOTYPE_FILES[case]
    path = tmp_path / "g.json"
    path.write_bytes(data)
    assert_one_line(invoke("genotype", "distance", path, "DARTS_V2"), f"{path}: {fragment}")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"model: {{frontend: darts, genotype: {path}, init_channels: 4, layers: 3}}\n")
    assert_one_line(invoke("validate", pipeline), fragment)


def _history(n: int = 2) -> list[dict[str, Any]]:
    rows = [[0.1 * (k + 1) for k in range(len(PRIMITIVES))] for _ in range(14)]
    names = [list(PRIMITIVES)] * 14
    return [{"epoch": e + 1, "stage": 0, "normal": rows, "reduce": rows, "primitives_normal": names,
             "primitives_reduce": names} for e in range(n)]


def _set(path: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    """Set `value` at a path of keys and indices (e.g. "1.normal.0.3") inside the history."""
    def change(history: list[dict[str, Any]]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = history
        for p in parents:
            target = target[p]
        target[last] = value
    return change


@pytest.mark.parametrize("change, fragment", [
    (_set("1.normal.0.3", float("nan")), "[1].normal[0][3]: expected a finite number, got NaN"),
    (_set("0.edge_normal", [None] * 14), "[0].edge_normal[0]: expected a finite number, got null"),
    (_set("0.primitives_reduce.2.1", 7), "[0].primitives_reduce[2][1]: expected a string, got 7"),
    (_set("1.epoch", [2]), "[1].epoch: expected an integer, got [2]"),
    (None, "the alpha history nests deeper than 100 levels"),
], ids=["nan-weight", "edge-weights-null", "op-name-number", "epoch-list", "deep"])
def test_tampered_alpha_history(tmp_path, change, fragment):
    history = json.loads(json.dumps(_history()))  # a deep copy: the entries share their rows
    path = tmp_path / "alpha_history.json"
    if change is None:
        path.write_text(DEEP)
    else:
        change(history)
        path.write_text(json.dumps(history))
    assert_one_line(invoke("genotype", "distance", "--history", path), f"{path}", fragment)


def test_valid_alpha_history_measures(tmp_path):
    """The control: the history the cases tamper with is valid."""
    path = tmp_path / "alpha_history.json"
    path.write_text(json.dumps(_history()))
    r = invoke("genotype", "distance", "--history", path)
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3, r.output


# ---- the torch frontend: weights, input_shape, a forward that exits ----------------------------------

def _torch_pipeline(tmp_path: Path, user_pkg: Path, **model: Any) -> Path:
    doc = {"name": "docs", "model": {"frontend": "torch", "factory": "docs_user_models:tiny",
                                     "search_path": str(user_pkg), "input_shape": [2, 16, 16],
                                     "task": "segmentation", "num_classes": 1, **model},
           "evaluate": FAST_EVAL}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_weights_holding_a_bare_tensor(tmp_path, user_pkg):
    torch.save(torch.zeros(3), tmp_path / "w.pt")
    p = _torch_pipeline(tmp_path, user_pkg, weights=str(tmp_path / "w.pt"))
    r = invoke("run", p, "--out", tmp_path / "out", "--quiet")
    assert_one_line(r, "w.pt holds a Tensor, not a state_dict", "torch.save(model.state_dict(), path)")
    assert not (tmp_path / "out" / "report.md").exists()


@pytest.mark.parametrize("shape, fragment", [([2, -3, 16], "input_shape[1]: -3 is out of range; valid: [1, inf]"),
                                             ([0, 16, 16], "input_shape[0]: 0 is out of range; valid: [1, inf]")],
                         ids=["negative", "zero"])
def test_input_shape_must_be_positive(tmp_path, user_pkg, shape, fragment):
    assert_one_line(invoke("validate", _torch_pipeline(tmp_path, user_pkg, input_shape=shape)), fragment)


@pytest.mark.parametrize("code", [0, 3])
def test_a_forward_that_exits_is_an_error(tmp_path, user_pkg, code):
    p = _torch_pipeline(tmp_path, user_pkg, factory="docs_user_models:exits", kwargs={"code": code})
    r = invoke("run", p, "--out", tmp_path / "out", "--quiet")
    assert_one_line(r, f"stage 0 'baseline' (model): code it ran called sys.exit({code})")
    assert not (tmp_path / "out" / "report.md").exists()


# ---- the schema layer's own bounds -------------------------------------------------------------------

def test_nesting_is_counted_outside_strings():
    assert nesting_depth('{"a": "[[[[{{{{", "b": [1, [2]]}', 100) == 3
    assert nesting_depth('["\\"[[[["]', 100) == 1
    assert nesting_depth(DEEP, 100) == 101  # counting stops past the limit


def test_size_limit_and_encodings(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"a": list(range(100))}))
    assert load_json(path, "document", max_bytes=1000) == {"a": list(range(100))}
    with pytest.raises(CompressError, match="the document is larger than 100 bytes, the limit for it"):
        load_json(path, "document", max_bytes=100)
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', "x", "document") == {"a": 1}  # a UTF-8 byte-order mark is fine
    with pytest.raises(CompressError, match=r"x: not valid JSON \(Expecting value at line 1 column 1\)"):
        parse_json("", "x", "document")


def test_example_inputs_are_bounded_before_allocating():
    spec = InputSpec("x", (None, 4, 1024, 1024))
    assert spec.example(batch=1).shape == (1, 4, 1024, 1024)
    with pytest.raises(CompressError, match=r"at batch 100 is 419,430,400 elements; an example input holds at most "
                                            r"268,435,456"):
        spec.example(batch=100)
