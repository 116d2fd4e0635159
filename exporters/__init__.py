"""Exporters. Importing this package registers every built-in exporter."""
from compressor.exporters import onnx as _onnx  # noqa: F401
from compressor.exporters import tensorrt as _tensorrt  # noqa: E402,F401
