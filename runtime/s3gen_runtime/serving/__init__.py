"""Serving the runtime on NVIDIA Triton through PyTriton (`pip install 's3gen-aot[serve]'`).

protocol.py (the wire contract, pure), model.py (the inference callable), environment.py (the wheel's
traps), server.py (`s3gen-aot serve`), client.py (a small KServe v2 HTTP client), loadtest.py.
Nothing here imports PyTriton or tritonclient at import time.
"""
