"""benchmarks/seed_tables.py: the row grid, the tables and the target checks (no training here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import seed_tables as st  # noqa: E402


def _row(id_, table, size, iou, params=1000, lat=1.0, f1=0.85):
    r = st.Row(id_, table, id_, [])
    r.record = {"size_bytes": size, "params": params, "macs": 2e6,
                "metrics": {"accuracy": 0.9, "recall": 0.8, "f1": f1, "iou": iou}}
    r.latency_ms = lat
    return r


def test_grid_has_the_papers_rows_and_pipelines_validate():
    from compressor.pipeline import Pipeline

    prof = st.PROFILES["cpu"]
    rows = st.rows(prof)
    ids = [r.id for r in rows]
    assert ids[0] == "baseline" and "fp16" in ids and "best" in ids
    assert [i for i in ids if i.startswith("prune-")] == \
        [f"prune-{m}-{r}" for m in st.MODES for r in st.RATIOS] + ["prune-follow-0.6-protect"]
    protect = next(r for r in rows if r.id == "prune-follow-0.6-protect")
    assert protect.passes[0]["prune-l1"]["protect_penultimate"] is True
    best = next(r for r in rows if r.id == "best")
    assert [next(iter(p)) if isinstance(p, dict) else p for p in best.passes] == ["distill", "fp16"]
    assert best.passes[0]["distill"]["feature_layers"] == st.FEATURE_LAYERS
    assert len([i for i in ids if i.startswith("kd-")]) == 4
    for r in rows:  # every row's pipeline passes the full validation
        Pipeline.from_dict(st.pipeline_dict(prof, r, 0))
    hybrid = next(r for r in rows if r.id == "hybrid-freeze")
    assert hybrid.parent == "prune-freeze-0.6" and hybrid.passes[-1] == "fp16"


def test_tables_and_targets():
    rows = [_row("baseline", "T2", 1_000_000, 0.80, lat=10.0),
            _row("prune-freeze-0.4", "T3", 900_000, 0.79), _row("prune-freeze-0.6", "T3", 850_000, 0.75),
            _row("prune-freeze-0.8", "T3", 800_000, 0.70),
            _row("fp16", "T4", 510_000, 0.80), _row("hybrid-freeze", "T6", 430_000, 0.75),
            _row("best", "Ours", 90_000, 0.795, lat=4.0)]
    figs = st.table_rows(rows)
    best = figs[-1]
    assert best["size_ratio"] == pytest.approx(1_000_000 / 90_000) and best["speedup"] == pytest.approx(2.5)
    assert figs[1]["size_reduction_pct"] == pytest.approx(10.0)
    md = st.markdown(figs)
    assert md.count("| Row |") == 5 and "| best | 90.00 | 80.00 | 85.00 | 79.50 |" in md
    checks = {name: ok for name, ok, _ in st.check_targets(figs)}
    assert all(checks.values()), checks
    rows[-1].record["metrics"]["iou"] = 0.78  # 2 points below the baseline
    rows[3].record["metrics"]["iou"] = 0.76  # 0.8 above 0.6: not monotone
    checks = {name: ok for name, ok, _ in st.check_targets(st.table_rows(rows))}
    assert not checks["best chain IoU within 1 point of the baseline"]
    assert not checks["IoU falls as the pruning ratio rises (freeze)"]


def _stages(run_dir, *stages):
    """Stage folders NN_NAME with a stage.json of the given (name, label, seconds)."""
    import json

    for i, (name, label, seconds) in enumerate(stages):
        d = run_dir / f"{i:02d}_{name}"
        d.mkdir(parents=True)
        (d / "stage.json").write_text(json.dumps({"name": name, "label": label, "seconds": seconds, "key": f"k{i}"}))


def test_f1_and_training_time_columns(tmp_path):
    """F1 comes from the record's metrics; Train min sums the row's own fine-tune / distill / nas stages'
    seconds (the baseline stage only in the baseline row), and shows – for a row without one."""
    base_stage = ("baseline", "darts{genotype=PC_DARTS_cifar} | train{epochs=10}", 300.0)
    rows = [_row("baseline", "T2", 1_000_000, 0.80, f1=0.8421), _row("prune-freeze-0.6", "T3", 850_000, 0.75, f1=0.7),
            _row("hybrid-freeze", "T6", 430_000, 0.75, f1=0.7), _row("kd-8x3", "T5", 300_000, 0.6),
            _row("searched-trained", "T9", 90_000, 0.7), _row("fp16", "T4", 510_000, 0.80), _row("int8", "T4b", 1, 0.8),
            _row("kd-8x5", "T5", 400_000, 0.6)]
    for r in rows:
        r.run_dir = tmp_path / r.id
    _stages(rows[0].run_dir, base_stage, ("onnx", "onnx", 20.0))
    _stages(rows[1].run_dir, base_stage, ("prune-l1", "prune-l1{ratio=0.6}", 2.0),
            ("finetune", "finetune{epochs=8}", 90.0), ("onnx", "onnx", 15.0))
    _stages(rows[2].run_dir, base_stage, ("prune-l1", "prune-l1{ratio=0.6}", 2.0),
            ("finetune", "finetune{epochs=8}", 90.0), ("fp16", "fp16", 1.0), ("onnx", "onnx", 15.0))
    _stages(rows[3].run_dir, base_stage, ("distill", "distill{student=darts}", 48.0), ("onnx", "onnx", 9.0))
    _stages(rows[4].run_dir, base_stage, ("nas", "nas{frontend=hierarchical}", 600.0), ("onnx", "onnx", 9.0))
    _stages(rows[5].run_dir, base_stage, ("fp16", "fp16", 1.0), ("onnx", "onnx", 9.0))
    rows[6].run_dir = None  # no run directory: nothing to read
    _stages(rows[7].run_dir, base_stage, ("distill", "distill{student=darts}", 2.4))
    figs = st.table_rows(rows)
    assert [f["train_min"] for f in figs] == [5.0, 1.5, 1.5, 0.8, 10.0, 0.0, None, pytest.approx(0.04)]
    assert [f["f1"] for f in figs] == [0.8421, 0.7, 0.7, 0.85, 0.85, 0.85, 0.85, 0.85]
    md = st.markdown(figs)
    assert "| Row | Accuracy | Recall | F1 | IoU | Params |" in md and md.splitlines()[2].endswith("| Train min |")
    assert "| baseline | 90.00 | 80.00 | 84.21 | 80.00 | 1,000 | 2.0 M | 1.000 | 0.0 | 1.00 | 1.00× | 5.0 |" in md
    assert "| prune-freeze-0.6 | 90.00 | 80.00 | 70.00 | 75.00 |" in md and "| 1.00× | 1.5 |" in md
    assert "| kd-8x3 | 90.00 | 80.00 | 85.00 | 60.00 |" in md and "| 0.8 |" in md
    lines = {line.split(" |")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert lines["fp16"].endswith("| – |") and lines["int8"].endswith("| – |")
    assert lines["searched-trained"].endswith("| 10.0 |") and lines["kd-8x5"].endswith("| < 0.1 |")
    rows[0].record["metrics"].pop("f1")  # a record without F1: shown as –
    assert "| baseline | 90.00 | 80.00 | – | 80.00 |" in st.markdown(st.table_rows(rows))


def test_pruning_rows_exclude_small_layers():
    """The paper's pruning rows (Table 3, the hybrids) exclude layers with fewer than 4 × init_channels output
    channels; `min_out_channels: 0` gives back the earlier pipelines, option left out, other rows unchanged."""
    from compressor.pipeline import Pipeline

    for name in ("cpu", "full"):
        prof = st.PROFILES[name]
        assert prof["min_out_channels"] == 4 * prof["init_channels"]
        pruning = [r for r in st.rows(prof) if any("prune-l1" in p for p in r.passes if isinstance(p, dict))]
        assert [r.id for r in pruning] == [f"prune-{m}-{x}" for m in st.MODES for x in st.RATIOS] + \
            ["prune-follow-0.6-protect", "hybrid-freeze", "hybrid-follow"]
        for r in pruning:
            assert r.passes[0]["prune-l1"]["min_out_channels"] == prof["min_out_channels"]
            assert f"< {prof['min_out_channels']} out channels excluded" in r.table
    prof = st.PROFILES["cpu"]
    pipe = Pipeline.from_dict(st.pipeline_dict(prof, next(r for r in st.rows(prof) if r.id == "hybrid-freeze"), 0))
    assert "prune-l1{ratio=0.6, min_out_channels=64} | finetune" in pipe.to_line()
    old = {r.id: r for r in st.rows({**prof, "min_out_channels": 0})}
    assert old["prune-follow-0.6"].passes[0] == {"prune-l1": {"ratio": 0.6, "exclude_mode": "follow"}}
    assert old["prune-follow-0.6-protect"].passes[0] == \
        {"prune-l1": {"ratio": 0.6, "exclude_mode": "follow", "protect_penultimate": True}}
    assert old["hybrid-freeze"].table == "Table 6: hybrid (prune 0.6 + FP16)"
    for r in st.rows(prof):
        if not r.id.startswith(("prune-", "hybrid-")):
            assert r.passes == old[r.id].passes and r.table == old[r.id].table


def test_threshold_leaves_only_the_widest_stage_prunable():
    """What 4 × init_channels excludes on a PC-DARTS segmentation network (C=4, 3 cells: widths 4, 8, 12, 16):
    every conv narrower than 16 (stem, the first two cells, the decoder, the head), and fewer parameters go
    than without it; one channel more and nothing is left to prune."""
    from compressor.frontends import darts
    from compressor.passes.prune_l1 import PRUNABLE, PruneL1, PruneL1Options, exclusions, is_depthwise

    ir = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, init_channels=4, cells=3)
    gm = ir.module
    ex = exclusions(gm, PruneL1Options(min_out_channels=16), ir.example_inputs(1))
    convs = {n: m for n, m in gm.named_modules() if isinstance(m, PRUNABLE) and not is_depthwise(m)}
    assert {n for n in convs if n in ex} == {n for n, m in convs.items() if m.out_channels < 16}
    assert {"stem.0", "decoder.0.op.0", "decoder.1.op.0", "head"} <= set(ex)
    assert any(m.out_channels == 16 for m in convs.values())
    n0 = ir.parameter_count()
    removed = {t: n0 - PruneL1(ratio=0.6, min_out_channels=t)(ir).parameter_count() for t in (0, 16, 17)}
    assert removed[0] > removed[16] > 0 and removed[17] == 0


def test_head_filter_analysis(seg_ir, tmp_path):
    """The analysis finds the conv feeding the head, ranks its filters by L1, and counts how many of
    the positive-head-weight filters a pruning row keeps (the kept ones are the largest L1)."""
    import json

    import torch

    gm = seg_ir.module
    pen, head = gm.get_submodule("dec1.0"), gm.get_submodule("head")
    assert head.in_channels == pen.out_channels == 8
    with torch.no_grad():  # filters 0..7 get L1 in the order 8, 7, ..., 1; filters 5, 6, 7 vote positive
        pen.weight.copy_(torch.ones_like(pen.weight) * torch.arange(8, 0, -1.0).view(-1, 1, 1, 1)
                         / pen.weight[0].numel())
        head.weight.copy_(torch.tensor([-1.0] * 5 + [1.0] * 3).view(1, 8, 1, 1))
    base = tmp_path / "baseline" / "00_baseline"
    base.mkdir(parents=True)
    seg_ir.save(base)
    rows = [_row("baseline", "T2", 1000, 0.8), _row("prune-follow-0.6", "T3", 500, 0.0),
            _row("prune-follow-0.2", "T3", 900, 0.7)]
    for r, removed in zip(rows, (None, 4, 1)):
        r.run_dir = tmp_path / r.id
        if removed is not None:
            (r.run_dir / "01_prune-l1").mkdir(parents=True)
            groups = [{"members": ["stem.0"], "pruned_channels": 2},
                      {"members": ["dec1.0"], "pruned_channels": removed}]
            (r.run_dir / "01_prune-l1" / "stage.json").write_text(
                json.dumps({"history": {"stats": {"groups": groups}}}))
    text = st.head_filters(rows)
    assert "(`dec1.0` → `head`, baseline)" in text
    assert "3 of its 8 filters have a positive head weight" in text and "ranks 6, 7, 8 of 8" in text
    assert "prune-follow-0.6: removes 4 of 8, keeps 0 of the 3 positive filters → IoU 0.00" in text
    assert "prune-follow-0.2: removes 1 of 8, keeps 2 of the 3 positive filters → IoU 70.00" in text


def test_best_chain_ablation_variants_take_one_thing_away():
    import best_chain_ablation as ab
    from compressor.pipeline import Pipeline

    prof = st.PROFILES["cpu"]
    rows = {r.label: r for r in ab.variant_rows(prof)}
    labels = list(rows)
    assert labels[:3] == ["as in the grid", "no features", "no teacher"] and labels[3].startswith("pruned student")
    pruned = rows.pop(labels[3])
    assert [next(iter(p)) if isinstance(p, dict) else p for p in pruned.passes] == ["prune-l1", "distill", "fp16"]
    assert pruned.passes[0]["prune-l1"] == ab.PRUNED_STUDENT and pruned.passes[1]["distill"]["student"] == "current"
    assert "student_layers" not in pruned.passes[1]["distill"]
    Pipeline.from_dict(st.pipeline_dict(prof, pruned, 0))
    grid = next(r for r in st.rows(prof) if r.id == "best")
    assert rows["as in the grid"].passes == grid.passes
    d = {k: r.passes[0]["distill"] for k, r in rows.items()}
    assert d["no features"]["feature_layers"] == [] and d["no features"]["alpha"] == d["as in the grid"]["alpha"]
    assert d["no teacher"]["alpha"] == 0.0 and d["no teacher"]["feature_layers"] == []
    for r in rows.values():
        assert r.passes[-1] == "fp16"
        Pipeline.from_dict(st.pipeline_dict(prof, r, 0))


def test_channel_alignment_variants_differ_only_in_round_to():
    import channel_alignment as ca
    from compressor.pipeline import Pipeline

    rows = ca.variant_rows()
    assert len(rows) == len(st.MODES) * len(ca.RATIOS) * len(ca.ROUND_TO)
    assert len({r.id for r in rows}) == len(rows)
    for plain, aligned in zip(rows[::2], rows[1::2]):
        a, b = plain.passes[0]["prune-l1"], aligned.passes[0]["prune-l1"]
        assert "round_to" not in a and b.pop("round_to") == 8 and a == b
    for r in rows:
        Pipeline.from_dict(st.pipeline_dict(st.PROFILES["cpu"], r, 0))
