"""s3gen_export: load a Chatterbox S3Gen checkpoint, export ONNX graphs and TensorRT engines."""

__version__ = "0.1.0"
