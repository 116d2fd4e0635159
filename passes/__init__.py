"""Compression passes. Importing this package registers every built-in pass: the ones named below and any
other module of this folder (a new pass is a new file here)."""
import importlib as _importlib
import pkgutil as _pkgutil

from compressor.passes.dario import PruneDario  # noqa: E402
from compressor.passes.distill import Distill  # noqa: E402
from compressor.passes.finetune import Finetune  # noqa: E402
from compressor.passes.fp16 import FP16  # noqa: E402
from compressor.passes.int8 import Int8  # noqa: E402
from compressor.passes.prune_l1 import PruneL1  # noqa: E402

__all__ = ["Distill", "FP16", "Finetune", "Int8", "PruneDario", "PruneL1"]

for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
