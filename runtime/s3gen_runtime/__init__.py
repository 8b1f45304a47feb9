"""s3gen_runtime: torch-free runtime for exported S3Gen artifacts (numpy + onnxruntime/tensorrt)."""

__version__ = "0.1.0"
