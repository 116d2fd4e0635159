"""finetune: supervised retraining of the current IR on the training split (the shared loop)."""
from __future__ import annotations

from compressor.context import PassContext
from compressor.ir import ModelIR
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass
from compressor.train import TrainOptions, train_stage


@register_pass("finetune")
class Finetune(Pass):
    Options = TrainOptions

    accepts = ("fp32",)

    def needs_data(self) -> bool:
        return True

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        result = train_stage(ctx, ir.module, ir.task, self.options, offset=len(ir.history), name="finetune",
                             desc="finetune")
        stats = {"epochs": result.epochs_run, "final_loss": round(result.final_loss, 5),
                 "losses": [round(x, 5) for x in result.losses]}
        return PassResult(ir, changed=result.epochs_run > 0, stats=stats)
