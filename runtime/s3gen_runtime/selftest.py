"""The int8 self-test: a quantized graph proves on this CPU, at load, that it still matches fp32.

int8 accuracy depends on the CPU's kernels (see cpu.py): graphs validated on a VNNI machine can give
~11 dB on an AVX2 one. Export stores, beside each int8 graph, one small probe (inputs and the fp32
graph's outputs for them); loading int8 runs the probe through the int8 graph and refuses the
artifacts when any output falls below the floor, naming the SNR, the floor and both CPUs. One call
at a few dozen frames: milliseconds, and no fp32 graph needs to be opened.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .cpu import cpu_info, describe
from .errors import ArtifactError
from .manifest import read_verified_file
from .metrics import snr_db

INPUT_PREFIX = "in."
REFERENCE_PREFIX = "ref."


def write_probe(path, inputs: dict, references: dict) -> Path:
    """One probe file: the graph's inputs and the fp32 graph's outputs for them."""
    arrays = {INPUT_PREFIX + k: np.asarray(v) for k, v in inputs.items()}
    arrays.update({REFERENCE_PREFIX + k: np.asarray(v) for k, v in references.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:   # np.savez on a name would append '.npz'
        np.savez(f, **arrays)
    return path


def read_probe(source) -> tuple[dict, dict]:
    """(inputs, references) from a probe file's path or an open binary file."""
    path = source if hasattr(source, "read") else Path(source)
    with np.load(path, allow_pickle=False) as data:
        inputs = {k[len(INPUT_PREFIX):]: data[k] for k in data.files if k.startswith(INPUT_PREFIX)}
        refs = {k[len(REFERENCE_PREFIX):]: data[k] for k in data.files if k.startswith(REFERENCE_PREFIX)}
    if not inputs or not refs:
        raise ArtifactError(f"int8 self-test probe {getattr(source, 'name', source)} holds no inputs or no references")
    return inputs, refs


def probe_snrs(run, inputs: dict, refs: dict) -> dict[str, float]:
    """SNR of each output of `run(feeds, output_names) -> {name: array}` against the references."""
    got = run(inputs, list(refs))
    return {name: _probe_snr(got[name], ref) for name, ref in refs.items()}


def _probe_snr(got, ref) -> float:
    """A wrong shape or a NaN is a failed self-test, not an error of its own."""
    got = np.asarray(got)
    if got.shape != np.shape(ref) or not np.all(np.isfinite(got)):
        return -math.inf
    return snr_db(got, ref)


def check_snrs(component: str, snrs: dict[str, float], floors_db: dict[str, float], validated_on: dict | None,
               here: dict | None = None) -> None:
    """ArtifactError naming every output below its floor, the CPU the graph was validated on and this one."""
    low = {k: v for k, v in snrs.items() if not v >= floors_db[k]}
    if not low:
        return
    here = here or cpu_info()
    worst = ", ".join(f"{k} {v:.1f} dB (floor {floors_db[k]:g} dB)" for k, v in sorted(low.items()))
    hint = ""
    if here.get("int8_dot_product") == "saturating-16bit":
        hint = (" This CPU has no VNNI: ONNX Runtime's u8 x s8 kernels saturate 16-bit sums on it; "
                "re-export int8 here (s3gen-aot export --int8 validates it on this CPU) or use precision fp32.")
    origin = describe(validated_on) if validated_on else "an unrecorded CPU"
    raise ArtifactError(f"{component}: int8 self-test failed on this CPU: {worst} against fp32 "
                        f"(validated on {origin}; this CPU: {describe(here)}).{hint or ' Use precision fp32.'}")


def selftest_runner(folder, runner, here: dict | None = None) -> dict[str, float]:
    """Run the recorded probe of the runner's component (an int8 graph as opened here) through it and
    refuse it below the floors; returns the SNRs measured on this CPU."""
    name, record = runner.name, runner.component.selftest
    if record is None:
        raise ArtifactError(f"{name}: an int8 graph without a self-test record; re-export with --int8")
    data = read_verified_file(folder, f"components.{name}.selftest", record.file, record.sha256)
    inputs, refs = read_probe(io.BytesIO(data))
    snrs = probe_snrs(runner.run, inputs, refs)
    check_snrs(name, snrs, record.min_snr_db, record.cpu, here)
    return snrs


__all__ = ["check_snrs", "probe_snrs", "read_probe", "selftest_runner", "write_probe"]
