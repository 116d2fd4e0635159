"""compressor: a compiler for model compression.

The top-level names are imported lazily (PEP 562): `import compressor.bench` and
`compressor.evaluate.latency` must work on an edge device that has numpy and onnxruntime but no
torch, and `compressor.ir` / `compressor.context` import torch. `from compressor import ModelIR`
still works: the first access imports the defining module.
"""
from __future__ import annotations

import importlib
from typing import Any

from compressor.errors import CompressError, ConfigError, DataError, ExportError, FrontendError, PassError

# No `if TYPE_CHECKING:` imports of the lazy names: compressor.ir imports this package (`from compressor import
# schema`), so they would close an import cycle. Type checkers read the defining modules directly
# (`from compressor.ir import ModelIR`).
__version__ = "0.1.0"

__all__ = [
    "CompressError", "ConfigError", "DataError", "ExportError", "FrontendError", "PassError",
    "InputSpec", "ModelIR", "PassContext", "PassRecord", "TaskSpec", "__version__",
]

_LAZY = {
    "PassContext": "compressor.context",
    "InputSpec": "compressor.ir",
    "ModelIR": "compressor.ir",
    "PassRecord": "compressor.ir",
    "TaskSpec": "compressor.ir",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
