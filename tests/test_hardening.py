"""Bad input from a user-testing report: each one gives ONE line `error: ...` on stderr, exit code 2,
no traceback and nothing half-written. One test per case of the report (numbers in the names)."""
from __future__ import annotations

import errno
import io
import json
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper

from compressor.cli import main
from compressor.config import apply_override, load_yaml_text
from compressor.errors import ConfigError
from compressor.pipeline import Pipeline

MINI = textwrap.dedent("""\
    data: {name: insar-synthetic, n_train: 8, n_val: 4, n_test: 4, size: 16}
    model: {frontend: zoo, width: 4}
    evaluate: {batch_size: 4, macs: false, latency: {enabled: false}}
    """)


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="compress")


def assert_one_line_error(r: Result, fragment: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.output


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- 1-4: YAML structure ------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("? [a, b]\n: 1\nmodel: {frontend: zoo}\n", "p.yaml:1: a mapping key must be a string, got a list"),
    ("model: {frontend: zoo}\n1: x\n", "p.yaml:2: a mapping key must be a string, got 1 (int); quote it"),
])
def test_1_keys_must_be_strings(tmp_path, text, fragment):
    assert_one_line_error(invoke("validate", write(tmp_path, text)), fragment)


@pytest.mark.parametrize("text", [
    "a: " + "[" * 10000 + "]" * 10000 + "\n",
    "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",
    # shallow in the file, deep once the aliases are expanded
    "".join(f"a{i}: &a{i} [{'*a' + str(i - 1) if i else 'x'}]\n" for i in range(150)),
])
def test_2_deep_nesting_is_refused_quickly(tmp_path, text):
    # CPU time of this thread, not wall time (nor the process's, which counts torch's pool threads): the suite
    # shares its cores. The refusal costs ~0.4 s here; walking 10,000 levels or expanding the aliases would cost
    # far more (or overflow the stack) whatever the machine's load
    start = time.thread_time()
    r = invoke("validate", write(tmp_path, text))
    assert time.thread_time() - start < 2.0
    assert_one_line_error(r, "nested deeper than 100 levels")


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, fragment", [
    (BOMB, "expands to more than 100,000 values"),
    # the bomb where the pipeline reads it: inside options whose error message would print it
    ("evaluate:\n  latency:\n" + textwrap.indent(BOMB, "    ") + "model: {frontend: zoo, width: *i}\n",
     "expands to more than 100,000 values"),
    ("model: &m {frontend: zoo, kwargs: [*m]}\n", "an alias refers to a node that contains it (a cycle)"),
])
def test_3_alias_bomb_is_refused_quickly(tmp_path, text, fragment):
    start = time.perf_counter()
    r = invoke("validate", write(tmp_path, text))
    assert time.perf_counter() - start < 1.0
    assert_one_line_error(r, fragment)


MERGED = textwrap.dedent("""\
    data: {name: insar-synthetic, n_train: 8, n_val: 4, n_test: 4, size: 16}
    model:
      <<: &zoo {frontend: zoo, model: seg-cnn, width: 8}
      width: 4
    evaluate:
      <<: [&eval {batch_size: 4, macs: false}, {batch_size: 2, split: test}]
      latency: {enabled: false}
    """)


def test_4_merge_keys_are_accepted(tmp_path):
    doc = load_yaml_text(MERGED, "m.yaml")
    assert dict(doc["model"]) == {"frontend": "zoo", "model": "seg-cnn", "width": 4}  # own key wins
    assert doc["evaluate"]["batch_size"] == 4 and doc["evaluate"]["split"] == "test"  # first merged wins
    assert doc["model"].location("model") == "m.yaml:3"  # a merged key points at where it was written
    with pytest.raises(ConfigError, match=r"m\.yaml:4: duplicate key 'a' \(first at line 3\)"):
        load_yaml_text("x: &x {a: 1}\ny:\n  a: 2\n  a: 3\n  <<: *x\n", "m.yaml")

    p = write(tmp_path, MERGED)
    assert invoke("validate", p).stdout == "ok: zoo{model=seg-cnn, width=4}\n"
    r = invoke("run", p, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "report.md").is_file()


# ---- 5-6: numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line, fragment", [
    ("data: {name: insar-synthetic, n_train: 100000000000000000000}",
     "n_train: 100000000000000000000 is out of range; valid: [0, 1000000]"),
    ("data: {name: insar-synthetic, n_train: 1e20}", "n_train: expected an integer, got '1e20' (text: YAML reads "
                                                     "an exponent without a dot as text; write the digits)"),
    ("data: {name: insar-synthetic, n_train: '12'}", "n_train: expected an integer, got '12' (text; write it "
                                                     "without quotes)"),
    ("passes: [prune-l1: {ratio: 5e-1}]", "ratio: expected a number, got '5e-1' (text: YAML reads an exponent "
                                          "without a dot as text; write 5.0e-1)"),
    ("data: {name: insar-synthetic, n_train: 1.0e+20}",
     "n_train: expected an integer, got 1e+20 (a float; write a whole number, without a decimal point)"),
    ("data: {name: insar-synthetic, n_train: 10.0}", "valid: integers in [0, 1000000]"),
    ("seed: 100000000000000000000", "seed: 100000000000000000000 is out of range; valid: [0, 4294967295]"),
    ("seed: 1.0e+20", "seed: expected a non-negative integer, got 1e+20; valid: [0, 4294967295]"),
    ("evaluate: {batch_size: 100000000000000000000}", "batch_size: 100000000000000000000 is out of range; "
                                                      "valid: [1, 1000000]"),
    ("evaluate: {batch_size: 2.5}", "batch_size: expected an integer, got 2.5"),
    ("evaluate: {latency: {iters: 100000000000}}", "iters: 100000000000 is out of range; valid: [1, 10000000]"),
])
def test_5_huge_numbers_and_floats_for_ints(tmp_path, line, fragment):
    assert_one_line_error(invoke("validate", write(tmp_path, f"model: {{frontend: zoo}}\n{line}\n")), fragment)


@pytest.mark.parametrize("block, fragment", [
    ("passes: [prune-l1: {ratio: .nan}]", "prune-l1: ratio: must be a finite number, got nan"),
    ("data: insar-synthetic\nmodel: {frontend: zoo, train: {lr: .nan}}", "model.train: lr: must be a finite number"),
    ("data: insar-synthetic\nmodel: {frontend: zoo, train: {lr: .inf}}", "lr: must be a finite number, got inf"),
    ("evaluate: {latency: {min_seconds: -.inf}}", "min_seconds: must be a finite number, got -inf"),
])
def test_6_nan_and_inf_are_rejected(tmp_path, block, fragment):
    text = block if "model:" in block else f"model: {{frontend: zoo}}\n{block}"
    assert_one_line_error(invoke("validate", write(tmp_path, text + "\n")), fragment)


# ---- 7-8: the torch frontend's user files ---------------------------------------------------------

def torch_pipeline(tmp_path: Path, factory: str, extra: str = "") -> Path:
    return write(tmp_path, f"data: {{name: insar-synthetic, n_train: 4, n_val: 4, n_test: 4, size: 16}}\n"
                           f"model: {{frontend: torch, factory: '{factory}', search_path: '{tmp_path}'{extra}}}\n"
                           f"evaluate: {{macs: false, latency: {{enabled: false}}}}\n")


def test_7_empty_weights_file(tmp_path):
    (tmp_path / "hard7.py").write_text("import torch.nn as nn\ndef make():\n    return nn.Conv2d(2, 1, 1)\n")
    (tmp_path / "w.pt").write_bytes(b"")
    p = torch_pipeline(tmp_path, "hard7:make", f", weights: '{tmp_path / 'w.pt'}'")
    r = invoke("run", p, "--out", tmp_path / "out", "--quiet")
    assert_one_line_error(r, "w.pt is empty (0 bytes); save a state_dict")
    assert not list((tmp_path / "out").rglob("stage.json"))


@pytest.mark.parametrize("source, fragment", [
    ("def make(:\n", ".py:1: syntax error: invalid syntax; fix the module"),
    ("raise RuntimeError('boom at import')\n", "failed: RuntimeError: boom at import"),
    ("import not_a_module_anyone_has\n", "imports 'not_a_module_anyone_has', which cannot be imported"),
    ("import sys\nsys.exit(0)\n", "it called sys.exit(0)"),
    ("def make():\n    raise SystemExit(0)\n", "factory 'MOD:make' failed: it called sys.exit(0)"),
    ("def make():\n    raise SystemExit('bye')\n", "it called sys.exit('bye')"),
    ("def make():\n    raise ValueError('bad kwargs')\n", "failed: ValueError: bad kwargs"),
])
def test_8_factory_module_failures(tmp_path, source, fragment):
    module = f"hard8_{abs(hash(source))}"  # a fresh name: a module that imported once stays in sys.modules
    (tmp_path / f"{module}.py").write_text(source)
    r = invoke("run", torch_pipeline(tmp_path, f"{module}:make"), "--out", tmp_path / "out", "--quiet")
    assert_one_line_error(r, fragment.replace("MOD", module))


# ---- 9-10: the machine and the output path -------------------------------------------------------

def test_9_cuda_device_without_cuda(tmp_path):
    device = "cuda:999" if torch.cuda.is_available() else "cuda"
    p = write(tmp_path, f"device: {device}\n{MINI}")
    assert invoke("validate", p).exit_code == 0  # a GPU pipeline may be checked on a laptop
    r = invoke("run", p, "--out", tmp_path / "out", "--quiet")
    fragment = "CUDA device(s)" if torch.cuda.is_available() else "CUDA is not available here"
    assert_one_line_error(r, fragment)
    assert "p.yaml:1: device:" in r.stderr
    if not torch.cuda.is_available():
        assert "use device: cpu" in r.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_10_out_is_a_file_or_under_one(tmp_path):
    p = write(tmp_path, MINI)
    (tmp_path / "afile").write_text("keep me")
    assert_one_line_error(invoke("run", p, "--out", tmp_path / "afile"),
                          f"cannot write {tmp_path / 'afile'}: it is a file, not a directory")
    assert_one_line_error(invoke("run", p, "--out", tmp_path / "afile" / "sub"),
                          f"cannot write {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_10_unwritable_out(tmp_path, monkeypatch):
    """Root may write anywhere, so the permission check is driven through os.access."""
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode & os.W_OK else real_access(path, mode))
    r = invoke("run", write(tmp_path, MINI), "--out", tmp_path / "ro" / "run")
    assert_one_line_error(r, f"cannot write {tmp_path / 'ro' / 'run'}: {tmp_path} is not writable")


@pytest.mark.parametrize("exc, fragment", [
    (OSError(errno.ENOSPC, "No space left on device"), "cannot write {out}: No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "{out}/00_baseline/ir.json"),
     "cannot write {out}/00_baseline/ir.json: Permission denied"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/elsewhere"), "cannot access /data/elsewhere"),
])
def test_10_os_errors_during_a_run(tmp_path, monkeypatch, exc, fragment):
    out = tmp_path / "out"
    if exc.filename:
        exc.filename = exc.filename.format(out=out)

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(Pipeline, "run", fail)
    assert_one_line_error(invoke("run", write(tmp_path, MINI), "--out", out), fragment.format(out=out))


# ---- 11: compress bench on a broken .onnx -----------------------------------------------------

def onnx_bytes() -> bytes:
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("content, fragment", [
    (b"hello, I am text\n", "onnxruntime cannot load {path}: Protobuf parsing failed"),
    (b"", "{path} is empty (0 bytes)"),
    (onnx_bytes()[: len(onnx_bytes()) // 2], "onnxruntime cannot load {path}: Protobuf parsing failed"),
])
def test_11_bench_invalid_onnx(tmp_path, content, fragment):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert_one_line_error(invoke("bench", path, "--iters", 1, "--warmup", 0, "--min-seconds", 0),
                          fragment.format(path=path))


def test_11_bench_valid_onnx_still_runs(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes())
    onnx.checker.check_model(str(path))
    r = invoke("bench", path, "--iters", 1, "--warmup", 0, "--min-seconds", 0, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["backend"] == "onnxruntime-cpu"


# ---- 12: a stage record that is valid JSON but not a record -------------------------------------

@pytest.mark.parametrize("record", ["[]", '["key", 1]'])
def test_12_stage_json_that_is_a_list_is_recomputed(tmp_path, record):
    p = write(tmp_path, MINI + "passes: [fp16]\n")
    out = tmp_path / "out"
    assert invoke("run", p, "--out", out, "--quiet").exit_code == 0
    (out / "01_fp16" / "stage.json").write_text(record)
    r = invoke("run", p, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert isinstance(json.loads((out / "01_fp16" / "stage.json").read_text()), dict)


# ---- 13: click usage errors ------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["frobnicate"], "error: no such command 'frobnicate'; valid: bench, cache, data, genotype, inspect, passes, run, search, sweep, validate"),
    (["valdate", "p.yaml"], "did you mean 'validate'?"),
    (["run"], "error: missing PIPELINE; give a pipeline file (e.g. compress run samples/quickstart.yaml) or --reproduce DIR"),
    (["bench", "m.onnx", "--batch", "0"], "error: Invalid value for '--batch': 0 is not in the range x>=1"),
    (["bench", "m.onnx", "--backend", "gpu"], "error: Invalid value for '--backend'"),
    (["--nope"], "error: No such option '--nope'"),
    (["run", "p.yaml", "--nope"], "see 'compress run --help'"),
])
def test_13_usage_errors_are_one_line(args, fragment):
    r = invoke(*args)
    assert_one_line_error(r, fragment)
    assert "Usage:" not in r.output


def test_13_help_is_unchanged():
    r = invoke("--help")
    assert r.exit_code == 0 and r.stdout.startswith("Usage: compress [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in r.stdout and r.stderr == ""
    r = invoke("run", "--help")
    assert r.exit_code == 0 and r.stdout.startswith("Usage: compress run [OPTIONS] [PIPELINE]")
    r = invoke()  # bare `compress`: click's help, as before
    assert r.exit_code == 2 and "Commands:" in r.output


# ---- 14: --set -----------------------------------------------------------------------------------------

TWO_FINETUNES = textwrap.dedent("""\
    data: {name: insar-synthetic, n_train: 8, n_val: 4, n_test: 4, size: 16}
    model: {frontend: zoo, width: 4}
    passes:
      - prune-l1: {ratio: 0.5}
      - finetune: {epochs: 1}
      - prune-l1: {ratio: 0.5}
      - finetune:
          epochs: 2
    """)


@pytest.mark.parametrize("override, fragment", [
    ("passes.1.lr=2e", "error: --set passes.1.lr=2e: passes[1] finetune: lr: expected a number, got '2e'"),
    ("passes.0.ratio=2", "error: --set passes.0.ratio=2: passes[0] prune-l1: ratio: 2.0 is out of range"),
    ("passes.finetune.epochs=1", "error: --set passes.finetune.epochs=1: 'finetune' is ambiguous, passes[1] and "
                                 "passes[3] are both 'finetune'; pick one by index, e.g. --set passes.3.epochs=1"),
    ("evaluate.batch_size=0", "error: --set evaluate.batch_size=0: evaluate: batch_size: 0 is out of range"),
    ("model={frontend: zoo, width: 0}", "error: --set model={frontend: zoo, width: 0}: model (zoo): width: 0"),
])
def test_14_set_errors_blame_the_set(tmp_path, override, fragment):
    r = invoke("validate", write(tmp_path, TWO_FINETUNES), "--set", override)
    assert_one_line_error(r, fragment)


def test_14_set_picks_one_of_two_by_index(tmp_path):
    p = write(tmp_path, TWO_FINETUNES)
    for override in ("passes.3.epochs=7", "passes[3].epochs=7", "passes.-1.epochs=7", "passes.3.finetune.epochs=7"):
        pipe = Pipeline.from_yaml(p, [override])
        assert [s.obj.options.epochs for s in pipe.passes if s.name == "finetune"] == [1, 7], override
    with pytest.raises(ConfigError, match=r"^--set passes\.0\.ratio=2: passes\[0\] prune-l1: "
                                          r"ratio: 2\.0 is out of range; valid: \[0, 1\)$"):
        Pipeline.from_yaml(p, ["passes.0.ratio=2"])


def test_14_set_value_has_the_file_limits():
    doc = load_yaml_text("a: 1\n", "f")
    with pytest.raises(ConfigError, match="nested deeper than 100 levels"):
        apply_override(doc, "a=" + "[" * 5000 + "]" * 5000)


# ---- 15: the error is the last line ------------------------------------------------------------------

FAILING_MODEL = textwrap.dedent("""\
    import torch.nn as nn
    from compressor.errors import PassError

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 1)

        def forward(self, x):
            if self.training:  # fails inside the training loop, with its progress bar open
                raise PassError("this model refuses to train")
            return self.conv(x)

    def make():
        return Model()
    """)


@pytest.mark.parametrize("quiet", [False, True])
def test_15_error_is_the_last_line(tmp_path, quiet):
    (tmp_path / "hard15.py").write_text(FAILING_MODEL)
    p = torch_pipeline(tmp_path, "hard15:make", ", train: {epochs: 1, batch_size: 4}")
    r = invoke("run", p, "--out", tmp_path / "out", *(["--quiet"] if quiet else []))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.endswith("\n")
    assert r.stderr.splitlines()[-1] == "error: this model refuses to train"  # splitlines: "\r" too
    if quiet:
        assert r.stderr == "error: this model refuses to train\n"
    else:
        assert r.stderr.startswith("pipeline: ")


# ---- progress bars off a terminal ----------------------------------------------------------------------

def test_progress_bar_off_a_terminal_writes_one_line_per_bar():
    from compressor.progress import LineBar, progress_bar

    buf = io.StringIO()
    bar = progress_bar(total=3, desc="train 1/2", file=buf, leave=False, dynamic_ncols=True)
    assert isinstance(bar, LineBar)
    for i in range(3):
        bar.update(1)
        bar.set_postfix(loss=f"{0.5 / (i + 1):.4f}")
    bar.close()
    for _ in progress_bar(range(4), desc="evaluate", file=buf, leave=False):
        pass
    with progress_bar(total=2, desc="quiet", file=buf, disable=True) as b:
        b.update(2)
    lines = buf.getvalue().splitlines(keepends=True)
    assert "\r" not in buf.getvalue()
    assert [ln.split(" [")[0] for ln in lines] == ["train 1/2: 3/3", "evaluate: 4/4"]
    assert lines[0].rstrip().endswith("loss=0.1667]")


def test_progress_bar_on_a_terminal_is_tqdm():
    from compressor.progress import LineBar, progress_bar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress_bar(total=2, desc="x", file=Tty())
    assert not isinstance(bar, LineBar)
    bar.close()
