"""`compress bench` and `compress inspect` on hostile .onnx files, built here with onnx.helper: each one gives
ONE line `error: ...` on stderr, exit code 2 and no traceback, and is refused before anything is allocated or
run past the bounds (compressor/bench.py, compressor/evaluate/latency.py).

Cases whose failure shows only outside Python (onnxruntime logs on the process's stderr) or as a hang run the
CLI in a subprocess with a timeout, so that a regression fails the test instead of stalling the suite."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_hardening import assert_one_line_error, invoke

from compressor.bench import MAX_ITERS, MAX_LOOP_TRIPS, run_bench
from compressor.errors import ConfigError
from compressor.evaluate.latency import MAX_INPUT_BYTES

QUICK = ("--iters", "1", "--warmup", "0", "--min-seconds", "0")


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list | None = None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _vi(name: str, dims: list, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, dims)


def _relu(path: Path, dims: list, elem_type: int = TensorProto.FLOAT) -> Path:
    return _save(path, [helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", dims, elem_type)],
                 [_vi("y", dims, elem_type)])


def compress(*args: object, timeout: float = 120) -> SimpleNamespace:
    """The CLI in its own process: what onnxruntime writes to fd 2 is part of stderr, and a hang times out."""
    p = subprocess.run([sys.executable, "-m", "compressor.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return SimpleNamespace(exit_code=p.returncode, stderr=p.stderr, output=p.stdout + p.stderr)


def test_a_graph_that_fails_inside_onnxruntime_names_the_node(tmp_path):
    # the declared input [1, 3] cannot be reshaped to [7, 5]: onnxruntime loads the file, then the kernel fails
    shape = numpy_helper.from_array(np.array([7, 5], dtype=np.int64), "shape")
    path = _save(tmp_path / "m.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
                 [_vi("x", [1, 3])], [_vi("y", [7, 5])], [shape])
    r = compress("bench", path, *QUICK)
    assert_one_line_error(r, f"onnxruntime cannot run {path} at batch 1: node 'bad_reshape' (Reshape) fails")
    assert "cannot be reshaped" in r.stderr and "/onnxruntime_src/" not in r.stderr  # its reason, not its C++ source


def test_inputs_beyond_the_bound_are_refused_before_allocating(tmp_path):
    path = _relu(tmp_path / "m.onnx", [1_000_000, 1_000_000])  # 3.6 TiB of float32
    assert_one_line_error(invoke("bench", path, *QUICK), "input 'x' of shape [1000000, 1000000] (tensor(float))")
    # the batch counts too: 2**31 bytes of float32 at batch 2 is one element past the bound
    path = _relu(tmp_path / "b.onnx", ["N", MAX_INPUT_BYTES // 4 // 2 + 1])
    r = invoke("bench", path, "--batch", 2, *QUICK)
    assert_one_line_error(r, f"bench feeds at most {MAX_INPUT_BYTES / 2**30:g} GiB of inputs; lower --batch")


def _raw_data_too_short(path: Path) -> Path:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\0" * 7)
    return _save(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [4, 4])],
                 [_vi("y", [4, 4])], [w])


def _unknown_initializer_type(path: Path) -> Path:
    w = TensorProto(name="w", data_type=999, dims=[1], raw_data=b"\0" * 4)
    return _save(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [1])], [_vi("y", [1])], [w])


MALFORMED = {  # id: (build, fragment, the commands it tests; bench refused an empty file before)
    "raw-data-length": (_raw_data_too_short, "initializer 'w' holds 7 bytes of data, but its shape [4, 4] of float "
                                             "needs 64", ("inspect", "bench")),
    "empty-file": (lambda p: (p.write_bytes(b""), p)[1], "is empty (0 bytes)", ("inspect",)),
    "no-nodes": (lambda p: _save(p, [], [_vi("x", [1])], []), "holds a graph with no nodes", ("inspect", "bench")),
    "no-outputs": (lambda p: _save(p, [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1])], []),
                   "declares no graph outputs", ("inspect", "bench")),
    "unknown-input-type": (lambda p: _relu(p, [1], 999), "tensor 'x' has element type 999, which ONNX does not define",
                           ("inspect", "bench")),
    "unknown-initializer-type": (_unknown_initializer_type, "initializer 'w' has data type 999, which ONNX does not "
                                                            "define", ("inspect", "bench")),
}


@pytest.mark.parametrize("case, command", [(case, command) for case, (_, _, commands) in MALFORMED.items()
                                           for command in commands])
def test_malformed_files_are_one_line_for_inspect_and_bench(tmp_path, case, command):
    build, fragment, _ = MALFORMED[case]
    path = build(tmp_path / "m.onnx")
    assert_one_line_error(invoke(command, path, *(QUICK if command == "bench" else ())), fragment)


def test_iters_and_warmup_are_bounded(tmp_path):
    path = _relu(tmp_path / "m.onnx", [1, 4])
    r = compress("bench", path, "--iters", 10**30, "--min-seconds", 0, timeout=60)
    assert_one_line_error(r, f"1 <= iters <= {MAX_ITERS:,}")
    assert_one_line_error(compress("bench", path, "--warmup", 10**30, timeout=60), "0 <= warmup <= 100,000")
    with pytest.raises(ConfigError, match="iters <= "):  # the Python API has the same bound
        run_bench(path, iters=MAX_ITERS + 1)
    assert run_bench(path, warmup=0, iters=MAX_ITERS // 10**5, threads=1).iters == 10  # a bounded value runs


def _loop(path: Path, trips: int, as_constant_node: bool) -> Path:
    """x -> Loop(trips) { v + 1 } -> y; the trip count is an initializer or a Constant node."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in", [1])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [1])],
        initializer=[numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")])
    count = numpy_helper.from_array(np.array(trips, dtype=np.int64), "M")
    nodes = [helper.make_node("Constant", [], ["M"], value=count)] if as_constant_node else []
    nodes.append(helper.make_node("Loop", ["M", "cond", "x"], ["y"], name="big_loop", body=body))
    inits = [numpy_helper.from_array(np.array(True), "cond")] + ([] if as_constant_node else [count])
    return _save(path, nodes, [_vi("x", [1])], [_vi("y", [1])], inits)


@pytest.mark.parametrize("as_constant_node", [False, True], ids=["initializer", "constant-node"])
def test_a_loop_with_a_huge_constant_trip_count_is_refused(tmp_path, as_constant_node):
    r = compress("bench", _loop(tmp_path / "m.onnx", 2**62, as_constant_node), *QUICK, timeout=60)
    assert_one_line_error(r, "Loop node 'big_loop' has a constant trip count of 4,611,686,018,427,387,904 ('M')")
    # a constant trip count within the bound still runs
    ok = _loop(tmp_path / "ok.onnx", MAX_LOOP_TRIPS // 10**5, as_constant_node)
    assert run_bench(ok, warmup=0, iters=1, threads=1).iters == 1
