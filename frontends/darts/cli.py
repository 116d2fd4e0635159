"""The darts frontend's command-line group, `compress genotype` (mounted by `compress` from the registry of
command groups, like any plugin's)."""
from __future__ import annotations

from pathlib import Path

import click

from compressor.clikit import OneLineGroup, handle_errors
from compressor.errors import ConfigError
from compressor.frontends.darts.distance import (cell_distance, genotype_cell, history_distances, load_history,
                                                 network_distance)
from compressor.frontends.darts.genotypes import Genotype, get_genotype
from compressor.registry import register_command


@register_command("genotype")
@click.group(cls=OneLineGroup)
def genotype() -> None:
    """DARTS genotypes (the discrete result of a search): compare them."""


@genotype.command("distance")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--history", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="A search's alpha_history.json: one line per epoch instead of A and B.")
@click.option("--encoding", type=click.Choice(["edge", "positional"]), default="edge", show_default=True,
              help="edge: a cell is the set of its used edges' op vectors (the thesis's reading); positional: "
                   "every edge's position is in its vector (a true metric: any change shows).")
@handle_errors
def genotype_distance(a: str | None, b: str | None, history: Path | None, encoding: str) -> None:
    """Distance M between genotypes A and B (D-DARTS, seed 001 section 4.1.5), or along a search.

    A and B are published genotype names (DARTS_V1, DARTS_V2, PC_DARTS_cifar, PC_DARTS_image,
    PDARTS) or genotype .json paths, also per-cell (D-DARTS) ones and ones with a variable number of
    (op, input) pairs per node (threshold parsing: an edge holding several ops is one point with
    several op bits). Prints M(A, B), the mean over cell
    positions of the cell distances (for two-cell genotypes: the normal and reduce cells), in
    distance units; 0 means equal.

    Each op weighs its Table 4.1 score / 100; points (binary op vectors) are compared with Algorithm
    3's weighted Hamming distance and cells with the symmetric Hausdorff distance, which measures the
    heaviest change in a cell, not how many edges changed. With the default encoding one changed op
    on one edge gives about 0.14 for that cell (the thesis reports 0.08-0.2 between architectures;
    its exact encoding is unpublished, so compare our values with each other). --encoding positional
    detects every change but its values are near-constant (about 0.005 per changed cell).

    --history PATH prints, for every epoch of a search (runs/<name>/search-<hash>/alpha_history.json),
    the distance of the genotype derived at that epoch to the previous epoch's ('-' for the first)
    and to the first epoch's: the thesis stops searching once it stays flat.
    """
    if history is not None:
        if a is not None or b is not None:
            raise ConfigError("--history PATH measures one search on its own; give it without A and B")
        entries = load_history(history)
        to_previous = history_distances(entries, to="previous", encoding=encoding)
        to_first = history_distances(entries, to="first", encoding=encoding)
        click.echo(f"{'epoch':>5}  {'stage':>5}  {'to previous':>11}  {'to first':>9}")
        for i, (entry, prev, first) in enumerate(zip(entries, to_previous, to_first)):
            prev_text = "-" if prev is None else f"{prev:.6f}"
            epoch, stage = entry.get("epoch", i + 1), entry.get("stage", 0)
            click.echo(f"{epoch!s:>5}  {stage!s:>5}  {prev_text:>11}  {first:>9.6f}")
        return
    if a is None or b is None:
        raise ConfigError("missing A or B; give two genotypes (e.g. compress genotype distance DARTS_V2 PDARTS) "
                          "or --history PATH")
    ga, gb = get_genotype(a), get_genotype(b)
    click.echo(f"distance {a} -> {b}: {network_distance(ga, gb, encoding):.6f} distance units ({encoding} encoding)")
    if isinstance(ga, Genotype) and isinstance(gb, Genotype):
        dn, dr = (cell_distance(genotype_cell(ga, kind), genotype_cell(gb, kind), encoding)
                  for kind in ("normal", "reduce"))
        click.echo(f"  normal {dn:.6f}  reduce {dr:.6f}")
