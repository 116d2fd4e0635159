"""The run report: files written atomically, one table row per stage, reductions vs stage 0."""
from __future__ import annotations

import json

import pytest

from compressor.evaluate.latency import summarize
from compressor.report import write_report


def _lat(ms: float, backend: str) -> dict:
    return summarize([ms / 1000] * 5, backend=backend, batch=1, threads=1, warmup=1).to_dict()


def _seg_stages() -> list[dict]:
    metrics = [
        {"accuracy": 0.95, "precision": 0.9, "recall": 0.8, "f1": 0.8471, "iou": 0.8301},
        {"accuracy": 0.90, "precision": 0.8, "recall": 0.7, "f1": 0.7467, "iou": 0.7204},
        {"accuracy": 0.90, "precision": 0.8, "recall": 0.7, "f1": 0.7467, "iou": 0.7203},
    ]
    names = [("baseline", "darts{genotype=PC_DARTS_cifar}", "model", "fp32"),
             ("prune-l1", "prune-l1{ratio=0.6}", "pass", "fp32"),
             ("onnx", "onnx", "export", "fp16")]
    sizes, params = [4_000_000, 3_520_000, 1_840_000], [1_000_000, 880_000, 880_000]
    latency = [{"torch-cpu": _lat(10, "torch-cpu")}, {"torch-cpu": _lat(6, "torch-cpu")},
               {"onnxruntime-cpu": _lat(4, "onnxruntime-cpu")}]
    return [{"index": i, "name": n, "label": lab, "kind": k, "artifact": f"{i:02d}-{n}/model",
             "precision": prec, "metrics": metrics[i], "params": params[i],
             "macs": 250_000_000 if i < 2 else None, "size_bytes": sizes[i], "latency": latency[i],
             "seconds": 1.5} for i, (n, lab, k, prec) in enumerate(names)]


def _table_rows(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def test_segmentation_report(tmp_path) -> None:
    stages = _seg_stages()
    paths = write_report(stages, tmp_path / "run", title="PC-DARTS on InSAR")
    assert set(paths) == {"json", "md", "png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert "size_reduction_pct" not in stages[0]  # the caller's stages are not modified

    data = json.loads(paths["json"].read_text())
    assert data["title"] == "PC-DARTS on InSAR"
    assert [s["name"] for s in data["stages"]] == ["baseline", "prune-l1", "onnx"]
    assert [s["size_reduction_pct"] for s in data["stages"]] == pytest.approx([0.0, 12.0, 54.0])
    assert [s["params_reduction_pct"] for s in data["stages"]] == pytest.approx([0.0, 12.0, 12.0])
    for orig, back in zip(stages, data["stages"]):
        assert {k: back[k] for k in orig} == orig  # everything round-trips

    md = paths["md"].read_text()
    assert md.startswith("# PC-DARTS on InSAR")
    rows = _table_rows(md)
    header, body = rows[0], rows[2:]
    assert header == ["Stage", "Accuracy", "Recall", "F1", "IoU", "Params", "Size MB", "Size reduction %",
                      "MACs (M)", "torch-cpu p50 ms", "p90", "p99", "onnxruntime-cpu p50 ms", "p90", "p99"]
    assert len(body) == 3
    base, pruned, onnx_row = (dict(zip(range(len(header)), r)) for r in body)
    assert [base[0], base[1], base[2], base[3], base[4]] == ["baseline", "95.00", "80.00", "84.71", "83.01"]
    assert base[5] == "1,000,000" and base[6] == "4.000" and base[7] == "0.00" and base[8] == "250.00"
    assert pruned[7] == "12.00" and pruned[6] == "3.520"
    assert onnx_row[7] == "54.00" and onnx_row[8] == "—"
    assert pruned[9] == "6.000" and pruned[12] == "—" and onnx_row[12] == "4.000" and onnx_row[9] == "—"
    for st in stages:
        assert f"`{st['label']}`" in md


def test_classification_report(tmp_path) -> None:
    stages = [
        {"index": 0, "name": "baseline", "label": "zoo{model=resnet-cifar}", "kind": "model",
         "artifact": "00/ir.pt", "precision": "fp32",
         "metrics": {"accuracy": 0.9, "precision": 0.91, "recall": 0.89, "f1": 0.9},
         "params": 200, "macs": 1000, "size_bytes": 1000, "latency": {}, "seconds": 0.1},
        {"index": 1, "name": "fp16", "label": "fp16", "kind": "pass", "artifact": "01/ir.pt",
         "precision": "fp16", "metrics": {"accuracy": 0.8999, "precision": 0.91, "recall": 0.89, "f1": 0.9},
         "params": 200, "macs": 1000, "size_bytes": 500, "latency": {"torch-cpu": _lat(1, "torch-cpu")},
         "seconds": 0.2},
    ]
    paths = write_report(stages, tmp_path)
    assert all(p.is_file() for p in paths.values())
    assert not list(tmp_path.glob("*.tmp"))
    rows = _table_rows(paths["md"].read_text())
    assert len(rows) == 2 + 2
    assert rows[2][4] == "—" and rows[3][4] == "—"  # no IoU for classification
    assert rows[3][1] == "89.99" and rows[3][7] == "50.00"
    assert rows[2][9] == "—" and rows[3][9] == "1.000"
    data = json.loads(paths["json"].read_text())
    assert data["stages"][1]["size_reduction_pct"] == pytest.approx(50.0)
    assert data["stages"][1]["params_reduction_pct"] == pytest.approx(0.0)


def test_pass_note_is_in_the_report(tmp_path) -> None:
    """A pass's note (prune-dario `both` on a model without attention) reaches report.md, through the run."""
    from compressor.pipeline import Pipeline

    p = Pipeline.from_dict({
        "name": "note", "data": {"name": "digits"},
        "model": {"frontend": "zoo", "model": "resnet", "width": 4, "depth": 1},
        "passes": [{"prune-dario": {"granularity": "both", "iterations": 1, "warm_start": 1}}],
        "evaluate": {"max_samples": 16, "macs": False, "latency": {"backends": []}},
    })
    result = p.run(out=tmp_path / "run", progress=False)
    assert result.stages[1].record["note"].startswith("granularity both: no attention module")
    assert "note: granularity both: no attention module" in result.report["md"].read_text()


def test_int8_mixed_layer_table_is_in_the_report(tmp_path) -> None:
    """An int8 stage with mixed precision: its per-layer table reaches report.json and report.md, through the run."""
    from compressor.pipeline import Pipeline

    p = Pipeline.from_dict({
        "name": "int8", "data": {"name": "insar-synthetic", "n_train": 16, "n_val": 8, "n_test": 8, "size": 16},
        "model": {"frontend": "zoo", "model": "seg-cnn", "width": 4},
        "passes": [{"int8": {"calib_batches": 1, "batch_size": 8, "mixed": {"max_drop": 100.0, "objective": "size",
                                                                          "batches": 1}}}],
        "evaluate": {"macs": False, "latency": {"backends": []}},
    })
    result = p.run(out=tmp_path / "run", progress=False)
    rows = result.stages[1].record["int8_layers"]
    assert rows and all(r["int8"] for r in rows)  # unlimited budget, objective size: every layer
    md = result.report["md"].read_text()
    assert "## int8 mixed precision: stage 1 int8" in md
    assert f"| {rows[0]['layer']} | {rows[0]['kind']} |" in md
    assert json.loads(result.report["json"].read_text())["stages"][1]["int8_layers"] == rows
