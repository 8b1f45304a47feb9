"""Engine validation: the engine against ONNX Runtime fp32 on random inputs, with per-output tolerances.

`validate_engine` runs at the bucket's min, opt and max shapes; `validate_built` drives it through
the runtime's TensorRTRunner (so the record, sha256 and compatibility checks run too). A miss
fails the build.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3gen_runtime.constants import SPEECH_VOCAB_SIZE
from s3gen_runtime.errors import InputError, S3GenError
from s3gen_runtime.manifest import Engine, Tolerance

from .profiles import check_precision, validation_shapes


# Per output, the SNR floors (dB) of reduced-precision engines against ONNX Runtime fp32. fp32
# engines use the graph's own export tolerances (recorded in the manifest). 'mask' is exact
# whatever the precision (0/1 survives fp16 and bf16).
LOW_PRECISION_SNR_DB = {
    "fp16": {"velocity": 30.0, "mu": 30.0, "spks": 40.0, "cond": 40.0, "wav": 25.0, "f0": 30.0},
    "bf16": {"velocity": 20.0, "mu": 20.0, "spks": 30.0, "cond": 30.0, "wav": 15.0, "f0": 20.0},
}
DEFAULT_LOW_SNR_DB = {"fp16": 30.0, "bf16": 20.0}
EXACT_OUTPUTS = ("mask",)


def engine_tolerances(component, precision: str, overrides: dict | None = None) -> dict[str, Tolerance]:
    """Output name -> Tolerance for an engine of `precision` (overrides: name -> Tolerance)."""
    check_precision(precision)
    recorded = dict(component.validation.tolerance)
    out = {}
    for spec in component.outputs:
        name = spec.name
        if precision == "fp32":
            out[name] = recorded.get(name, Tolerance(1e-3, 1e-3))
        elif name in EXACT_OUTPUTS:
            out[name] = Tolerance(0.0, 0.0)
        else:
            floor = LOW_PRECISION_SNR_DB[precision].get(name, DEFAULT_LOW_SNR_DB[precision])
            out[name] = Tolerance(0.0, 0.0, floor)
    for name, tol in (overrides or {}).items():
        if name not in out:
            raise InputError(f"tolerance override for unknown output {name!r}; outputs: {sorted(out)}")
        out[name] = tol
    return out


# lengths input -> (the input whose axis it measures, that axis)
LENGTH_INPUTS = {"token_lengths": ("tokens", 1), "prompt_lengths": ("prompt_tokens", 1),
                 "prompt_feat_lengths": ("prompt_feat", 1), "mel_lengths": ("mel", 2)}


def _row_lengths(rng, batch: int, size: int) -> np.ndarray:
    """Row 0 uses the whole axis, the others a random part of it (padding must be inert)."""
    lens = rng.integers(1, size + 1, batch)
    lens[0] = size
    return lens.astype(np.int64)


def random_feeds(component, shapes: dict[str, tuple], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs a request could have, at the given shapes: ids in the vocabulary, lengths within the
    padded axes (row 0 full), a 0/1 mask, t in [0, 0.9], r > t, cfg_rate 0.7, sine phase with the
    fundamental at 0, log-mel-like mels, gaussian noise elsewhere."""
    feeds: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    batch = None
    for spec in component.inputs:
        batch = shapes[spec.name][0] if batch is None else batch
    for name, (target, axis) in LENGTH_INPUTS.items():
        if name in shapes and target in shapes:
            lengths[name] = _row_lengths(rng, batch, shapes[target][axis])
    for spec in component.inputs:
        name, shape, dtype = spec.name, tuple(shapes[spec.name]), np.dtype(spec.dtype)
        if name in lengths:
            a = lengths[name]
        elif dtype.kind in "iu":
            a = rng.integers(0, SPEECH_VOCAB_SIZE, shape)
        elif name == "mask":
            lens = _row_lengths(rng, shape[0], shape[-1])
            a = (np.arange(shape[-1])[None, :] < lens[:, None]).astype(np.float32).reshape(shape)
        elif name == "t":
            a = rng.uniform(0.0, 0.9, shape)
        elif name == "r":
            a = np.minimum(feeds["t"] + rng.uniform(0.05, 0.5, shape), 1.0) if "t" in feeds else rng.uniform(0.1, 1, shape)
        elif name == "cfg_rate":
            a = np.full(shape, 0.7)
        elif name == "sine_phase":
            a = rng.uniform(-np.pi, np.pi, shape)
            a[:, 0] = 0.0
        elif name in ("mel", "prompt_feat"):
            a = rng.standard_normal(shape) * 2.0 - 5.0
        else:
            a = rng.standard_normal(shape)
        feeds[name] = np.ascontiguousarray(np.asarray(a).astype(dtype))
    return feeds


def compare_outputs(got: dict, ref: dict, tolerances: dict) -> dict:
    """One case's errors per output and the problems (shape, NaN/Inf, tolerance misses)."""
    from ..stages.validate import CaseResult, compare
    result = CaseResult("case")
    for name, tol in tolerances.items():
        if name not in got:
            result.problems.append(f"{name}: missing from the engine's outputs")
            continue
        compare(name, np.asarray(got[name]), np.asarray(ref[name]), tol, result)
    return {"max_abs": result.max_abs, "max_rel": result.max_rel, "snr_db": result.snr_db,
            "problems": list(result.problems)}


def validate_engine(run, reference, component, cases: dict[str, dict[str, tuple]], precision: str, *,
                    tolerances: dict | None = None, seed: int = 0) -> dict:
    """Run `run(feeds)` (the engine) and `reference(feeds)` (ONNX Runtime fp32) on random inputs at
    each case's shapes; returns the manifest validation record ({'passed', 'cases', 'tolerance'}).

    Both callables take name -> array and return name -> array.
    """
    tols = engine_tolerances(component, precision, tolerances)
    record_cases = []
    for k, (case, shapes) in enumerate(cases.items()):
        feeds = random_feeds(component, shapes, np.random.default_rng(seed + k))
        try:
            got = run(dict(feeds))
        except S3GenError as e:
            record_cases.append({"name": case, "shapes": {n: list(s) for n, s in shapes.items()},
                                 "max_abs": {}, "max_rel": {}, "snr_db": {}, "problems": [f"engine failed: {e}"]})
            continue
        errors = compare_outputs(got, reference(dict(feeds)), tols)
        record_cases.append({"name": case, "shapes": {n: list(s) for n, s in shapes.items()}, **errors})
    return {"passed": all(not c["problems"] for c in record_cases), "cases": record_cases,
            "tolerance": {n: t.to_dict() for n, t in tols.items()}}


def validation_summary(record: dict) -> str:
    """'min 41.2 dB, opt 40.8 dB, max 39.9 dB' (worst SNR per case) or the first problem."""
    if record.get("error"):
        return f"FAIL: {record['error']}"
    parts = []
    for case in record["cases"]:
        if case["problems"]:
            return f"FAIL {case['name']}: {case['problems'][0]}"
        snr = [v for v in case["snr_db"].values()]
        parts.append(f"{case['name']} {min(snr):.1f} dB" if snr else case["name"])
    return ", ".join(parts)


def ort_reference(onnx_path: Path, output_names: list[str]):
    """A callable running the fp32 ONNX graph under ONNX Runtime (CUDA without TF32 when available)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=[
                ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"])
        except Exception:
            session = None
    if session is None:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(feeds):
        return dict(zip(output_names, session.run(output_names, feeds)))

    run.providers = session.get_providers()
    return run


def validate_built(folder, record, component, bucket, prev, precision, batches, reference, tolerances, seed,
                   device) -> dict:
    """Validate an engine through the runtime's own runner (record, sha256 and GPU checks included)."""
    from s3gen_runtime.backends.tensorrt.runner import TensorRTRunner
    engine = Engine.from_dict(dict(record, validation=None), "engine")
    cases = validation_shapes(component, bucket, prev, *batches)
    runner = TensorRTRunner(folder, engine, component, pool_size=1, device=device)
    try:
        return validate_engine(runner.run, reference, component, cases, precision, tolerances=tolerances, seed=seed)
    finally:
        runner.close()
