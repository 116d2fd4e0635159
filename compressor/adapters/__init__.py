"""Model-structure adapters: passes ask these instead of matching class names (attention.py: attention
layouts; blocks.py: repeated residual blocks; merges.py: layers reading concatenated copies of one
feature's channels, for torch-pruning)."""
from compressor.adapters.attention import (
    ADAPTERS,
    AttentionAdapter,
    FusedQKVAdapter,
    Handle,
    HeadPrunedMultiheadAttention,
    HFQKVAdapter,
    HFQueryKeyValueAdapter,
    TorchMHAAdapter,
    adapter_for,
    adapter_named,
    find_attention,
    register_adapter,
)
from compressor.adapters.blocks import BlockInfo, SkipBlock, find_blocks, remove_blocks, removal_error, run_error
from compressor.adapters.merges import Merge, MergeError, MergePruning, find_merges

__all__ = [
    "ADAPTERS",
    "BlockInfo",
    "SkipBlock",
    "find_blocks",
    "remove_blocks",
    "removal_error",
    "run_error",
    "Merge",
    "MergeError",
    "MergePruning",
    "find_merges",
    "AttentionAdapter",
    "FusedQKVAdapter",
    "Handle",
    "HeadPrunedMultiheadAttention",
    "HFQKVAdapter",
    "HFQueryKeyValueAdapter",
    "TorchMHAAdapter",
    "adapter_for",
    "adapter_named",
    "find_attention",
    "register_adapter",
]
