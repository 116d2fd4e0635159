"""The one small training loop shared by model training, finetune, distill and NAS search.

Optimizer (Adam/AdamW/SGD), cosine schedule, gradient clipping, AMP on CUDA, a tqdm progress
bar, a checkpoint every epoch and resume from it. The checkpoint holds the model, optimizer and
scheduler state and every RNG stream (torch, CUDA, numpy, Python, the loader's shuffle generator),
so a resumed run continues exactly as the uninterrupted one would have. Losses: cross-entropy for classification,
BCE + Dice for binary segmentation (the usual choice for masks with a small foreground), per-pixel cross-entropy
for multi-class segmentation, with `ignore_index` pixels left out.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.ir import TaskSpec
from compressor.options import Range, option
from compressor.store import atomic_path

if TYPE_CHECKING:
    from compressor.context import PassContext

log = logging.getLogger(__name__)

AUX_WEIGHT = 0.4  # DARTS's auxiliary-head loss weight (quark0/darts train.py)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, target, inputs)


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = option(5, "passes over the training split", min=0, max=100_000, search=[1, 2, 5, 10])
    batch_size: int = option(32, "samples per step", min=1, max=10**6)
    lr: float = option(1e-3, "peak learning rate (cosine-decayed to lr_min)", min=0, min_exclusive=True,
                       search=Range(1e-4, 1e-2, log=True))
    lr_min: float = option(0.0, "final learning rate of the cosine schedule", min=0)
    optimizer: Literal["adam", "adamw", "sgd"] = option("adam", "optimizer", search=["adam", "adamw", "sgd"])
    weight_decay: float = option(0.0, "weight decay", min=0)
    momentum: float = option(0.9, "SGD momentum", min=0, max=1)
    grad_clip: float = option(5.0, "clip the global gradient norm at this value (0 = off)", min=0)
    max_steps: int = option(0, "stop after this many steps per epoch (0 = the whole split)", min=0)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits + soft Dice of the positive class (both averaged over the batch)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    return bce + dice.mean()


def class_map(target: torch.Tensor) -> torch.Tensor:
    """Multi-class segmentation labels as an int64 (N, H, W) class map; (N, 1, H, W) maps are accepted."""
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    return target.long()


def multiclass_segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                                 ignore_index: int | None = None) -> torch.Tensor:
    """Cross-entropy over the C classes of every pixel, averaged over the labelled pixels: pixels labelled
    `ignore_index` add nothing to the loss or its gradient. A batch with no labelled pixel gives 0 (still
    attached to the graph) rather than torch's 0/0 NaN, so that one unlabelled crop does not poison training."""
    target = class_map(target)
    if ignore_index is not None and not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-100 if ignore_index is None else ignore_index)


def task_loss(task: TaskSpec) -> LossFn:
    if task.multiclass_segmentation:
        return lambda logits, target, _x: multiclass_segmentation_loss(logits.float(), target, task.ignore_index)
    if task.kind == "segmentation":
        return lambda logits, target, _x: segmentation_loss(logits.float(), target.float())
    return lambda logits, target, _x: F.cross_entropy(logits.float(), target.long())


def make_optimizer(params, opts: TrainOptions) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)


@dataclass
class TrainResult:
    epochs_run: int
    resumed_from: int
    final_loss: float
    losses: list[float]


def rng_state(loader=None) -> dict:
    """Every random stream a training epoch draws from: torch (dropout, drop-path), CUDA, numpy, Python,
    and the loader's shuffle generator. Plain tensors and ints, so a checkpoint loads with weights_only."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()),
                                                       int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(loader, "generator", None)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict, loader=None) -> None:
    """Restore what `rng_state` saved, so a resumed epoch draws exactly what the uninterrupted one did."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    generator = getattr(loader, "generator", None)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"].cpu())


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """A training checkpoint: state_dicts and plain data, loaded with weights_only=True (never unpickles
    code); anything else is refused in one line."""
    from compressor.errors import PassError

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PassError(f"checkpoint {path} is not a plain state_dict checkpoint ({first[:160]}); it was not "
                        "loaded: delete it to restart that stage") from None
    if not isinstance(state, dict) or not {"model", "optim", "epoch"} <= set(state):
        raise PassError(f"checkpoint {path} lacks model/optim/epoch entries; delete it to restart that stage")
    return state


def channels_last_pays(module: nn.Module, device: str) -> bool:
    """True when training `module` on the CPU in channels-last memory format avoids a slow path of torch: the
    weight gradient of a depthwise convolution with a 5×5 or larger kernel took 16 s in NCHW and 0.3 s in
    channels-last for a (32, 96, 24, 24) input on this project's CPU (torch 2.13 with oneDNN 3.12; 3×3: 0.5 s
    and 0.26 s). Only the memory layout changes: values agree to float rounding."""
    if not str(device).startswith("cpu"):
        return False
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and max(m.kernel_size) >= 5
               for m in module.modules())


def fit(module: nn.Module, train_loader, task: TaskSpec, opts: TrainOptions, *, device: str = "cpu",
        **kwargs: Any) -> TrainResult:
    """Train `module` in place (`_fit`), in channels-last memory format where that pays (`channels_last_pays`);
    the module is back in the default layout when this returns, so what saves or exports it sees no change."""
    if not channels_last_pays(module, device):
        return _fit(module, train_loader, task, opts, device=device, **kwargs)
    module.to(memory_format=torch.channels_last)
    try:
        return _fit(module, train_loader, task, opts, device=device, **kwargs)
    finally:
        module.to(memory_format=torch.contiguous_format)


def _fit(
    module: nn.Module,
    train_loader,
    task: TaskSpec,
    opts: TrainOptions,
    *,
    device: str = "cpu",
    loss_fn: LossFn | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "train",
    extra_params: list[nn.Parameter] | None = None,
) -> TrainResult:
    """Train `module` in place. With `checkpoint`, state is saved after every epoch and a
    re-run with the same checkpoint path resumes after the last finished epoch."""
    from compressor.progress import progress_bar as tqdm  # one line per bar when stderr is not a terminal

    loss_fn = loss_fn or task_loss(task)
    module.to(device)
    params = list(module.parameters()) + list(extra_params or [])
    optim = make_optimizer(params, opts)
    steps_per_epoch = len(train_loader) if opts.max_steps == 0 else min(opts.max_steps, len(train_loader))
    total = max(1, opts.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda step: (opts.lr_min + 0.5 * (opts.lr - opts.lr_min) * (1 + math.cos(math.pi * min(step, total) / total)))
        / opts.lr,
    )
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, losses = 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        module.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start_epoch, losses = state["epoch"], state["losses"]
        for p, saved in zip(extra_params or [], state.get("extra", [])):
            with torch.no_grad():
                p.copy_(saved)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            set_rng_state(state["rng"], train_loader)
        log.info("%s: resumed from %s after epoch %d", desc, checkpoint, start_epoch)

    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    for epoch in range(start_epoch, opts.epochs):
        module.train()
        running, seen = 0.0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{opts.epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for step, (x, y) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, dtype=dtype), y.to(device)
            with torch.autocast("cuda", enabled=use_amp):
                logits = module(x)
                if isinstance(logits, tuple):  # (logits, auxiliary logits): a DARTS network with its aux head
                    logits, aux = logits
                    loss = loss_fn(logits, y, x) + AUX_WEIGHT * loss_fn(aux, y, x)
                else:
                    loss = loss_fn(logits, y, x)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if opts.grad_clip > 0:
                scaler.unscale_(optim)
                nn.utils.clip_grad_norm_(params, opts.grad_clip)
            scaler.step(optim)
            scaler.update()
            sched.step()
            running += loss.item() * x.shape[0]
            seen += x.shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        bar.close()
        epoch_loss = running / max(seen, 1)
        losses.append(epoch_loss)
        log.info("%s epoch %d/%d loss %.4f", desc, epoch + 1, opts.epochs, epoch_loss)
        if checkpoint is not None:
            with atomic_path(checkpoint) as tmp:
                torch.save({"model": module.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                            "rng": rng_state(train_loader), "scaler": scaler.state_dict(),
                            "extra": [p.detach().cpu() for p in extra_params or []],
                            "epoch": epoch + 1, "losses": losses}, tmp)
    module.eval()
    return TrainResult(opts.epochs - start_epoch, start_epoch, losses[-1] if losses else float("nan"), losses)


def train_stage(ctx: "PassContext", module: nn.Module, task: TaskSpec, opts: TrainOptions, *, offset: int, name: str,
                desc: str, loss_fn: LossFn | None = None, extra_params: list[nn.Parameter] | None = None) -> TrainResult:
    """The one way a pipeline stage trains (baseline, finetune, distill, DARIO's and prune-l1's fine-tuning):
    every RNG seeded from `ctx.seed + offset`, the training split shuffled from the same seed, a checkpoint
    `checkpoints/<name>.pt` in the stage's folder after every epoch (model, optimizer, scheduler, RNG
    streams: an interrupted stage resumes exactly), and the module back on the CPU in eval mode."""
    from compressor.data import make_loader

    data = ctx.require_data(desc)
    ctx.seed_everything(offset)
    loader = make_loader(data.train, opts.batch_size, shuffle=True, seed=ctx.seed + offset,
                         num_workers=data.num_workers)
    ckpt_dir = ctx.scratch_dir("checkpoints")
    result = fit(module, loader, task, opts, device=ctx.device, loss_fn=loss_fn,
                 checkpoint=ckpt_dir / f"{name}.pt" if ckpt_dir else None, progress=ctx.progress, desc=desc,
                 extra_params=extra_params)
    module.to("cpu").eval()
    return result
