"""finetune: supervised retraining of the current IR on the training split (the shared loop)."""
from __future__ import annotations

from compressor.context import PassContext
from compressor.errors import PassError
from compressor.ir import ModelIR
from compressor.passes_base import Pass, PassResult
from compressor.registry import register_pass
from compressor.train import TrainOptions, fit


@register_pass("finetune")
class Finetune(Pass):
    Options = TrainOptions

    def requires(self, ir: ModelIR, ctx: PassContext) -> None:
        ctx.require_data("finetune")
        if ir.precision != "fp32":
            raise PassError(f"finetune trains in fp32 but the IR is {ir.precision}; run finetune before fp16")

    def run(self, ir: ModelIR, ctx: PassContext) -> PassResult:
        from compressor.data import make_loader

        data = ctx.require_data("finetune")
        gen_seed = ctx.seed + len(ir.history)
        ctx.seed_everything(gen_seed)
        loader = make_loader(data.train, self.options.batch_size, shuffle=True, seed=gen_seed)
        ckpt_dir = ctx.scratch_dir("checkpoints")
        ckpt = ckpt_dir / f"finetune-{len(ir.history)}.pt" if ckpt_dir else None
        result = fit(ir.module, loader, ir.task, self.options, device=ctx.device, checkpoint=ckpt,
                     progress=ctx.progress, desc="finetune")
        ir.module.to("cpu").eval()
        stats = {"epochs": result.epochs_run, "final_loss": round(result.final_loss, 5),
                 "losses": [round(x, 5) for x in result.losses]}
        return PassResult(ir, changed=result.epochs_run > 0, stats=stats)
