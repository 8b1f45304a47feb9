"""Text (+ a reference clip) -> wav with upstream Chatterbox's T3 and s3gen-aot's artifacts for S3Gen.

    python scripts/chatterbox_tts.py --artifacts ARTIFACTS "Hello there." --out hello.wav [--ref ref.wav]
        [--turbo] [--ckpt-dir DIR] [--device cpu]

Needs upstream chatterbox-tts (0.1.6 or 0.1.7) installed beside s3gen-aot, and the artifacts exported from the
same release's s3gen.safetensors (Turbo: s3gen_meanflow.safetensors). Loads the TTS class with
from_pretrained (or from_local with --ckpt-dir), installs the drop-in, generates, and prints the seconds spent
in T3 (and the rest of generate) and in S3Gen.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def load_tts(turbo: bool, device: str, ckpt_dir: Path | None):
    if turbo:
        from chatterbox.tts_turbo import ChatterboxTurboTTS as cls
    else:
        from chatterbox.tts import ChatterboxTTS as cls
    return cls.from_local(ckpt_dir, device) if ckpt_dir else cls.from_pretrained(device=device)


def main(argv=None, tts=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--artifacts", type=Path, required=True, help="s3gen-aot export of the same S3Gen")
    parser.add_argument("--out", type=Path, default=Path("chatterbox.wav"))
    parser.add_argument("--ref", type=Path, default=None, help="reference clip (default: the built-in voice)")
    parser.add_argument("--turbo", action="store_true", help="ChatterboxTurboTTS (meanflow artifacts)")
    parser.add_argument("--ckpt-dir", type=Path, default=None, help="local checkpoint folder (from_local)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import soundfile
    from s3gen_chatterbox import generate_timed, install

    if tts is None:
        tts = load_tts(args.turbo, args.device, args.ckpt_dir)
    drop_in = install(tts, args.artifacts)
    wav, seconds = generate_timed(tts, args.text, audio_prompt_path=str(args.ref) if args.ref else None)
    samples = wav.squeeze(0).cpu().numpy()
    soundfile.write(str(args.out), samples, tts.sr)
    audio = samples.shape[0] / tts.sr
    print(f"{args.out}: {audio:.2f} s of audio at {tts.sr} Hz")
    print(f"T3 {seconds['t3']:.2f} s, S3Gen {seconds['s3gen']:.2f} s (encoder {drop_in.last_timings['encoder']:.2f}, "
          f"estimator {drop_in.last_timings['estimator']:.2f}, vocoder {drop_in.last_timings['vocoder']:.2f}), "
          f"rest of generate {seconds['other']:.2f} s, total {seconds['total']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
