"""Genotypes as data: the discrete result of a DARTS search, and the published ones.

A genotype is (normal, normal_concat, reduce, reduce_concat); `CellsGenotype` has one gene per cell
(D-DARTS). `normal` and `reduce` list the (op, input_index) pairs of the intermediate nodes, node
after node: input 0 is the output of cell k-2, 1 the output of cell k-1, i ≥ 2 the output of
intermediate node i-2. Node j (0-based) may therefore take inputs 0..j+1, and its state is the sum
of its pairs' op outputs. `*_concat` lists the states concatenated into the cell output (normally
[2, 3, 4, 5]).

How many pairs each node has: 2 (the DARTS form, every published genotype), unless the cell gives
its node sizes, `normal_nodes` / `reduce_nodes` (per-cell genotypes: each cell's `nodes`), the number
of pairs of each node in order, each ≥ 1, summing to the number of pairs. That is the form of the
D-DARTS threshold parsings (thesis, seed 001, section 4.2.1: every op with σ(α) ≥ 0.85), whose nodes
keep a variable number of ops. In the variable form a node may not list the same (op, input) twice
(the supernet's edge holds each op once). Node sizes of all 2s are the DARTS form: they are dropped
on construction, so such a genotype equals, hashes and serialises as the one without them.

JSON form (what `save` writes and `load` reads; the `*_nodes` keys only for a variable cell):
    {"normal": [["sep_conv_3x3", 1], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}
    {"normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
     "normal_nodes": [1, 3], "normal_concat": [2, 3], ...}   (node 0: 1 pair; node 1: 3 pairs)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from compressor import schema
from compressor.errors import ConfigError
from compressor.frontends.darts.ops import PRIMITIVES
from compressor.options import unknown_key_message
from compressor.store import atomic_write

Pair = tuple[str, int]
Nodes = tuple[int, ...]  # the number of (op, input) pairs of each intermediate node
KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _pairs(value: Any, field: str) -> tuple[Pair, ...]:
    """(op, input_index) pairs from a list (or tuple) of pairs; `field` names them in a message."""
    schema.validate(value, schema.PAIRS, "genotype", path=field)
    return tuple((op, index) for op, index in value)


def _indices(value: Any, field: str) -> tuple[int, ...]:
    schema.validate(value, schema.INDICES, "genotype", path=field)
    return tuple(value)


def _sizes(value: Any, pairs: tuple[Pair, ...], field: str) -> Nodes | None:
    """A cell's node sizes in canonical form: None for the DARTS form (none given, or 2 per node)."""
    if value is None:
        return None
    schema.validate(value, schema.NODE_SIZES, "genotype", path=field)
    sizes = tuple(value)
    return None if sizes == (2,) * (len(pairs) // 2) and len(pairs) % 2 == 0 else sizes


def node_sizes(pairs: tuple[Pair, ...], nodes: Nodes | None) -> Nodes:
    """The number of pairs of each node: `nodes`, or 2 per node (the DARTS form) when None."""
    return tuple(nodes) if nodes is not None else (2,) * (len(pairs) // 2)


def split_nodes(pairs: tuple[Pair, ...], nodes: Nodes | None) -> tuple[tuple[Pair, ...], ...]:
    """The pairs grouped by node (`nodes`: the node sizes, None for 2 per node)."""
    out, start = [], 0
    for size in node_sizes(pairs, nodes):
        out.append(tuple(pairs[start:start + size]))
        start += size
    return tuple(out)


def _validate_cell(kind: str, pairs: tuple[Pair, ...], concat: tuple[int, ...], concat_name: str,
                   nodes: Nodes | None = None, nodes_name: str = "") -> None:
    """One cell's checks (`kind`, `concat_name` and `nodes_name` name it in the message: "normal",
    "normal_concat" and "normal_nodes"; "cells[3]", "cells[3] concat" and "cells[3].nodes")."""
    if nodes is None:
        if not pairs or len(pairs) % 2:
            raise ConfigError(f"genotype {kind} has {len(pairs)} (op, input) pairs; a cell needs exactly 2 "
                              f"per node, so an even number ≥ 2 (8 for the usual 4 nodes), or its node sizes "
                              f"({nodes_name or kind + '_nodes'}) for a variable number per node")
    else:
        empty = next((j for j, n in enumerate(nodes) if n < 1), None)
        if empty is not None:
            raise ConfigError(f"genotype {nodes_name}[{empty}] is {nodes[empty]}: every node needs at least 1 "
                              f"(op, input) pair; give node {empty} an input or remove the node")
        if sum(nodes) != len(pairs):
            raise ConfigError(f"genotype {nodes_name} {list(nodes)} counts {sum(nodes)} (op, input) pairs but "
                              f"{kind} has {len(pairs)}; the node sizes are the number of pairs of each node in "
                              f"order, so they must sum to {len(pairs)}")
    sizes = node_sizes(pairs, nodes)
    node_of = [j for j, size in enumerate(sizes) for _ in range(size)]
    first: dict[tuple[int, Pair], int] = {}
    for i, (op, index) in enumerate(pairs):
        if op == "none":
            raise ConfigError(f"genotype {kind}[{i}] uses 'none': the zero op exists only in the search "
                              f"supernet and cannot appear in a discrete genotype; pick another op")
        if op not in PRIMITIVES:
            valid = [p for p in PRIMITIVES if p != "none"]
            raise ConfigError(f"genotype {kind}[{i}]: {unknown_key_message(op, valid, 'op')}")
        node = node_of[i]
        if not 0 <= index <= node + 1:
            raise ConfigError(f"genotype {kind}[{i}] ({op!r}, {index}): node {node} may only take inputs "
                              f"0..{node + 1} (0 = cell k-2, 1 = cell k-1, i ≥ 2 = node i-2)")
        if nodes is not None:
            seen = first.setdefault((node, (op, index)), i)
            if seen != i:
                raise ConfigError(f"genotype {kind}[{i}] ({op!r}, {index}) repeats {kind}[{seen}] in node {node}: "
                                  f"an edge holds each op once; remove one of them")
    last = len(sizes) + 1
    if not concat:
        raise ConfigError(f"genotype {concat_name} is empty; list the node states to concatenate, "
                          f"e.g. {list(range(2, last + 1))}")
    bad = [c for c in concat if not 0 <= c <= last]
    if bad:
        raise ConfigError(f"genotype {concat_name} has {bad[0]}, out of range: valid states are 0..{last} "
                          f"(nodes are 2..{last}), e.g. {list(range(2, last + 1))}")


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]
    normal_nodes: Nodes | None = None  # node sizes of a variable-input cell; None: 2 pairs per node
    reduce_nodes: Nodes | None = None

    def __post_init__(self) -> None:  # canonical, hashable form (lists and ranges accepted)
        object.__setattr__(self, "normal", _pairs(self.normal, "normal"))
        object.__setattr__(self, "reduce", _pairs(self.reduce, "reduce"))
        object.__setattr__(self, "normal_concat", _indices(self.normal_concat, "normal_concat"))
        object.__setattr__(self, "reduce_concat", _indices(self.reduce_concat, "reduce_concat"))
        object.__setattr__(self, "normal_nodes", _sizes(self.normal_nodes, self.normal, "normal_nodes"))
        object.__setattr__(self, "reduce_nodes", _sizes(self.reduce_nodes, self.reduce, "reduce_nodes"))

    # ---- checks ---------------------------------------------------------------------------
    def validate(self) -> "Genotype":
        """Raise ConfigError (one line) when this is not a valid discrete genotype; return self."""
        for kind in ("normal", "reduce"):
            _validate_cell(kind, getattr(self, kind), getattr(self, f"{kind}_concat"), f"{kind}_concat",
                           getattr(self, f"{kind}_nodes"), f"{kind}_nodes")
        return self

    def cell_gene(self, index: int, reduction: bool,
                  layers: int) -> tuple[tuple[Pair, ...], tuple[int, ...], Nodes]:
        """(pairs, concat, node sizes) of cell `index` of a `layers`-cell network: the reduce cell where
        the network reduces, the normal cell elsewhere."""
        kind = "reduce" if reduction else "normal"
        return getattr(self, kind), getattr(self, f"{kind}_concat"), self.node_sizes(kind)

    def node_sizes(self, kind: str) -> Nodes:
        """The number of pairs of each node of the `kind` ("normal" or "reduce") cell."""
        return node_sizes(getattr(self, kind), getattr(self, f"{kind}_nodes"))

    @property
    def variable(self) -> bool:
        """Whether a cell has a variable number of pairs per node (not the DARTS form)."""
        return self.normal_nodes is not None or self.reduce_nodes is not None

    @property
    def steps(self) -> int:
        return len(self.node_sizes("normal"))

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }
        for kind in ("normal", "reduce"):  # only a variable cell: the DARTS form's JSON stays as it was
            if getattr(self, f"{kind}_nodes") is not None:
                out[f"{kind}_nodes"] = list(getattr(self, f"{kind}_nodes"))
        return out

    @classmethod
    def from_dict(cls, doc: Any, source: str = "genotype") -> "Genotype | CellsGenotype":
        """A genotype from its JSON form; a mapping with a "cells" key is a per-cell (D-DARTS) one."""
        if isinstance(doc, Mapping) and "cells" in doc:
            return CellsGenotype.from_dict(doc, source)
        schema.validate(doc, schema.GENOTYPE, source)
        try:
            return cls(**{k: doc[k] for k in KEYS}, normal_nodes=doc.get("normal_nodes"),
                       reduce_nodes=doc.get("reduce_nodes")).validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, source: str = "genotype") -> "Genotype | CellsGenotype":
        return cls.from_dict(schema.parse_json(text, source, "genotype"), source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically: a temp file beside the target, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Genotype | CellsGenotype":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no genotype file at {path}; give a published genotype name "
                              f"({', '.join(GENOTYPES)}) or the path of a genotype .json")
        doc = schema.load_json(path, "genotype", max_bytes=schema.GENOTYPE_MAX_BYTES,
                               fix="give a genotype .json as `compress search` writes it")
        return cls.from_dict(doc, str(path))


@dataclass(frozen=True)
class CellsGenotype:
    """One gene per cell (D-DARTS searches every cell's α; thesis 4.1.1): `cells[i]` lists cell i's
    (op, input) pairs, 2 per node as in `Genotype` unless `nodes[i]` gives its node sizes (the
    threshold parsings' variable-input cells), `concat[i]` its concatenated states, and `reduce_at`
    the indices of the reduction cells.

    JSON form: {"cells": [{"pairs": [["sep_conv_3x3", 1], ...], "concat": [2, 3, 4, 5]}, ...],
    "reduce_at": [2, 5]}, a variable-input cell with its node sizes: {"pairs": [...], "concat": [...],
    "nodes": [1, 3, 2, 2]}. A network of as many cells takes cell i's gene for its cell i; a deeper one
    repeats the searched normal cells by Algorithm 2 (`ddarts.expand_cell_indices`), which needs the
    reductions at n//3 and 2n//3 as the networks place them."""

    cells: tuple[tuple[Pair, ...], ...]
    concat: tuple[tuple[int, ...], ...]
    reduce_at: tuple[int, ...]
    nodes: tuple[Nodes | None, ...] | None = None  # per cell; None (or a None entry): 2 pairs per node

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(_pairs(c, f"cells[{i}]") for i, c in enumerate(self.cells)))
        object.__setattr__(self, "concat", tuple(_indices(c, f"cells[{i}].concat") for i, c in enumerate(self.concat)))
        object.__setattr__(self, "reduce_at", _indices(self.reduce_at, "reduce_at"))
        if self.nodes is not None:
            if isinstance(self.nodes, (str, bytes)) or not isinstance(self.nodes, Sequence):
                raise ConfigError(f"genotype nodes: expected one list of node sizes (or null) per cell, got "
                                  f"{self.nodes!r}")
            nodes = tuple(_sizes(n, self.cells[i] if i < len(self.cells) else (), f"cells[{i}].nodes")
                          for i, n in enumerate(self.nodes))
            # canonical: no variable cell → None, so that it equals the genotype written without nodes
            object.__setattr__(self, "nodes", None if all(n is None for n in nodes) else nodes)

    def validate(self) -> "CellsGenotype":
        if not self.cells:
            raise ConfigError("genotype cells is empty; a per-cell genotype lists one gene per cell")
        if len(self.concat) != len(self.cells):
            raise ConfigError(f"genotype has {len(self.cells)} cells but {len(self.concat)} concat lists; give one "
                              f"per cell")
        if self.nodes is not None and len(self.nodes) != len(self.cells):
            raise ConfigError(f"genotype has {len(self.cells)} cells but {len(self.nodes)} node-size entries; give "
                              f"one per cell (None for a cell of 2 pairs per node)")
        for i, (pairs, concat) in enumerate(zip(self.cells, self.concat)):
            _validate_cell(f"cells[{i}]", pairs, concat, f"cells[{i}] concat", self.cell_nodes(i), f"cells[{i}].nodes")
        if list(self.reduce_at) != sorted(set(self.reduce_at)) or any(not 0 <= r < len(self.cells)
                                                                       for r in self.reduce_at):
            raise ConfigError(f"genotype reduce_at {list(self.reduce_at)}: expected increasing cell indices in "
                              f"0..{len(self.cells) - 1}, e.g. {[len(self.cells) // 3, 2 * len(self.cells) // 3]}")
        return self

    def cell_nodes(self, i: int) -> Nodes | None:
        """Cell i's node sizes as given: None for 2 pairs per node."""
        return None if self.nodes is None else self.nodes[i]

    def node_sizes(self, i: int) -> Nodes:
        """The number of pairs of each node of cell i."""
        return node_sizes(self.cells[i], self.cell_nodes(i))

    @property
    def variable(self) -> bool:
        """Whether a cell has a variable number of pairs per node (not the DARTS form)."""
        return self.nodes is not None

    def cell_gene(self, index: int, reduction: bool,
                  layers: int) -> tuple[tuple[Pair, ...], tuple[int, ...], Nodes]:
        """(pairs, concat, node sizes) of cell `index` of a `layers`-cell network (Algorithm 2 when it
        is deeper)."""
        n = len(self.cells)
        if layers == n:
            source = index
        elif layers > n:
            if self.reduce_at != (n // 3, 2 * n // 3):
                raise ConfigError(f"a {n}-cell genotype with reductions at {list(self.reduce_at)} cannot be expanded "
                                  f"to {layers} cells: Algorithm 2 needs them at {[n // 3, 2 * n // 3]}; build "
                                  f"{n} cells (layers: {n})")
            source = expand_cell_indices(n, layers)[index]
        else:
            raise ConfigError(f"the genotype has {n} cells; a network of {layers} cannot use it: set layers to "
                              f"{n} or more (more repeats its normal cells)")
        if (source in self.reduce_at) != reduction:
            kind = "a reduction" if reduction else "a normal"
            raise ConfigError(f"cell {index} of the {layers}-cell network is {kind} cell, but the genotype's cell "
                              f"{source} is not (its reductions: {list(self.reduce_at)}); build a network whose "
                              f"reductions match, e.g. layers: {n} with 2 reductions")
        return self.cells[source], self.concat[source], self.node_sizes(source)

    @property
    def steps(self) -> int:
        return len(self.node_sizes(0))

    def to_dict(self) -> dict[str, Any]:
        cells = []
        for i, (pairs, concat) in enumerate(zip(self.cells, self.concat)):
            cell: dict[str, Any] = {"pairs": [[op, j] for op, j in pairs], "concat": list(concat)}
            if self.cell_nodes(i) is not None:  # only a variable cell: the DARTS form's JSON stays as it was
                cell["nodes"] = list(self.cell_nodes(i))
            cells.append(cell)
        return {"cells": cells, "reduce_at": list(self.reduce_at)}

    @classmethod
    def from_dict(cls, doc: Any, source: str = "genotype") -> "CellsGenotype":
        schema.validate(doc, schema.CELLS_GENOTYPE, source)
        pairs, concats = [cell["pairs"] for cell in doc["cells"]], [cell["concat"] for cell in doc["cells"]]
        nodes = tuple(cell.get("nodes") for cell in doc["cells"])
        try:
            return cls(tuple(pairs), tuple(concats), doc["reduce_at"], nodes).validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str]) -> None:
        Genotype.save(self, path)  # type: ignore[arg-type]  # the same atomic write of to_json


def load(path: str | os.PathLike[str]) -> Genotype | CellsGenotype:
    return Genotype.load(path)


def save(genotype: Genotype | CellsGenotype, path: str | os.PathLike[str]) -> None:
    genotype.save(path)


_C = (2, 3, 4, 5)

# DARTS (first order), CIFAR-10. quark0/darts cnn/genotypes.py (`DARTS_V1`).
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=_C,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=_C,
)
# DARTS (second order), CIFAR-10: the paper's 3.3M-parameter network. quark0/darts cnn/genotypes.py (`DARTS_V2`).
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=_C,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=_C,
)
# PC-DARTS searched on CIFAR-10. yuhuixu1993/PC-DARTS genotypes.py (`PC_DARTS_cifar`, alias `PCDARTS`).
PC_DARTS_cifar = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=_C,
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=_C,
)
# PC-DARTS searched on ImageNet. yuhuixu1993/PC-DARTS genotypes.py (`PC_DARTS_image`).
PC_DARTS_image = Genotype(
    normal=[("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    normal_concat=_C,
    reduce=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
    reduce_concat=_C,
)
# P-DARTS searched on CIFAR-10. chenxin061/pdarts genotypes.py (`PDARTS`).
PDARTS = Genotype(
    normal=[("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
    normal_concat=_C,
    reduce=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    reduce_concat=_C,
)

GENOTYPES: dict[str, Genotype] = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "PC_DARTS_cifar": PC_DARTS_cifar,
    "PC_DARTS_image": PC_DARTS_image,
    "PDARTS": PDARTS,
}

SOURCES: dict[str, str] = {
    "DARTS_V1": "quark0/darts cnn/genotypes.py (DARTS first order, CIFAR-10)",
    "DARTS_V2": "quark0/darts cnn/genotypes.py (DARTS second order, CIFAR-10)",
    "PC_DARTS_cifar": "yuhuixu1993/PC-DARTS genotypes.py (PC-DARTS, CIFAR-10)",
    "PC_DARTS_image": "yuhuixu1993/PC-DARTS genotypes.py (PC-DARTS, ImageNet)",
    "PDARTS": "chenxin061/pdarts genotypes.py (P-DARTS, CIFAR-10)",
}

for _g in GENOTYPES.values():
    _g.validate()


def genotype_name(name_or_path: "str | os.PathLike[str] | Genotype | CellsGenotype") -> str:
    """The label of a genotype argument: its registered name, the file stem of a path, or 'custom'."""
    if isinstance(name_or_path, (Genotype, CellsGenotype)):
        return next((k for k, v in GENOTYPES.items() if v == name_or_path), "custom")
    s = str(name_or_path)
    return s if s in GENOTYPES else Path(s).stem


def get_genotype(name_or_path: "str | os.PathLike[str] | Genotype | CellsGenotype") -> "Genotype | CellsGenotype":
    """A published genotype by name, or one loaded from a .json file (a genotype passes through)."""
    if isinstance(name_or_path, (Genotype, CellsGenotype)):
        return name_or_path.validate()
    s = str(name_or_path)
    if s in GENOTYPES:
        return GENOTYPES[s]
    if s.lower().endswith(".json") or os.sep in s or "/" in s or Path(s).is_file():
        return Genotype.load(s)
    raise ConfigError(f"{unknown_key_message(s, list(GENOTYPES), 'genotype')} (or the path of a genotype .json)")


def expand_cell_indices(searched: int, cells: int) -> list[int]:
    """Algorithm 2: for each of `cells` cells of the expanded network, the index of the searched cell
    it copies. The reductions stay at cells//3 and 2·cells//3 (the searched ones at searched//3 and
    2·searched//3); cell i of a segment copies searched normal cell (i mod k) + first, where k is the
    segment's number of searched normal cells: the thesis's formula, which indexes by the position
    i in the whole network, not in the segment. **Choice:** the thesis loops over i in [0, n]; we
    build exactly `cells` cells (0 ≤ i < cells), and refuse to shrink (cells < searched)."""
    m, m2 = searched // 3, (2 * searched) // 3
    if searched < 5 or m < 1 or m2 - 1 - m < 1 or searched - 1 - m2 < 1:
        raise ConfigError(f"Algorithm 2 needs a searched network with a normal cell before, between and after "
                          f"its two reductions (at {m} and {m2}); {searched} cells has not: search at least 5")
    if cells < searched:
        raise ConfigError(f"Algorithm 2 expands a searched network; {cells} cells is fewer than the {searched} "
                          f"searched: ask for at least {searched}")
    if cells == searched:
        return list(range(cells))
    out = []
    r1, r2 = cells // 3, (2 * cells) // 3
    for i in range(cells):
        if i < r1:
            out.append(i % m)
        elif i == r1:
            out.append(m)
        elif i < r2:
            out.append(i % (m2 - 1 - m) + m + 1)
        elif i == r2:
            out.append(m2)
        else:
            out.append(i % (searched - 1 - m2) + m2 + 1)
    return out
