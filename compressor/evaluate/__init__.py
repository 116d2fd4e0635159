"""Measurements taken after every stage: task metrics, model statistics, latency.

Submodules are imported on demand and nothing is re-exported here, so that
`compressor.evaluate.latency` imports without torch (edge devices have only numpy and onnxruntime):

- `compressor.evaluate.metrics`: `TaskMetrics`, `evaluate_module`, `evaluate_onnx` (torch, torchmetrics)
- `compressor.evaluate.stats`: `count_params`, `count_macs`, `module_table`, `file_bytes` (torch)
- `compressor.evaluate.latency`: `LatencyStats`, `summarize`, `time_callable`,
  `latency_onnxruntime`, `latency_torch` (numpy; torch and onnxruntime imported inside functions)
"""
