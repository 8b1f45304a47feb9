"""Helpers shared by the runtime's pipeline tests (test_pipeline.py, test_stages.py)."""
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from s3gen_runtime.io import load_noise
from s3gen_runtime.voice import Voice

GOLDEN = {"standard": "s3gen_p25_n35_seed0.npz", "meanflow": "s3gen_meanflow_p25_n35_seed0.npz"}
# Voices prepared by upstream's embed_ref, synthesised by the standard model: F = 2P + 1 and F = 2P
VOICE_GOLDEN = {"odd": "voice/voice_espeak_enus_22k.npz", "even": "voice/voice_aishell_16k.npz"}


def random_voice(rng, prompt_tokens: int, odd: bool = False) -> Voice:
    """A voice of P prompt tokens and F = 2P (or 2P + 1 when odd) prompt mel frames."""
    return Voice.validated(rng.integers(0, 6561, prompt_tokens),
                           (rng.standard_normal((2 * prompt_tokens + odd, 80)) * 2.0 - 5.0).astype(np.float32),
                           rng.standard_normal(192).astype(np.float32))


def golden_case(path: Path):
    g = np.load(path)
    voice = Voice.validated(g["prompt_token"], g["prompt_feat"], g["embedding"])
    return g["speech_tokens"], voice, load_noise(path), g


def count_calls(monkeypatch, runtime) -> Counter:
    """Wrap every runner of `runtime` (for this test only) to count its runs."""
    calls = Counter()
    for role, runner in runtime.runners.items():
        def counted(feeds, outputs=None, _role=role, _run=runner.run):
            calls[_role] += 1
            return _run(feeds, outputs)
        monkeypatch.setattr(runner, "run", counted)
    return calls


def linked_copy(src: Path, dst: Path, edit=None, skip=(), copy=()) -> Path:
    """An artifact folder that links src's graphs (copies those in `copy`, leaves out `skip`)
    with src's manifest passed through `edit(dict)`: cheap variants of a 800 MB export."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name == "manifest.json" or f.name in skip:
            continue
        if f.name in copy:
            shutil.copyfile(f, dst / f.name)
        else:
            os.symlink(f.resolve(), dst / f.name)
    data = json.loads((src / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(edit(data) if edit else data))
    return dst


def max_diff(a, b) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b).max())


TINY = dict(steps=2)


def tiny(rng=None, prompt=3, new=4):
    rng = rng or np.random.default_rng(11)
    return rng.integers(0, 6561, new), random_voice(rng, prompt)


def add_int8_standin(folder: Path, role: str = "vocoder", file: str | None = None, precision: str = "int8",
                     selftest: bool = True) -> Path:
    """Record a stand-in quantized graph as '<role>_int8' in folder's manifest: `role`'s fp32 graph
    relabelled int8 (quantization keeps the spec), with its self-test probe written by the exporter's
    own write_selftest. `file` records another file instead (e.g. the unlabelled fp32 graph)."""
    import onnx
    from s3gen_export.components import specs_for_variant
    from s3gen_export.stages.quantize import SELFTEST_DIR, write_selftest
    from s3gen_runtime.manifest import sha256_file

    data = json.loads((folder / "manifest.json").read_text())
    src = folder / data["components"][role]["file"]
    name = f"{role}_int8"
    if file is None:
        file = f"{name}.onnx"
        proto = onnx.load(str(src))
        for prop in proto.metadata_props:
            if prop.key == "s3gen.precision":
                prop.value = "int8"
        onnx.save(proto, str(folder / file))
    record = None
    if selftest:
        spec = next(s for s in specs_for_variant(data["checkpoint"]["variant"]) if s.name == role)
        probe = f"{SELFTEST_DIR}/{name}.npz"
        measured = write_selftest(spec, src, folder / file, folder / probe)
        record = {"file": probe, "sha256": sha256_file(folder / probe), **measured}
    data["components"][name] = dict(data["components"][role], file=file, precision=precision,
                                    sha256=sha256_file(folder / file), selftest=record)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder
