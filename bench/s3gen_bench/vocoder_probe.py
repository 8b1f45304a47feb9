"""Vocoder probes: which form of each HiFT piece ONNX Runtime runs fastest, and at what error.

- snake: Snake with ORT's Sin against a vectorisable form (range reduction to f in [-1/2, 1/2], then
  sin^2(pi f) as f^2 times a polynomial in f^2), alone in a graph, per ResBlock shape: ns per element
  (ORT profile, kernel time) and max abs error against float64.
- graphs: the vocoder graph as shipped (1 x k 2-D convs), with its convs back in 1-D, and with the
  polynomial Snake: time per op kind and per conv shape, and the wav against the eager model.
- int8: static (QDQ -> QLinearConv) int8 of one group of vocoder convs at a time: wav SNR against the
  fp32 graph and the graph time.
Single-threaded by default: the kernels compared, not the machine's spare cores.
"""
from __future__ import annotations

import collections
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from s3gen_runtime.constants import MEL_BINS, N_HARMONICS, SAMPLES_PER_FRAME

# ResBlock activations of HiFT at 10 s of audio (500 mel frames): channels, samples
SNAKE_SHAPES = ((256, 4000), (128, 20000), (64, 60000))
INT8_GROUPS = {"resblocks.0-2 (256 ch)": r"^hift\.resblocks\.[0-2]\.", "resblocks.3-5 (128 ch)": r"^hift\.resblocks\.[3-5]\.",
               "resblocks.6-8 (64 ch)": r"^hift\.resblocks\.[6-8]\.", "source_resblocks": r"^hift\.source_resblocks\.",
               "f0_predictor": r"^hift\.f0_predictor\."}


def sin2_poly(degree: int) -> np.ndarray:
    """Coefficients c (low order first) with sin^2(pi f) ~= f^2 * sum c_i (f^2)^i on f in [-1/2, 1/2]
    (a Chebyshev-node least-squares fit: within a few ulps of the minimax one at these degrees)."""
    n = 4096
    u = (np.cos(np.pi * (np.arange(n) + 0.5) / n) + 1.0) / 8.0      # f^2 in (0, 1/4)
    target = np.sin(np.pi * np.sqrt(u)) ** 2 / u
    return np.polynomial.chebyshev.Chebyshev.fit(u, target, degree).convert(kind=np.polynomial.Polynomial).coef


def snake_modules(degree: int):
    """(sin form, polynomial form) as torch modules of a per-channel alpha (1, C, 1)."""
    import torch

    class SinSnake(torch.nn.Module):
        def __init__(self, alpha):
            super().__init__()
            self.alpha = alpha

        def forward(self, x):
            s = torch.sin(x * self.alpha)
            return x + (1.0 / (self.alpha + 1e-9)) * (s * s)

    class PolySnake(torch.nn.Module):
        """Whole turns dropped exactly (y - round(y) is exact below 2^23); 1/alpha folded into the coefficients."""

        def __init__(self, alpha):
            super().__init__()
            self.scale = alpha / math.pi
            inv = 1.0 / (alpha + 1e-9)
            self.coeffs = [float(c) * inv for c in sin2_poly(degree)]

        def forward(self, x):
            y = x * self.scale
            f = y - torch.round(y)
            u = f * f
            p = self.coeffs[-1]
            for c in reversed(self.coeffs[:-1]):
                p = p * u + c
            return x + u * p

    return SinSnake, PolySnake


def profile(model_bytes_or_path, feeds: dict, threads: int = 1, repeats: int = 3):
    """(outputs, ms per run by op kind, ms per run by (op, weight shape, input length)) from ORT's profiler."""
    import onnxruntime as ort

    from s3gen_runtime.backends.onnxruntime import session_options

    options = session_options(ort, threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"vocoder_probe_{os.getpid()}")
    session = ort.InferenceSession(model_bytes_or_path, options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)            # warm-up, left out below
    for _ in range(repeats):
        session.run(None, feeds)
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    os.remove(path)
    by_op, by_conv = collections.defaultdict(float), collections.defaultdict(float)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"] if runs else -1
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first_end:
            continue
        op, ms = e["args"]["op_name"], e["dur"] / 1e3 / repeats
        by_op[op] += ms
        if "Conv" in op or op.startswith("Reorder"):
            shapes = [list(s.values())[0] for s in e["args"].get("input_type_shape", [])]
            weight = tuple(shapes[1]) if len(shapes) > 1 and not op.startswith("Reorder") else ()
            by_conv[(op, weight, shapes[0][1], shapes[0][-1])] += ms
    return outputs, dict(by_op), dict(by_conv)


def probe_snake(degrees=(4, 5, 6), shapes=SNAKE_SHAPES, threads: int = 1, seed: int = 0) -> list[dict]:
    import io

    import torch

    rows = []
    gen = torch.Generator().manual_seed(seed)
    for channels, samples in shapes:
        alpha = torch.rand(1, channels, 1, generator=gen) * 1.5 + 0.1
        x = torch.randn(1, channels, samples, generator=gen) * 3.0
        exact = (x.double() + torch.sin(x.double() * alpha.double()) ** 2 / alpha.double()).numpy()
        forms = {"sin": snake_modules(4)[0](alpha)}
        forms.update({f"poly{d}": snake_modules(d)[1](alpha) for d in degrees})
        for name, module in forms.items():
            buffer = io.BytesIO()
            torch.onnx.export(module, (x,), buffer, input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
            (y,), by_op, _ = profile(buffer.getvalue(), {"x": x.numpy()}, threads)
            rows.append({"form": name, "channels": channels, "samples": samples, "threads": threads,
                         "ns_per_element": sum(by_op.values()) * 1e6 / x.numel(), "ops": by_op,
                         "max_abs_error": float(np.abs(y - exact).max())})
    return rows


def vocoder_feeds(frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"mel": (rng.standard_normal((1, MEL_BINS, frames)) * 2.0 - 5.0).astype(np.float32),
            "mel_lengths": np.array([frames], np.int64),
            "sine_phase": rng.uniform(-np.pi, np.pi, (1, N_HARMONICS, 1)).astype(np.float32),
            "sine_noise": rng.standard_normal((1, N_HARMONICS, frames * SAMPLES_PER_FRAME)).astype(np.float32)}


def _variant_model(checkpoint, variant: str, degree: int):
    """The prepared model as exported ('2d'), with its convs back in 1-D ('1d'), or with polynomial Snakes."""
    from torch import nn

    from s3gen_export.model.s3gen import load_s3gen
    from s3gen_export.model.vocoder import Snake
    from s3gen_export.rewrites.conv_layout import Conv1dAs2d
    from s3gen_export.rewrites.transforms import prepare_for_export

    model = prepare_for_export(load_s3gen(checkpoint))
    if variant == "1d":
        for m in model.mel2wav.modules():
            if type(m) is Conv1dAs2d:
                m.__class__ = nn.Conv1d
    if variant.startswith("poly"):
        poly = snake_modules(degree)[1]
        for parent in list(model.mel2wav.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, Snake):
                    setattr(parent, name, poly(child.alpha.detach().view(1, -1, 1)))
    return model


def probe_graphs(checkpoint, folder, frames: int = 500, variants=("2d", "1d", "poly5"), threads: int = 1) -> dict:
    """Export the vocoder graph per variant into `folder`, profile each and compare its wav with eager
    (the unmodified prepared model)."""
    import torch

    from s3gen_export.components.vocoder import SPEC
    from s3gen_export.stages.onnx_export import export_component

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    feeds = vocoder_feeds(frames)
    eager_model = _variant_model(checkpoint, "2d", 5)
    with torch.inference_mode():
        eager = SPEC.build_module(eager_model)(*(torch.from_numpy(feeds[n]) for n in SPEC.input_names))[0].numpy()
    out = {"frames": frames, "threads": threads, "variants": {}}
    for variant in variants:
        degree = int(variant[4:]) if variant.startswith("poly") else 5
        path = folder / f"vocoder_{variant}.onnx"
        if not path.is_file():
            export_component(_variant_model(checkpoint, variant, degree), SPEC, path)
        (wav, _), by_op, by_conv = profile(str(path), feeds, threads)
        out["variants"][variant] = {"ms": sum(by_op.values()), "ops": by_op,
                                    "convs": [[*map(str, k), v] for k, v in sorted(by_conv.items(), key=str)],
                                    "wav_max_abs_vs_eager": float(np.abs(wav - eager).max())}
    return out


def probe_int8(fp32_graph, folder, frames: int = 500, groups=INT8_GROUPS, threads: int = 1) -> list[dict]:
    """Static int8 (per-channel s8 weights, 7 bits as the other int8 graphs; u8 activations calibrated on
    two short requests) of one conv group at a time: wav SNR against fp32 and the graph's time."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from s3gen_export.stages.onnx_scopes import module_path
    from s3gen_runtime.metrics import snr_db

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([vocoder_feeds(100, 1), vocoder_feeds(150, 2)])

        def get_next(self):
            return next(self.feeds, None)

    feeds = vocoder_feeds(frames)
    (ref, _), base_ops, _ = profile(str(fp32_graph), feeds, threads)
    proto = onnx.load(str(fp32_graph), load_external_data=False)
    rows = [{"group": "none (fp32)", "convs": 0, "ms": sum(base_ops.values()), "wav_snr_db": math.inf}]
    for group, pattern in groups.items():
        nodes = [n.name for n in proto.graph.node if n.op_type == "Conv" and re.search(pattern, module_path(n) or "")]
        dst = Path(folder) / f"vocoder_int8_{re.sub(r'[^a-z0-9]+', '_', group)}.onnx"
        quantize_static(str(fp32_graph), str(dst), Calibration(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        nodes_to_quantize=nodes, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=True, per_channel=True)
        (wav, _), ops, _ = profile(str(dst), feeds, threads)
        rows.append({"group": group, "convs": len(nodes), "ms": sum(ops.values()), "wav_snr_db": snr_db(wav, ref)})
    return rows


__all__ = ["probe_graphs", "probe_int8", "probe_snake", "sin2_poly", "snake_modules", "vocoder_feeds"]
