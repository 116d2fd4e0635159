"""The runtime of an IR stage: torch, at the IR's own precision. (An exporter is its artifact's runtime.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from compressor.evaluate.backends import IR_KIND, backends_for
from compressor.ir import ModelIR


class TorchRuntime:
    """Task metrics and latency of the IR's eager module (fp16 IRs run in fp16)."""

    latency_backends: ClassVar[tuple[str, ...]] = backends_for(IR_KIND)

    def __init__(self, ir: ModelIR, name: str = "") -> None:
        self.ir, self.name = ir, name

    def evaluate(self, artifact: Path | None, loader: Any, ir: ModelIR, *, threads: int | None,
                 progress: bool) -> tuple[dict[str, Any], str | None]:
        from compressor.evaluate.metrics import evaluate_module
        from compressor.precision import get_precision

        dtype = get_precision(ir.precision).torch_input_dtype()
        return evaluate_module(ir.module, loader, ir.task, device="cpu", dtype=dtype, progress=progress,
                               desc=f"evaluate {self.name}".strip()), None

    def latency(self, artifact: Path | None, backend: str, opts: Any) -> Any:
        from compressor.evaluate.latency import latency_ir

        return latency_ir(self.ir, backend, batch=opts.batch, threads=opts.threads, warmup=opts.warmup,
                          iters=opts.iters, min_seconds=opts.min_seconds,
                          cuda_graphs=opts.cuda_graphs and backend == "torch-cuda")
