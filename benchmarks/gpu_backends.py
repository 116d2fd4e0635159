"""torch-cuda latency: fp32 vs fp16, eager vs CUDA graphs, batch 1 latency and batch N throughput.

Without --run it builds the zoo seg-cnn (width 16) and the PC-DARTS segmentation networks
(PC_DARTS_cifar, 2 channels, 100×100: C=16 with 8 cells, and C=36 with 20 cells) on the fly; with
--run it times every stage (IR directory) of a finished run directory, and its .onnx files on the
onnxruntime backends this machine has (onnxruntime-cuda / -tensorrt with onnxruntime-gpu; else
onnxruntime-cpu at batch 1, or none with --no-onnx). Each CUDA-graph configuration is also
checked against eager outputs (max |difference|). Prints a markdown table headed by the device,
driver, CUDA, cuDNN and torch versions; writes every measurement as JSON to --out.

Numbers are SingleStream-style latency percentiles (one batch per call) and throughput at batch N,
not MLPerf-compliant results. Needs only torch, numpy and this repository (no onnx tooling, and
no `pip install`: the script maps the repository's folders into the compressor namespace itself).

    python benchmarks/gpu_backends.py --out gpu_backends.json                 # the zoo and PC-DARTS nets
    python benchmarks/gpu_backends.py --run runs/quickstart --out q.json      # a finished run
    python benchmarks/gpu_backends.py --backend torch-cpu --iters 3 --warmup 1 --min-seconds 0 \\
        --models seg-cnn --batches 1 2                                        # a CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bootstrap() -> None:
    """Import compressor from this checkout when it is not installed: pyproject maps frontends/,
    passes/ and exporters/ into the compressor namespace; appending the repository root to the
    package's search path does the same without an install."""
    try:
        import compressor.frontends  # noqa: F401
        return
    except ImportError:
        pass
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name in [m for m in sys.modules if m == "compressor" or m.startswith("compressor.")]:
        del sys.modules[name]
    import compressor

    compressor.__path__.append(str(ROOT))
    import compressor.frontends  # noqa: F401


_bootstrap()

import torch  # noqa: E402

from compressor.errors import CompressError  # noqa: E402
from compressor.evaluate.latency import (  # noqa: E402
    BackendUnavailable,
    LatencyStats,
    gpu_info,
    latency_ir,
    latency_onnxruntime,
    make_cuda_graph,
)

MODELS = ("seg-cnn", "pcdarts-c16-l8", "pcdarts-c36-l20")


def build_model(name: str) -> Any:
    from compressor.frontend import input_spec_from, lower
    from compressor.ir import TaskSpec

    if name == "seg-cnn":
        from compressor.frontends.zoo import SegCNN

        torch.manual_seed(0)
        return lower(SegCNN(2, 16), [input_spec_from((2, 100, 100), None)], TaskSpec("segmentation", 1))
    from compressor.frontends.darts import lower as lower_darts

    c, layers = {"pcdarts-c16-l8": (16, 8), "pcdarts-c36-l20": (36, 20)}[name]
    return lower_darts("PC_DARTS_cifar", task="segmentation", in_channels=2, input_size=100, init_channels=c,
                       layers=layers)


def graph_vs_eager(ir: Any, precision: str, batch: int) -> float | None:
    """Max |CUDA-graph replay output − eager output| on the same fresh input (None off CUDA)."""
    if not torch.cuda.is_available():
        return None
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = __import__("copy").deepcopy(ir.module).to("cuda", dtype).eval()
    x = tuple(t.to("cuda", dtype) for t in ir.example_inputs(batch))
    with torch.no_grad():
        replay, static_in, static_out = make_cuda_graph(module, x)
        fresh = tuple(torch.randn_like(t) for t in x)
        for s, f in zip(static_in, fresh):
            s.copy_(f)
        replay()
        torch.cuda.synchronize()
        eager = module(*fresh)
    return float((static_out.float() - eager.float()).abs().max())


def n_params(ir: Any) -> int:
    return sum(p.numel() for p in ir.module.parameters())


def bench_ir(label: str, ir: Any, args: argparse.Namespace, rows: list[dict]) -> None:
    graphs_opts = (False, True) if args.backend == "torch-cuda" else (False,)
    for precision in args.precisions:
        for graphs in graphs_opts:
            for batch in args.batches:
                row: dict[str, Any] = {"model": label, "params": n_params(ir), "backend": args.backend,
                                       "precision": precision, "cuda_graphs": graphs, "batch": batch}
                try:
                    s = latency_ir(ir, args.backend, batch=batch, threads=args.threads, warmup=args.warmup,
                                   iters=args.iters, min_seconds=args.min_seconds, precision=precision,
                                   cuda_graphs=graphs)
                    row["stats"] = s.to_dict()
                    if graphs:
                        row["graph_vs_eager_max_abs"] = graph_vs_eager(ir, precision, batch)
                except (CompressError, RuntimeError) as exc:  # e.g. out of memory, capture failure
                    row["error"] = str(exc).strip().splitlines()[0]
                    if isinstance(exc, RuntimeError):
                        torch.cuda.empty_cache() if torch.cuda.is_available() else None
                rows.append(row)
                _print_row(row, rows)


def bench_onnx(label: str, path: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    for backend in ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"):
        batches = args.batches if backend != "onnxruntime-cpu" else args.batches[:1]
        for batch in batches:
            row: dict[str, Any] = {"model": label, "params": None, "backend": backend, "precision": "(graph)",
                                   "cuda_graphs": False, "batch": batch}
            try:
                s = latency_onnxruntime(path, batch=batch, threads=args.threads, warmup=args.warmup,
                                        iters=args.iters, min_seconds=args.min_seconds, backend=backend)
                row["stats"] = s.to_dict()
            except BackendUnavailable as exc:
                row["skipped"] = str(exc)
                rows.append(row)
                _print_row(row, rows)
                break  # say it once per backend
            except CompressError as exc:
                row["error"] = str(exc).strip().splitlines()[0]
            rows.append(row)
            _print_row(row, rows)
        if any(r.get("stats") and r["model"] == label and r["backend"].endswith(("cuda", "tensorrt"))
               for r in rows):
            break  # a GPU provider ran: the CPU provider adds nothing here


_HEADER = ("| model | params | backend | precision | CUDA graphs | batch | p50 ms | p90 ms | p99 ms | "
           "device p50 ms | items/s | vs fp32 eager | graph − eager |")


def _baseline(row: dict, rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["model"] == row["model"] and r["backend"] == row["backend"]
                 and r["precision"] == "fp32" and not r["cuda_graphs"] and r["batch"] == row["batch"]
                 and r.get("stats")), None)


def _format_row(row: dict, rows: list[dict]) -> str:
    head = (f"| {row['model']} | {row['params'] or '—'} | {row['backend']} | {row['precision']} | "
            f"{'yes' if row['cuda_graphs'] else 'no'} | {row['batch']} |")
    if not row.get("stats"):
        why = row.get("error") or row.get("skipped") or "?"
        return head + f" {'error' if 'error' in row else 'skipped'}: {why} |" + " |" * 6
    s = LatencyStats.from_dict(row["stats"])
    base = _baseline(row, rows)
    speedup = f"{base['stats']['median_ms'] / s.median_ms:.2f}×" if base else "—"
    dev = f"{s.device_median_ms:.3f}" if s.device_median_ms is not None else "—"
    diff = row.get("graph_vs_eager_max_abs")
    return (head + f" {s.median_ms:.3f} | {s.p90_ms:.3f} | {s.p99_ms:.3f} | {dev} | {s.throughput:,.1f} | "
            f"{speedup} | {f'{diff:.2e}' if diff is not None else '—'} |")


def _print_row(row: dict, rows: list[dict]) -> None:
    print(_format_row(row, rows), flush=True)


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                           "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        env.update({"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(), **gpu_info(0)})
    try:
        import onnxruntime as ort

        env.update({"onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers()})
    except ImportError:
        env["onnxruntime"] = None
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="a finished run directory (its stage IRs and */*.onnx)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS, help="without --run")
    ap.add_argument("--backend", default="torch-cuda", choices=["torch-cuda", "torch-cpu"])
    ap.add_argument("--precisions", nargs="*", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--no-onnx", action="store_true", help="with --run: skip the .onnx files")
    ap.add_argument("--out", type=Path, default=Path("gpu_backends.json"))
    args = ap.parse_args()

    env = environment()
    if args.backend == "torch-cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to torch; use --backend torch-cpu for a smoke run")
    print(" | ".join(f"{k} {v}" for k, v in env.items() if k not in ("platform",)))
    print(f"\nwarm-up {args.warmup}, at least {args.iters} timed calls and {args.min_seconds} s per row "
          "(SingleStream-style percentiles; throughput = batch / p50; not MLPerf)\n")
    print(_HEADER)
    print("|" + "---|" * 5 + "---:|" * 8)
    rows: list[dict] = []
    if args.run is not None:
        from compressor.ir import ModelIR

        irs = sorted(args.run.glob("*/ir.json"))
        onnx_files = [] if args.no_onnx else sorted(args.run.glob("*/*.onnx"))
        if not irs and not onnx_files:
            sys.exit(f"no */ir.json or */*.onnx under {args.run}")
        for path in irs:
            bench_ir(path.parent.name, ModelIR.load(path.parent, trust_factory=True), args, rows)
        for path in onnx_files:
            bench_onnx(f"{path.parent.name}/{path.name}", path, args, rows)
    else:
        for name in args.models:
            bench_ir(name, build_model(name), args, rows)
    args.out.write_text(json.dumps({"environment": env, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                                      for k, v in vars(args).items()},
                                    "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
