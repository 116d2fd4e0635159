"""Model-structure adapters: passes ask these instead of matching class names (see attention.py)."""
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

__all__ = [
    "ADAPTERS",
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
