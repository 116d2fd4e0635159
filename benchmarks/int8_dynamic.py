"""int8-dynamic vs static int8 vs fp32 on Hugging Face ViTs, onnxruntime CPU.

    python benchmarks/int8_dynamic.py                  # ~5 minutes on 2 shared cores
    python benchmarks/int8_dynamic.py --no-write       # print, leave BENCHMARKS.md alone

Two models (transformers ViTForImageClassification behind `samples/user_models.py:hf_vit`, `torch` frontend):
  tiny:   the real-model tests' ViT (2 layers, hidden 32, 4 heads, patch 2) on digits (1×8×8), trained
          --epochs epochs; the three chains are pipelines sharing the trained baseline stage.
  bigger: 6 layers, hidden 256, 4 heads, MLP 512, patch 4 on 3×32×32 (65 tokens), random init, random
          images (calibration and agreement inputs): a size where the matrix products dominate.
Each model goes through three chains: fp32 → onnx, int8 (static, backend onnxruntime-cpu: uint8
activations, per-channel int8 weights, minmax calibration; QDQ) → onnx, and int8-dynamic (per-channel int8
weights, activations quantized at run time) → onnx. Reported: ONNX file MB, onnxruntime CPU latency
(median ms per call, all three sessions open at once and timed in interleaved rounds:
`compressor.evaluate.latency.side_by_side_onnxruntime`) at batch 1 and 8, top-1 agreement with the fp32
ONNX graph (tiny: the digits validation split; bigger: random inputs), and accuracy (tiny only).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, side_by_side_latency, write_section  # noqa: E402

CHAINS = {
    "fp32": [],
    "int8 (static)": [{"int8": {"backend": "onnxruntime-cpu", "calib_batches": 8, "batch_size": 32}}],
    "int8-dynamic": ["int8-dynamic"],
}
TINY = {"layers": 2, "hidden": 32, "heads": 4, "patch": 2}
BIGGER = {"image_size": 32, "channels": 3, "layers": 6, "hidden": 256, "heads": 4, "patch": 4}


def _model(kwargs: dict) -> dict:
    return {"frontend": "torch", "factory": "user_models:hf_vit", "search_path": str(ROOT / "samples"), "kwargs": kwargs}


def tiny(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, float], dict[str, float], str]:
    """The three pipelines on digits: ({chain: onnx path}, {chain: accuracy %}, {chain: agreement %}, note)."""
    import onnxruntime as ort

    from compressor.data import build_data, make_loader
    from compressor.pipeline import Pipeline

    paths, acc = {}, {}
    for chain, passes in CHAINS.items():
        doc = {"name": f"int8_dynamic_tiny_{chain.split()[0]}", "seed": 0, "data": {"name": "digits"},
               "model": {**_model(TINY), "train": {"epochs": args.epochs, "batch_size": 16, "lr": 0.001,
                                                   "optimizer": "adamw", "weight_decay": 0.1}},
               "passes": passes, "export": ["onnx"],
               "evaluate": {"macs": False, "latency": {"backends": []}}}
        result = Pipeline.from_dict(doc).run(out=args.out / doc["name"], progress=False, store=args.out / ".store")
        record = result.stages[-1].record
        paths[chain] = result.run_dir / record["artifact"]
        acc[chain] = 100 * record["metrics"]["accuracy"]
    data = build_data("digits", {}, seed=0)
    preds = {}
    for chain, path in paths.items():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        preds[chain] = np.concatenate([sess.run(None, {name: x.float().numpy()})[0].argmax(1)
                                       for x, _y in make_loader(data.val, 64)])
    agree = {c: 100 * float(np.mean(p == preds["fp32"])) for c, p in preds.items()}
    return paths, acc, agree, f"digits validation split ({len(preds['fp32'])} images)"


def bigger(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, float], str]:
    """The three chains through the Python API on random images: ({chain: onnx path}, {chain: agreement %}, note)."""
    import onnxruntime as ort
    import torch

    from compressor.context import PassContext
    from compressor.data import ArrayDataset, DataBundle
    from compressor.exporters.onnx import export_onnx
    from compressor.frontends.torch import TorchModel
    from compressor.ir import TaskSpec
    from compressor.registry import PASSES

    gen = torch.Generator().manual_seed(0)
    shape = (BIGGER["channels"], BIGGER["image_size"], BIGGER["image_size"])
    ds = ArrayDataset(torch.rand(512, *shape, generator=gen), torch.randint(0, 10, (512,), generator=gen))
    data = DataBundle("random", TaskSpec("classification", 10), shape, (0.0, 1.0), ds, ds, ds)
    ctx = PassContext(data=data, progress=False, seed=0)
    torch.manual_seed(0)
    ir = TorchModel(factory="user_models:hf_vit", kwargs=BIGGER, search_path=str(ROOT / "samples")).build(data, ctx)
    out = args.out / "bigger"
    paths = {}
    for chain, passes in CHAINS.items():
        q = ir
        for p in passes:
            name, opts = (p, {}) if isinstance(p, str) else next(iter(p.items()))
            q = PASSES[name](**opts)(q, ctx)
        paths[chain] = export_onnx(q, out / f"{chain.split()[0]}.onnx").primary
    x = torch.rand(256, *shape, generator=gen).numpy()
    preds = {}
    for chain, path in paths.items():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        preds[chain] = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)
    agree = {c: 100 * float(np.mean(p == preds["fp32"])) for c, p in preds.items()}
    return paths, agree, f"{len(x)} random images (the model is not trained)"


def table(title: str, paths: dict[str, Path], agree: dict[str, float], args: argparse.Namespace,
          acc: dict[str, float] | None = None) -> list[str]:
    order = list(paths)
    files = [paths[c] for c in order]
    lat1 = side_by_side_latency(files, args.rounds, args.iters, batch=1)
    lat8 = side_by_side_latency(files, args.rounds, max(5, args.iters // 4), batch=8)
    mb = [p.stat().st_size / 1e6 for p in files]
    head = "| Chain | ONNX MB | × smaller | p50 ms, batch 1 | speed-up | p50 ms, batch 8 | speed-up | top-1 agreement % |"
    lines = [f"### {title}", "", head + (" accuracy % |" if acc else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if acc else "")]
    for k, c in enumerate(order):
        row = (f"| {c} | {mb[k]:.3f} | {mb[0] / mb[k]:.2f} | {lat1[k]:.3f} | {lat1[0] / lat1[k]:.2f}× | "
               f"{lat8[k]:.3f} | {lat8[0] / lat8[k]:.2f}× | {agree[c]:.1f} |")
        lines.append(row + (f" {acc[c]:.2f} |" if acc else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "int8_dynamic")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs of the tiny ViT on digits")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--no-bigger", action="store_true", help="the tiny ViT only")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    start, load_before = time.perf_counter(), os.getloadavg()[0]
    print("tiny ViT: three pipelines ...", file=sys.stderr, flush=True)
    paths, acc, agree, where = tiny(args)
    lines = table(f"Tiny ViT (the real-model tests': 2 layers, hidden 32, digits 1×8×8, {args.epochs} epochs)",
                  paths, agree, args, acc)
    lines += ["", f"Agreement and accuracy on the {where}."]
    if not args.no_bigger:
        print("bigger ViT: three chains ...", file=sys.stderr, flush=True)
        bpaths, bagree, bwhere = bigger(args)
        lines += ["", *table("Bigger ViT (6 layers, hidden 256, MLP 512, patch 4, 3×32×32: 65 tokens)", bpaths,
                             bagree, args), "", f"Agreement on {bwhere}."]
    wall = time.perf_counter() - start
    body = "\n".join([
        "## INT8 dynamic vs static on ViTs (onnxruntime CPU)",
        "",
        "- command: `python benchmarks/int8_dynamic.py`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min (stages already in --out are reused); "
        f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (a shared "
        "machine: the side-by-side rounds share its slow phases among the three files)",
        "- chains: `fp32 | onnx`, `int8{backend=onnxruntime-cpu} | onnx` (static: calibrated uint8 activations, "
        "per-channel int8 weights, QDQ), `int8-dynamic | onnx` (per-channel int8 weights, activations quantized "
        "at run time by DynamicQuantizeLinear, MatMulInteger); latency: the three files side by side in one "
        f"process, {args.rounds} interleaved rounds, median ms per call",
        "",
        *lines,
    ]) + "\n"
    print(body)
    if not args.no_write:
        write_section("int8-dynamic", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
