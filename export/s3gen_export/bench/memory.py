"""Section d: resident weights (bytes of each graph's ONNX initializers, by precision) and the peak RSS
of each configuration's own process (measured in section a: after loading, and over all its runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Progress

# the graphs S3GenRuntime opens for each precision (pipeline.select_components)
ROLES = ("encoder", "estimator_cfg", "estimator", "vocoder")


def initializer_bytes(path: Path) -> dict:
    """Total bytes of the graph's initializers, split by element type."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = onnx.load(str(path), load_external_data=False)
    by_type: dict[str, int] = {}
    for init in proto.graph.initializer:
        dtype = np.dtype(tensor_dtype_to_np_dtype(init.data_type))
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        by_type[dtype.name] = by_type.get(dtype.name, 0) + n * dtype.itemsize
    return {"bytes": sum(by_type.values()), "by_dtype": by_type, "file_bytes": Path(path).stat().st_size}


def run_memory(artifacts: Path, speed: dict | None, progress: Progress = print) -> dict:
    from s3gen_runtime.manifest import load_manifest

    manifest = load_manifest(artifacts, verify=False)
    graphs = {name: {**initializer_bytes(Path(artifacts) / c.file), "precision": c.precision}
              for name, c in manifest.components.items()}
    precisions = {}
    for precision in ("fp32", "int8"):
        chosen = {}
        for role in ROLES:
            name = role + "_int8" if precision == "int8" and role + "_int8" in graphs else role
            if name in graphs:
                chosen[role] = name
        if precision == "int8" and not any(n.endswith("_int8") for n in chosen.values()):
            continue
        total = sum(graphs[n]["bytes"] for n in chosen.values())
        precisions[precision] = {"graphs": chosen, "weights_mb": total / 2 ** 20}
        progress(f"  {precision}: weights {total / 2 ** 20:.0f} MiB in " + ", ".join(
            f"{r} {graphs[n]['bytes'] / 2 ** 20:.0f}" for r, n in chosen.items()))
    processes = {}
    for name, s in ((speed or {}).get("configs") or {}).items():
        if s.get("status") == "ok":
            processes[name] = {"rss_after_load_mb": s.get("rss_after_load_mb"), "peak_rss_mb": s.get("peak_rss_mb")}
            progress(f"  {name}: RSS after load {s.get('rss_after_load_mb', float('nan')):.0f} MiB, "
                     f"peak over its runs {s.get('peak_rss_mb') or float('nan'):.0f} MiB")
    longest = max((speed or {}).get("settings", {}).get("lengths_s", [0]) or [0])
    return {"graphs": graphs, "precisions": precisions, "processes": processes,
            "note": f"peak RSS: VmHWM of each configuration's own process (/proc/self/status; not ru_maxrss, "
                    f"which Linux carries over from the parent across fork and exec), over its warm-up and every "
                    f"run up to {longest} s of audio (section a)"}
