"""The DARTS frontend: search-space ops, genotypes as data, networks, and lowering to the IR.

    from compressor.frontends import darts
    ir = darts.lower("PC_DARTS_cifar", task="segmentation", in_channels=2, init_channels=16, cells=8)
"""
from compressor.frontends.darts.frontend import Darts, DartsOptions, lower, lower_genotype
from compressor.frontends.darts.genotypes import GENOTYPES, SOURCES, Genotype, get_genotype
from compressor.frontends.darts.networks import Cell, NetworkCIFAR, NetworkSegmentation
from compressor.frontends.darts.ops import OPS, PRIMITIVES
from compressor.frontends.darts.search import SearchOptions, SearchResult, run_search

__all__ = ["Cell", "Darts", "DartsOptions", "GENOTYPES", "Genotype", "NetworkCIFAR", "NetworkSegmentation", "OPS",
           "PRIMITIVES", "SOURCES", "SearchOptions", "SearchResult", "get_genotype", "lower", "lower_genotype",
           "run_search"]
