"""A per-block latency table on the deployment runtime, stored once per measurement context, and the predictor
built on it: a network's latency = the sum of its parts' entries.

    table = LatencyTable.load_or_measure(store_root, "onnxruntime-cpu", (3, 32, 32), 1, parts, make_part)
    table.predict(parts)  # ms

`parts` are configurations with a `.key()` (the fields that define their cost, e.g. the hierarchical frontend's
`BlockConfig`); `make_part(config)` builds the module of one, `part_inputs(config)` gives its per-sample input
shapes (default: `[(config.cin, *config.in_hw)]`). This module knows no frontend: the caller lists the parts of
its networks, the fixed ones (stem, head) included.

Measurement: each part alone is exported to ONNX (torch.onnx's legacy exporter, fixed shapes, batch `batch`)
and timed with `compressor.evaluate.latency.latency_onnxruntime` (the session options `compress bench` uses:
`threads` intra-op threads, onnxruntime's default when None) in `rounds` rounds of `warmup` + `iters` calls,
each round a fresh session; the entry is the median of the rounds' medians, in ms. An `nn.Identity` part (a
skip) costs nothing inside a network and is entered as 0 without measuring.

Every entry includes the runtime's fixed cost of one call (session.run, input and output copies). A table also
holds that floor, measured on a trivial graph (`CALL`, the first entry measured): `predict` sums the parts'
entries and subtracts the floor of all but one measured part, since the network is one call.

Stored: `<store_root>/.tables/latency-<key>.json` (the dot keeps it out of the store's stage listing and
`prune`), written atomically after each new entry under the store's per-key lock (`latency-<key>`), so two
processes never measure the same table at once and an interrupted measurement keeps what it finished. The key
hashes what the numbers depend on: backend, device name, per-sample input shape, batch, threads and the
versions of compressor, torch, onnx and onnxruntime. The file is sealed (`compressor.store.seal_of`); a file
that is not JSON, has the wrong format, key or seal, or a non-finite entry is one warning and is measured again.
A second request with the same key measures only the parts missing from the table.

Supported backends: the onnxruntime ones of the backend table (`MEASURED_BACKENDS`); any other gives one
ConfigError line. torch is imported inside the functions that export (this module imports without it).

`spearman` (rank correlation, ties averaged, numpy only) and `mape` check a predictor against end-to-end
measurements.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from compressor.errors import ConfigError
from compressor.evaluate.latency import latency_onnxruntime, normalize_backend
from compressor.evaluate.timing import device_name, gpu_info
from compressor.store import Store, read_json, seal_of, write_json

log = logging.getLogger(__name__)

__all__ = ["CALL", "FORMAT", "MEASURED_BACKENDS", "TABLES", "LatencyTable", "Part", "default_part_inputs", "entry_key",
           "mape", "measure_module", "spearman", "table_context", "table_key"]

FORMAT = 1
TABLES = ".tables"  # under the store root
# the backends a table can be measured on (each runs ONNX through latency_onnxruntime); a TensorRT-engine or torch
# backend would add its export-and-time function here
MEASURED_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
VERSIONED = ("compressor", "torch", "onnx", "onnxruntime")


class Part(Protocol):
    def key(self) -> tuple: ...


Shape = tuple[int, ...]
Measure = Callable[[Any, Sequence[Shape]], float]  # (module, per-sample input shapes) -> ms


def entry_key(config: Part) -> str:
    """A part's row key in the table: its `.key()` as compact JSON (tuples become lists)."""
    return json.dumps(list(config.key()), separators=(",", ":"), default=str)


def default_part_inputs(config: Any) -> list[Shape]:
    """One input of (cin, H, W): the hierarchical frontend's BlockConfig and anything with `cin` and `in_hw`."""
    hw = getattr(config, "in_hw", None)
    if hw is None:
        raise ConfigError(f"latency table: part {getattr(config, 'name', '') or config!r} has no input size (in_hw); "
                          f"list the parts with the network's input shape (C, H, W)")
    return [(int(config.cin), *(int(v) for v in hw))]


def check_backend(backend: str) -> str:
    """The canonical name of a backend a table can be measured on; one ConfigError line otherwise."""
    name = normalize_backend(backend)
    if name not in MEASURED_BACKENDS:
        raise ConfigError(f"latency table: backend '{name}' is not measured per block; supported: "
                          f"{', '.join(MEASURED_BACKENDS)}")
    return name


def _version(package: str) -> str:
    for name in (package, f"{package}-gpu") if package == "onnxruntime" else (package,):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def table_context(backend: str, input_shape: Sequence[int], batch: int, threads: int | None = None,
                  device: str | None = None, versions: dict[str, str] | None = None) -> dict[str, Any]:
    """What a table's numbers depend on (its key hashes exactly this)."""
    backend = check_backend(backend)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"latency table: batch must be an integer >= 1, got {batch!r}")
    if device is None:
        device = device_name() if backend == "onnxruntime-cpu" else str(gpu_info().get("gpu", "CUDA GPU"))
    return {"backend": backend, "device": device, "input_shape": [int(v) for v in input_shape], "batch": batch,
            "threads": threads if threads is not None else (os.cpu_count() or 0),
            "versions": versions if versions is not None else {p: _version(p) for p in VERSIONED}}


def table_key(context: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]


CALL = '["call"]'  # the call floor's entry (no part's key is ("call",))


def call_floor_module() -> Any:
    """A trivial graph (one element of the input, times one): timing it gives the runtime's per-call cost."""
    import torch

    class CallFloor(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :1] * 1.0

    return CallFloor()


# ---- measuring one module --------------------------------------------------------------------------

def export_module(module: Any, input_shapes: Sequence[Shape], batch: int, path: Path) -> Path:
    """`module` (eval mode) as an ONNX file of fixed shapes (batch `batch`), inputs x0, x1, ..."""
    import warnings

    import torch

    module = module.eval()
    args = tuple(torch.randn(batch, *s) for s in input_shapes)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=[f"x{i}" for i in range(len(args))],
                          output_names=["y"], opset_version=17, dynamo=False)
    return path


def measure_module(module: Any, input_shapes: Sequence[Shape], batch: int = 1, backend: str = "onnxruntime-cpu",
                   threads: int | None = None, warmup: int = 5, iters: int = 20, rounds: int = 3) -> float:
    """Median latency (ms) of `module` alone on `backend`: exported to ONNX, timed in `rounds` rounds (a fresh
    session each) of `warmup` + `iters` calls; the median of the rounds' medians."""
    import torch

    backend = check_backend(backend)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if isinstance(module, torch.nn.Identity):
        return 0.0
    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        path = export_module(module, input_shapes, batch, Path(tmp) / "part.onnx")
        medians = [latency_onnxruntime(path, batch=batch, threads=threads, warmup=warmup, iters=iters,
                                       backend=backend).median_ms for _ in range(rounds)]
    return float(np.median(medians))


# ---- the table ---------------------------------------------------------------------------------------

def _valid_entries(doc: Any, key: str) -> dict[str, float] | str:
    """The entries of a stored table document, or what is wrong with it."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("format") != FORMAT:
        return f"format {doc.get('format')!r}, expected {FORMAT}"
    if doc.get("key") != key:
        return f"key {doc.get('key')!r} does not match its file name"
    if doc.get("seal") != seal_of(doc):
        return "its seal does not match its content (edited or damaged)"
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        return "no entries mapping"
    for k, v in entries.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            return f"entry {k} is {v!r}, not a latency in ms"
    return {str(k): float(v) for k, v in entries.items()}


@dataclass
class LatencyTable:
    """Median ms of each part alone, under one measurement context (`context`, hashed into `key`)."""

    key: str
    context: dict[str, Any]
    entries: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    measured: int = 0  # entries (the call floor included) measured by the call that returned this table

    @staticmethod
    def file_for(store_root: str | os.PathLike[str], key: str) -> Path:
        return Path(store_root) / TABLES / f"latency-{key}.json"

    @classmethod
    def read(cls, path: Path, key: str, context: dict[str, Any]) -> "LatencyTable":
        """The table stored at `path`; an empty one (after one warning when the file exists but is damaged)."""
        table = cls(key, context, path=path)
        if not path.exists():
            return table
        doc = read_json(path)
        found = _valid_entries(doc, key) if doc is not None else "unreadable or not JSON"
        if isinstance(found, str):
            log.warning("latency table %s is damaged (%s); measuring it again", path, found)
        else:
            table.entries = found
        return table

    def write(self) -> None:
        if self.path is None:
            raise ValueError("this latency table has no path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {"format": FORMAT, "key": self.key, "context": self.context,
                               "entries": dict(sorted(self.entries.items()))}
        doc["seal"] = seal_of(doc)
        write_json(self.path, doc)

    @classmethod
    def load_or_measure(cls, store_root: str | os.PathLike[str], backend: str, input_shape: Sequence[int],
                        batch: int, configs: Iterable[Part], make_block: Callable[[Any], Any],
                        part_inputs: Callable[[Any], Sequence[Shape]] = default_part_inputs,
                        threads: int | None = None, warmup: int = 5, iters: int = 20, rounds: int = 3,
                        measure: Measure | None = None, context: dict[str, Any] | None = None) -> "LatencyTable":
        """The stored table of this context with every part of `configs` in it: the parts it lacks are
        measured (`measure(module, input_shapes)`, default `measure_module` with these settings) and stored.
        `context` overrides `table_context(backend, input_shape, batch, threads)` (tests)."""
        if context is None:
            context = table_context(backend, input_shape, batch, threads)
        key = table_key(context)
        if measure is None:
            def measure(module: Any, shapes: Sequence[Shape]) -> float:
                return measure_module(module, shapes, batch, context["backend"], threads, warmup, iters, rounds)

        path = cls.file_for(store_root, key)
        with Store(store_root).lock(f"latency-{key}"):
            table = cls.read(path, key, context)
            stored = bool(table.entries)
            todo: dict[str, Any] = {}
            for cfg in configs:
                k = entry_key(cfg)
                if k not in table.entries:
                    todo.setdefault(k, cfg)
            jobs = [(k, lambda cfg=cfg: make_block(cfg), lambda cfg=cfg: part_inputs(cfg)) for k, cfg in todo.items()]
            if CALL not in table.entries:
                jobs.insert(0, (CALL, call_floor_module, lambda: [tuple(int(v) for v in input_shape)]))
            for k, build, inputs in jobs:
                ms = float(measure(build(), [tuple(s) for s in inputs()]))
                if not math.isfinite(ms) or ms < 0:
                    raise ValueError(f"latency table: measuring {k} gave {ms!r} ms")
                table.entries[k] = ms
                table.measured += 1
                table.write()
            if not todo and not stored:
                table.write()
        return table

    def __contains__(self, config: Part) -> bool:
        return entry_key(config) in self.entries

    def __getitem__(self, config: Part) -> float:
        k = entry_key(config)
        if k not in self.entries:
            raise ConfigError(f"latency table {self.key} has no entry for part {k}; measure it first "
                              f"(LatencyTable.load_or_measure with this part among the configs)")
        return self.entries[k]

    @property
    def call_ms(self) -> float:
        """The runtime's cost of one call of a trivial graph (the floor every measured entry includes)."""
        return self.entries.get(CALL, 0.0)

    def predict(self, configs: Iterable[Part]) -> float:
        """Predicted latency (ms) of a network made of `configs` (every part, the fixed ones included): the sum
        of their entries, less the call floor of all but one measured part (the network is one call)."""
        values = [self[c] for c in configs]
        measured = sum(1 for v in values if v > 0)
        return float(max(0.0, sum(values) - max(0, measured - 1) * self.call_ms))


# ---- checking a predictor ----------------------------------------------------------------------------

def predict_ir_latency(ir: Any, backend: str, batch: int, store_root: str | os.PathLike[str] | None,
                       threads: int | None = None) -> float | str:
    """The latency of `ir`'s network predicted by the latency table of the frontend that built it (its
    `latency_parts(ir)` capability: the parts, the module of a part and a part's input shapes), measuring the parts
    the stored table lacks; or, as a string, why it cannot be predicted."""
    from compressor.registry import FRONTENDS

    if store_root is None:
        return "no stage store to keep the latency table in (an in-memory run)"
    recipe = getattr(ir, "recipe", None)
    name = ((recipe.frontend if recipe is not None else None) or {}).get("name")
    frontend = FRONTENDS.get(name) if name else None
    parts_of = getattr(frontend, "latency_parts", None)
    if parts_of is None:
        return f"the {name or 'unknown'} frontend has no per-block latency table (hierarchical has)"
    found = parts_of(ir)
    if isinstance(found, str):
        return found
    parts, make_part, part_inputs, input_shape = found
    table = LatencyTable.load_or_measure(store_root, backend, input_shape, batch, parts, make_part,
                                         part_inputs=part_inputs, threads=threads)
    return float(table.predict(parts))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's r of the ranks, ties averaged); nan when either side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {a.shape} and {b.shape}")
    ra, rb = _ranks(a) - (len(a) + 1) / 2, _ranks(b) - (len(b) + 1) / 2
    denom = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def mape(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Mean absolute percentage error of `predicted` against `actual` (in %)."""
    p, a = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if p.shape != a.shape or len(a) == 0 or (a <= 0).any():
        raise ValueError("mape needs predictions and positive actual values of the same length")
    return float(np.mean(np.abs(p - a) / a) * 100)
