"""s3gen_export: load a Chatterbox S3Gen checkpoint, export ONNX graphs and TensorRT engines (model -> rewrites -> components -> stages -> engines)."""

__version__ = "0.1.0"
