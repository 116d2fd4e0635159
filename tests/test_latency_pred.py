"""Predicted latency from the per-block latency table: report rows (`evaluate.latency.predict`) and the sweeps'
figure `latency_pred_ms@backend`."""
from __future__ import annotations

import json

import pytest

from compressor.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENOTYPE = {"stem": {"channels": 8}, "stages": [{"channels": 8, "blocks": [{"op": "sep"}]},
                                                 {"channels": 16, "stride": 2, "blocks": [{"op": "mbconv",
                                                                                           "expansion": 3}]}]}


def _pipe(passes: list) -> dict:
    return {"name": "p", "seed": 0, "data": {"name": "digits"},
            "model": {"frontend": "hierarchical", "genotype": GENOTYPE, "train": {"epochs": 1, "max_steps": 1}},
            "passes": passes, "export": [],
            "evaluate": {"latency": {"backends": [], "predict": ["onnxruntime-cpu"]}}}


def test_rows_carry_the_tables_prediction_and_a_changed_network_is_skipped_with_its_reason(tmp_path) -> None:
    from compressor.evaluate.latency_table import LatencyTable, table_context, table_key
    from compressor.frontends.hierarchical.genotypes import HierGenotype
    from compressor.frontends.hierarchical.latency import latency_parts
    from compressor.pipeline import Pipeline

    result = Pipeline.from_dict(_pipe([{"prune-l1": {"ratio": 0.5}}])).run(out=tmp_path / "run", progress=False)
    base, pruned = result.stages[0].record, result.stages[1].record
    ms = base["latency_pred"]["onnxruntime-cpu"]
    # the prediction is the stored table's sum over the genotype's parts
    store = (tmp_path / "run" / "00_baseline").resolve().parent
    table = LatencyTable.read(LatencyTable.file_for(store, table_key(table_context("onnxruntime-cpu", (1, 8, 8), 1))),
                              table_key(table_context("onnxruntime-cpu", (1, 8, 8), 1)),
                              table_context("onnxruntime-cpu", (1, 8, 8), 1))
    parts = latency_parts(HierGenotype.from_dict(GENOTYPE), (1, 8, 8), 10)
    assert ms == pytest.approx(table.predict(parts), rel=1e-6) and ms > 0
    assert pruned["latency_pred"] == {}
    assert "changed the network's structure" in pruned["latency_pred_skipped"]["onnxruntime-cpu"]
    from compressor.sweep.spec import row_figures

    figs = row_figures(base)
    assert figs["latency_pred_ms@onnxruntime-cpu"] == ms == figs["latency_pred_ms"]


def test_a_network_without_a_table_is_skipped_in_one_line(tmp_path) -> None:
    from compressor.pipeline import Pipeline

    pipe = _pipe([])
    pipe["model"] = {"frontend": "zoo", "model": "cls-cnn", "width": 8, "train": {"epochs": 0}}
    row = Pipeline.from_dict(pipe).run(out=tmp_path / "run", progress=False).stages[0].record
    assert row["latency_pred_skipped"] == {"onnxruntime-cpu": "the zoo frontend has no per-block latency table "
                                                              "(hierarchical has)"}


def test_the_sweep_figure_needs_the_prediction_in_the_base(tmp_path) -> None:
    from compressor.sweep.spec import SweepSpec

    base = _pipe([])
    doc = {"name": "s", "base": base, "space": {"model.width_mult": [0.5, 1.0]},
           "objectives": {"accuracy": "maximize", "latency_pred_ms@onnxruntime-cpu": "minimize"}, "trials": 2}
    SweepSpec.from_dict(doc)  # valid
    base["evaluate"]["latency"]["predict"] = []
    with pytest.raises(ConfigError, match=r"needs a predicted latency; set evaluate: \{latency: \{predict: "
                                          r"\[onnxruntime-cpu\]\}\} in the base"):
        SweepSpec.from_dict(doc)
