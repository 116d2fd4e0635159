"""distill: knowledge distillation from a teacher IR into the current IR or a fresh, smaller student.

Loss (Hinton et al.), with α = `alpha` and T = `temperature`:

    L = α · T² · soft(student / T, teacher / T) + (1 − α) · hard(student, labels) + β · Σ features

- classification: soft = KL(softmax(teacher/T) ‖ softmax(student/T)) (batch mean), hard = cross-entropy.
- binary segmentation (one logit per pixel): soft = per-pixel binary cross-entropy between
  sigmoid(student/T) and the teacher's sigmoid(teacher/T) (the binary form of the same KL up to a
  constant), averaged over pixels; hard = BCE + soft Dice, the loss the baseline was trained with.
- multi-class segmentation (C logits per pixel): soft = per-pixel KD, the classification KL taken at
  every pixel: KL(softmax(teacher/T) ‖ softmax(student/T)) over the class dim (dim 1), summed over
  the classes and averaged over the labelled pixels; pixels labelled `ignore_index` are masked out of
  the mean (their teacher may be confident about a class nobody checked), and a batch with no
  labelled pixel adds 0. hard = per-pixel cross-entropy with the same `ignore_index`.
- features (`feature_layers`, seed 000's remedy for its IoU loss): for each named module present in
  both networks, the student's output goes through a trainable 1×1 conv adapter to the teacher's
  channel count (resized bilinearly if the spatial sizes differ) and is pulled to the teacher's output
  by mean squared error, weighted by β = `feature_weight`. The adapters train with the student and
  are not part of the result.

The teacher is the IR before compression (`teacher: baseline`) or any named earlier stage. The student
is the current IR (`student: current`) or a fresh network that the teacher's frontend builds
(`student: <that frontend>`, `Frontend.student`) at `student_init_channels` (width) / `student_layers`
(depth): for darts a network of the teacher's genotype (the paper's 16/36 × 8/14 students), for zoo the
teacher's zoo model at another width and depth, for hierarchical the teacher's genotype with about that many
stem channels (every width scaled alike) and at most that many blocks per stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.context import PassContext
from compressor.errors import FrontendError, PassError
from compressor.frontend import offering_students
from compressor.ir import ModelIR, TaskSpec
from compressor.options import option
from compressor.passes_base import Pass, PassResult
from compressor.registry import FRONTENDS, register_pass
from compressor.train import TrainOptions, class_map, multiclass_segmentation_loss, segmentation_loss, train_stage

Task = TaskSpec | str  # a TaskSpec, or a kind: "classification" or "segmentation" (binary)


@dataclass(frozen=True)
class DistillOptions(TrainOptions):
    teacher: str = option("baseline", "stage whose model teaches: baseline (the IR before compression) or a pass name")
    student: str = option(
        "current", "current: distill into the current IR; or the teacher's frontend (e.g. darts: a new network of "
                   "the teacher's genotype), which builds a fresh student")
    student_init_channels: int | None = option(None, "student width: darts init channels, zoo width, hierarchical "
                                                     "stem channels (default: the teacher's)", min=1)
    student_layers: int | None = option(None, "student depth: darts cells, zoo depth, hierarchical blocks per "
                                              "stage (default: the teacher's)", min=3)
    alpha: float = option(0.7, "weight of the soft (teacher) loss; 1 − alpha weighs the labels", min=0, max=1,
                          search=[0.3, 0.5, 0.7, 0.9])
    temperature: float = option(4.0, "softening temperature T", min=0, min_exclusive=True,
                                search=[1.0, 2.0, 4.0, 8.0])
    feature_layers: list[str] = option([], "module names whose outputs are aligned to the teacher's (1×1 adapters)")
    feature_weight: float = option(1.0, "weight β of the feature-alignment loss", min=0)

    def __post_init__(self) -> None:
        if self.student != "current" and self.student not in offering_students():
            raise ValueError(f"student: {self.student!r} is not valid; choose current or a frontend that builds "
                             f"students: {', '.join(offering_students()) or '(none)'}")


def _spec(task: Task) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else TaskSpec(task, 1 if task == "segmentation" else 2)


def pixel_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, target: torch.Tensor | None = None,
             ignore_index: int | None = None) -> torch.Tensor:
    """T² · per-pixel KL(softmax(teacher/T) ‖ softmax(student/T)) over dim 1 of (N, C, H, W) logits, summed over
    the classes and averaged over the pixels whose label (`target`, (N, H, W)) is not `ignore_index`."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="none",
                  log_target=True).sum(dim=1)
    if target is not None and ignore_index is not None:
        kl = kl[class_map(target) != ignore_index]
        if kl.numel() == 0:
            return student.sum() * 0.0
    return kl.mean() * t * t


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, task: Task, temperature: float,
              target: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL between the softened teacher and student distributions (see the module docstring); `target`
    only masks the ignore_index pixels of multi-class segmentation."""
    spec, t = _spec(task), temperature
    if spec.multiclass_segmentation:
        return pixel_kd(student, teacher, t, target, spec.ignore_index)
    if spec.kind == "classification":
        return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                        reduction="batchmean") * t * t
    return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t


def hard_loss(student: torch.Tensor, target: torch.Tensor, task: Task) -> torch.Tensor:
    spec = _spec(task)
    if spec.multiclass_segmentation:
        return multiclass_segmentation_loss(student, target, spec.ignore_index)
    if spec.kind == "classification":
        return F.cross_entropy(student, target.long())
    return segmentation_loss(student, target.float())


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, task: Task, alpha: float,
            temperature: float) -> torch.Tensor:
    """α · soft + (1 − α) · hard."""
    return (alpha * soft_loss(student, teacher, task, temperature, target)
            + (1 - alpha) * hard_loss(student, target, task))


class FeatureTap:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            try:
                sub = module.get_submodule(name)
            except AttributeError:
                raise PassError(f"distill: feature layer '{name}' is not a module of the network; names look like "
                                f"{', '.join(n for n, _ in list(module.named_modules())[1:6])} "
                                f"(see compress inspect)") from None
            self.handles.append(sub.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable:
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            self.outputs[name] = out

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def feature_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                 adapters: nn.ModuleDict) -> torch.Tensor:
    total = torch.zeros(())
    for name, s in student.items():
        t = teacher[name]
        a = adapters[name.replace(".", "__")](s)
        if a.shape[-2:] != t.shape[-2:]:
            a = F.interpolate(a, size=t.shape[-2:], mode="bilinear", align_corners=False)
        total = total + F.mse_loss(a, t)
    return total / max(len(student), 1)


@register_pass("distill")
class Distill(Pass):
    Options = DistillOptions
    label_keys = ("student",)

    accepts = ("fp32",)

    def needs_data(self) -> bool:
        return True

    def references(self) -> list[str]:
        return [self.options.teacher]

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        super().requires(ir, ctx)
        self._teacher(ctx)

    def _teacher(self, ctx: PassContext) -> ModelIR:
        name = self.options.teacher
        if name in ctx.stages:
            return ctx.stages[name]
        if name == "baseline" and ctx.teacher is not None:
            return ctx.teacher
        have = ", ".join(ctx.stages) or "none"
        raise PassError(f"distill: no stage '{name}' to teach from (stages so far: {have}); use teacher: baseline "
                        f"or the name of an earlier pass, or give PassContext(teacher=ir)")

    def _student(self, ir: ModelIR, teacher: ModelIR) -> ModelIR:
        """The current IR, or a fresh student from the teacher's frontend (the one its recipe names)."""
        o = self.options
        if o.student == "current":
            return ir
        built_by = (teacher.recipe.frontend if teacher.recipe is not None else {}).get("name")
        if built_by != o.student:
            raise PassError(f"distill: student: {o.student} needs a teacher built by the {o.student} frontend, but "
                            f"teacher '{o.teacher}' comes from {built_by or 'no frontend'}; use student: current, "
                            f"or student: <the teacher's frontend> (frontends that build students: "
                            f"{', '.join(offering_students())})")
        try:
            student = FRONTENDS[built_by].student(teacher, o.student_init_channels, o.student_layers)
        except FrontendError as exc:
            raise PassError(f"distill: {exc}") from None
        student.history = list(ir.history)
        return student

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        o = self.options
        teacher_ir = self._teacher(ctx)
        teacher = teacher_ir.clone().module.float().eval().to(ctx.device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        student_ir = self._student(ir, teacher_ir)
        student = student_ir.module.to(ctx.device)
        task = ir.task

        s_tap = FeatureTap(student, list(o.feature_layers))
        t_tap = FeatureTap(teacher, list(o.feature_layers))
        adapters = nn.ModuleDict()
        if o.feature_layers:
            example = ir.example_inputs(batch=2)[0].to(ctx.device)
            with torch.no_grad():
                student.eval()(example)
                teacher(example)
            for name in o.feature_layers:
                if name not in s_tap.outputs or name not in t_tap.outputs:
                    leaves = [n for n, _ in student.named_modules() if n.startswith(name + ".")]
                    raise PassError(f"distill: feature layer '{name}' is not called in the model's forward; name a "
                                    f"module that runs, e.g. {', '.join(leaves[-3:]) or 'a conv or BN'}")
                s, t = s_tap.outputs[name], t_tap.outputs[name]
                if s.dim() != 4 or t.dim() != 4:
                    raise PassError(f"distill: feature layer '{name}' gives {s.dim()}-D outputs; choose conv stages "
                                    f"(N, C, H, W)")
                adapters[name.replace(".", "__")] = nn.Conv2d(s.shape[1], t.shape[1], 1).to(ctx.device)

        parts: dict[str, float] = {"soft": 0.0, "hard": 0.0, "feature": 0.0}

        def loss_fn(logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = teacher(x)
            soft = soft_loss(logits.float(), t_logits.float(), task, o.temperature, target)
            hard = hard_loss(logits.float(), target, task)
            loss = o.alpha * soft + (1 - o.alpha) * hard
            parts["soft"], parts["hard"] = soft.item(), hard.item()
            if o.feature_layers:
                feat = feature_loss(s_tap.outputs, t_tap.outputs, adapters)
                parts["feature"] = feat.item()
                loss = loss + o.feature_weight * feat
            return loss

        try:
            result = train_stage(ctx, student, ir.task, o, offset=len(ir.history), name="distill", desc="distill",
                                 loss_fn=loss_fn, extra_params=list(adapters.parameters()))
        finally:
            s_tap.remove()
            t_tap.remove()
        stats = {"epochs": result.epochs_run, "final_loss": round(result.final_loss, 5),
                 "losses": [round(x, 5) for x in result.losses], "teacher": o.teacher,
                 "student_params": student_ir.parameter_count(), "teacher_params": teacher_ir.parameter_count(),
                 "last_step": {k: round(v, 5) for k, v in parts.items()}}
        return PassResult(student_ir.replace(module=student), changed=True, stats=stats)
