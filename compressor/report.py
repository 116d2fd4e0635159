"""The run report: report.json, report.md (one table, a row per stage) and report.png.

A stage is a dict (one per pipeline stage, in order; the first is the baseline):
    index, name, label, kind ("model" | "pass" | "export"), artifact (relative to the run dir),
    precision (a registered precision's name: "fp32", "fp16", "int8", ...), metrics {accuracy, precision, recall, f1, iou?, top5?} or, for
    multi-class segmentation, {miou, pixel_accuracy, per_class_iou {class: IoU | None}}, params,
    macs (int | None), size_bytes, latency {backend: LatencyStats.to_dict()}, seconds.
report.json adds per stage `size_reduction_pct` and `params_reduction_pct` relative to stage 0.
Sizes are in MB = 10**6 bytes; metrics are shown in percent. The table has the Accuracy/Recall/F1/IoU
columns unless every measured stage is multi-class segmentation, then Top-5 where some stage measured it,
and Pixel acc / mIoU where some stage measured mIoU; report.md adds a per-class IoU table for multi-class
segmentation (a row per class, a column per stage).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

from compressor.precision import ReportSection, all_precisions
from compressor.store import atomic_path, atomic_write

__all__ = ["write_report", "add_reductions", "markdown_table", "per_class_table"]

DASH = "—"


def _reduction(value: Any, base: Any) -> float | None:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or base <= 0:
        return None
    return 100.0 * (1.0 - value / base)


def add_reductions(stages: list[dict]) -> list[dict]:
    """Copies of `stages` with size_reduction_pct and params_reduction_pct relative to stage 0."""
    out = copy.deepcopy(stages)
    if not out:
        return out
    base = out[0]
    for st in out:
        st["size_reduction_pct"] = _reduction(st.get("size_bytes"), base.get("size_bytes"))
        st["params_reduction_pct"] = _reduction(st.get("params"), base.get("params"))
    return out


def _backends(stages: list[dict]) -> list[str]:
    seen: list[str] = []
    for st in stages:
        for b in (st.get("latency") or {}):
            if b not in seen:
                seen.append(b)
    return seen


def _num(v: Any, fmt: Callable[[float], str]) -> str:
    return fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else DASH


BINARY_COLUMNS = (("Accuracy", "accuracy"), ("Recall", "recall"), ("F1", "f1"), ("IoU", "iou"))
TOP5_COLUMNS = (("Top-5", "top5"),)
MULTICLASS_COLUMNS = (("Pixel acc", "pixel_accuracy"), ("mIoU", "miou"))


def _metric_columns(stages: list[dict]) -> list[tuple[str, str]]:
    """(header, metric key) of the table's metric columns: the papers' four unless every measured stage is
    multi-class segmentation, then top-5 and mIoU where some stage has them."""
    measured = [st.get("metrics") or {} for st in stages]
    measured = [m for m in measured if m]
    has = lambda key: any(key in m for m in measured)  # noqa: E731
    cols = [] if measured and all("miou" in m for m in measured) else list(BINARY_COLUMNS)
    cols += list(TOP5_COLUMNS) if has("top5") else []
    return cols + (list(MULTICLASS_COLUMNS) if has("miou") else [])


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def markdown_table(stages: list[dict]) -> str:
    """The report table: a row per stage, in the columns the papers use, then latency."""
    backends = _backends(stages)
    columns = _metric_columns(stages)
    header = ["Stage", *(h for h, _ in columns), "Params", "Size MB", "Size reduction %", "MACs (M)"]
    for b in backends:
        header += [f"{b} p50 ms", "p90", "p99"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for st in stages:
        m = st.get("metrics") or {}
        row = [
            str(st.get("name", "")),
            *(_num(m.get(key), _pct) for _, key in columns),
            _num(st.get("params"), lambda v: f"{int(v):,}"),
            _num(st.get("size_bytes"), lambda v: f"{v / 1e6:.3f}"),
            _num(st.get("size_reduction_pct"), lambda v: f"{v:.2f}"),
            _num(st.get("macs"), lambda v: f"{v / 1e6:.2f}"),
        ]
        lat = st.get("latency") or {}
        for b in backends:
            d = lat.get(b) or {}
            row += [_num(d.get(k), lambda v: f"{v:.3f}") for k in ("median_ms", "p90_ms", "p99_ms")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _plot(stages: list[dict], title: str, path: Path) -> None:
    # A Figure with its own Agg canvas: no pyplot, so no global backend switch and no shared state
    # between concurrent report writers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = [st.get("metrics") or {} for st in stages]
    key, ylabel = ("miou", "mIoU %") if any("miou" in m for m in measured) else \
        ("iou", "IoU %") if any("iou" in m for m in measured) else ("accuracy", "Accuracy %")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)

    for i, st in enumerate(stages):
        size, score = st.get("size_bytes"), (st.get("metrics") or {}).get(key)
        if isinstance(size, (int, float)) and isinstance(score, (int, float)):
            ax1.scatter(size / 1e6, 100 * score, s=36)
            # alternate label offsets: stages of similar size and score (fp16 vs its ONNX) overlap
            ax1.annotate(f"{st.get('index', '')} {st.get('name', '')}", (size / 1e6, 100 * score),
                         textcoords="offset points", xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
    ax1.margins(0.15)
    ax1.set_xlabel("Size MB")
    ax1.set_ylabel(ylabel)
    ax1.set_title(f"{ylabel.split()[0]} vs size")
    ax1.grid(True, alpha=0.3)

    names, values, labels = [], [], []
    for st in stages:
        lat = st.get("latency") or {}
        backend = next((b for b, d in lat.items() if isinstance((d or {}).get("median_ms"), (int, float))), None)
        names.append(f"{st.get('index', '')} {st.get('name', '')}")
        values.append(lat[backend]["median_ms"] if backend else 0.0)
        labels.append(backend or "n/a")
    xs = range(len(names))
    bars = ax2.bar(xs, values, color="tab:blue")
    for bar, label in zip(bars, labels):
        ax2.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                     textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax2.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("p50 latency ms")
    ax2.set_title("Latency per stage")
    ax2.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, format="png", dpi=120)


def section_markdown(section: ReportSection) -> list[str]:
    """report.md lines of a precision's `ReportSection`: its title, paragraph and tables."""
    out = [f"## {section.title}", ""]
    if section.text:
        out += [section.text, ""]
    for k, table in enumerate(section.tables):
        if k:
            out.append("")
        out += ["| " + " | ".join(table.header) + " |", "|" + "|".join(table.align) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in table.rows]
    return out


def per_class_table(stages: list[dict]) -> list[str]:
    """report.md's per-class IoU section for multi-class segmentation: a row per class, a column per stage that
    measured it, IoU in percent ("—" for a class that neither occurs nor is predicted on the split)."""
    measured = [st for st in stages if isinstance((st.get("metrics") or {}).get("per_class_iou"), dict)]
    if not measured:
        return []
    classes = list(dict.fromkeys(c for st in measured for c in st["metrics"]["per_class_iou"]))
    out = ["## Per-class IoU %", "",
           "| Class | " + " | ".join(f"{st.get('index', '')} {st.get('name', '')}" for st in measured) + " |",
           "|" + "|".join(["---"] + ["---:"] * len(measured)) + "|"]
    for c in classes:
        cells = [c.replace("|", r"\|")]  # a class name must not split its row
        cells += [_num(st["metrics"]["per_class_iou"].get(c), _pct) for st in measured]
        out.append("| " + " | ".join(cells) + " |")
    return out


def write_report(stages: list[dict], out_dir: Path, title: str = "") -> dict[str, Path]:
    """Write report.json, report.md and report.png into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = add_reductions(stages)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "report.png"}

    text = json.dumps({"title": title, "stages": rows}, indent=2, default=str) + "\n"
    atomic_write(paths["json"], text)

    md = [f"# {title or 'Compression report'}", "", markdown_table(rows), ""]
    md += [f"- {st.get('index', i)} {st.get('name', '')}: `{st.get('label') or st.get('name', '')}`"
           + (f" ({st['precision']})" if st.get("precision") else "")
           + (f"; note: {st['note']}" if st.get("note") else "")
           for i, st in enumerate(rows)]
    per_class = per_class_table(rows)
    md += ["", *per_class] if per_class else []
    for st in rows:  # each precision renders the stage info its passes recorded (int8: the mixed-precision table)
        for prec in all_precisions():
            for section in prec.report_sections(st):
                md += ["", *section_markdown(section)]
    atomic_write(paths["md"], "\n".join(md) + "\n")

    with atomic_path(paths["png"]) as tmp:
        _plot(rows, title, tmp)
    return paths
