"""The IR: the one object that flows from frontends through passes to exporters.

`ModelIR.module` is the eager `nn.Module` as its author wrote it (a Hugging Face model, a user's class,
a DARTS network): no pass depends on symbolic traceability. Analyses derive what they need on demand
(forward hooks; `torch.export` where a dataflow graph is needed).

On disk an IR is a directory, and nothing in it is ever unpickled:
```
ir.json               format, input spec, task, precision, meta, history, and the recipe:
                      the frontend spec that rebuilds the module + the ordered structural edits
weights.safetensors   the state_dict (its sha256 is recorded in ir.json and checked on load)
```
Loading rebuilds the module from the recipe (`Frontend.rebuild`), replays the edits
(`compressor.edits`), then loads the weights strictly: NVIDIA ModelOpt's save/restore scheme. A
`torch` recipe names a user factory, i.e. code: it is rebuilt only with `trust_factory` (see `load`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from compressor import schema
from compressor.errors import FrontendError
from compressor.precision import get_precision
from compressor.store import atomic_path, atomic_write, is_pickle, sha256_file

TaskKind = Literal["classification", "segmentation"]
Precision = str  # a registered precision's name (compressor.precision): fp32, fp16, int8, ...

FORMAT = "compressor.ModelIR/2"
IR_JSON = "ir.json"
WEIGHTS = "weights.safetensors"

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class InputSpec:
    """One model input. `shape[0]` is None: the batch dimension is dynamic."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] | None = None

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A deterministic example tensor inside the declared value range. Its size is bounded before
        anything is allocated (a crafted shape must not ask for terabytes)."""
        n = schema.count_elements(self.shape, batch)
        if n > schema.MAX_EXAMPLE_ELEMENTS:
            raise FrontendError(f"input '{self.name}' of shape {list(self.shape)} at batch {batch} is {n:,} elements; "
                                f"an example input holds at most {schema.MAX_EXAMPLE_ELEMENTS:,} (1 GiB of float32): "
                                "use a smaller batch or input shape")
        gen = torch.Generator().manual_seed(seed)
        dims = tuple(batch if d is None else d for d in self.shape)
        x = torch.rand(dims, generator=gen)
        lo, hi = self.value_range if self.value_range else (-1.0, 1.0)
        return (lo + (hi - lo) * x).to(_DTYPES[self.dtype])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(name=str(d["name"]), shape=tuple(d["shape"]), dtype=str(d.get("dtype", "float32")),
                   value_range=tuple(d["value_range"]) if d.get("value_range") else None)


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts.

    classification: logits of shape (N, num_classes); labels are class indices.
    segmentation with num_classes == 1: binary masks, one logit per pixel, shape (N, 1, H, W); the
    positive class is the foreground ("moving ground" in InSAR: logit > 0); labels are float {0, 1}
    masks (N, 1, H, W).
    segmentation with num_classes >= 2: semantic segmentation, C logits per pixel, shape (N, C, H, W),
    the prediction is their argmax; labels are int64 class-index maps (N, H, W).
    `ignore_index`: a label value that no loss or metric counts (e.g. 255 for unlabelled pixels).
    `class_names`: the classes' names in index order (a dataset's folders, a model config's labels).
    """

    kind: TaskKind
    num_classes: int
    ignore_index: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "segmentation"):
            raise ValueError(f"task kind must be classification or segmentation, got {self.kind!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def multiclass_segmentation(self) -> bool:
        return self.kind == "segmentation" and self.num_classes >= 2

    def class_name(self, i: int) -> str:
        return self.class_names[i] if self.class_names is not None else str(i)


@dataclass
class PassRecord:
    """What one pass did: its name, resolved options, wall time and what changed."""

    name: str
    options: dict[str, Any]
    seconds: float
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """How to rebuild the module without pickle: the frontend spec (plain data, `frontend["name"]` names
    the registered frontend) and the ordered structural edits (`{"kind": ..., params}`, see
    `compressor.edits`)."""

    frontend: dict[str, Any]
    edits: list[dict[str, Any]] = field(default_factory=list)

    def with_edit(self, kind: str, **params: Any) -> "Recipe":
        return Recipe(copy.deepcopy(self.frontend), [*copy.deepcopy(self.edits), {"kind": kind, **params}])

    def runs_user_code(self) -> bool:
        return self.frontend.get("name") == "torch"


@dataclass
class ModelIR:
    module: nn.Module
    inputs: list[InputSpec]
    task: TaskSpec
    precision: Precision = "fp32"
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[PassRecord] = field(default_factory=list)
    recipe: Recipe | None = None

    # ---- construction -------------------------------------------------------------------
    def clone(self) -> "ModelIR":
        """A deep copy: passes work on a clone so that their input IR stays intact."""
        return ModelIR(
            module=copy.deepcopy(self.module),
            inputs=list(self.inputs),
            task=self.task,
            precision=self.precision,
            meta=copy.deepcopy(self.meta),
            history=copy.deepcopy(self.history),
            recipe=copy.deepcopy(self.recipe),
        )

    def replace(self, **changes: Any) -> "ModelIR":
        return dataclasses.replace(self, **changes)

    def with_edit(self, kind: str, **params: Any) -> "ModelIR":
        """This IR with one more structural edit in its recipe (the module is already edited)."""
        return self.replace(recipe=self.recipe.with_edit(kind, **params) if self.recipe is not None else None)

    # ---- convenience --------------------------------------------------------------------
    def example_inputs(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Example inputs, in the dtype the module takes at the IR's precision (fp16 IRs: float16)."""
        dtype = get_precision(self.precision).torch_input_dtype()
        xs = tuple(spec.example(batch, seed) for spec in self.inputs)
        return tuple(x.to(dtype) for x in xs) if dtype else xs

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def state_bytes(self) -> int:
        """Bytes of the weights and buffers (state_dict tensors) at the IR's precision: the payload a
        deployable artifact must carry, without any container format's overhead. The precision says what a
        weight costs (`Precision.state_bytes`: int8 counts its quantized layers' weights at one byte)."""
        return get_precision(self.precision).state_bytes(self.module)

    # ---- persistence --------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inputs": [dataclasses.asdict(s) for s in self.inputs],
            "task": dataclasses.asdict(self.task),
            "precision": self.precision,
            "meta": self.meta,
            "history": [dataclasses.asdict(r) for r in self.history],
            "recipe": dataclasses.asdict(self.recipe) if self.recipe is not None else None,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the IR directory `path` (ir.json + weights.safetensors). Each file goes to a per-process
        temp name and is renamed into place, weights first, so a crash never leaves an ir.json that
        points at missing or half-written weights."""
        from safetensors.torch import save_model

        if self.recipe is None:
            raise FrontendError("this IR has no recipe (it was lowered from a module object), so it cannot be "
                                "rebuilt from disk; build it through a frontend (zoo, darts, or torch with a "
                                "'package.module:factory')")
        path = Path(path)
        if path.suffix in (".pt", ".pth", ".pkl"):
            raise FrontendError(f"{path}: an IR is saved as a directory (ir.json + {WEIGHTS}), not a pickle file; "
                                f"give a directory path")
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / WEIGHTS) as weights_tmp:
            save_model(self.module, str(weights_tmp))
            doc = self.to_document()
            doc["weights"] = {"file": WEIGHTS, "sha256": sha256_file(weights_tmp)}
        atomic_write(path / IR_JSON, json.dumps(doc, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, trust_factory: bool | str = False) -> "ModelIR":
        """Load an IR directory written by `save` (or its ir.json).

        Nothing is unpickled. Rebuilding a `torch` recipe imports and calls the user's factory, so it
        runs only when `trust_factory` is True or equals that factory's 'module:callable' string (what
        a run does for its own pipeline's factory); otherwise a FrontendError says how to allow it.
        """
        from safetensors.torch import load_model

        doc, root = read_document(path)
        recipe = doc["recipe"]
        if recipe is None:
            raise FrontendError(f"{root}: the IR has no recipe, so its module cannot be rebuilt")
        recipe = Recipe(frontend=dict(recipe["frontend"]), edits=list(recipe.get("edits", [])))
        factory = recipe.frontend.get("factory")
        if recipe.runs_user_code() and trust_factory is not True and trust_factory != factory:
            raise FrontendError(f"{root} is rebuilt by calling the user factory '{factory}', which runs code; "
                                "load it only if you trust its source (compress bench --trust-factory, or "
                                "ModelIR.load(..., trust_factory=True))")
        weights = root / WEIGHTS
        expected = (doc.get("weights") or {}).get("sha256")
        if not weights.is_file():
            raise FrontendError(f"{root}: {WEIGHTS} is missing; the stage is incomplete: re-run it")
        if expected and sha256_file(weights) != expected:
            raise FrontendError(f"{root}: {WEIGHTS} does not match the sha256 recorded in {IR_JSON} (corrupt or "
                                "replaced); re-run the stage")
        inputs = [InputSpec.from_dict(s) for s in doc["inputs"]]
        task = TaskSpec(**doc["task"])
        module = rebuild_module(recipe, inputs)
        try:
            load_model(module, str(weights), strict=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FrontendError(f"{root}: the weights do not fit the module rebuilt from the recipe ({first[:300]}); "
                                "the stage was written by another version: re-run it") from None
        module.eval()
        return cls(module=module, inputs=inputs, task=task, precision=doc["precision"], meta=doc.get("meta", {}),
                   history=[PassRecord(**r) for r in doc.get("history", [])], recipe=recipe)

    # ---- display ------------------------------------------------------------------------
    def summary(self) -> str:
        """What `compress inspect` prints: params/bytes per module, recipe and history."""
        from compressor.evaluate.stats import module_table  # local: keeps ir.py import-light

        header = summary_header(self.to_document(), self.parameter_count(), self.state_bytes())
        return "\n".join([header, "", module_table(self.module), "", history_lines(self.to_document())])


# ---- reading without rebuilding ------------------------------------------------------------

PICKLE_HINT = ("pickled files are never loaded (loading one can run arbitrary code); give a stage directory "
               f"({IR_JSON} + {WEIGHTS}) or an .onnx file")


ALTERED = "the stage is corrupt or was altered: re-run it"


def refuse_unknown_file(path: Path) -> FrontendError:
    """The one-line error for a file that is not an IR directory (a pickle, a zip written by torch.save,
    anything else); never opens it beyond its first bytes."""
    if is_pickle(path):
        return FrontendError(f"{path} is a pickle (torch.save) file; {PICKLE_HINT}")
    return FrontendError(f"{path} is not a compressor IR; {PICKLE_HINT}")


def read_document(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """The validated ir.json of an IR directory (or of the ir.json given), and the directory."""
    path = Path(path)
    if path.is_dir():
        root, doc_path = path, path / IR_JSON
        if not doc_path.is_file():
            raise FrontendError(f"{path} holds no {IR_JSON}: not an IR directory (a stage directory of a run, or "
                                f"a directory written by ModelIR.save)")
    elif path.is_file():
        if path.name != IR_JSON:
            raise refuse_unknown_file(path)
        root, doc_path = path.parent, path
    else:
        raise FrontendError(f"no IR at {path}; give a stage directory of a run (it holds {IR_JSON})")
    doc = schema.load_json(doc_path, IR_JSON, max_bytes=schema.IR_MAX_BYTES, error=FrontendError, fix=ALTERED)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise FrontendError(f"{doc_path} is not an IR document of this version (format {found!r}, expected "
                            f"{FORMAT!r}); re-run the stage")
    schema.validate(doc, schema.IR_DOCUMENT, str(doc_path), error=FrontendError, fix=ALTERED)
    return doc, root


def safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensor table of a safetensors file (name → dtype, shape, offsets), read from its JSON header
    alone: no tensor is materialized and nothing is executed."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(schema.SAFETENSORS_HEADER_MAX_BYTES, size - 8):
                raise ValueError(f"header length {n:,} out of range for a file of {size:,} bytes")
            raw = f.read(n)
    except (OSError, struct.error, ValueError) as exc:
        raise FrontendError(f"{path} is not a readable safetensors file ({exc}); {ALTERED}") from None
    source = f"{path} header"
    header = schema.parse_json(raw, source, "safetensors header", error=FrontendError, fix=ALTERED)
    if not isinstance(header, dict):
        raise FrontendError(f"{source}: expected a mapping of tensor names, got {schema.got(header)}; {ALTERED}")
    schema.validate(header.pop("__metadata__", {}), schema.SAFETENSORS_METADATA, source, path="__metadata__",
                    error=FrontendError, fix=ALTERED)
    schema.validate(header, schema.SAFETENSORS_HEADER, source, error=FrontendError, fix=ALTERED)
    data_bytes = size - 8 - n
    for name, info in header.items():  # what the format promises about offsets, checked against this file
        begin, end = info["data_offsets"]
        nbytes = schema.count_elements(info["shape"]) * schema.SAFETENSORS_ITEMSIZE[info["dtype"]]
        if not begin <= end <= data_bytes or end - begin != nbytes:
            raise FrontendError(f"{source}: {schema.key_path('', name)}.data_offsets: [{begin}, {end}] does not hold "
                                f"{info['dtype']} {info['shape']} ({nbytes:,} bytes) inside the file's "
                                f"{data_bytes:,} data bytes; {ALTERED}")
    return header


def summary_header(doc: dict[str, Any], params: int | None = None, nbytes: int | None = None) -> str:
    task = doc["task"]
    lines = [
        f"task: {task['kind']} ({task['num_classes']} classes)",
        f"precision: {doc['precision']}",
        "inputs: " + ", ".join(f"{s['name']}{list(s['shape'])} {s['dtype']}" for s in doc["inputs"]),
    ]
    if params is not None:
        lines.append(f"parameters: {params:,}  weights: {nbytes:,} bytes")
    recipe = doc.get("recipe") or {}
    front = recipe.get("frontend") or {}
    shown = {k: v for k, v in front.items() if k not in ("name", "genotype")}
    lines.append(f"recipe: {front.get('name', '?')}{{{', '.join(f'{k}={v}' for k, v in shown.items())}}}")
    for i, edit in enumerate(recipe.get("edits", []), 1):
        params_ = {k: v for k, v in edit.items() if k != "kind"}
        text = ", ".join(f"{k}={_short(v)}" for k, v in params_.items())
        lines.append(f"  edit {i}: {edit.get('kind')}{{{text}}}")
    if doc.get("meta"):
        lines.append("meta: " + ", ".join(f"{k}={_short(v)}" for k, v in doc["meta"].items()))
    return "\n".join(lines)


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n - 3] + "..."


def history_lines(doc: dict[str, Any]) -> str:
    lines = ["history:"]
    if not doc.get("history"):
        lines.append("  (none)")
    for i, rec in enumerate(doc.get("history", []), 1):
        opts = ", ".join(f"{k}={v}" for k, v in rec["options"].items())
        stats = ", ".join(f"{k}={v}" for k, v in rec.get("stats", {}).items() if not isinstance(v, (list, dict)))
        lines.append(f"  {i}. {rec['name']}{{{opts}}}  {rec['seconds']:.1f}s  changed={rec['changed']}  {stats}")
    return "\n".join(lines)


def describe_directory(path: str | os.PathLike[str]) -> str:
    """`compress inspect` of an IR directory without rebuilding its module (so without running any
    code the recipe names): the document, and a tensor table from the safetensors header."""
    doc, root = read_document(path)
    header = safetensors_header(root / WEIGHTS)
    rows: dict[str, list[int]] = {}
    total_n = total_b = 0
    for name, info in header.items():
        n = schema.count_elements(info["shape"])
        b = n * schema.SAFETENSORS_ITEMSIZE[info["dtype"]]
        owner = name.rpartition(".")[0] or "(root)"
        row = rows.setdefault(owner, [0, 0, 0])
        row[0] += 1
        row[1] += n
        row[2] += b
        total_n += n
        total_b += b
    width = max([len(k) for k in rows] + [6])
    table = [f"{'module':<{width}}  {'tensors':>7}  {'elements':>12}  {'bytes':>12}"]
    table += [f"{k:<{width}}  {v[0]:>7}  {v[1]:>12,}  {v[2]:>12,}" for k, v in rows.items()]
    table.append(f"{'total':<{width}}  {len(header):>7}  {total_n:>12,}  {total_b:>12,}")
    return "\n".join([f"IR directory: {root}", summary_header(doc), "", *table, "", history_lines(doc)])


def rebuild_module(recipe: Recipe, inputs: list[InputSpec]) -> nn.Module:
    """The module of `recipe`: the frontend's fresh build, then every edit replayed in order."""
    from compressor.edits import apply_edit
    from compressor.registry import FRONTENDS

    name = recipe.frontend.get("name")
    frontend = FRONTENDS.get_or_error(str(name), "recipe")
    module = frontend.rebuild(recipe.frontend)
    module.eval()
    example = tuple(spec.example(batch=1) for spec in inputs)
    for edit in recipe.edits:
        module = apply_edit(module, edit, example)
    return module
