"""The DARTS frontend: search-space ops, genotypes as data, networks, and lowering to the IR.

Importing this package registers the frontend, the built-in search algorithms (`algorithms.py`, `hpe.py`,
`ddarts.py`, `evolution.py`; their base and options are in `search_base.py`) and the `compress genotype` command
group (`cli.py`).

    from compressor.frontends import darts
    ir = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, init_channels=16, cells=8)
"""
# the built-in search algorithms and the `compress genotype` command group: importing them registers them
from compressor.frontends.darts import algorithms, cli, ddarts, evolution, hpe  # noqa: F401
from compressor.frontends.darts.frontend import Darts, DartsOptions, lower, lower_genotype
from compressor.frontends.darts.genotypes import GENOTYPES, SOURCES, Genotype, get_genotype
from compressor.frontends.darts.networks import Cell, NetworkCIFAR, NetworkSegmentation
from compressor.frontends.darts.ops import OPS, PRIMITIVES
from compressor.frontends.darts.search import SearchOptions, SearchResult, run_search

__all__ = ["Cell", "Darts", "DartsOptions", "GENOTYPES", "Genotype", "NetworkCIFAR", "NetworkSegmentation", "OPS",
           "PRIMITIVES", "SOURCES", "SearchOptions", "SearchResult", "get_genotype", "lower", "lower_genotype",
           "run_search"]
