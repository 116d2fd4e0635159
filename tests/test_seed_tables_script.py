"""benchmarks/seed_tables.py: the row grid, the tables and the target checks (no training here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import seed_tables as st  # noqa: E402


def _row(id_, table, size, iou, params=1000, lat=1.0):
    r = st.Row(id_, table, id_, [])
    r.record = {"size_bytes": size, "params": params, "macs": 2e6,
                "metrics": {"accuracy": 0.9, "recall": 0.8, "iou": iou}}
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
    assert md.count("| Row |") == 5 and "| best | 90.00 | 80.00 | 79.50 |" in md
    checks = {name: ok for name, ok, _ in st.check_targets(figs)}
    assert all(checks.values()), checks
    rows[-1].record["metrics"]["iou"] = 0.78  # 2 points below the baseline
    rows[3].record["metrics"]["iou"] = 0.76  # 0.8 above 0.6: not monotone
    checks = {name: ok for name, ok, _ in st.check_targets(st.table_rows(rows))}
    assert not checks["best chain IoU within 1 point of the baseline"]
    assert not checks["IoU falls as the pruning ratio rises (freeze)"]


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
