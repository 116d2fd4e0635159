"""Models nobody here wrote, through the whole compiler: HF ViT, MobileViT, Segformer, Swin, DINOv2 (behind
the user's three-line wrapper), nn.TransformerEncoder (pre-norm), plain CNNs with residual blocks (in a
Sequential, or as named attributes) and a depthwise conv.

Each goes lower → prune-l1 → finetune → fp16 → verified ONNX, and through prune-dario at block, head
and both; every stage saved and reloaded from disk gives outputs equal to the in-memory IR. The models
added for "Reliability III" (Swin, DINOv2, the named-block CNN) also go prune-l1 → int8 → verified ONNX.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from compressor.adapters import find_attention
from compressor.context import PassContext
from compressor.data import ArrayDataset, DataBundle
from compressor.errors import PassError
from compressor.exporters.onnx import export_onnx
from compressor.frontends.torch import TorchModel
from compressor.ir import ModelIR, TaskSpec
from compressor.passes import FP16, Finetune, PruneDario, PruneL1
from compressor.passes.dario import convert, prepare
from compressor.passes.int8 import Int8
from compressor.passes.prune_l1 import PRUNABLE

pytest.importorskip("transformers", reason="the [hf] extra (transformers) is part of [dev]")

SAMPLES = str(Path(__file__).resolve().parents[1] / "samples")

MODELS = {
    "hf-vit": ("user_models:hf_vit", {"layers": 2, "hidden": 32}, (1, 8, 8), "classification", 10),
    "hf-mobilevit": ("user_models:hf_mobilevit", {}, (3, 32, 32), "classification", 10),
    "hf-segformer": ("user_models:hf_segformer", {}, (2, 32, 32), "segmentation", 1),
    "transformer-encoder": ("user_models:transformer_encoder", {}, (1, 8, 8), "classification", 10),
    "residual-cnn": ("user_models:residual_cnn", {}, (1, 8, 8), "classification", 10),
    "hf-swin": ("user_models:hf_swin", {}, (1, 16, 16), "classification", 10),
    "hf-dinov2": ("user_models:hf_dinov2", {}, (1, 8, 8), "classification", 10),
    "named-block-cnn": ("user_models:named_block_cnn", {}, (1, 8, 8), "classification", 10),
}
HAS_HEADS = {"hf-vit", "hf-mobilevit", "hf-segformer", "transformer-encoder", "hf-swin", "hf-dinov2"}
INT8 = {"hf-swin", "hf-dinov2", "named-block-cnn"}  # also prune-l1 → int8 → verified ONNX
WHOLE_HEADS = {"hf-vit", "hf-swin"}  # prune-l1 heads: whole (Swin: its relative-position table loses them too)


# tiny models: one intra-op thread is as fast, and much faster on 2 busy shared cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(shape: tuple[int, ...], kind: str, classes: int, n: int = 16) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=gen)
    y = (torch.rand(n, 1, *shape[1:], generator=gen) > 0.8).float() if kind == "segmentation" else \
        torch.randint(0, classes, (n,), generator=gen)
    ds = ArrayDataset(x, y)
    return DataBundle("random", TaskSpec(kind, classes), shape, (0.0, 1.0), ds, ds, ds)


def _build(name: str):
    factory, kwargs, shape, kind, classes = MODELS[name]
    data = _data(shape, kind, classes)
    ctx = PassContext(data=data, progress=False)
    ir = TorchModel(factory=factory, kwargs=kwargs, search_path=SAMPLES).build(data, ctx)
    return ir, ctx


def _reloads_equal(ir: ModelIR, path: Path) -> None:
    ir.save(path)
    back = ModelIR.load(path, trust_factory=True)
    x = ir.example_inputs(2)
    with torch.no_grad():
        assert torch.equal(back.module(*x), ir.module(*x)), path.name
    assert back.precision == ir.precision and back.parameter_count() == ir.parameter_count()


def _heads_consistent(ir: ModelIR) -> None:
    for path, adapter in find_attention(ir.module):
        m = ir.module.get_submodule(path)
        width = adapter.pruning_num_heads(m) and next(iter(adapter.pruning_num_heads(m))).out_features
        if width:  # q projection width = heads · head size
            assert adapter.num_heads(m) * adapter.head_dim(m) == width, path


@pytest.mark.parametrize("name", list(MODELS))
def test_chain_prune_finetune_fp16_onnx(name, tmp_path):
    ir, ctx = _build(name)
    _reloads_equal(ir, tmp_path / "0")
    pruned = PruneL1(ratio=0.5, exclude_mode="follow", heads="whole" if name in WHOLE_HEADS else "dims")(ir, ctx)
    assert pruned.parameter_count() < ir.parameter_count()
    _heads_consistent(pruned)
    if name == "hf-vit":  # whole heads: 4 → 2 per layer, head size kept
        m = pruned.module.get_submodule("model.vit.layers.0.attention")
        assert (m.num_attention_heads, m.head_dim) == (2, 8)
    if name == "hf-swin":  # whole heads (2 → 1 in stage 0): the bias table keeps one column per remaining head
        m = pruned.module.get_submodule("model.swin.encoder.layers.0.blocks.0.attention")
        assert m.relative_position_bias.relative_position_bias_table.shape[1] == m.num_attention_heads == 1
        # patch merging concatenates 4 neighbours: LayerNorm(4C) → Linear(4C → 2C) follow the pruned C
        merge = pruned.module.get_submodule("model.swin.encoder.layers.0.downsample")
        c = pruned.module.get_submodule("model.swin.embeddings.norm").normalized_shape[0]
        assert c < 16 and merge.norm.normalized_shape[0] == merge.reduction.in_features == 4 * c
    if name == "hf-dinov2":  # the classifier reads [CLS, mean of patches]: both halves lose the pruned channels
        hidden = pruned.module.get_submodule("model.dinov2.layernorm").normalized_shape[0]
        assert hidden < 32 and pruned.module.get_submodule("model.classifier").in_features == 2 * hidden
    _reloads_equal(pruned, tmp_path / "1")
    if name in INT8:
        q = Int8(calib_batches=2, batch_size=8, format="qdq", backend="onnxruntime-cpu")(pruned, ctx)
        _reloads_equal(q, tmp_path / "q")
        res = export_onnx(q, tmp_path / "int8.onnx")
        assert res.info["verified"] and res.info["precision"] == "int8"
    tuned = Finetune(epochs=1, batch_size=8, max_steps=1)(pruned, ctx)
    _reloads_equal(tuned, tmp_path / "2")
    half = FP16()(tuned, ctx)
    _reloads_equal(half, tmp_path / "3")
    res = export_onnx(half, tmp_path / "model.onnx")  # verified against torch at batch 1 and 2
    assert res.primary.is_file() and res.info.get("verified", True)


def _gate_values(p, keep):
    return torch.tensor([math.inf if k else -math.inf for s in p.structures for k in keep[s.name]])


@pytest.fixture
def no_mha_fastpath():
    """nn.TransformerEncoderLayer leaves its fused inference kernel when hooks are attached (as gates are),
    and the fused and unfused paths differ in the last bits: compare both on the unfused path."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(was)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("granularity", ["block", "head", "both"])
def test_dario_gates_and_removal(name, granularity, no_mha_fastpath):
    """Open gates = the original outputs; removing what a closed gate closes = the gated outputs."""
    ir, _ = _build(name)
    if granularity == "head" and name not in HAS_HEADS:
        with pytest.raises(PassError, match="no attention module"):
            PruneDario(granularity="head", iterations=1, warm_start=1)(ir, PassContext(progress=False))
        return
    model = ir.clone().module
    x = ir.example_inputs(3, seed=1)
    with torch.no_grad():
        ref = model(*x)
    p = prepare(model, ir.example_inputs(2), granularity)
    kinds = {s.kind for s in p.structures}
    assert kinds == {"block", "heads"} if granularity == "both" and name in HAS_HEADS else True
    with torch.no_grad():
        assert torch.equal(p.module(*x), ref)
    # close every other block and, in each attention, every head but the first
    keep, i = {}, 0
    for s in p.structures:
        keep[s.name] = [i % 2 == 1] if s.kind == "block" else [h == 0 for h in range(s.size)]
        i += s.kind == "block"
    p.set_alpha(_gate_values(p, keep))
    with torch.no_grad():
        gated = p.module(*x)
    removed = convert(p, keep)
    with torch.no_grad():
        torch.testing.assert_close(p.module(*x), gated, rtol=1e-4, atol=1e-5)
    assert removed["removed_blocks"] or removed["removed_heads"]
    for path, adapter in find_attention(p.module):
        assert adapter.num_heads(p.module.get_submodule(path)) >= 1


@pytest.mark.parametrize("name", ["hf-vit", "transformer-encoder", "hf-segformer", "named-block-cnn"])
def test_dario_pass_stage_reloads(name, tmp_path):
    ir, ctx = _build(name)
    out = PruneDario(granularity="both", iterations=2, warm_start=2, threshold=0.5, remove_blocks=1,
                     finetune_epochs=1, finetune_batch_size=8)(ir, ctx)
    stats = out.history[-1].stats
    assert len(stats["removed_blocks"]) == 1 and stats["params_after"] < stats["params_before"]
    assert [e["kind"] for e in out.recipe.edits] == ["dario"]
    _heads_consistent(out)
    _reloads_equal(out, tmp_path / "dario")


def test_swin_removed_heads_take_their_bias_table_columns_and_reload(tmp_path):
    """Swin adds a learned bias per head ((2W-1)² × heads table) to the attention scores: removing heads
    slices the table with them, and the saved stage replays it."""
    ir, ctx = _build("hf-swin")
    out = PruneDario(granularity="head", iterations=1, warm_start=1, remove_heads=3)(ir, ctx)
    removed = out.history[-1].stats["removed_heads"]
    assert sum(len(h) for h in removed.values()) == 3
    for path in removed:
        m = out.module.get_submodule(path)
        assert m.relative_position_bias.relative_position_bias_table.shape[1] == m.num_attention_heads
    _reloads_equal(out, tmp_path / "dario")


def test_swin_whole_head_pruning_keeps_the_bias_columns_of_the_kept_heads():
    """prune-l1 with only the attention projections prunable: whole heads go, and the result is the adapters'
    remove_heads with the heads torch-pruning kept, weight for weight, relative-position bias table included
    (torch-pruning never sees the table; the pass follows which q rows remain)."""
    ir, ctx = _build("hf-swin")
    reference = ir.clone().module
    found = find_attention(ir.module)
    heads = {f"{p}.{n}" for p, _ in found for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    others = [n for n, m in ir.module.named_modules() if isinstance(m, PRUNABLE) and n not in heads]
    out = PruneL1(ratio=0.5, heads="whole", ignore=others)(ir, ctx)
    for path, adapter in found:
        pruned, original = out.module.get_submodule(path), reference.get_submodule(path)
        d, w = adapter.head_dim(original), adapter.output_projection(pruned).weight
        w0 = adapter.output_projection(original).weight
        kept = [h for j in range(adapter.num_heads(pruned)) for h in range(adapter.num_heads(original))
                if torch.equal(w[:, j * d:(j + 1) * d], w0[:, h * d:(h + 1) * d])]
        assert len(kept) == adapter.num_heads(pruned) < adapter.num_heads(original)
        adapter.remove_heads(reference, path, kept)
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in out.module.state_dict().items())


def test_dario_default_mode_runs_with_fused_attention():
    """HF ViT uses scaled_dot_product_attention, whose fused CPU kernels have no double backward: the
    search runs under the math backend, so the differentiable (default) mode works."""
    ir, _ = _build("hf-vit")
    out = PruneDario(granularity="head", iterations=2, warm_start=1)(ir, PassContext(progress=False))
    assert out.history[-1].stats["search"]["mode"] == "differentiable"


def test_segformer_fp16_onnx_keeps_fp32_io(tmp_path):
    import onnx

    ir, ctx = _build("hf-segformer")
    res = export_onnx(FP16()(ir, ctx), tmp_path / "model.onnx")
    model = onnx.load(str(res.primary))
    for v in list(model.graph.input) + list(model.graph.output):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, v.name
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
