"""The precision registry and the hooks the generic code calls: lookups, generated contract messages, graph
recognition, report sections, and a precision registered at run time reaching the generic paths."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from compressor.errors import ConfigError, ExportError
from compressor.precision import (PRECISIONS, GraphSummary, OnnxLowering, Precision, ReportSection, Table,
                                  cast_names, check_cast_precision, get_precision, precision_error,
                                  precision_names, precision_of_dtype, recognize_graph)


def test_builtins_are_registered_in_order():
    assert precision_names()[:3] == ["fp32", "fp16", "int8"]
    assert cast_names() == ["fp32", "fp16"]
    assert precision_of_dtype("float16") == "fp16" and precision_of_dtype("bfloat16") is None
    assert get_precision("fp16").input_dtype == "float16" and get_precision("fp32").input_dtype is None
    assert get_precision("int8").torch_input_dtype() is None
    assert get_precision("fp16").torch_input_dtype() is torch.float16


def test_unknown_precision_is_one_config_error():
    with pytest.raises(ConfigError, match="unknown precision 'fp61'; did you mean 'fp16'"):
        get_precision("fp61")
    with pytest.raises(ConfigError, match="precision 'int8' is not valid; choose fp32 or fp16"):
        check_cast_precision("int8")
    check_cast_precision(None)


def test_registering_a_name_twice_raises():
    from compressor.precision import register_precision

    with pytest.raises(ValueError, match="precision 'fp16' is registered twice"):
        register_precision("fp16")(type("Again", (Precision,), {}))


@pytest.mark.parametrize("name, accepts, produces, got, message", [
    ("prune-l1", ("fp32",), None, "fp16", "prune-l1 takes an fp32 IR but gets fp16; run prune-l1 before fp16"),
    ("finetune", ("fp32", "fp16"), None, "int8", "finetune takes an fp32 or fp16 IR but gets int8; run finetune before int8"),
    ("int8", ("fp32",), "int8", "fp16", "int8 takes an fp32 IR but gets fp16; run int8 instead of fp16"),
    ("fp16", ("fp32",), "fp16", "fp16", "fp16: the IR is already fp16; remove the second fp16 from the pipeline"),
    ("only16", ("fp16",), None, "fp32", "only16 takes an fp16 IR but gets fp32; give it an fp16 IR"),
])
def test_precision_errors_come_from_the_declarations(name, accepts, produces, got, message):
    assert precision_error(name, accepts, produces, got) == message


def _graph(*ops: str, fp32: int = 10, fp16: int = 0) -> GraphSummary:
    return GraphSummary(frozenset(ops), fp32, fp16)


def test_graph_recognition_asks_the_precisions_in_priority_order():
    assert recognize_graph(_graph("Conv", "Relu")) == "fp32"
    assert recognize_graph(_graph("Conv", fp16=11)) == "fp16"
    assert recognize_graph(_graph("QuantizeLinear", "DequantizeLinear", "Conv")) == "int8 (QDQ)"
    assert recognize_graph(_graph("QLinearConv")) == "int8 (QOperator)"


def test_int8_report_section_renders_as_markdown_tables():
    from compressor.report import section_markdown

    record = {"index": 2, "name": "int8", "int8_mixed": {"quantized": 1, "objective": "size", "max_drop": 1.0,
                                                          "measured_drop": 0.25,
                                                          "groups": {"linear": {"layers": 2, "speedup": 1.5}}},
              "int8_layers": [{"layer": "fc1", "kind": "linear", "params": 1234, "drop": 0.5, "error": 0.001,
                               "int8": True},
                              {"layer": "fc2", "kind": "linear", "params": 10, "drop": 0.0, "error": 0.0,
                               "int8": False}]}
    (section,) = get_precision("int8").report_sections(record)
    md = section_markdown(section)
    assert md[0] == "## int8 mixed precision: stage 2 int8"
    assert "1 of 2 layers in int8 (objective size, max drop 1.0, measured drop 0.25 points" in md[2]
    assert "| linear | 2 | 1 | 1.50× |" in md
    assert "| fc1 | linear | 1,234 | 0.500 | 1.00e-03 | yes |" in md and "| fc2 | linear | 10 | 0.000 | 0.00e+00 | no |" in md
    assert get_precision("int8").report_sections({"index": 1}) == [] and get_precision("fp16").stage_record({}) == {}


class _Doubled(OnnxLowering):
    """A test precision's ONNX lowering: the float graph, verified with twice the fp32 tolerances."""

    info_key = "doubled"

    def lower(self, model, input_names):
        return model, {"nodes": len(model.graph.node)}

    def check(self):
        from compressor.precision import Tolerance

        return Tolerance(2 * self.opts.rtol, 2 * self.opts.atol, "rtol/atol (doubled)")


class _Fp32x(Precision):
    name = "fp32x"
    produced_by = "fp32x-pass"
    graph_priority = 5
    onnx_lowering_class = _Doubled

    def state_bytes(self, module: nn.Module) -> int:
        return 7

    def recognize(self, graph):
        return "fp32x" if "Sin" in graph.ops else None

    def stage_record(self, stats):
        return {"fp32x": stats.get("x")}

    def report_sections(self, record):
        if "fp32x" not in record:
            return []
        return [ReportSection("fp32x", "one row", (Table(("a",), ("---:",), (("1",),)),))]


@pytest.fixture
def fp32x(monkeypatch):
    monkeypatch.setitem(PRECISIONS, "fp32x", _Fp32x())
    return PRECISIONS["fp32x"]


def test_a_registered_precision_reaches_the_generic_code(fp32x, cls_ir, tmp_path):
    """IR size, ONNX export (lowering, check, info), TensorRT refusal, chain contract and report come from the
    precision's module, not from name checks."""
    from compressor.exporters.onnx import export_onnx
    from compressor.exporters.tensorrt import precision_for
    from compressor.report import section_markdown

    ir = cls_ir.replace(precision="fp32x")
    assert ir.state_bytes() == 7 and ir.example_inputs(1)[0].dtype == torch.float32
    res = export_onnx(ir, tmp_path / "m.onnx")
    assert res.info["precision"] == "fp32x" and res.info["doubled"]["nodes"] > 0
    assert res.info["tolerance"] == {"rtol": 2e-3, "atol": 2e-4}
    with pytest.raises(ExportError, match="no TensorRT engine for an fp32x IR; export it with onnx"):
        precision_for(ir, "auto")
    assert precision_error("prune-l1", ("fp32",), None, "fp32x") == \
        "prune-l1 takes an fp32 IR but gets fp32x; run prune-l1 before fp32x-pass"
    assert recognize_graph(_graph("Sin")) == "fp32x"
    (section,) = fp32x.report_sections(fp32x.stage_record({"x": 1}))
    assert section_markdown(section) == ["## fp32x", "", "one row", "", "| a |", "|---:|", "| 1 |"]


def test_ir_json_names_a_registered_precision(cls_ir, tmp_path, fp32x):
    from compressor.ir import ModelIR

    cls_ir.replace(precision="fp32x").save(tmp_path / "ir")
    assert ModelIR.load(tmp_path / "ir").precision == "fp32x"
    doc = json.loads((tmp_path / "ir" / "ir.json").read_text())
    doc["precision"] = "fp99"
    (tmp_path / "ir" / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(Exception, match=r"precision.*expected one of 'fp32', 'fp32x', 'fp16', 'int8'.*got 'fp99'"):
        ModelIR.load(tmp_path / "ir")


def test_the_registry_loads_without_torch():
    """compress bench on an edge device: the precision modules import neither torch nor onnx."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from compressor.precision import precision_names, recognize_graph, GraphSummary\n"
            "print(precision_names()[:3], recognize_graph(GraphSummary(frozenset({'MatMul'}), 1, 0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['fp32', 'fp16', 'int8'] fp32"
