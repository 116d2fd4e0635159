"""Search algorithms as registered classes: the registry, a custom algorithm through the one loop,
and bit-identical results against golden files written before the refactor into classes.

The golden files (tests/frontends/data/darts_search_golden/) hold, per run, the final α (and β)
of a tiny search, its genotype, the last epoch's statistics and a digest of the torch RNG state
after the search (so the RNG is consumed in the same order). Regenerate them, only when the
numerics change on purpose, with

    python tests/frontends/test_darts_algorithms.py --write-golden
"""
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compressor.data import build_data
from compressor.errors import ConfigError
from compressor.frontends.darts.algorithms import SEARCHES, SearchAlgorithm, register_search, search_algorithm
from compressor.frontends.darts.genotypes import Genotype
from compressor.frontends.darts.ops import reference_ops
from compressor.frontends.darts.search import CHECKPOINT, HISTORY, SearchOptions, Stage, run_search
from compressor.frontends.darts.search_base import BUILTIN_ALGORITHMS
from compressor.options import parse_options

GOLDEN = Path(__file__).parent / "data" / "darts_search_golden"
TINY = dict(epochs=1, batch_size=8, init_channels=4, layers=3, max_steps=2)  # as in test_darts_search.py
GOLDEN_RUNS = {
    "darts": dict(algorithm="darts"),
    "darts-order2": dict(algorithm="darts", order=2),
    "pc-darts": dict(algorithm="pc-darts"),
    "p-darts": dict(algorithm="p-darts", pdarts={"stages": (3, 3, 3)}),
    # the tiny α gradients stay below the default grad_clip (5): a small one makes P-DARTS's α clip act
    "p-darts-clip": dict(algorithm="p-darts", pdarts={"stages": (3, 3, 3)}, grad_clip=0.01),
    "lambda-darts": dict(algorithm="lambda-darts"),
    # 3 cells hold one normal cell, where Λ (a mean over pairs of normal cells) is 0: 5 cells hold 3
    "lambda-darts-5cells": dict(algorithm="lambda-darts", layers=5),
    "em-darts": dict(algorithm="em-darts"),
}
STATS = ("loss", "val_loss", "alignment", "lr", "lambda", "mutation_prob")


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", {})


def tiny_search(run: str, data, out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The final α/β tensors and {genotype, stats, rng_sha256} of the tiny search `run`."""
    res = run_search(SearchOptions.of(**{**TINY, **GOLDEN_RUNS[run]}), data, out, progress=False)
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    arch = {k: v.contiguous() for k, v in ckpt["stage_state"]["model"].items() if k.startswith(("alphas_", "betas_"))}
    last = json.loads((out / HISTORY).read_text())[-1]
    doc = {"genotype": res.genotype.to_dict(), "stats": {k: last[k] for k in STATS if k in last},
           "rng_sha256": hashlib.sha256(ckpt["rng"].numpy().tobytes()).hexdigest()}
    return arch, doc


def write_golden(out: Path = GOLDEN) -> None:
    import tempfile

    torch.set_num_threads(1)  # as the test runs
    out.mkdir(parents=True, exist_ok=True)
    data = build_data("digits", {})
    for run in GOLDEN_RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            arch, doc = tiny_search(run, data, Path(tmp))
        save_file(arch, str(out / f"{run}.safetensors"))
        (out / f"{run}.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {run}: {sorted(arch)}")


# ---- the registry -------------------------------------------------------------------------------
def test_registry_lists_the_algorithms_and_the_builtin_sweep_space_matches():
    assert SEARCHES.names() == sorted(["darts", "pc-darts", "p-darts", "lambda-darts", "em-darts", "hpe-darts", "d-darts",
                                       "evolution"])
    assert sorted(BUILTIN_ALGORITHMS) == SEARCHES.names()  # the declared sweep space of search.algorithm
    for name in SEARCHES.names():
        cls = search_algorithm(name)
        assert issubclass(cls, SearchAlgorithm) and cls.name == name


def test_unknown_algorithm_is_a_one_line_config_error_with_did_you_mean():
    with pytest.raises(ConfigError) as exc:
        search_algorithm("pcdarts")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "unknown search algorithm 'pcdarts'; did you mean 'pc-darts'?" in msg and "lambda-darts" in msg
    with pytest.raises(ConfigError, match="did you mean 'em-darts'"):
        SearchOptions.of(algorithm="emdarts")


def test_per_algorithm_defaults_come_from_the_class():
    for name in SEARCHES.names():
        cls = search_algorithm(name)
        o = SearchOptions.of(algorithm=name, epochs=10, **({"pdarts": {"stages": [5, 8, 11]}} if name == "p-darts" else {}))
        assert o.arch_lr == cls.default_arch_lr and o.warmup == round(cls.default_warmup * 10)
        expect = {"p-darts": (5, 8, 11), "hpe-darts": (o.layers,) * 4}  # hpe: the warm-up + 3 hybrid stages
        assert o.stages == expect.get(name, (o.layers,))
    assert parse_options(SearchOptions, {"algorithm": "p-darts", "a_lr": 1e-3}, "search").arch_lr == 1e-3


# ---- a custom algorithm through the same loop ---------------------------------------------------
@pytest.fixture
def frozen_alpha():
    """An algorithm whose α step does nothing (and that records one statistic of its own)."""

    @register_search("test-frozen-alpha")
    class FrozenAlpha(SearchAlgorithm):
        default_arch_lr = 0.5

        def arch_step(self, st, x, y, x_val, y_val, lr):
            return 0.0

        def epoch_start(self, model, stage, epoch):
            return {"custom": 1.0 + epoch}

    yield FrozenAlpha
    del SEARCHES["test-frozen-alpha"]


def test_custom_algorithm_runs_through_the_loop(frozen_alpha, digits, tmp_path):
    opts = SearchOptions.of(algorithm="test-frozen-alpha", **TINY)
    assert opts.arch_lr == 0.5 and opts.warmup == 0
    initial = Stage(frozen_alpha(opts, None), digits, 0, None, None, "cpu").model
    res = run_search(opts, digits, tmp_path / "frozen", progress=False)
    state = torch.load(tmp_path / "frozen" / CHECKPOINT, weights_only=True)["stage_state"]
    assert torch.equal(state["model"]["alphas_normal"], initial.alphas_normal.detach())
    assert torch.equal(state["model"]["alphas_reduce"], initial.alphas_reduce.detach())
    assert not state["a_opt"]["state"]  # Adam never stepped
    weights = {n: p.detach() for n, p in initial.named_weight_parameters()}
    assert any(not torch.equal(state["model"][n], w) for n, w in weights.items())  # the weights did
    history = json.loads(res.alpha_history_path.read_text())
    assert len(history) == 1 and history[0]["custom"] == 1.0 and history[0]["val_loss"] == 0.0
    assert res.genotype == Genotype.load(tmp_path / "frozen" / "genotype.json")
    # the same settings with the DARTS α step do move α: the assertions above can fail
    run_search(SearchOptions.of(**{**TINY, "algorithm": "darts", "a_lr": 0.5}), digits, tmp_path / "darts",
               progress=False)
    moved = torch.load(tmp_path / "darts" / CHECKPOINT, weights_only=True)["stage_state"]["model"]
    assert not torch.equal(moved["alphas_normal"], initial.alphas_normal.detach())


# ---- golden equality ----------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """The golden files were written with one torch thread and NCHW ops (before the supernet ran its
    convolutions channels-last on CPUs); with more threads or the other layout, CPU kernels may sum
    in another order. That the layouts agree is tested in test_darts_search.py."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with reference_ops():
        yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("run", list(GOLDEN_RUNS))
def test_tiny_search_matches_golden(run, digits, tmp_path, one_thread):
    """The refactor into registered algorithms kept every result: on the machine that wrote the golden files
    (with the code before the refactor) this held bit for bit. Another CPU's kernels may round differently,
    so α and the statistics are compared to 1e-5 relative; the genotype and the RNG consumption exactly."""
    arch, doc = tiny_search(run, digits, tmp_path)
    want_arch = load_file(str(GOLDEN / f"{run}.safetensors"))
    want = json.loads((GOLDEN / f"{run}.json").read_text())
    assert sorted(arch) == sorted(want_arch)
    for k in want_arch:
        assert torch.allclose(arch[k], want_arch[k], rtol=1e-5, atol=1e-8), f"{run}: {k} differs from the golden file"
    assert doc["genotype"] == want["genotype"]
    assert doc["stats"] == pytest.approx(want["stats"], rel=1e-5, abs=1e-8)
    assert doc["rng_sha256"] == want["rng_sha256"], f"{run}: the torch RNG was consumed differently"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-golden"]:
        sys.exit(__doc__)
    write_golden()
