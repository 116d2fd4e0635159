"""hf frontend: a local pretrained Hugging Face image classifier or segmenter directory → the IR, no glue.

The directory is what `save_pretrained` writes: `config.json` + `model.safetensors` [+ `preprocessor_config.json`].

```yaml
model: {frontend: hf, path: models/vit-tiny}      # task, input shape and classes from the data
```

- Loading: `from_pretrained(DIR, local_files_only=True, use_safetensors=True)` in offline mode: no network,
  no pickle (a directory with only `pytorch_model.bin` is refused) and no code from the directory (a config
  with `auto_map`, i.e. custom modelling code, is refused; `trust_remote_code` is never set).
- Task: from `config.architectures` (`...ForImageClassification` / `...ForSemanticSegmentation`), else from
  which Auto class knows the model type; option `task` overrides. The IR's module returns the logits tensor
  (`LogitsOnly`): classification `.logits`, segmentation logits upsampled bilinearly to the input size.
- Classes: the data's count (or option `num_classes`); a checkpoint with another count is re-headed
  (`ignore_mismatched_sizes`: the new head starts random, one warning line says so). A kept head names
  the classes after `config.id2label`.
- Recipe: the directory's path, the sha256 of its `config.json`, the task and the final `num_labels`.
  Rebuilding builds the architecture from the config alone (`from_config`); the weights come from the
  stage, so `model.safetensors` is not read again. A `config.json` that no longer matches its hash is
  refused (the source changed).
- Stage key: the sha256 of `config.json` and of the weight files (`source_digest`), so editing or
  replacing the checkpoint rebuilds the stage.
- Preprocessing: `preprocessor_config.json`'s size / crop / rescale / mean / std go to
  `ir.meta["hf_preprocessor"]`; when the data's preprocessing is absent or differs, one warning line
  says what the model expects and to set `data.preprocess.hf_processor: DIR`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor import schema
from compressor.errors import FrontendError
from compressor.frontend import Frontend, input_spec_from, lower
from compressor.ir import ModelIR, TaskSpec
from compressor.options import option
from compressor.registry import register_frontend
from compressor.store import sha256_file
from compressor.usercode import describe_failure

if TYPE_CHECKING:
    from compressor.context import PassContext
    from compressor.data import DataBundle

log = logging.getLogger(__name__)

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
PREPROCESSOR = "preprocessor_config.json"
JSON_MAX_BYTES = 16 * schema.MiB  # a config with 21k ImageNet labels is ~1 MiB; an index ~100 KB per 1k tensors

Task = Literal["classification", "segmentation"]
AUTO_CLASSES: dict[str, str] = {"classification": "AutoModelForImageClassification",
                                "segmentation": "AutoModelForSemanticSegmentation"}
ARCH_SUFFIXES: dict[str, str] = {"ForImageClassification": "classification",
                                 "ForSemanticSegmentation": "segmentation"}
# what preprocessor_config.json says about the expected input (the rest is tokenizer/video/label detail)
PREPROCESSOR_KEYS = ("image_processor_type", "do_resize", "size", "resample", "do_center_crop", "crop_size",
                     "crop_pct", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
                     "do_reduce_labels")


class LogitsOnly(nn.Module):
    """`model(pixel_values=x).logits`, upsampled bilinearly to the input size for dense prediction (HF
    segmenters predict at a fraction of the input resolution; compressor's segmentation logits are per
    input pixel)."""

    def __init__(self, model: nn.Module, upsample: bool = False) -> None:
        super().__init__()
        self.model = model
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        if self.upsample:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


@dataclass(frozen=True)
class HFOptions:
    path: str = option(help="local directory of a pretrained model: config.json + model.safetensors "
                            "[+ preprocessor_config.json] (save_pretrained's layout)")
    task: Task | None = option(None, "classification or segmentation (default: from config.json's architecture)")
    input_shape: list[int] | None = option(None, "C,H,W of one sample (default: the data's, else the "
                                                 "preprocessor's size)", min=1)
    num_classes: int | None = option(None, "classes of the head (default: the data's, else the checkpoint's); "
                                           "another count than the checkpoint's re-heads it", min=1)

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ValueError("path is empty; give the directory a model was saved to with save_pretrained")
        if self.input_shape is not None and len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be [C, H, W], got {self.input_shape}")


# ---- the directory -----------------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> Any:
    return schema.load_json(path, what, max_bytes=JSON_MAX_BYTES, error=FrontendError)


def read_config(d: Path) -> tuple[dict[str, Any], str]:
    """config.json of the model directory `d` as a mapping, and the sha256 of its bytes. Refuses a missing
    directory or file and a config that needs custom code (`auto_map`), each in one line."""
    if not d.is_dir():
        raise FrontendError(f"{d} is not a directory; give the directory a Hugging Face model was saved to "
                            f"(model.save_pretrained(DIR)), holding {CONFIG} and {SAFETENSORS}")
    path = d / CONFIG
    if not path.is_file():
        raise FrontendError(f"{d} holds no {CONFIG}: not a Hugging Face model directory (save one with "
                            f"model.save_pretrained(DIR))")
    try:
        with open(path, "rb") as f:
            data = f.read(JSON_MAX_BYTES + 1)  # hashed and parsed from the same bytes
    except OSError as exc:
        raise FrontendError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > JSON_MAX_BYTES:
        raise FrontendError(f"{path} is larger than {JSON_MAX_BYTES // schema.MiB} MiB; not a model config")
    doc = schema.parse_json(data, str(path), CONFIG, error=FrontendError)
    if not isinstance(doc, dict):
        raise FrontendError(f"{path}: expected a mapping, got {schema.got(doc)}; not a model config")
    if doc.get("auto_map"):
        raise FrontendError(f"{path} has auto_map: the model needs its own Python code (trust_remote_code), which "
                            f"the hf frontend never runs; custom code is not supported: use an architecture that "
                            f"ships with transformers, or wrap the model with the torch frontend (factory:)")
    return doc, hashlib.sha256(data).hexdigest()


def weight_files(d: Path) -> list[Path]:
    """The safetensors files of `d`: model.safetensors, or the shards its index lists. A directory with
    only pickled weights is refused in one line that says how to convert them."""
    single, index = d / SAFETENSORS, d / SAFETENSORS_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        doc = _read_json(index, "safetensors index")
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FrontendError(f"{index}: expected a mapping with a non-empty 'weight_map'; re-save the model")
        names = sorted({str(v) for v in weight_map.values()})
        shards = [d / n for n in names]
        for n, p in zip(names, shards):
            if Path(n).name != n or not p.is_file():  # a shard elsewhere than in d is not this model's
                raise FrontendError(f"{index} lists shard {n!r}, which is not a file in {d}; re-save the model")
        return [index, *shards]
    pickled = [n for n in PICKLE_WEIGHTS if (d / n).is_file()]
    if pickled:
        raise FrontendError(f"{d} holds {pickled[0]} but no {SAFETENSORS}: the hf frontend loads safetensors only "
                            f"(pickled weights can run code when loaded); convert once, where you trust the file: "
                            f"python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{d}')"
                            f".save_pretrained('{d}', safe_serialization=True)\" (use the model's own Auto class, "
                            f"e.g. AutoModelForImageClassification, to keep its head)")
    raise FrontendError(f"{d} holds no {SAFETENSORS}; save the model with model.save_pretrained(DIR, "
                        f"safe_serialization=True)")


# A real checkpoint's weights are hundreds of MB (about a second per GB to hash). A run hashes them once, for
# the model stage's key (`source_digest`); the build, the report rows and later runs in the same process reuse
# that digest while the file's size, mtime and inode are unchanged. Editing or replacing the file changes its
# mtime or inode, so it is hashed again. config.json is tiny and always hashed from the bytes read.
_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def weights_digest(files: list[Path]) -> str:
    """One sha256 over the weight files (each file's name and digest, in order)."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{_file_digest(p)}\n".encode())
    return h.hexdigest()


def read_preprocessor(d: Path) -> dict[str, Any] | None:
    """What `d`'s preprocessor_config.json says about the expected input (PREPROCESSOR_KEYS), or None."""
    path = d / PREPROCESSOR
    if not path.is_file():
        return None
    doc = _read_json(path, PREPROCESSOR)
    if not isinstance(doc, dict):
        raise FrontendError(f"{path}: expected a mapping, got {schema.got(doc)}; re-save the image processor")
    return {k: doc[k] for k in PREPROCESSOR_KEYS if k in doc}


def expected_size(pre: Mapping[str, Any]) -> tuple[int, int] | None:
    """The H, W the processor feeds the model: its crop when it center-crops, else its resize target (a
    `shortest_edge` resize is taken as square)."""
    def hw(size: Any) -> tuple[int, int] | None:
        if isinstance(size, int):
            return size, size
        if isinstance(size, Mapping):
            if "height" in size and "width" in size:
                return int(size["height"]), int(size["width"])
            if "shortest_edge" in size:
                return int(size["shortest_edge"]), int(size["shortest_edge"])
        return None

    if pre.get("do_center_crop") and hw(pre.get("crop_size")):
        return hw(pre.get("crop_size"))
    return hw(pre.get("size")) if pre.get("do_resize", True) else None


def describe_preprocessor(pre: Mapping[str, Any]) -> str:
    """'resize to 32×32, rescale ×0.00392, normalize mean [...] std [...]'."""
    parts = []
    size = expected_size(pre)
    if size:
        parts.append(f"{'crop' if pre.get('do_center_crop') else 'resize'} to {size[0]}×{size[1]}")
    factor = pre.get("rescale_factor")
    if pre.get("do_rescale", True) and isinstance(factor, (int, float)):
        parts.append(f"rescale ×{'1/255' if math.isclose(factor, 1 / 255) else f'{factor:.4g}'}")
    if pre.get("do_normalize", True) and pre.get("image_mean") is not None:
        parts.append(f"normalize mean {pre['image_mean']} std {pre.get('image_std')}")
    return ", ".join(parts) or "no preprocessing"


def _field(pre: Any, *names: str) -> Any:
    """A field of the data's preprocessing (a mapping or an object), under any of `names`."""
    for name in names:
        value = pre.get(name) if isinstance(pre, Mapping) else getattr(pre, name, None)
        if value is not None:
            return value
    return None


def _close(a: Any, b: Any) -> bool:
    try:
        return len(a) == len(b) and all(math.isclose(float(x), float(y), abs_tol=1e-4) for x, y in zip(a, b))
    except TypeError:  # one of them is None (no normalization) or not a list
        return False


def preprocess_mismatch(pre: Mapping[str, Any], data: "DataBundle", input_hw: tuple[int, int]) -> str | None:
    """How the data's inputs differ from what the processor `pre` expects (size, and the data's resolved
    preprocessing: `DataBundle.preprocess`, as `compressor.data.preprocess` records it), or None when they
    agree. The values are compared, not where they came from: `hf_processor` keys can be overridden."""
    problems = []
    size = expected_size(pre)
    if size is not None and size != input_hw:
        problems.append(f"the data's images are {input_hw[0]}×{input_hw[1]}")
    data_pre = getattr(data, "preprocess", None)  # the field may be absent from DataBundle
    if data_pre is None:
        return "; ".join(problems + ["the data has no preprocessing"])
    if pre.get("do_rescale", True) and isinstance(pre.get("rescale_factor"), (int, float)):
        factor = _field(data_pre, "rescale_factor")
        if not _close([factor], [pre["rescale_factor"]]):
            problems.append(f"the data rescales by {factor}")
    if pre.get("do_normalize", True) and pre.get("image_mean") is not None:
        mean, std = _field(data_pre, "mean", "image_mean"), _field(data_pre, "std", "image_std")
        if not (_close(mean, pre["image_mean"]) and _close(std, pre.get("image_std"))):
            problems.append(f"the data normalizes with mean {mean} std {std}")
    if _field(data_pre, "channel_order") not in (None, "RGB"):  # HF processors feed RGB
        problems.append(f"the data feeds {_field(data_pre, 'channel_order')}")
    return "; ".join(problems) or None


# ---- transformers ------------------------------------------------------------------------------------

def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise FrontendError("the hf frontend needs transformers: pip install 'compressor[hf]'") from None
    return transformers


@contextlib.contextmanager
def offline() -> Iterator[Any]:
    """transformers with no network and no chatter: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (huggingface_hub
    reads them once, at import, into `constants.HF_HUB_OFFLINE`, which is set too), its log below errors and
    its progress bars off (the frontend says what matters in one line). Everything is restored after."""
    transformers = _transformers()
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved_env})

    hf_logging = transformers.utils.logging
    saved = constants.HF_HUB_OFFLINE, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    constants.HF_HUB_OFFLINE = True
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        constants.HF_HUB_OFFLINE = saved[0]
        hf_logging.set_verbosity(saved[1])
        if saved[2]:
            hf_logging.enable_progress_bar()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_task(d: Path, config: Mapping[str, Any], override: str | None) -> str:
    """The task of the model in `d`: `override`, else its architecture's suffix, else the one Auto class
    that knows its model type."""
    if override is not None:
        return override
    for arch in config.get("architectures") or []:
        for suffix, task in ARCH_SUFFIXES.items():
            if str(arch).endswith(suffix):
                return task
    model_type = config.get("model_type")
    _transformers()
    from transformers.models.auto import modeling_auto as auto

    known = [t for t, names in (("classification", auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
                                ("segmentation", auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES))
             if model_type in names]
    if len(known) == 1:
        return known[0]
    archs = ", ".join(map(str, config.get("architectures") or [])) or "none"
    raise FrontendError(f"{d / CONFIG}: cannot tell the task from architectures [{archs}] and model_type "
                        f"{model_type!r} ({'both tasks know it' if known else 'no image task knows it'}); set "
                        f"model.task: classification or segmentation")


def _id2label(config: Mapping[str, Any]) -> dict[int, str]:
    raw = config.get("id2label") or {}
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError):
        return {}


def _placeholder_names(names: list[str]) -> bool:
    """transformers' default labels (LABEL_0, LABEL_1, ...): the checkpoint named no classes."""
    return all(n == f"LABEL_{i}" for i, n in enumerate(names))


def load_pretrained(d: Path, task: str, labels: dict[int, str] | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """`from_pretrained` of `d` for `task`, offline and from safetensors only; with `labels`, a new head of
    that many classes (its weights are drawn with `seed`). Returns the model and transformers' loading info."""
    with offline() as transformers:
        auto = getattr(transformers, AUTO_CLASSES[task])
        kwargs: dict[str, Any] = {}
        if labels is not None:
            kwargs = {"id2label": labels, "label2id": {v: k for k, v in labels.items()},
                      "ignore_mismatched_sizes": True}
        torch.manual_seed(seed)
        try:
            model, info = auto.from_pretrained(str(d), local_files_only=True, use_safetensors=True,
                                               trust_remote_code=False, output_loading_info=True, **kwargs)
        except Exception as exc:  # transformers' and safetensors' own errors (a corrupt file, a missing tensor)
            raise FrontendError(f"transformers cannot load {d} as {AUTO_CLASSES[task]}: {describe_failure(exc)}") from None
    return model.float().eval(), info


def model_from_config(d: Path, task: str, num_labels: int) -> nn.Module:
    """The architecture of `d` for `task` with a `num_labels` head, from config.json alone (random weights:
    the caller loads the stage's)."""
    with offline() as transformers:
        try:
            config = transformers.AutoConfig.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
            if config.num_labels != num_labels:
                config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
                config.label2id = {v: k for k, v in config.id2label.items()}
            model = getattr(transformers, AUTO_CLASSES[task]).from_config(config)
        except Exception as exc:  # e.g. a model_type this transformers does not know
            raise FrontendError(f"transformers cannot build {AUTO_CLASSES[task]} from {d / CONFIG}: "
                                f"{describe_failure(exc)}") from None
    return model.float().eval()


def _modules_of(keys: Any) -> list[str]:
    """The modules that own the parameter names `keys` ('classifier.weight' → 'classifier'), in order."""
    return sorted({str(k).rpartition(".")[0] or str(k) for k in keys})


# ---- the frontend ------------------------------------------------------------------------------------

@register_frontend("hf")
class HFModel(Frontend):
    Options = HFOptions
    label_keys = ("path",)
    packages = ("torch", "transformers", "safetensors")

    @property
    def directory(self) -> Path:
        return Path(self.options.path).expanduser().resolve()

    def source_digest(self) -> dict[str, str]:
        """The sha256 of config.json and of the weight files: part of the model stage's key."""
        d = self.directory
        _, config_sha = read_config(d)
        return {"config_sha256": config_sha, "weights_sha256": weights_digest(weight_files(d))}

    def build(self, data: "DataBundle | None", ctx: "PassContext") -> ModelIR:
        o, d = self.options, self.directory
        config, config_sha = read_config(d)
        source = self.source_digest()  # the weights' digest is cached since the key computed it
        task = resolve_task(d, config, o.task)
        if data is not None and data.task.kind != task:
            raise FrontendError(f"{d} holds a {task} model but dataset '{data.name}' is a {data.task.kind} task; "
                                f"set model.task if the architecture was guessed wrong, or use {task} data")
        pre = read_preprocessor(d)
        shape = self._input_shape(d, config, data, pre)
        names = [n for _, n in sorted(_id2label(config).items())]
        old = len(names) or int(config.get("num_labels") or 2)  # transformers' default is 2 labels
        classes = o.num_classes or (data.task.num_classes if data is not None else None) or old
        data_names = list(data.task.class_names) if data is not None and data.task.class_names else None
        labels = None
        if classes != old:
            labels = {i: (data_names[i] if data_names and len(data_names) == classes else f"LABEL_{i}")
                      for i in range(classes)}
        model, info = load_pretrained(d, task, labels, ctx.seed)
        class_names = self._class_names(d, names, data_names, classes, reheaded=labels is not None)
        fresh = _modules_of([k[0] for k in info.get("mismatched_keys", ())] + list(info.get("missing_keys", ())))
        if labels is not None or fresh:
            heads = ", ".join(f"model.{m}" for m in fresh) or "the head"
            counts = f"the checkpoint has {old} classes, the data {classes}" if labels is not None else \
                f"the checkpoint lacks {len(info.get('missing_keys', ()))} of its tensors"
            log.warning("hf frontend: %s of %s is new and randomly initialized (%s); fine-tune before use",
                        heads, d.name, counts)
        recipe = {"name": "hf", "path": str(d), "config_sha256": config_sha, "task": task, "num_labels": classes}
        # the recipe holds the path and config hash; meta adds what inspect and reports may want to show
        meta: dict[str, Any] = {"frontend": "hf", "architecture": type(model).__name__,
                                "weights_sha256": source["weights_sha256"], "checkpoint_num_labels": old}
        if pre is not None:
            meta["hf_preprocessor"] = pre
            problem = preprocess_mismatch(pre, data, (shape[1], shape[2])) if data is not None else None
            if problem:  # without data there is nothing to compare (the shape came from this processor)
                log.warning("hf frontend: %s expects %s, but %s; set data.preprocess.hf_processor: %s",
                            d.name, describe_preprocessor(pre), problem, d)
        value_range = data.input_range if data is not None else None
        ignore = data.task.ignore_index if data is not None else None
        task_spec = TaskSpec(task, classes, ignore_index=ignore, class_names=class_names)
        return lower(LogitsOnly(model, upsample=task == "segmentation"), [input_spec_from(shape, value_range)],
                     task_spec, meta=meta, recipe=recipe)

    def _input_shape(self, d: Path, config: Mapping[str, Any], data: "DataBundle | None",
                     pre: Mapping[str, Any] | None) -> tuple[int, int, int]:
        """C, H, W: the option's, the data's, else the config's channels at the processor's (or config's) size."""
        channels = config.get("num_channels")
        shape = self.options.input_shape or (list(data.input_shape) if data is not None else None)
        if shape is None:
            size = expected_size(pre) if pre else None
            side = config.get("image_size")
            size = size or ((side, side) if isinstance(side, int) else None)
            if size is None or not isinstance(channels, int):
                raise FrontendError(f"{d}: the input shape is not known (no data, no image size in {PREPROCESSOR} "
                                    f"or {CONFIG}); set model.input_shape: [C, H, W] or add a data: block")
            shape = [channels, *size]
        if len(shape) != 3:
            raise FrontendError(f"the hf frontend takes image inputs [C, H, W], got the shape {list(shape)}")
        if isinstance(channels, int) and shape[0] != channels:
            raise FrontendError(f"{d.name} takes {channels}-channel images (config.json num_channels) but the "
                                f"inputs have {shape[0]} channels; convert the images or pick a model for "
                                f"{shape[0]} channels")
        return int(shape[0]), int(shape[1]), int(shape[2])

    @staticmethod
    def _class_names(d: Path, names: list[str], data_names: list[str] | None, classes: int,
                     reheaded: bool) -> list[str] | None:
        """The class names: the data's for a new head; id2label's for a kept one (the data's when the
        checkpoint has only LABEL_i placeholders; a different naming by the data is warned about)."""
        if reheaded or not names or _placeholder_names(names) or len(names) != classes:
            return data_names if data_names and len(data_names) == classes else None
        if data_names and data_names != names:
            log.warning("hf frontend: %s's head predicts %s but the data's classes are %s (same index = same "
                        "class); rename the data's classes or set model.num_classes to re-head",
                        d.name, names, data_names)
        return names

    @classmethod
    def rebuild(cls, spec: dict[str, Any]) -> nn.Module:
        """The architecture from the directory's config.json, which must still be the one the stage was built
        from (its weights are then loaded from the stage)."""
        d = Path(spec["path"])
        _, sha = read_config(d)
        if sha != spec["config_sha256"]:
            raise FrontendError(f"{d / CONFIG} has changed since the stage was built (sha256 {sha[:12]}..., the "
                                f"recipe records {spec['config_sha256'][:12]}...): the source changed, so the stage "
                                f"cannot be rebuilt from it; restore that config.json or re-run the pipeline")
        task = spec["task"]
        return LogitsOnly(model_from_config(d, task, int(spec["num_labels"])), upsample=task == "segmentation")
