"""Multi-objective evolutionary NAS with weight sharing: the `evolution` search algorithm (seed 002).

What runs (`algorithm: evolution`):

1. Supernet training, single path. The loop's epochs train the weights of a plain DARTS supernet
   (full channels, every op on every edge) on the whole train split; α is never stepped. Each weight
   step draws ONE uniformly random discrete genotype (per node two distinct inputs, each with an op
   drawn uniformly from the 7 non-`none` ops; normal and reduce cells independently) from torch's
   global generator, which the loop seeds and checkpoints, so runs are reproducible and resumable,
   and trains only that path (`SearchNetwork.forward(x, genotype=...)`: each node is the sum of its
   two chosen edges, each edge running only its chosen op).
2. Candidates inherit the supernet's weights (no copy: the path runs on the supernet itself). Before
   a candidate is scored, every BatchNorm's statistics are re-estimated on `evolution.bn_batches` fixed
   training batches (running stats reset, momentum=None: a cumulative average, train mode, no
   gradient); the metric is then the project's `evaluate_module` on the val split (accuracy for
   classification, IoU for segmentation). The supernet's own BN buffers, momenta and modes are
   restored after each candidate, so candidates never influence each other; the weights never change.
3. Objectives (seed 002 eq. 1): metric (max); MACs (min) of the discrete network the genotype lowers
   to (`frontend.build_network`, at `evolution.net_channels` × `evolution.net_layers`, default the search's
   init_channels × layers), counted by `count_macs` at batch 1 on the data's input shape; memory
   (min) = parameter bytes + `peak_activation_bytes` of that network at batch 1; optionally latency
   (ms, median of 20 timed batch-1 calls on the search device; off by default because a measured
   time makes the search irreproducible). Costs are cached per genotype; the metric too (the
   weights are fixed during the evolution and the BN batches are the same for every candidate).
   `evolution.objectives` picks the objectives that rank; `evolution.scalarize` ranks instead by the weighted
   sum of eq. 2 (`evaluate.pareto.weighted_sum`).
4. Genome operators: uniform crossover over whole (op, input) pairs (per position the child takes
   parent A's pair or parent B's, with probability 1/2), then per-pair mutation with probability
   `evolution.mutation_prob` (its op, or, as often, its input, changes to another valid value), then
   repair (an input outside 0..node+1 or an op outside the space is re-drawn; a node whose two pairs
   share an input has one of them, drawn at random, take another input), then the canonical form
   (each node's two pairs sorted by (input, op): the sum of two edges does not depend on their
   order), which is what deduplication compares.
5. Selection, NSGA-II (Deb et al. 2002): (μ+λ) elitism. Parents and children are merged (children
   are bred until λ of them are new to the population, at most 20·λ tries), sorted by
   `non_dominated_sort`, the last front that fits cut by `crowding_distance` (larger first); parents
   are picked by binary tournament on (rank, crowding). With `evolution.scalarize` the rank is the position
   in the weighted-sum order (ties share it) and crowding is 0.
6. Budgets (seed 002 Table 1: three budgets). For each MACs budget, the best-metric genotype among
   every candidate scored during the run whose MACs are within it (ties: fewer MACs, then less
   memory, then the one scored first) is written as `genotype_budget{k}.json` (k = 1.. in
   increasing budget order); `genotype.json` (what `run_search` returns) is the largest budget's
   winner. Default budgets: 1/3, 2/3 and 3/3 of the way from the smallest to the largest MACs of
   the final population (our choice; the last is the largest, so its winner is the best metric
   seen); or `evolution.budgets: [macs, ...]`. `evolution.json` holds the final population (genotype,
   objectives, rank, crowding), the per-generation hypervolume of the population and the winners.

Hypervolume (`evaluate.pareto.hypervolume`): of each generation's population in the ranking
objectives, after `normalize_for_hv` with bounds = the min and max of each objective over every
candidate scored in the run (so all generations share one scale), best = 0, reference point 1.1 in
every objective: the worst scored value still adds volume. It is computed once the evolution ends.

Faithful to seed 002: eq. 1's three objectives (accuracy, FLOPs as MACs = FLOPs/2, memory),
eq. 2's weighted sum as an option, the five components of its "Search Algorithm" (diverse initial
population, multi-objective fitness, non-dominated sorting, crossover and mutation, elitism), weight
sharing with architectures evaluated by sampling paths of a supernet trained once, and three budgets.
What the seed leaves open and we chose: the space is the DARTS cell space this frontend lowers (not
the seed's hierarchical space of depth/width, bottleneck and SE blocks; depth and width are fixed by
init_channels and layers); the supernet is trained by uniform single-path sampling (SPOS, Guo et al.
2020); BN re-estimation per candidate (as in SPOS); NSGA-II's selection and crowding; the operators
above; "memory" as parameter plus peak activation bytes at batch 1; the initial population is μ
distinct uniformly random genotypes; the budgets' default placement; the units of eq. 2 (metric a
fraction in [0, 1], MACs in millions, memory in MB = 1e6 bytes, latency in ms) with λ given as
they are, without normalization. The evolution draws from its own generator seeded with `seed`;
it is not checkpointed: it runs after the last epoch, and a re-run of the same folder redoes only
it (the evolution block's options may change then: the loop lists them as resumable).
"""
from __future__ import annotations

import json
import logging
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from compressor.errors import ConfigError
from compressor.evaluate.pareto import crowding_distance, hypervolume, non_dominated_sort, normalize_for_hv, weighted_sum
from compressor.frontends.darts.genotypes import Genotype, Pair
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.frontends.darts.search_base import Objective, SearchAlgorithm, register_search, step_weights
from compressor.frontends.darts.search_space import CONCAT, STEPS, SearchNetwork
from compressor.options import option
from compressor.store import atomic_write

if TYPE_CHECKING:
    from compressor.data.base import DataBundle
    from compressor.frontends.darts.search_base import SearchOptions, Stage

log = logging.getLogger(__name__)

OPS: tuple[str, ...] = tuple(p for p in PRIMITIVES if p != "none")  # what a discrete genotype may use
OBJECTIVES: tuple[str, ...] = ("metric", "macs", "memory", "latency")
DIRECTIONS: dict[str, str] = {"metric": "maximize", "macs": "minimize", "memory": "minimize", "latency": "minimize"}
# eq. 2 sums the objectives in these units (the λ of `evolution.scalarize` are given for them)
SCALE: dict[str, float] = {"metric": 1.0, "macs": 1e-6, "memory": 1e-6, "latency": 1.0}
UNITS: dict[str, str] = {"metric": "fraction (accuracy or IoU on val)", "macs": "multiply-accumulates at batch 1",
                         "memory": "bytes (parameters + peak activations at batch 1)",
                         "latency": "ms (median at batch 1)"}
EVOLUTION = "evolution.json"
BUDGET_FILE = "genotype_budget{k}.json"
HV_REFERENCE = 1.1  # in normalized objectives (best 0, worst scored 1)
SEED_OFFSET = 2002  # the evolution's generator: seed + this (the loop's generator trains the supernet)
BN_SEED_OFFSET = 104729  # the shuffle of the BN re-estimation batches: seed + this

Cell = tuple[Pair, ...]


# ---- genomes ---------------------------------------------------------------------------------------
def _randint(n: int, gen: torch.Generator | None) -> int:
    return int(torch.randint(n, (), generator=gen))


def _rand(gen: torch.Generator | None) -> float:
    return float(torch.rand((), generator=gen))


def canonical_cell(pairs: Sequence[Pair]) -> Cell:
    """Each node's two pairs sorted by (input, op): a node is the sum of its two edges, so the order
    of its pairs does not change the network; equal canonical cells are the same cell."""
    out: list[Pair] = []
    for i in range(0, len(pairs), 2):
        out.extend(sorted(((str(op), int(j)) for op, j in pairs[i:i + 2]), key=lambda p: (p[1], p[0])))
    return tuple(out)


def canonical(genotype: Genotype) -> Genotype:
    """The genotype with both cells in canonical form (what deduplication compares)."""
    return Genotype(normal=canonical_cell(genotype.normal), normal_concat=CONCAT,
                    reduce=canonical_cell(genotype.reduce), reduce_concat=CONCAT)


def random_cell(gen: torch.Generator | None = None, steps: int = STEPS) -> Cell:
    """A uniformly random discrete cell: per node two distinct inputs out of 0..node+1, each with an
    op drawn uniformly from `OPS`. `gen` None: torch's global generator."""
    pairs: list[Pair] = []
    for i in range(steps):
        for j in torch.randperm(i + 2, generator=gen)[:2].tolist():
            pairs.append((OPS[_randint(len(OPS), gen)], int(j)))
    return tuple(pairs)


def random_genotype(gen: torch.Generator | None = None) -> Genotype:
    """A uniformly random genotype (normal and reduce cells drawn independently), canonical."""
    normal = random_cell(gen)
    reduce = random_cell(gen)
    return canonical(Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT))


def repair_cell(pairs: Sequence[Pair], gen: torch.Generator | None) -> Cell:
    """Make every pair valid: an op outside `OPS` or an input outside 0..node+1 is re-drawn, and a
    node whose two pairs share an input has one of them (chosen at random) take another input."""
    out = [(str(op), int(j)) for op, j in pairs]
    for i in range(len(out) // 2):
        for k in (2 * i, 2 * i + 1):
            op, j = out[k]
            if op not in OPS:
                op = OPS[_randint(len(OPS), gen)]
            if not 0 <= j <= i + 1:
                j = _randint(i + 2, gen)
            out[k] = (op, j)
        if out[2 * i][1] == out[2 * i + 1][1]:
            k = 2 * i + _randint(2, gen)
            taken = out[4 * i + 1 - k][1]  # the other pair's input
            others = [j for j in range(i + 2) if j != taken]
            out[k] = (out[k][0], others[_randint(len(others), gen)])
    return tuple(out)


def crossover(a: Genotype, b: Genotype, gen: torch.Generator | None) -> Genotype:
    """Uniform crossover over whole (op, input) pairs: at each position of each cell the child takes
    the pair of `a` or of `b` with probability 1/2; then repair and the canonical form."""
    cells = []
    for kind in ("normal", "reduce"):
        pa, pb = getattr(a, kind), getattr(b, kind)
        if len(pa) != len(pb):
            raise ValueError(f"crossover needs cells of equal size; got {len(pa)} and {len(pb)} {kind} pairs")
        cells.append(repair_cell([x if _rand(gen) < 0.5 else y for x, y in zip(pa, pb)], gen))
    return canonical(Genotype(normal=cells[0], normal_concat=CONCAT, reduce=cells[1], reduce_concat=CONCAT))


def mutate(genotype: Genotype, prob: float, gen: torch.Generator | None) -> Genotype:
    """Each (op, input) pair mutates with probability `prob`: with probability 1/2 its op becomes
    another op, else its input another valid input (0..node+1); then repair and canonical form."""
    cells = []
    for kind in ("normal", "reduce"):
        pairs = list(getattr(genotype, kind))
        for k, (op, j) in enumerate(pairs):
            if _rand(gen) >= prob:
                continue
            node = k // 2
            if _rand(gen) < 0.5:
                choices = [o for o in OPS if o != op]
                pairs[k] = (choices[_randint(len(choices), gen)], j)
            else:
                choices_j = [i for i in range(node + 2) if i != j]
                pairs[k] = (op, choices_j[_randint(len(choices_j), gen)])
        cells.append(repair_cell(pairs, gen))
    return canonical(Genotype(normal=cells[0], normal_concat=CONCAT, reduce=cells[1], reduce_concat=CONCAT))


def distinct_inputs(genotype: Genotype) -> bool:
    """Whether every node takes two different inputs (what `Genotype.validate` does not check)."""
    return all(cell[i][1] != cell[i + 1][1] for cell in (genotype.normal, genotype.reduce)
               for i in range(0, len(cell), 2))


# ---- memory ----------------------------------------------------------------------------------------
def _storage_key(t: torch.Tensor) -> tuple[int, str]:
    return t.untyped_storage().data_ptr(), str(t.device)


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages that the ops' outputs hold while they are alive."""

    def __init__(self, external: set[tuple[int, str]]) -> None:
        super().__init__()
        self.external = external  # parameters and buffers: not activations
        self.refs: dict[tuple[int, str], int] = {}
        self.sizes: dict[tuple[int, str], int] = {}
        self.live = 0
        self.peak = 0
        self.finalizers: list[weakref.finalize] = []

    def hold(self, t: torch.Tensor, permanent: bool = False) -> None:
        storage = t.untyped_storage()
        key, nbytes = _storage_key(t), storage.nbytes()
        if key in self.external or nbytes == 0:
            return
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        if not permanent:  # released when this tensor object dies; a view keeps its own reference
            self.finalizers.append(weakref.finalize(t, self._release, key))

    def _release(self, key: tuple[int, str]) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.live -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.hold(t)
        return out

    def close(self) -> None:
        for f in self.finalizers:
            f.detach()
        self.finalizers.clear()


def peak_activation_bytes(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """The peak of the bytes held by live tensors during one eval-mode, no-grad forward of `module`.

    Counted: the example input (live throughout: the caller holds it) and every tensor an ATen op
    returns, by its storage's bytes, from the op's return until the last Python or C++ tensor
    object that views that storage dies (a weakref finalizer per returned tensor; a view or an
    in-place op's result shares its input's storage and adds nothing). Not counted: parameters and
    buffers (see `parameter_bytes`), a kernel's internal workspace, and allocator slack (the
    caching allocator's rounding, fragmentation). So it is the activation memory of an ideal
    runtime that frees each tensor at its last use as eager PyTorch does, which is what compares
    networks. The module's train/eval flags are restored."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    external = {_storage_key(t) for t in [*module.parameters(), *module.buffers()]}
    modes = {m: m.training for m in module.modules()}
    module.eval()
    counter = _LiveBytes(external)
    try:
        for x in inputs:
            if isinstance(x, torch.Tensor):
                counter.hold(x, permanent=True)
        with torch.no_grad(), counter:
            out = module(*inputs)
        del out
        return int(counter.peak)
    finally:
        counter.close()
        for m, mode in modes.items():
            m.training = mode


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of the parameters (numel · element size; a shared parameter counts once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ---- candidate evaluation --------------------------------------------------------------------------
def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def preserved_bn(model: nn.Module) -> Iterator[None]:
    """Restore, on exit, every BatchNorm's running statistics, counter and momentum, and every
    module's train/eval flag: what re-estimating BN for a candidate changes."""
    bns = _batch_norms(model)
    saved = [(m.momentum, {n: b.detach().clone() for n, b in m.named_buffers(recurse=False) if b is not None})
             for m in bns]
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(bns, saved):
                m.momentum = momentum
                for n, b in buffers.items():
                    getattr(m, n).copy_(b)
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def reestimate_bn(model: SearchNetwork, genotype: Genotype, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's statistics for the path `genotype`: reset them, set momentum to
    None (a cumulative average over the batches) and run the path in train mode without gradients.
    Only BN statistics change (call it inside `preserved_bn` to undo that)."""
    for m in _batch_norms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x, genotype=genotype)


class PathNetwork(nn.Module):
    """The discrete network of `genotype` on the supernet's own weights (nothing copied): its
    parameters are the supernet's, and `forward(x)` runs the supernet's path."""

    def __init__(self, supernet: SearchNetwork, genotype: Genotype) -> None:
        super().__init__()
        self.supernet = supernet
        self.genotype = genotype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, genotype=self.genotype)


def lowered_network(genotype: Genotype, data: DataBundle, init_channels: int, layers: int) -> nn.Module:
    """The network `genotype` lowers to in the darts frontend (what a pipeline with `model.genotype`
    builds), in eval mode. Built under a forked RNG: scoring candidates leaves torch's generator as is."""
    from compressor.frontends.darts.frontend import build_network  # the frontend imports the search

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(genotype, data.task.kind, int(data.input_shape[0]), data.task.num_classes,
                            init_channels, layers)
    return net.eval()


def network_costs(net: nn.Module, input_shape: Sequence[int], latency_device: str | None = None) -> dict[str, float]:
    """MACs, parameters, memory (parameter + peak activation bytes) of `net` at batch 1, and with
    `latency_device` its median latency in ms (20 timed calls after 3 warm-up calls)."""
    from compressor.evaluate.stats import count_macs

    x = torch.zeros(1, *input_shape)
    macs = count_macs(net, (x,))
    if macs is None:
        raise ConfigError(f"could not count the MACs of a {type(net).__name__} on input {tuple(x.shape)} (see the "
                          "warning above); evolution needs MACs: check the data's input shape")
    pbytes, abytes = parameter_bytes(net), peak_activation_bytes(net, x)
    out = {"macs": float(macs), "params": float(sum(p.numel() for p in net.parameters())),
           "param_bytes": float(pbytes), "activation_bytes": float(abytes), "memory": float(pbytes + abytes)}
    if latency_device is not None:
        out["latency"] = measure_latency_ms(net, x, latency_device)
    return out


def measure_latency_ms(net: nn.Module, x: torch.Tensor, device: str, warmup: int = 3, iters: int = 20) -> float:
    """Median wall time of `net(x)` on `device` in ms, eval, no grad (CUDA calls synchronized)."""
    import statistics

    from compressor.evaluate.latency import time_callable

    net = net.to(device).eval()
    x = x.to(device)
    cuda = torch.device(device).type == "cuda"

    def call() -> None:
        with torch.no_grad():
            net(x)
        if cuda:
            torch.cuda.synchronize()

    return 1000.0 * statistics.median(time_callable(call, warmup=warmup, iters=iters))


class CandidateEvaluator:
    """Scores genotypes on a trained supernet: the metric with inherited weights and re-estimated BN
    (the supernet is left exactly as it was), the costs of the lowered network. Cached per genotype."""

    def __init__(self, model: SearchNetwork, data: DataBundle, batch_size: int, bn_batches: int, seed: int,
                 device: str = "cpu", net_channels: int | None = None, net_layers: int | None = None,
                 latency: bool = False) -> None:
        from compressor.data import make_loader

        self.model, self.data, self.device = model, data, device
        self.dtype = next(model.parameters()).dtype
        self.net_channels = net_channels or model.C
        self.net_layers = net_layers or model.layers
        self.latency = latency
        self.metric_name = "iou" if data.task.kind == "segmentation" else "accuracy"
        bn_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed + BN_SEED_OFFSET)
        self.bn_batches = [x.to(device, dtype=self.dtype) for x, _ in islice(bn_loader, bn_batches)]
        self.val_batches = list(make_loader(data.val, batch_size))  # held: synthetic splits are made on the fly
        self.cache: dict[Genotype, dict[str, float]] = {}
        self._costs: dict[Genotype, dict[str, float]] = {}

    def metric(self, genotype: Genotype) -> float:
        """Accuracy or IoU on val of the path `genotype`, after BN re-estimation; the supernet's BN
        statistics and modes are restored afterwards, its weights never change."""
        from compressor.evaluate.metrics import evaluate_module

        with preserved_bn(self.model):
            reestimate_bn(self.model, genotype, self.bn_batches)
            scores = evaluate_module(PathNetwork(self.model, genotype), self.val_batches, self.data.task,
                                     device=self.device, dtype=self.dtype)
        return float(scores[self.metric_name])

    def costs(self, genotype: Genotype) -> dict[str, float]:
        """MACs, parameters, memory (and latency) of the lowered network (independent of the weights)."""
        if genotype not in self._costs:
            net = lowered_network(genotype, self.data, self.net_channels, self.net_layers)
            self._costs[genotype] = network_costs(net, self.data.input_shape,
                                                  self.device if self.latency else None)
        return self._costs[genotype]

    def __call__(self, genotype: Genotype) -> dict[str, float]:
        genotype = canonical(genotype)
        if genotype not in self.cache:
            self.cache[genotype] = {"metric": self.metric(genotype), **self.costs(genotype)}
        return self.cache[genotype]


# ---- selection -------------------------------------------------------------------------------------
def scalarized(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Seed 002 eq. 2, Σ ±λ_i·f_i (`weighted_sum`), on the objectives in the units of `SCALE`."""
    return weighted_sum({k: float(v) * SCALE.get(k, 1.0) for k, v in values.items() if k in weights}, weights,
                        DIRECTIONS)


def fitness(values: Sequence[Mapping[str, float]], objectives: Sequence[str],
            scalarize: Mapping[str, float] | None = None) -> tuple[list[int], list[float]]:
    """(rank, crowding) of each candidate. Pareto: rank = the index of its front in
    `non_dominated_sort` and crowding its `crowding_distance` within that front. Scalarized: rank =
    the position of its weighted sum in decreasing order (equal sums share it) and crowding 0."""
    n = len(values)
    ranks, crowd = [0] * n, [0.0] * n
    if scalarize is not None:
        scores = [scalarized(v, scalarize) for v in values]
        order = sorted(set(scores), reverse=True)
        return [order.index(s) for s in scores], crowd
    points = [[float(v[o]) for o in objectives] for v in values]
    directions = [DIRECTIONS[o] for o in objectives]
    for r, front in enumerate(non_dominated_sort(points, directions)):
        for i, c in zip(front, crowding_distance(points, front, directions)):
            ranks[i], crowd[i] = r, c
    return ranks, crowd


def select_survivors(values: Sequence[Mapping[str, float]], mu: int, objectives: Sequence[str],
                     scalarize: Mapping[str, float] | None = None) -> list[int]:
    """NSGA-II truncation: the indices of the `mu` best by (rank, −crowding), ties by index. Whole
    fronts fill the places; the last front that does not fit keeps its least crowded members."""
    ranks, crowd = fitness(values, objectives, scalarize)
    return sorted(range(len(values)), key=lambda i: (ranks[i], -crowd[i], i))[:mu]


def tournament(ranks: Sequence[int], crowd: Sequence[float], gen: torch.Generator | None) -> int:
    """Binary tournament: two distinct random candidates; the lower rank wins, then the larger
    crowding, then the first drawn."""
    n = len(ranks)
    if n == 1:
        return 0
    i, j = torch.randperm(n, generator=gen)[:2].tolist()
    return i if (ranks[i], -crowd[i]) <= (ranks[j], -crowd[j]) else j


# ---- budgets ---------------------------------------------------------------------------------------
def default_budgets(macs: Sequence[float], k: int = 3) -> list[float]:
    """k budgets evenly spaced from the smallest to the largest MACs (1/k, 2/k, …, k/k of the way)."""
    lo, hi = min(macs), max(macs)
    return [lo + (hi - lo) * (i + 1) / k for i in range(k - 1)] + [hi]


def budget_winner(values: Sequence[Mapping[str, float]], budget: float) -> int | None:
    """The index of the best metric among the candidates with MACs ≤ `budget` (ties: fewer MACs,
    then less memory, then the lower index); None if none is within it."""
    within = [i for i, v in enumerate(values) if v["macs"] <= budget]
    if not within:
        return None
    return min(within, key=lambda i: (-values[i]["metric"], values[i]["macs"], values[i]["memory"], i))


# ---- the evolution ---------------------------------------------------------------------------------
def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _atomic_json(doc: Any, path: Path) -> None:
    atomic_write(path, json.dumps(doc, indent=1) + "\n")


def evolve(evaluate: CandidateEvaluator, opts: SearchOptions, progress: bool = False) -> dict[str, Any]:
    """The (μ+λ) NSGA-II evolution (see the module docstring). Returns the final population (canonical
    genotypes, best first), every scored candidate in scoring order, and each generation's population."""
    from compressor.progress import progress_bar

    gen = torch.Generator().manual_seed(opts.seed + SEED_OFFSET)
    mu = opts.evolution.population
    lam = opts.evolution.children or mu
    objectives, scalarize = list(opts.evolution.objectives), opts.evolution.scalarize

    population: list[Genotype] = []
    seen: set[Genotype] = set()
    for _ in range(50 * mu):  # distinct genotypes (the space is vast: this never runs dry in practice)
        if len(population) == mu:
            break
        g = random_genotype(gen)
        if g not in seen:
            seen.add(g)
            population.append(g)
    bar = progress_bar(total=opts.evolution.generations + 1, desc="evolution", disable=not progress, leave=False,
                       dynamic_ncols=True)
    try:
        vals = [evaluate(g) for g in population]
        keep = select_survivors(vals, mu, objectives, scalarize)
        population = [population[i] for i in keep]
        generations = [list(population)]
        bar.update(1)
        for g_i in range(opts.evolution.generations):
            ranks, crowd = fitness([evaluate(g) for g in population], objectives, scalarize)
            members = set(population)
            children: list[Genotype] = []
            for _ in range(20 * lam):
                if len(children) == lam:
                    break
                a = population[tournament(ranks, crowd, gen)]
                b = population[tournament(ranks, crowd, gen)]
                child = mutate(crossover(a, b, gen), opts.evolution.mutation_prob, gen)
                if child not in members:
                    members.add(child)
                    children.append(child)
            pool = population + children
            vals = [evaluate(g) for g in pool]
            population = [pool[i] for i in select_survivors(vals, mu, objectives, scalarize)]
            generations.append(list(population))
            best = max(evaluate(g)["metric"] for g in population)
            log.info("evolution generation %d/%d: %d new children, %d scored, best %s %.4f", g_i + 1,
                     opts.evolution.generations, len(children), len(evaluate.cache), evaluate.metric_name, best)
            bar.update(1)
            bar.set_postfix(scored=len(evaluate.cache), best=f"{best:.4f}")
    finally:
        bar.close()
    return {"population": population, "generations": generations, "scored": list(evaluate.cache)}


def generation_hypervolumes(generations: Sequence[Sequence[Genotype]], scored: Sequence[Mapping[str, float]],
                        evaluate: CandidateEvaluator, objectives: Sequence[str]) -> tuple[list[float], dict[str, Any]]:
    """The hypervolume of each generation's population (see the module docstring) and its reference."""
    directions = [DIRECTIONS[o] for o in objectives]
    bounds = [(min(float(v[o]) for v in scored), max(float(v[o]) for v in scored)) for o in objectives]
    hvs = []
    for population in generations:
        points = [[float(evaluate(g)[o]) for o in objectives] for g in population]
        normalized, ref = normalize_for_hv(points, directions, bounds)
        hvs.append(hypervolume(normalized, ref, ["minimize"] * len(objectives)))
    reference = {"objectives": list(objectives), "bounds": {o: list(b) for o, b in zip(objectives, bounds)},
                 "point": [HV_REFERENCE] * len(objectives),
                 "note": "each objective min-max normalized over every candidate scored in the run (best 0, "
                         "worst 1); hypervolume of the population w.r.t. the reference point 1.1 in each"}
    return hvs, reference


def run_evolution(model: SearchNetwork, data: DataBundle, out_dir: Path, opts: SearchOptions, device: str = "cpu",
                  progress: bool = False) -> Genotype:
    """Evolve on the trained supernet `model`; write the budget winners and evolution.json into
    `out_dir`; return the largest budget's winner."""
    out_dir = Path(out_dir)
    objectives = list(opts.evolution.objectives)
    evaluate = CandidateEvaluator(model, data, opts.batch_size, opts.evolution.bn_batches, opts.seed, device,
                                  opts.evolution.net_channels, opts.evolution.net_layers, latency="latency" in objectives)
    result = evolve(evaluate, opts, progress)
    population, scored = result["population"], result["scored"]
    scored_vals = [evaluate(g) for g in scored]
    pop_vals = [evaluate(g) for g in population]

    budgets = sorted(opts.evolution.budgets) if opts.evolution.budgets else default_budgets([v["macs"] for v in pop_vals])
    for stale in out_dir.glob(BUDGET_FILE.format(k="*")):
        stale.unlink()
    winners: list[dict[str, Any]] = []
    final: Genotype | None = None
    for k, budget in enumerate(budgets, start=1):
        i = budget_winner(scored_vals, budget)
        entry: dict[str, Any] = {"budget": k, "macs_budget": budget, "file": None, "genotype": None}
        if i is None:
            log.warning("evolution: no scored genotype has at most %.0f MACs (the smallest has %.0f): budget %d "
                        "has no winner", budget, min(v["macs"] for v in scored_vals), k)
        else:
            name = BUDGET_FILE.format(k=k)
            scored[i].validate().save(out_dir / name)
            entry.update(file=name, genotype=scored[i].to_dict(), objectives=scored_vals[i])
            final = scored[i]
        winners.append(entry)
    if final is None:
        smallest = min(v["macs"] for v in scored_vals)
        raise ConfigError(f"evolution: no scored genotype fits any of the MACs budgets {budgets} (the smallest has "
                          f"{smallest:.0f} MACs); set evolution.budgets to values ≥ {smallest:.0f} (or [] for the default) "
                          f"and re-run in the same folder: only the evolution re-runs")

    ranks, crowd = fitness(pop_vals, objectives, opts.evolution.scalarize)
    hvs, reference = generation_hypervolumes(result["generations"], scored_vals, evaluate, objectives)
    history = [{"generation": g, "hypervolume": hv, "best_metric": max(evaluate(x)["metric"] for x in pop),
                "front_size": sum(r == 0 for r in fitness([evaluate(x) for x in pop], objectives,
                                                          opts.evolution.scalarize)[0])}
               for g, (pop, hv) in enumerate(zip(result["generations"], hvs))]
    members = []
    for g, v, r, c in zip(population, pop_vals, ranks, crowd):
        entry = {"genotype": g.to_dict(), "objectives": v, "rank": r, "crowding": _finite(c)}
        if opts.evolution.scalarize is not None:
            entry["scalarized"] = scalarized(v, opts.evolution.scalarize)
        members.append(entry)
    _atomic_json({
        "objectives": objectives, "directions": {o: DIRECTIONS[o] for o in objectives},
        "metric": evaluate.metric_name, "units": {o: UNITS[o] for o in OBJECTIVES},
        "scalarize": opts.evolution.scalarize, "scalarize_units": {o: f"×{SCALE[o]:g}" for o in OBJECTIVES},
        "network": {"init_channels": evaluate.net_channels, "layers": evaluate.net_layers,
                    "input_shape": list(data.input_shape)},
        "population_size": opts.evolution.population, "children": opts.evolution.children or opts.evolution.population,
        "generations": opts.evolution.generations, "mutation_prob": opts.evolution.mutation_prob,
        "bn_batches": opts.evolution.bn_batches, "scored": len(scored),
        "history": history, "hypervolume_reference": reference,
        "population": members, "population_note": "best first: by rank (front index, or weighted-sum position), "
                                                   "then crowding (null: a front's boundary point, infinite)",
        "budgets": winners,
        "winner": next(w["file"] for w in reversed(winners) if w["file"] is not None),
    }, out_dir / EVOLUTION)
    return final


# ---- the algorithm ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvolutionOptions:
    """The `evolution:` block of the search options (they act after the epochs: see the module docstring)."""

    population: int = option(16, "μ, the genotypes kept from one generation to the next", min=2, max=4096)
    generations: int = option(10, "generations after the initial random population (0: score the initial "
                                  "population only)", min=0, max=10000)
    children: int | None = option(None, "λ, the children bred per generation (null: μ)", min=1, max=4096)
    mutation_prob: float = option(0.1, "probability that one (op, input) pair of a child mutates (its op or, as "
                                       "often, its input)", min=0, max=1)
    bn_batches: int = option(4, "training batches that re-estimate the BatchNorm statistics before a candidate is "
                                "scored", min=1, max=10000)
    objectives: tuple[Objective, ...] = option(("metric", "macs", "memory"), "objectives: metric (accuracy or IoU "
                                               "on val, max), macs, memory (parameter + peak activation bytes), "
                                               "latency (measured, ms) (min)")
    scalarize: dict[str, float] | None = option(None, "λ per objective to rank by the weighted sum of seed 002 eq. 2 "
                                                      "instead of Pareto fronts, e.g. {metric: 1, macs: 0.01} (metric "
                                                      "a fraction, macs in millions, memory in MB, latency in ms; "
                                                      "null: Pareto)")
    budgets: tuple[float, ...] = option((), "MACs budgets, one winner each (empty: 1/3, 2/3 and 3/3 of the way from "
                                            "the final population's smallest to largest MACs)", min=0,
                                        min_exclusive=True)
    net_channels: int | None = option(None, "C of the network whose MACs, memory and latency are counted (null: "
                                            "init_channels)", min=1, max=1024)
    net_layers: int | None = option(None, "cells of that network (null: layers)", min=3, max=64)


@register_search("evolution")
class Evolution(SearchAlgorithm):
    """Single-path supernet training, then NSGA-II over genotypes scored with inherited weights."""

    Options = EvolutionOptions
    block = "evolution"

    default_warmup = 1.0  # every epoch trains weights only: the loop never asks for an α step
    split_train = False  # no α: the weights train on the whole train split

    @classmethod
    def check_options(cls, opts: SearchOptions) -> None:
        objs = list(opts.evolution.objectives)
        if opts.order != 1:
            raise ValueError("evolution has no α step, so order 2 (the unrolled α gradient) does not apply; "
                             "set order: 1")
        if opts.warmup_epochs is not None:
            raise ValueError(f"evolution never trains α, so warmup_epochs ({opts.warmup_epochs}) does not apply; "
                             "leave it unset")
        if opts.evolution.population < 2 or (opts.evolution.children is not None and opts.evolution.children < 1):
            raise ValueError(f"evolution needs evolution.population ≥ 2 and evolution.children ≥ 1 (or null); got "
                             f"{opts.evolution.population} and {opts.evolution.children}")
        if not 0 <= opts.evolution.mutation_prob <= 1 or opts.evolution.bn_batches < 1 or opts.evolution.generations < 0:
            raise ValueError(f"evolution needs evolution.mutation_prob in [0, 1], evolution.bn_batches ≥ 1 and evolution.generations "
                             f"≥ 0; got {opts.evolution.mutation_prob}, {opts.evolution.bn_batches}, {opts.evolution.generations}")
        if "metric" not in objs or len(set(objs)) != len(objs) or any(o not in OBJECTIVES for o in objs):
            raise ValueError(f"evolution.objectives must hold 'metric' and distinct names from {list(OBJECTIVES)}; got "
                             f"{objs} (e.g. [metric, macs, memory])")
        if any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0
               for b in opts.evolution.budgets):
            raise ValueError(f"evolution.budgets must be positive MACs counts; got {list(opts.evolution.budgets)} (e.g. [2e6, 4e6] "
                             "or [] for the default thirds)")
        w = opts.evolution.scalarize
        if w is not None and (not w or any(k not in objs for k in w) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
                for v in w.values()) or not any(v > 0 for v in w.values())):
            raise ValueError(f"evolution.scalarize needs a weight ≥ 0 (one > 0) for objectives among evolution.objectives "
                             f"{objs}; got {w} (e.g. {{metric: 1, macs: 0.01}}, or null for Pareto ranking)")
        if (opts.evolution.net_channels is not None and opts.evolution.net_channels < 1) or \
                (opts.evolution.net_layers is not None and opts.evolution.net_layers < 3):
            raise ValueError(f"evolution needs evolution.net_channels ≥ 1 and evolution.net_layers ≥ 3 (or null); got "
                             f"{opts.evolution.net_channels} and {opts.evolution.net_layers}")

    def arch_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                  lr: float) -> float:
        return 0.0  # α is not part of this search (the loop never calls this: the warm-up is every epoch)

    def weight_step(self, st: Stage, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Train one uniformly random path (drawn from torch's global generator, which the loop seeds
        and checkpoints): only its ops get gradients, so only they (and their momentum) move."""
        model = st.model
        genotype = random_genotype()
        for p in model.weight_parameters():
            p.grad = None
        loss = self.loss_fn(model(x, genotype=genotype), y)
        loss.backward()
        step_weights(st, self.opts.grad_clip)
        return {"loss": float(loss.detach())}

    def finish(self, model: SearchNetwork, data: DataBundle, out_dir: Path, device: str,
               progress: bool = False) -> Genotype:
        return run_evolution(model, data, out_dir, self.opts, device, progress)
