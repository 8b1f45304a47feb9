"""The export stages, in pipeline order: export to ONNX -> validate against eager -> int8 -> manifest record."""
