"""The one small training loop shared by model training, finetune, distill and NAS search.

Optimizer (Adam/AdamW/SGD), cosine schedule, gradient clipping, AMP on CUDA, a tqdm progress
bar, a checkpoint every epoch and resume from it. Losses: cross-entropy for classification,
BCE + Dice for binary segmentation (the usual choice for masks with a small foreground).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.ir import TaskSpec
from compressor.options import option

log = logging.getLogger(__name__)

AUX_WEIGHT = 0.4  # DARTS's auxiliary-head loss weight (quark0/darts train.py)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, target, inputs)


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = option(5, "passes over the training split", min=0)
    batch_size: int = option(32, "samples per step", min=1)
    lr: float = option(1e-3, "peak learning rate (cosine-decayed to lr_min)", min=0, min_exclusive=True)
    lr_min: float = option(0.0, "final learning rate of the cosine schedule", min=0)
    optimizer: Literal["adam", "adamw", "sgd"] = option("adam", "optimizer")
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


def task_loss(task: TaskSpec) -> LossFn:
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


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def fit(
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
    from tqdm.auto import tqdm

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
            _atomic_save({"model": module.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                          "epoch": epoch + 1, "losses": losses}, checkpoint)
    module.eval()
    return TrainResult(opts.epochs - start_epoch, start_epoch, losses[-1] if losses else float("nan"), losses)
