"""Exporters. Importing this package registers every built-in exporter."""
from compressor.exporters import onnx as _onnx  # noqa: F401
