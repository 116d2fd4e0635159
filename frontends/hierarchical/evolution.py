"""The hierarchical frontend's search: NSGA-II over the weight-sharing supernet's space (seed 002).

    # search.yaml; `compress search search.yaml` writes runs/<name>/genotype.json (+ genotype_budget{k}.json)
    frontend: hierarchical
    data: {name: digits}
    search: {epochs: 5, population: 16, generations: 10, objectives: [metric, macs, memory]}

What runs (`run_search`):
1. The supernet (`supernet.py`: elastic kernel/expansion/width/depth over mbconv stages) is trained once by
   uniform single-path sampling for `epochs` (at most `max_steps` steps) on the train split.
2. Each candidate (a `HierGenotype` of the space) is scored on inherited weights: its standalone network is
   extracted from the supernet (`Supernet.extract`), its BatchNorm statistics are recalibrated on `bn_batches`
   fixed training batches (`recalibrate_bn`), and the metric is `evaluate_module`'s accuracy on the val split.
3. Objectives (`objectives`, any of): metric (max: accuracy, or IoU on segmentation data); macs (min):
   `genotype_macs` at batch 1 on the data's input shape (the stem and blocks; the classifier differs between
   candidates only by its input width), plus the decoder's for segmentation (`decoder_macs`: its convs run at the
   skips' resolutions on the candidate's widths, so it is a large share of a small network's cost); memory (min):
   parameter bytes + peak activation bytes at batch 1 of the standalone network (`peak_activation_bytes`, as the
   DARTS evolution counts it); latency (min, ms): predicted by the per-block latency table (`latency.latency_parts`
   on `LatencyTable.load_or_measure`, backend `latency_backend`, table stored under `latency_store`).
   Every scored candidate gets macs and memory; latency only when it is an objective or has budgets.
4. Evolution: NSGA-II with (μ+λ) elitism, reusing the DARTS evolution's selection (`select_survivors`:
   `non_dominated_sort` + `crowding_distance`) and binary `tournament`. The genome operators are this space's:
   uniform crossover over whole stages (a child takes each stage — depth, width and blocks — from either
   parent), then mutation: with probability `mutation_prob` per gene, a stage's depth (blocks added repeat the
   last one, blocks dropped are its last), a stage's width multiplier, a block's kernel or expansion is re-drawn.
   Children that duplicate a scored genotype are bred again (at most 20·λ tries). The initial population is the
   space's smallest and largest networks plus uniform samples (so every default budget has a candidate).
5. Budgets (seed 002: three MACs budgets b, 2b, 4b): `budgets` given, or by default b = max(S, L/4) where S and L
   are the MACs of the space's smallest and largest networks (so 4b = L whenever L ≥ 4S). `latency_budgets`
   (ms, optional) pair with them one to one. Each budget's winner is the best-metric member of the Pareto front
   of every scored candidate (in the objectives) within the budget(s) (ties: fewer MACs, then less memory);
   it is written as `genotype_budget{k}.json` (k = 1.. in increasing budget order), and the largest budget's
   winner also as `genotype.json`; `model: {frontend: hierarchical, genotype: <that file>}` builds it.
   `evolution.json` holds the options, the final population with its objectives, the per-generation
   hypervolume (`generation_hypervolumes`) and the winners; `supernet.safetensors` the trained supernet's weights.
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from safetensors.torch import save_file

from compressor.errors import ConfigError
from compressor.evaluate.pareto import pareto_front
from compressor.frontends.darts.evolution import (DIRECTIONS, HV_REFERENCE, Objective, budget_winner, fitness,
                                                  generation_hypervolumes, parameter_bytes, peak_activation_bytes,
                                                  select_survivors, tournament)
from compressor.frontends.hierarchical.genotypes import HierGenotype
from compressor.frontends.hierarchical.networks import genotype_macs
from compressor.frontends.hierarchical.supernet import Supernet, SupernetSpace, recalibrate_bn, train_supernet
from compressor.options import option
from compressor.store import atomic_path, atomic_write

if TYPE_CHECKING:
    from compressor.data import DataBundle
    from compressor.evaluate.latency_table import Measure

EVOLUTION = "evolution.json"
BUDGET_FILE = "genotype_budget{k}.json"
BN_SEED_OFFSET = 104729


@dataclass(frozen=True)
class HierarchicalSearchOptions:
    """The `search:` block of a hierarchical search file (see the module docstring)."""

    # the space
    stage_channels: tuple[int, ...] = option((16, 24, 40, 80), "base channels of each stage", min=1, max=1024)
    stage_strides: tuple[int, ...] = option((1, 2, 2, 2), "stride of each stage's first block (1 or 2)", min=1, max=2)
    stem_channels: int = option(16, "stem channels (fixed)", min=1, max=1024)
    stem_stride: int = option(1, "stem stride (1 or 2)", min=1, max=2)
    min_depth: int = option(1, "fewest blocks per stage", min=1, max=16)
    max_depth: int = option(3, "most blocks per stage", min=1, max=16)
    kernels: tuple[int, ...] = option((3, 5, 7), "depthwise kernels (subset of 3, 5, 7)", min=3, max=7)
    expansions: tuple[int, ...] = option((3, 6), "mbconv expansions (subset of 3, 6)", min=3, max=6)
    width_mults: tuple[float, ...] = option((0.75, 1.0), "stage width multipliers", min=0, max=16, min_exclusive=True)
    # supernet training
    epochs: int = option(5, "supernet training epochs (SPOS: one random sub-network per step)", min=0, max=10000)
    max_steps: int | None = option(None, "stop supernet training after this many steps (null: all epochs)", min=1)
    batch_size: int = option(64, "batch size of training, BN recalibration and scoring", min=1, max=65536)
    lr: float = option(0.05, "initial SGD learning rate (cosine to 0)", min=0, min_exclusive=True)
    seed: int = option(0, "seed of the supernet, its path sampling and the evolution", min=0)
    # evolution
    population: int = option(16, "μ, the genotypes kept from one generation to the next", min=2, max=4096)
    generations: int = option(10, "generations after the initial random population", min=0, max=10000)
    children: int | None = option(None, "λ, the children bred per generation (null: μ)", min=1, max=4096)
    mutation_prob: float = option(0.2, "probability that one gene (a stage's depth or width, a block's kernel or "
                                       "expansion) of a child is re-drawn", min=0, max=1)
    bn_batches: int = option(4, "training batches that recalibrate BatchNorm before a candidate is scored", min=1)
    objectives: tuple[Objective, ...] = option(("metric", "macs", "memory"), "objectives: metric (accuracy on val, "
                                               "max), macs, memory (parameter + peak activation bytes), latency "
                                               "(predicted by the latency table, ms) (min)")
    budgets: tuple[float, ...] = option((), "MACs budgets, one winner each (empty: b, 2b, 4b with b = max(smallest, "
                                            "largest / 4) network's MACs)", min=0, min_exclusive=True)
    latency_budgets: tuple[float, ...] = option((), "latency budgets in ms, one per MACs budget (empty: none)",
                                                min=0, min_exclusive=True)
    latency_backend: str = option("onnxruntime-cpu", "backend of the latency table")
    latency_store: str | None = option(None, "store folder of the latency table (null: <run folder>/.store)")
    latency_threads: int | None = option(1, "threads of the latency measurements (null: the runtime's default)",
                                         min=1)

    def __post_init__(self) -> None:
        if len(self.stage_channels) != len(self.stage_strides):
            raise ValueError(f"stage_channels has {len(self.stage_channels)} entries but stage_strides "
                             f"{len(self.stage_strides)}; give one stride per stage")
        if len(set(self.objectives)) != len(self.objectives) or "metric" not in self.objectives:
            raise ValueError(f"objectives {list(self.objectives)}: list each once and include metric")
        if self.latency_budgets and self.budgets and len(self.latency_budgets) != len(self.budgets):
            raise ValueError(f"{len(self.latency_budgets)} latency_budgets for {len(self.budgets)} budgets; give "
                             f"one per MACs budget")
        if self.latency_budgets and not self.budgets and len(self.latency_budgets) != 3:
            raise ValueError("latency_budgets pair with the 3 default MACs budgets: give 3, or give budgets too")
        self.space()  # its own checks

    def space(self) -> SupernetSpace:
        return SupernetSpace(tuple(zip(self.stage_channels, self.stage_strides)), self.stem_channels,
                             self.stem_stride, self.min_depth, self.max_depth, tuple(self.kernels),
                             tuple(self.expansions), tuple(float(w) for w in self.width_mults))

    @property
    def uses_latency(self) -> bool:
        return "latency" in self.objectives or bool(self.latency_budgets)


# ---- genome operators ---------------------------------------------------------------------------------

def crossover(a: HierGenotype, b: HierGenotype, rng: random.Random) -> HierGenotype:
    """Uniform crossover over whole stages: each stage of the child is parent A's or parent B's."""
    stages = tuple(sa if rng.random() < 0.5 else sb for sa, sb in zip(a.stages, b.stages))
    return HierGenotype(a.stem_channels, stages, a.stem_kernel, a.stem_stride, name="supernet")


def mutate(g: HierGenotype, space: SupernetSpace, prob: float, rng: random.Random) -> HierGenotype:
    """Re-draw each gene with probability `prob`: a stage's depth and width, each block's kernel and expansion."""
    depths, widths, blocks = [], [], []
    for stage in g.stages:
        genes = [(b.kernel, b.expansion) for b in stage.blocks]
        depth = rng.randint(space.min_depth, space.max_depth) if rng.random() < prob else len(genes)
        genes = (genes + [genes[-1]] * depth)[:depth]
        genes = [(rng.choice(space.kernels) if rng.random() < prob else k,
                  rng.choice(space.expansions) if rng.random() < prob else e) for k, e in genes]
        depths.append(depth)
        widths.append(rng.choice(space.width_mults) if rng.random() < prob else stage.width_mult)
        blocks.append(genes)
    return space.genotype(depths, widths, blocks)


# ---- scoring --------------------------------------------------------------------------------------------

class SubnetEvaluator:
    """Scores genotypes on a trained supernet (metric on inherited, recalibrated weights) and counts their costs;
    cached per genotype. Calling it returns {"metric", "macs", "params", "memory"[, "latency"]}."""

    def __init__(self, supernet: Supernet, data: "DataBundle", opts: HierarchicalSearchOptions, out_dir: Path,
                 device: str = "cpu", measure: "Measure | None" = None) -> None:
        from compressor.data import make_loader

        self.supernet, self.data, self.device, self.opts, self.measure = supernet, data, device, opts, measure
        self.input_shape = tuple(int(d) for d in data.input_shape)
        bn_loader = make_loader(data.train, opts.batch_size, shuffle=True, seed=opts.seed + BN_SEED_OFFSET)
        self.bn_batches = [x.to(device) for x, _ in islice(bn_loader, opts.bn_batches)]
        self.val_batches = list(make_loader(data.val, opts.batch_size))
        self.store = Path(opts.latency_store) if opts.latency_store else Path(out_dir) / ".store"
        self.segmentation = data.task.kind == "segmentation"
        self.cache: dict[HierGenotype, dict[str, float]] = {}

    def costs(self, g: HierGenotype) -> dict[str, float]:
        net = self.supernet.extract(g, self.input_shape[1:]).eval()
        x = torch.zeros(1, *self.input_shape)
        values = {"macs": float(network_macs(g, self.input_shape, self.data.task.num_classes, self.segmentation)),
                  "params": float(parameter_bytes(net)),
                  "memory": float(parameter_bytes(net) + peak_activation_bytes(net, x))}
        if self.opts.uses_latency:
            values["latency"] = self.latency(g)
        return values

    def latency(self, g: HierGenotype) -> float:
        from compressor.evaluate.latency_table import LatencyTable
        from compressor.frontends.hierarchical.latency import latency_parts, make_part, part_inputs

        parts = latency_parts(g, self.input_shape, self.data.task.num_classes, self.segmentation)
        table = LatencyTable.load_or_measure(self.store, self.opts.latency_backend, self.input_shape, 1, parts,
                                             make_part, part_inputs=part_inputs, threads=self.opts.latency_threads,
                                             measure=self.measure)
        return float(table.predict(parts))

    def metric(self, g: HierGenotype) -> float:
        from compressor.evaluate.metrics import evaluate_module, main_metric

        net = self.supernet.extract(g, self.input_shape[1:]).to(self.device)
        recalibrate_bn(net, self.bn_batches)
        values = evaluate_module(net, self.val_batches, self.data.task, device=self.device)
        return float(values[main_metric(self.data.task)])

    def __call__(self, g: HierGenotype) -> dict[str, float]:
        if g not in self.cache:
            self.cache[g] = {"metric": self.metric(g), **self.costs(g)}
        return self.cache[g]


# ---- evolution ------------------------------------------------------------------------------------------

def evolve(evaluate: SubnetEvaluator, space: SupernetSpace, opts: HierarchicalSearchOptions,
           progress: bool = False) -> dict[str, Any]:
    """(μ+λ) NSGA-II; returns the final population (best first), every scored genotype in order, and each
    generation's population."""
    rng = random.Random(opts.seed + 2002)
    gen = torch.Generator().manual_seed(opts.seed + 2002)
    objectives, mu = list(opts.objectives), opts.population
    lam = opts.children or mu
    seen: dict[HierGenotype, None] = {}

    def fresh(make: Any) -> list[HierGenotype]:
        out: list[HierGenotype] = []
        for _ in range(20 * lam):
            g = make()
            if g not in seen:
                seen[g] = None
                out.append(g)
                evaluate(g)
            if len(out) == lam:
                break
        return out

    extremes = iter([space.smallest(), space.largest()])  # the initial population spans the space's MACs range
    population = fresh(lambda: next(extremes, None) or space.sample(rng))[:mu]
    generations = [list(population)]
    for k in range(opts.generations):
        ranks, crowd = fitness([evaluate(g) for g in population], objectives)

        def child() -> HierGenotype:
            a = population[tournament(ranks, crowd, gen)]
            b = population[tournament(ranks, crowd, gen)]
            return mutate(crossover(a, b, rng), space, opts.mutation_prob, rng)

        merged = population + fresh(child)
        population = [merged[i] for i in select_survivors([evaluate(g) for g in merged], mu, objectives)]
        generations.append(list(population))
        if progress:
            best = max(evaluate(g)["metric"] for g in population)
            print(f"generation {k + 1}/{opts.generations}: {len(seen)} scored, best metric {best:.4f}",
                  file=sys.stderr, flush=True)
    return {"population": population, "scored": list(seen), "generations": generations}


def network_macs(g: HierGenotype, input_shape: Sequence[int], num_classes: int, segmentation: bool = False) -> int:
    """The `macs` objective: the stem and blocks (`genotype_macs`), plus the decoder for segmentation."""
    from compressor.frontends.hierarchical.blocks import block_configs
    from compressor.frontends.hierarchical.latency import decoder_macs, head_config

    macs = genotype_macs(g, input_shape)
    if segmentation:
        macs += decoder_macs(head_config(g, block_configs(g, input_shape), num_classes, segmentation=True))
    return macs


def default_budgets(space: SupernetSpace, input_shape: Sequence[int], num_classes: int = 1,
                    segmentation: bool = False) -> list[float]:
    """Seed 002's b, 2b, 4b with b = max(S, L / 4): S, L the MACs (`network_macs`) of the space's smallest and
    largest networks."""
    small, large = (float(network_macs(g, input_shape, num_classes, segmentation))
                    for g in (space.smallest(), space.largest()))
    b = max(small, large / 4)
    return [b, 2 * b, 4 * b]


def budget_winners(scored: Sequence[dict[str, float]], objectives: Sequence[str], budgets: Sequence[float],
                   latency_budgets: Sequence[float] = ()) -> list[int | None]:
    """Per budget, the index of the best-metric front member within it (`budget_winner`'s ties); None if none."""
    points = [[v[o] for o in objectives] for v in scored]
    front = pareto_front(points, [DIRECTIONS[o] for o in objectives])
    winners: list[int | None] = []
    for k, b in enumerate(budgets):
        members = [i for i in front if not latency_budgets or scored[i]["latency"] <= latency_budgets[k]]
        w = budget_winner([scored[i] for i in members], b)
        winners.append(None if w is None else members[w])
    return winners


@dataclass
class HierarchicalSearchResult:
    genotype: HierGenotype | None
    out_dir: Path
    genotype_path: Path | None
    budget_paths: list[Path | None]
    budgets: list[float]
    seconds: float
    steps: int
    scored: int
    winners: list[dict[str, Any]] = field(default_factory=list)
    supernet: Supernet | None = field(default=None, repr=False)

    def inherit(self, module: torch.nn.Module, batches: Sequence[torch.Tensor]) -> None:
        """Load the trained supernet's slices into `module` (a `HierarchicalNet` of one of its candidates, such as
        a winner) and re-estimate its BatchNorm statistics on `batches` (`recalibrate_bn`)."""
        if self.supernet is None:
            raise ValueError("this search result holds no supernet")
        genotype = getattr(module, "genotype", None)
        if genotype is None:
            raise ValueError(f"inherit takes a HierarchicalNet, got {type(module).__name__}")
        if getattr(module, "width_mult", 1.0) != 1.0:
            raise ValueError("the supernet holds the winner at its searched widths; build it without a global "
                             "width_mult to inherit its weights")
        hw = tuple(int(v) for v in batches[0].shape[-2:]) if batches else None
        module.load_state_dict(self.supernet.extract(genotype, hw).state_dict())
        recalibrate_bn(module, batches)

    def summary(self) -> list[str]:
        lines = [f"genotype: {self.genotype_path or 'none (no candidate within the largest budget)'}",
                 f"supernet steps: {self.steps}; {self.scored} candidates scored; {self.seconds:.1f} s"]
        for k, (b, w) in enumerate(zip(self.budgets, self.winners), 1):
            lines.append(f"budget {k} ({b / 1e6:.2f} MMACs): " + (
                f"metric {w['metric']:.4f}, {w['macs'] / 1e6:.2f} MMACs → {self.budget_paths[k - 1]}" if w
                else "no candidate within it"))
        return lines


def finished_search(opts: HierarchicalSearchOptions, data: "DataBundle", out_dir: Path) -> HierarchicalSearchResult | None:
    """The result of the search `out_dir` already holds with exactly these options (its evolution.json, winners and
    supernet weights), or None: a search that did not finish, or ran with other options, is not reused."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    try:
        doc = json.loads((out_dir / EVOLUTION).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("options") != json.loads(json.dumps(asdict(opts), default=str)):
        return None
    shape = tuple(int(d) for d in data.input_shape)
    net = Supernet(opts.space(), shape[0], data.task.num_classes, data.task.kind == "segmentation")
    try:
        net.load_state_dict(load_file(str(out_dir / "supernet.safetensors")))
        paths = [out_dir / BUDGET_FILE.format(k=k) if w else None for k, w in enumerate(doc["winners"], 1)]
        final = HierGenotype.load(out_dir / "genotype.json") if paths and paths[-1] else None
    except (OSError, RuntimeError, ValueError, ConfigError):
        return None
    net.eval()
    return HierarchicalSearchResult(final, out_dir, out_dir / "genotype.json" if final else None, paths,
                                    list(doc["budgets"]), float(doc.get("seconds", 0.0)), int(doc["steps"]),
                                    len(doc.get("population", [])), list(doc["winners"]), supernet=net)


def run_search(opts: HierarchicalSearchOptions, data: "DataBundle", out_dir: Path, device: str = "cpu",
               progress: bool = False, measure: "Measure | None" = None) -> HierarchicalSearchResult:
    """Train the supernet, evolve, write the winners (see the module docstring); a folder that holds a finished
    search with the same options is reused (`finished_search`). `measure` replaces the latency table's measurement
    of a part (`LatencyTable.load_or_measure`; tests)."""
    done = finished_search(opts, data, out_dir)
    if done is not None:
        return done
    if data.task.kind not in ("classification", "segmentation"):
        raise ConfigError(f"the hierarchical search runs on classification or segmentation data, not "
                          f"{data.task.kind}")
    segmentation = data.task.kind == "segmentation"
    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = opts.space()
    shape = tuple(int(d) for d in data.input_shape)
    torch.manual_seed(opts.seed)
    net = Supernet(space, shape[0], data.task.num_classes, segmentation)
    trained = train_supernet(net, data, opts.epochs, opts.batch_size, opts.lr, opts.seed, device, opts.max_steps,
                             progress=progress)
    with atomic_path(out_dir / "supernet.safetensors") as tmp:  # weights only: nothing here is ever unpickled
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    net.eval()
    evaluate = SubnetEvaluator(net, data, opts, out_dir, device, measure)
    result = evolve(evaluate, space, opts, progress)
    scored = [evaluate(g) for g in result["scored"]]
    budgets = sorted(opts.budgets) if opts.budgets else default_budgets(space, shape, data.task.num_classes,
                                                                          segmentation)
    latency_budgets = list(opts.latency_budgets)
    winners = budget_winners(scored, opts.objectives, budgets, latency_budgets)
    paths: list[Path | None] = []
    docs: list[dict[str, Any]] = []
    for k, w in enumerate(winners, 1):
        if w is None:
            paths.append(None)
            docs.append({})
            continue
        g = result["scored"][w]
        path = out_dir / BUDGET_FILE.format(k=k)
        g.save(path)
        paths.append(path)
        docs.append({"genotype": g.to_dict(), **scored[w]})
    final = result["scored"][winners[-1]] if winners[-1] is not None else None
    genotype_path = None
    if final is not None:
        genotype_path = out_dir / "genotype.json"
        final.save(genotype_path)
    hvs, reference = generation_hypervolumes(result["generations"], scored, evaluate, list(opts.objectives))
    doc = {"options": asdict(opts), "steps": trained["steps"], "train_loss": trained["loss"],
           "seconds": round(time.monotonic() - start, 1),
           "population": [{"genotype": g.to_dict(), **evaluate(g)} for g in result["population"]],
           "hypervolume": hvs, "hypervolume_reference": reference, "hv_reference_point": HV_REFERENCE,
           "budgets": budgets, "latency_budgets": latency_budgets, "winners": docs}
    atomic_write(out_dir / EVOLUTION, json.dumps(doc, indent=1, default=str) + "\n")
    return HierarchicalSearchResult(final, out_dir, genotype_path, paths, budgets, time.monotonic() - start,
                                    trained["steps"], len(scored), docs, supernet=net)


__all__ = ["HierarchicalSearchOptions", "HierarchicalSearchResult", "SubnetEvaluator", "budget_winners",
           "crossover", "default_budgets", "evolve", "mutate", "run_search"]
