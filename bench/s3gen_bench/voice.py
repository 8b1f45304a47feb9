"""Section f: preparing a voice from a recording (`s3gen-aot voice`), torch-free.

A speech-like clip longer than the 10 s crop, at 22.05 kHz (so the 24 kHz resampler runs), is prepared
by `VoicePreparer` in a process of its own (peak RSS is that process's VmHWM; it imports no torch),
a few times after one warm-up; per step timings and the voice's sizes are recorded.

    python -m s3gen_bench.voice ARTIFACTS CLIP REPEATS     (the child; prints one JSON line)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .common import Progress, load_average, machine_info, median

CLIP_SECONDS = 12.0          # longer than the 10 s crop: the crop is part of what is measured
CLIP_SAMPLE_RATE = 22050
RESULT_PREFIX = "VOICE_RESULT "


def write_clip(path: Path, seconds: float = CLIP_SECONDS, sample_rate: int = CLIP_SAMPLE_RATE) -> Path:
    import soundfile

    from s3gen_export.speechlike import speechlike_recording

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), speechlike_recording(seconds, sample_rate), sample_rate, subtype="PCM_16")
    return path


def measure(artifacts: str, clip: str, repeats: int) -> dict:
    """The child's work: load the voice graphs, prepare the clip 1 + repeats times."""
    from s3gen_runtime.voice_prep import VoicePreparer

    from .common import current_rss_mb, peak_rss_mb

    start = time.perf_counter()
    preparer = VoicePreparer(artifacts)
    load = time.perf_counter() - start
    rss_after_load = current_rss_mb()
    runs = []
    for _ in range(1 + repeats):
        start = time.perf_counter()
        prepared = preparer.from_file(clip)
        runs.append({"wall": time.perf_counter() - start, **prepared.timings})
    report = prepared.report
    return {"load_seconds": load, "rss_after_load_mb": rss_after_load, "peak_rss_mb": peak_rss_mb(),
            "warmup": runs[0], "runs": runs[1:], "used_seconds": report.used_seconds,
            "prompt_tokens": report.prompt_tokens, "prompt_frames": report.prompt_frames,
            "torch_imported": "torch" in sys.modules}


def run_voice(artifacts: Path, workdir: Path, repeats: int, progress: Progress = print) -> dict:
    """Parent side: write the clip, run the child, summarise (medians over the runs)."""
    clip = write_clip(Path(workdir) / "voice_clip.wav")
    machine = machine_info()   # this section may be run on its own: its numbers carry their machine
    proc = subprocess.run([sys.executable, "-m", "s3gen_bench.voice", str(artifacts), str(clip), str(repeats)],
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"voice preparation benchmark failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    steps = ("wall", "frontends", "speaker_encoder", "tokenizer")
    result["median"] = {k: median([r[k] for r in result["runs"]]) for k in steps}
    result["clip"] = {"seconds": CLIP_SECONDS, "sample_rate": CLIP_SAMPLE_RATE, "file": str(clip)}
    result["machine"] = {"cpu_model": machine["cpu_model"], "flags": machine["cpu"].get("flags"),
                         "cores": machine["cores"], "load_average": [machine["load_average_at_start"],
                                                                    load_average()]}
    m = result["median"]
    progress(f"  {result['used_seconds']:.1f} s used of a {CLIP_SECONDS:g} s clip: {m['wall']:.2f} s "
             f"(front ends {m['frontends']:.2f}, speaker encoder {m['speaker_encoder']:.2f}, tokenizer "
             f"{m['tokenizer']:.2f}); peak RSS {result['peak_rss_mb']:.0f} MiB")
    return result


def voice_section(v: dict) -> list[str]:
    m = v["median"]
    return ["## f. Voice preparation from a recording (`s3gen-aot voice`)", "",
            f"A {v['clip']['seconds']:g} s speech-like clip at {v['clip']['sample_rate']} Hz (cropped to "
            f"{v['used_seconds']:.0f} s: P = {v['prompt_tokens']}, F = {v['prompt_frames']}), ONNX Runtime fp32, "
            f"its own torch-free process (torch imported: {v['torch_imported']}); median of {len(v['runs'])} runs "
            f"after one warm-up. CPU: {v['machine']['cpu_model']} ({v['machine']['cores']} cores; load average "
            f"{v['machine']['load_average'][0]} before, {v['machine']['load_average'][1]} after).", "",
            "| step | seconds |", "|---|---|",
            f"| load the two graphs | {v['load_seconds']:.2f} |",
            f"| front ends (24 kHz mel, 16 kHz sinc, fbank, 128-bin mel) | {m['frontends']:.2f} |",
            f"| speaker encoder (CAMPPlus) | {m['speaker_encoder']:.2f} |",
            f"| tokenizer (S3TokenizerV2) | {m['tokenizer']:.2f} |",
            f"| whole call (decode, 24 kHz resample, all of the above) | {m['wall']:.2f} |", "",
            f"RSS after load {v['rss_after_load_mb']:.0f} MiB, peak {v['peak_rss_mb']:.0f} MiB.", ""]


def main(argv=None) -> int:
    artifacts, clip, repeats = (argv or sys.argv[1:])[:3]
    print(RESULT_PREFIX + json.dumps(measure(artifacts, clip, int(repeats))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
