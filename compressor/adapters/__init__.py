"""Model-structure adapters: passes ask these instead of matching class names (attention.py: attention
layouts; blocks.py: repeated residual blocks)."""
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
from compressor.adapters.blocks import BlockInfo, SkipBlock, find_blocks, remove_blocks

__all__ = [
    "ADAPTERS",
    "BlockInfo",
    "SkipBlock",
    "find_blocks",
    "remove_blocks",
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
