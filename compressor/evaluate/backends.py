"""The latency backends: the one table of their names, aliases and the artifacts each runs.

`compress bench --backend` (its choices and help), `evaluate.latency.backends` in a pipeline, the
exporters' `latency_backends` and the reports all read it. It is plain data on the standard library:
the CLI imports it without numpy, and `compress bench model.onnx` on an edge device without torch.
"""
from __future__ import annotations

__all__ = ["ALIASES", "AUTO", "BACKENDS", "BACKEND_SUFFIXES", "DEFAULT_BY_SUFFIX", "IR_KIND", "backends_for",
           "describe_auto", "describe_backends"]

IR_KIND = "IR directory"  # what the torch backends run: a directory written by ModelIR.save
# backend name -> the artifact kinds (file suffixes, or IR_KIND) it runs
BACKEND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch-cpu": (IR_KIND,),
    "torch-cuda": (IR_KIND,),
    "onnxruntime-cpu": (".onnx",),
    "onnxruntime-cuda": (".onnx",),
    "onnxruntime-tensorrt": (".onnx",),
    "tensorrt": (".engine",),
}
BACKENDS: tuple[str, ...] = tuple(BACKEND_SUFFIXES)
# old short names (pipelines written before the GPU backends) -> canonical names
ALIASES: dict[str, str] = {"torch": "torch-cpu", "onnxruntime": "onnxruntime-cpu"}
# `compress bench --backend auto`: the backend each artifact kind runs on by default
AUTO = "auto"
DEFAULT_BY_SUFFIX: dict[str, str] = {".onnx": "onnxruntime-cpu", ".engine": "tensorrt", IR_KIND: "torch-cpu"}


def backends_for(kind: str) -> tuple[str, ...]:
    """The backends that run an artifact of `kind` (a file suffix such as ".onnx", or IR_KIND)."""
    return tuple(b for b, kinds in BACKEND_SUFFIXES.items() if kind in kinds)


def _kinds() -> list[str]:
    return list(dict.fromkeys(k for kinds in BACKEND_SUFFIXES.values() for k in kinds))


def describe_backends() -> str:
    """Which backends time what, for help texts: 'torch-cpu / torch-cuda time IR stages (...), ...'."""
    what = {IR_KIND: "IR stages (at the IR's precision)"}
    parts = []
    for kind in _kinds():
        names = backends_for(kind)
        verb = "time" if len(names) > 1 else "times"
        parts.append(f"{' / '.join(names)} {verb} {what.get(kind, f'{kind} artifacts')}")
    return ", ".join(parts)


def describe_auto() -> str:
    """What `--backend auto` picks, for help texts: '.onnx onnxruntime-cpu, ..., a stage directory torch-cpu'."""
    return ", ".join(f"{'a stage directory' if kind == IR_KIND else kind} {backend}"
                     for kind, backend in DEFAULT_BY_SUFFIX.items())
