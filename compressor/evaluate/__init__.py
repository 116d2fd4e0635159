"""Measurements taken after every stage: task metrics, model statistics, latency.

Submodules are imported on demand and nothing is re-exported here, so that
`compressor.evaluate.latency` imports without torch (edge devices have only numpy and onnxruntime):

- `compressor.evaluate.metrics`: `TaskMetrics`, `evaluate_module`, `evaluate_onnx` (torch, torchmetrics)
- `compressor.evaluate.stats`: `count_params`, `count_macs`, `module_table`, `file_bytes` (torch)
- `compressor.evaluate.latency`: `time_callable`, `latency_onnxruntime`, `latency_torch`, `latency_engine`
  (numpy; torch and onnxruntime imported inside functions), and `LatencyStats`, `summarize` re-exported
- `compressor.evaluate.timing`: `LatencyStats`, `summarize`, the machine description (numpy; also what
  `trt_runtime` reports through); `compressor.evaluate.runtime`: the torch runtime of an IR stage
- `compressor.evaluate.pareto`: Pareto fronts, non-dominated sorting, crowding, hypervolume (numpy)
- `compressor.evaluate.options`: the pipeline's `evaluate:` block (`EvaluateOptions`, `LatencyOptions`)
"""
