"""Section d: resident weights (bytes of each graph's ONNX initializers, by precision) and the peak RSS
of each configuration's own process (measured in section a: after loading, and over all its runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Progress



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
    from s3gen_runtime.errors import ArtifactError
    from s3gen_runtime.manifest import load_manifest
    from s3gen_runtime.pipeline import LAZY_ROLES, select_components

    manifest = load_manifest(artifacts, verify=False)
    graphs = {name: {**initializer_bytes(Path(artifacts) / c.file), "precision": c.precision}
              for name, c in manifest.components.items()}
    precisions = {}
    for precision in ("fp32", "int8"):
        try:   # the graphs a runtime opens at load (the lazily opened ones are not resident until used)
            chosen = {role: name for role, name in select_components(manifest, precision).items()
                      if role not in LAZY_ROLES[manifest.checkpoint.variant]}
        except ArtifactError:   # no int8 graphs in these artifacts
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


def memory_targets(speed: dict | None) -> list[dict]:
    """Peak RSS against eager's at every length (fp32 <= 1x, int8 <= 0.6x), and RSS after the longest
    request back within 20% of RSS after load."""
    if not speed:
        return []
    rows = {(r["config"], r["audio_seconds"]): r for r in speed["table"]}
    lengths = sorted({s for _, s in rows})
    out = []
    for config, limit in (("ort-fp32", 1.0), ("ort-int8", 0.6)):
        ratios = [(s, rows[(config, s)]["peak_rss_mb"] / rows[("eager", s)]["peak_rss_mb"]) for s in lengths
                  if (config, s) in rows and ("eager", s) in rows and rows[(config, s)].get("peak_rss_mb")
                  and rows[("eager", s)].get("peak_rss_mb")]
        if not ratios:
            continue
        worst = max(ratios, key=lambda x: x[1])
        out.append({"target": f"peak RSS {config} <= {limit:g}x eager at every length",
                    "measured": ", ".join(f"{r:.2f}x @ {s:g} s" for s, r in ratios), "met": worst[1] <= limit,
                    "detail": "" if worst[1] <= limit else f"{worst[1]:.2f}x at {worst[0]:g} s"})
    for config in ("ort-fp32", "ort-int8"):
        status = speed["configs"].get(config, {})
        longest = max((s for c, s in rows if c == config and rows[(c, s)].get("rss_after_run_mb")), default=None)
        if longest is None or not status.get("rss_after_load_mb"):
            continue
        ratio = rows[(config, longest)]["rss_after_run_mb"] / status["rss_after_load_mb"]
        out.append({"target": f"{config}: RSS after the {longest:g} s request <= 1.2x RSS after load",
                    "measured": f"{rows[(config, longest)]['rss_after_run_mb']:.0f} MiB vs {status['rss_after_load_mb']:.0f} "
                                f"MiB after load ({ratio:.2f}x)", "met": ratio <= 1.2, "detail": ""})
    return out
