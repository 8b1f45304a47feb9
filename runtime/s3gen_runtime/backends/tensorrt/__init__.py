"""TensorRT backend: one engine per graph and shape bucket, checked before it is deserialised.

One module per concern (import from them directly):

- `compat`: is TensorRT installed (`import_tensorrt`), and was this engine built for this machine:
  file sha256, the ONNX graph it came from, TensorRT version and compute capability (pure);
- `selection`: which engine serves a call: bucket sizing from input shapes, `select_engine`,
  profile limits (pure);
- `contexts`: `ExecutionSlot`, one execution context with its stream, buffers and CUDA graph;
- `runner`: `TensorRTRunner`, one engine behind a pool of execution contexts;
- `bucketed`: `BucketedTensorRTRunner` (every bucket of one graph) and `open_tensorrt`, the
  registry factory.

`tensorrt` and the CUDA bindings are imported inside functions: importing any of these modules needs
neither, so the pure parts run and are tested anywhere.
"""
