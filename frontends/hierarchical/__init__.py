"""Seed 002's hierarchical search space as a frontend: genotypes as data, blocks built from their configuration,
the eager network, and lowering to the IR. Importing this package registers the `hierarchical` frontend.

    from compressor.frontends import hierarchical
    ir = hierarchical.lower("mobile-small", task="classification", in_channels=3, input_size=32, num_classes=10)
    hierarchical.block_configs(hierarchical.GENOTYPES["mobile-small"], (3, 32, 32))  # one BlockConfig per block
"""
from compressor.frontends.hierarchical.blocks import (BlockConfig, block_configs, block_macs, make_block,
                                                      make_divisible, scaled_channels)
from compressor.frontends.hierarchical.frontend import (Hierarchical, HierarchicalOptions, lower, lower_genotype,
                                                        narrower)
from compressor.frontends.hierarchical.genotypes import (GENOTYPES, OPS, BlockGene, HierGenotype, StageGene,
                                                         get_genotype)
from compressor.frontends.hierarchical.networks import HierarchicalNet, genotype_macs

__all__ = ["BlockConfig", "BlockGene", "GENOTYPES", "Hierarchical", "HierarchicalNet", "HierarchicalOptions",
           "HierGenotype", "OPS", "StageGene", "block_configs", "block_macs", "genotype_macs", "get_genotype", "lower",
           "lower_genotype", "make_block", "make_divisible", "narrower", "scaled_channels"]
