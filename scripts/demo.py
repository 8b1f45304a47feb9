"""End-to-end demo: synthetic checkpoint -> export -> voice from a recording -> torch-free synthesis -> demo.wav.

    python scripts/demo.py --workdir artifacts      (what `make demo` runs)

Steps already done are skipped: the checkpoint when its file holds the current layout, the export when the artifact
folder holds a valid manifest (every file's sha256 checked) for the same checkpoint sha256.
The synthetic weights are random, so the audio is noise-like: the point is the pipeline and its speed.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from s3gen_runtime.constants import SAMPLE_RATE, SPEECH_VOCAB_SIZE
from s3gen_runtime.errors import S3GenError
from s3gen_runtime.io import save_output
from s3gen_runtime.manifest import load_manifest
from s3gen_runtime.voice import Voice, load_voice, save_voice


def log(message: str) -> None:
    print(message, flush=True)


def ensure_checkpoint(path: Path) -> Path:
    from s3gen_export.model.synthetic import ensure_synthetic_checkpoint

    start = time.perf_counter()
    ensure_synthetic_checkpoint(path, "standard", progress=lambda m: log(f"[1/5] {m}"))
    log(f"      {path.stat().st_size / 1e6:.0f} MB ({time.perf_counter() - start:.1f} s)")
    return path


def export_is_current(folder: Path, checkpoint_sha: str) -> bool:
    """A complete, untampered export of this very checkpoint is already there."""
    try:
        return load_manifest(folder, verify=True).checkpoint.sha256 == checkpoint_sha
    except S3GenError:
        return False


def ensure_export(checkpoint: Path, folder: Path) -> float:
    """Export unless current; returns the export seconds (0 when skipped)."""
    from s3gen_export.model.checkpoint import file_sha256

    if export_is_current(folder, file_sha256(checkpoint)):
        log(f"[2/5] artifacts in {folder} match the checkpoint, skipping the export")
        return 0.0
    from s3gen_export.exporter import export_checkpoint

    log(f"[2/5] exporting {checkpoint} to {folder} (a few minutes on 2 cores)")
    start = time.perf_counter()
    export_checkpoint(checkpoint, folder, force=True, progress=lambda m: log(textwrap.indent(m, "      ")))
    return time.perf_counter() - start


def demo_voice(folder: Path, work: Path, seed: int) -> Voice:
    """A voice prepared from a recording, as `s3gen-aot voice` does: the recording is made on the spot
    (speech-like syllables at 22.05 kHz, so the 24 kHz resampler runs; see s3gen_export.speechlike)."""
    import soundfile

    from s3gen_export.speechlike import speechlike_recording
    from s3gen_runtime.voice_prep import VoicePreparer

    reference = work / "demo_reference.wav"
    soundfile.write(str(reference), speechlike_recording(6.0, 22050, seed=seed), 22050, subtype="PCM_16")
    start = time.perf_counter()
    prepared = VoicePreparer(folder).from_file(reference)
    save_voice(prepared.voice, work / "demo_voice.npz")
    log(f"      {reference} -> {work / 'demo_voice.npz'} in {time.perf_counter() - start:.1f} s "
        f"(= s3gen-aot voice {reference} --artifacts {folder} --out {work / 'demo_voice.npz'})")
    for line in prepared.report.lines():
        log(f"      {line}")
    return load_voice(work / "demo_voice.npz")   # what a user's voice file goes through


def synthesize(folder: Path, voice: Voice, tokens: np.ndarray, seed: int, out: Path) -> dict:
    from s3gen_runtime.pipeline import S3GenRuntime

    start = time.perf_counter()
    runtime = S3GenRuntime(folder)
    load = time.perf_counter() - start
    settings = runtime.resolve()
    log(f"      loaded in {load:.1f} s; {settings.solver}, {settings.steps} steps, cfg_rate {settings.cfg_rate:g}")
    result = runtime.synthesize(tokens, voice, seed=seed)
    save_output(out, result.mel, result.wav, result.sample_rate)
    return {"load": load, **result.timings, "nfe": result.nfe, "audio": result.wav.shape[0] / SAMPLE_RATE}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("artifacts"))
    parser.add_argument("--tokens", type=int, default=200, help="new speech tokens (25 per second of audio)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = ensure_checkpoint(work / "synthetic.safetensors")
    export_seconds = ensure_export(checkpoint, work / "synthetic")

    log("[3/5] voice from a reference recording (speaker encoder + tokenizer graphs, torch-free)")
    voice = demo_voice(work / "synthetic", work, args.seed)
    log(f"[4/5] {args.tokens} speech tokens, seed {args.seed}")
    tokens = np.random.default_rng(args.seed + 1).integers(0, SPEECH_VOCAB_SIZE, args.tokens)
    np.save(work / "demo_tokens.npy", tokens)

    log("[5/5] synthesising with the torch-free runtime (onnxruntime, CPU)")
    out = work / "demo.wav"
    t = synthesize(work / "synthetic", voice, tokens, args.seed, out)
    log(f"wrote {out}: {t['audio']:.2f} s of {SAMPLE_RATE} Hz audio")
    log("timings:")
    log(f"  export      {export_seconds:8.2f} s" + ("  (skipped)" if export_seconds == 0 else ""))
    log(f"  load        {t['load']:8.2f} s  (manifest, sha256 of every graph, sessions)")
    log(f"  encoder     {t['encoder']:8.2f} s")
    log(f"  estimator   {t['estimator']:8.2f} s  ({t['nfe']} calls)")
    log(f"  vocoder     {t['vocoder']:8.2f} s")
    log(f"  synthesis   {t['total']:8.2f} s  -> RTF {t['total'] / t['audio']:.2f} (synthesis s / audio s)")
    return 0


if __name__ == "__main__":
    from s3gen_export.stages.graphs import ExportError

    try:
        sys.exit(main())
    except (S3GenError, ValueError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
