"""PyTorch definition of S3Gen, checkpoint-compatible with upstream Chatterbox (state-dict names and maths)."""
