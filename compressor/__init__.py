"""compressor: a compiler for model compression."""
from compressor.context import PassContext
from compressor.errors import CompressError, ConfigError, DataError, ExportError, FrontendError, PassError
from compressor.ir import InputSpec, ModelIR, PassRecord, TaskSpec

__version__ = "0.1.0"

__all__ = [
    "CompressError", "ConfigError", "DataError", "ExportError", "FrontendError", "PassError",
    "InputSpec", "ModelIR", "PassContext", "PassRecord", "TaskSpec", "__version__",
]
