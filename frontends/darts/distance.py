"""The architecture distance M of D-DARTS (seed 001, section 4.1.5 and Algorithm 3; our own code).

The thesis builds M in four levels: (i) each op has a score (Table 4.1: top-1 accuracy of a proxy
network using that op alone; the weights are score/100); (ii) two binary vectors are compared with
Algorithm 3's weighted Hamming distance, the mean over indices of w[i] where they differ; (iii) two
cells, as sets of such vectors, with the symmetric Hausdorff distance (eq. 4.6-4.7); (iv) two
architectures with the mean of the cell distances over cell positions (eq. 4.8).

The thesis does not say how a cell becomes a set of binary vectors. Two encodings (`encoding=`):

- **"edge" (default, our reading of the thesis):** each edge that holds an op is one point, a binary
  vector over the 12 ops of Table 4.1 (a 1 for each op on the edge); a cell is the set of its used
  edges, and index o weighs score(o)/100. Changing one edge's op o → o' (each found on no other edge)
  gives (score(o) + score(o'))/100/12 ≈ 0.14, of the order of the thesis's reported distances
  (0.08-0.2). It is a pseudo-metric: 0 for equal cells, symmetric, with the triangle inequality, but
  the position of an edge is not in its vector, so two different cells holding the same set of op
  vectors are at distance 0; and the Hausdorff distance is a maximum, so it measures the heaviest
  change in a cell, not how many edges changed.
- **"positional":** every possible edge (Σ_j (2 + j), 14 for 4 nodes) is a point, a vector of
  n_edges·12 bits that is zero except in the edge's own block of 12; unused edges are the zero
  vector. The position is in the vector, so different cells are never at 0 and M is a true metric
  (as the thesis claims M is): use it to detect *any* change, e.g. between search epochs. Its values
  are small and nearly constant (0.00489-0.00505 per changed cell for 4 nodes: both sets hold the
  zero vector, which is score(o)/100/(n_edges·12) from any single-op point).

A cell is a set either way: the order of the pairs within a node does not matter. Our values are
comparable with each other, not with the thesis's (its encoding is unpublished).

Variable-input cells (D-DARTS threshold parsing, `genotypes.Genotype` with node sizes) use the same
definition: a pair (op, j) of node i puts op's bit on edge (i, j), so an edge holding several ops
is one point with several bits (the edge encoding's "a 1 for each op on the edge"), and the node
sizes only say which node each pair belongs to. A DARTS-form cell is therefore at the same distance
whether written with or without its node sizes of 2, and cells still compare only at equal node
counts. A cell is given as its list of pairs (2 per node) or as {"pairs": [...], "nodes": [sizes]}
(the per-cell JSON form); `genotype_cell` gives a genotype's cells in that form.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compressor import schema
from compressor.errors import ConfigError
from compressor.frontends.darts.genotypes import CellsGenotype, Genotype
from compressor.frontends.darts.search_space import CONCAT, NUM_EDGES, derive_cell

# Table 4.1 (median top-1 % on CIFAR-10 of a 3-cell proxy network using only that op), table order.
OP_SCORES: dict[str, float] = {
    "conv_3x1_1x3": 82.76, "conv_7x1_1x7": 82.72, "max_pool_3x3": 82.96, "avg_pool_3x3": 82.51,
    "skip_connect": 82.15, "simple_conv_1x1": 82.27, "simple_conv_3x3": 83.12, "sep_conv_3x3": 83.19,
    "sep_conv_5x5": 84.87, "dil_conv_3x3": 82.96, "dil_conv_5x5": 82.99, "bottleneck_1x3x1": 83.06,
}
_OPS = tuple(OP_SCORES)

Cell = Sequence[tuple[str, int]] | Mapping[str, Any]  # pairs (2 per node), or {"pairs": ..., "nodes": ...}
Point = tuple[int, ...]


def weighted_hamming(u: Sequence[Any], v: Sequence[Any], w: Sequence[float]) -> float:
    """Algorithm 3: the mean over indices i of w[i] where u[i] != v[i] (0 where they agree)."""
    if not len(u) == len(v) == len(w) or not len(u):
        raise ConfigError(f"weighted_hamming needs three non-empty sequences of one length; got lengths "
                          f"{len(u)}, {len(v)} and {len(w)}")
    return sum(wi for ui, vi, wi in zip(u, v, w) if ui != vi) / len(u)


def _edges(nodes: int) -> int:
    """Possible edges of a cell with `nodes` intermediate nodes: node j takes inputs 0..j+1."""
    return sum(2 + j for j in range(nodes))


def _gene(cell: Cell, name: str) -> tuple[Sequence[Any], tuple[int, ...]]:
    """(pairs, node sizes) of a cell given as its pairs (2 per node) or as {"pairs": ..., "nodes": ...}."""
    form = ("expected a list of (op, input) pairs, 2 per node (8 for 4 nodes), or {'pairs': [...], 'nodes': "
            "[sizes]} for a variable number per node")
    if isinstance(cell, Mapping):
        extra = sorted(set(cell) - {"pairs", "nodes"})
        pairs, nodes = cell.get("pairs"), cell.get("nodes")
        if extra or isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
            raise ConfigError(f"cell {name}: {form}; got {cell!r}")
        if nodes is None:
            return _gene(pairs, name)
        if (isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence) or not nodes
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nodes)):
            raise ConfigError(f"cell {name}: nodes must be a non-empty list of node sizes ≥ 1 such as [1, 3, 2, 2], "
                              f"got {nodes!r}")
        if sum(nodes) != len(pairs):
            raise ConfigError(f"cell {name}: nodes {list(nodes)} count {sum(nodes)} pairs but the cell has "
                              f"{len(pairs)}; they must sum to the number of pairs")
        return pairs, tuple(nodes)
    if isinstance(cell, (str, bytes)) or not isinstance(cell, Sequence) or not cell or len(cell) % 2:
        raise ConfigError(f"cell {name}: {form}; got {cell!r}")
    return cell, (2,) * (len(cell) // 2)


def genotype_cell(genotype: Genotype | CellsGenotype, which: str | int) -> Cell:
    """A genotype's cell as the distance takes it: `which` is "normal" or "reduce" of a Genotype, or
    the cell index of a CellsGenotype; its pairs in the DARTS form, else {"pairs", "nodes"}."""
    if isinstance(genotype, CellsGenotype):
        pairs, nodes = genotype.cells[which], genotype.cell_nodes(which)
    else:
        pairs, nodes = getattr(genotype, which), getattr(genotype, f"{which}_nodes")
    return pairs if nodes is None else {"pairs": pairs, "nodes": nodes}


Encoding = Literal["edge", "positional"]
ENCODINGS = ("edge", "positional")


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown distance encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")


def cell_points(cell: Cell, name: str = "cell", encoding: Encoding = "edge") -> set[Point]:
    """The cell as a set of points (see the module docstring for the two encodings)."""
    _check_encoding(encoding)
    pairs, sizes = _gene(cell, name)
    blocks: list[set[int]] = [set() for _ in range(_edges(len(sizes)))]
    node_of = [j for j, size in enumerate(sizes) for _ in range(size)]
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(f"{name}[{i}]: expected an (op, input) pair such as ('sep_conv_3x3', 1), got {pair!r}")
        op, index = pair
        if op not in OP_SCORES:
            raise ConfigError(f"{name}[{i}]: op {op!r} has no score in Table 4.1, so the distance cannot weigh it; "
                              f"valid: {', '.join(_OPS)}")
        node = node_of[i]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= node + 1:
            raise ConfigError(f"{name}[{i}] ({op!r}, {index!r}): node {node} may only take inputs 0..{node + 1}")
        blocks[_edges(node) + index].add(_OPS.index(op))
    width = len(_OPS)
    if encoding == "edge":
        return {tuple(1 if o in ops else 0 for o in range(width)) for ops in blocks if ops}
    points = set()
    for e, ops in enumerate(blocks):
        vector = [0] * (len(blocks) * width)
        for o in ops:
            vector[e * width + o] = 1
        points.add(tuple(vector))
    return points


def _weights(nodes: int, encoding: Encoding) -> list[float]:
    blocks = 1 if encoding == "edge" else _edges(nodes)
    return [OP_SCORES[op] / 100 for _ in range(blocks) for op in _OPS]


def cell_distance(cell_a: Cell, cell_b: Cell, encoding: Encoding = "edge") -> float:
    """M_H (eq. 4.7): the symmetric Hausdorff distance between the two cells' point sets, with
    weighted_hamming between points. Both cells must have the same number of nodes (each with any
    number of pairs)."""
    (pa, sa), (pb, sb) = _gene(cell_a, "A"), _gene(cell_b, "B")
    na, nb = len(sa), len(sb)
    if na != nb:
        raise ConfigError(f"cell A has {na} nodes ({len(pa)} pairs) and cell B {nb} ({len(pb)} pairs); cells compare "
                          f"only at equal node counts, so compare architectures searched with the same steps")
    a, b = cell_points(cell_a, "A", encoding), cell_points(cell_b, "B", encoding)
    w = _weights(na, encoding)

    def directed(xs: set[Point], ys: set[Point]) -> float:  # eq. 4.6: max over x of min over y of d(x, y)
        return max(min(weighted_hamming(x, y, w) for y in ys) for x in xs)

    return max(directed(a, b), directed(b, a))


def expand_cells(genotype: Genotype, layers: int) -> list[Cell]:
    """The per-cell list of a DARTS network of `layers` cells: reduce cells at layers//3 and
    2*layers//3, normal cells elsewhere (each as `genotype_cell` gives it)."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 3:
        raise ConfigError(f"layers must be an integer ≥ 3 (reduce cells at layers//3 and 2*layers//3), "
                          f"got {layers!r}")
    reductions = {layers // 3, 2 * layers // 3}
    normal, reduce = genotype_cell(genotype, "normal"), genotype_cell(genotype, "reduce")
    return [reduce if i in reductions else normal for i in range(layers)]


def _cell_list(cells: Any, name: str) -> list[Cell]:
    if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence) or not cells:
        raise ConfigError(f"architecture {name}: expected a Genotype or a non-empty list of cells, got {cells!r}")
    if isinstance(cells[0], Sequence) and cells[0] and isinstance(cells[0][0], str):
        raise ConfigError(f"architecture {name} is one cell (a list of (op, input) pairs), not a list of cells; "
                          f"use cell_distance, or wrap it as [cell]")
    return list(cells)


def network_distance(a: Genotype | CellsGenotype | Sequence[Cell], b: Genotype | CellsGenotype | Sequence[Cell],
                     encoding: Encoding = "edge") -> float:
    """M (eq. 4.8): the mean of the cell distances over cell positions. Two Genotypes compare their
    normal and their reduce cell (the mean of the 2 cell types); per-cell genotypes (D-DARTS) or
    lists compare cell i with cell i and must have the same length; a Genotype against a per-cell one
    is first expanded to that many cells (`expand_cells`)."""
    if isinstance(a, Genotype) and isinstance(b, Genotype):
        return sum(cell_distance(genotype_cell(a, kind), genotype_cell(b, kind), encoding)
                   for kind in ("normal", "reduce")) / 2
    a = [genotype_cell(a, i) for i in range(len(a.cells))] if isinstance(a, CellsGenotype) else a
    b = [genotype_cell(b, i) for i in range(len(b.cells))] if isinstance(b, CellsGenotype) else b
    if isinstance(a, Genotype):
        a = expand_cells(a, len(_cell_list(b, "B")))
    if isinstance(b, Genotype):
        b = expand_cells(b, len(_cell_list(a, "A")))
    cells_a, cells_b = _cell_list(a, "A"), _cell_list(b, "B")
    if len(cells_a) != len(cells_b):
        raise ConfigError(f"architecture A has {len(cells_a)} cells and B {len(cells_b)}; eq. 4.8 compares cells "
                          f"at the same positions, so give two lists of one length")
    return sum(cell_distance(x, y, encoding) for x, y in zip(cells_a, cells_b)) / len(cells_a)


HISTORY_ENTRY = schema.alpha_history_entry(NUM_EDGES)
HISTORY_FIX = "give the alpha_history.json a search wrote"


def _entry_genotype(entry: Any, i: int) -> Genotype:
    """The genotype derive_cell gives for one alpha-history entry (with PC-DARTS edge weights if present)."""
    schema.validate(entry, HISTORY_ENTRY, f"alpha history entry {i}", fix=HISTORY_FIX)
    cells = {}
    for kind in ("normal", "reduce"):
        key = f"primitives_{kind}"
        rows, prims = entry[kind], entry[key]
        bad = next((e for e, (r, p) in enumerate(zip(rows, prims)) if len(r) != len(p)), None)
        if bad is not None:  # the one check across fields: each edge's weights are for that edge's ops
            raise ConfigError(f"alpha history entry {i}: {kind}[{bad}] has {len(rows[bad])} weights but {key}[{bad}] "
                              f"names {len(prims[bad])} ops; {HISTORY_FIX}")
        try:
            cells[kind] = derive_cell(np.asarray(rows, dtype=np.float64), prims, entry.get(f"edge_{kind}"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"alpha history entry {i} {kind}: {exc}") from None
    return Genotype(cells["normal"], CONCAT, cells["reduce"], CONCAT)


def history_distances(history: Sequence[Mapping[str, Any]], to: Literal["previous", "first"] = "previous",
                      encoding: Encoding = "edge") -> list[float | None]:
    """Per alpha-history entry, the distance M between the genotype it derives and the previous
    entry's (`to="previous"`; entry 0 has no previous, so None) or the first entry's (`to="first"`,
    entry 0 → 0.0; the thesis' Fig. 4.6 plots distance to the starting architecture). Entries of
    different P-DARTS stages compare too: genotypes are discrete."""
    if to not in ("previous", "first"):
        raise ConfigError(f"history_distances: unknown reference {to!r}; valid: previous, first")
    genotypes = [_entry_genotype(e, i) for i, e in enumerate(history)]
    if to == "first":
        return [network_distance(g, genotypes[0], encoding) for g in genotypes]
    return [None] + [network_distance(g, p, encoding) for p, g in zip(genotypes, genotypes[1:])]


def load_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """An alpha_history.json as `compress search` writes it (a list of per-epoch entries)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no alpha history at {path}; give the alpha_history.json of a search directory "
                          f"(runs/<name>/search-<hash>/alpha_history.json)")
    doc = schema.load_json(path, "alpha history", max_bytes=schema.HISTORY_MAX_BYTES, fix=HISTORY_FIX)
    return schema.validate(doc, schema.List(HISTORY_ENTRY, min_len=1), str(path), fix=HISTORY_FIX)
