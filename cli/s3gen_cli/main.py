"""`s3gen-aot`: a thin click layer over the library functions.

Runtime commands (synth --artifacts) import no torch: each command imports what it needs inside,
so a service that installs only the runtime can still run them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from s3gen_runtime.backends import known_backends
from s3gen_runtime.constants import SAMPLE_RATE
from s3gen_runtime.errors import S3GenError

# The packages of the [export] extra: a runtime-only install lacks them.
EXPORT_PACKAGES = ("torch", "onnx", "onnxscript")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class OneLineBadParameter(click.BadParameter):
    """A bad option value, shown as one 'error:' line (exit code 2) instead of click's usage block."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=True)


class BucketSizes(click.ParamType):
    """'256,512,1024' -> a checked bucket table (sizes in mel frames)."""

    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from s3gen_runtime.buckets import make_buckets

        sizes = []
        for item in str(value).split(","):
            try:
                sizes.append(int(item.strip()))
            except ValueError:
                raise OneLineBadParameter(f"{item.strip()!r} in {value!r} is not a whole number of mel frames",
                                          ctx, param) from None
        try:
            make_buckets(sizes)
        except S3GenError as e:
            raise OneLineBadParameter(f"{value!r}: {e}", ctx, param) from None
        return tuple(sizes)


class Group(click.Group):
    """Turns a missing export dependency into one line naming the extra to install."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in EXPORT_PACKAGES:
                raise
            _fail(f"`{ctx.info_name} {ctx.invoked_subcommand}` needs the export dependencies ({e.name} is not "
                  "installed): install s3gen-aot[export], e.g. pip install 's3gen-aot[export]'")


@click.group(cls=Group)
@click.version_option(package_name="s3gen-aot")
def main() -> None:
    """Export Chatterbox S3Gen to ONNX / TensorRT and synthesise speech with the torch-free runtime."""


@main.command("synth-checkpoint")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--meanflow", is_flag=True, help="Turbo (meanflow) layout instead of the standard one.")
@click.option("--weight-norm", type=click.Choice(["parametrizations", "weight_g", "folded"]),
              default="parametrizations", show_default=True, help="How weight-normed convs are stored.")
def synth_checkpoint(out: Path, meanflow: bool, weight_norm: str) -> None:
    """Write the deterministic synthetic checkpoint (real architecture and sizes, voice models included) to OUT."""
    from s3gen_export.model.s3gen import expected_layout
    from s3gen_export.model.synthetic import write_synthetic_checkpoint

    variant = "meanflow" if meanflow else "standard"
    layout = expected_layout(variant, voice=True)
    path = write_synthetic_checkpoint(out, layout, weight_norm=weight_norm)
    click.echo(f"wrote {variant} synthetic checkpoint {path} ({path.stat().st_size / 1e6:.0f} MB)")


@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Artifact folder.")
@click.option("--force", is_flag=True, help="Rebuild every graph, and overwrite a non-empty folder that holds no "
                                           "artifacts (without it, unchanged graphs of an earlier export are reused).")
@click.option("--reuse-from", "reuse_from", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another artifact folder whose graphs are linked in where they are the same (e.g. the voice "
                   "graphs and HiFT of a standard export, for the meanflow checkpoint). Repeatable.")
@click.option("--int8", is_flag=True, help="Also write int8 (dynamic, selective) encoder and estimator graphs.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Graphs exported side by side, one worker process each [default: one per core, as memory allows].")
@click.option("--buckets", type=BucketSizes(), default=None,
              help="Comma-separated mel-frame buckets, e.g. 256,512,1024,2048,4096.")
@click.option("--vocoder", default="hift", show_default=True,
              help="'hift' (the checkpoint's) or 'vocos:DIR': a Vocos model (config.yaml + pytorch_model.bin) "
                   "trained on S3Gen's mel features; any other features are refused before export.")
def export_cmd(checkpoint: Path, out: Path, force: bool, reuse_from: tuple[Path, ...], int8: bool, jobs: int | None,
               buckets: tuple | None, vocoder: str) -> None:
    """Export CHECKPOINT's graphs to ONNX, validate them against PyTorch, write the manifest."""
    from s3gen_runtime.buckets import DEFAULT_BUCKETS
    from s3gen_export.model.checkpoint import CheckpointError
    from s3gen_export.exporter import export_checkpoint
    from s3gen_export.stages.graphs import ExportError

    try:
        from s3gen_export.stages.vocos_export import parse_vocoder_option
        export_checkpoint(checkpoint, out, force=force, int8=int8, buckets=buckets or DEFAULT_BUCKETS,
                          progress=click.echo, vocos=parse_vocoder_option(vocoder), jobs=jobs,
                          reuse_from=reuse_from)
    except (ExportError, CheckpointError, S3GenError, ValueError) as e:
        _fail(str(e))


@main.command("validate")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate_cmd(artifacts: Path, checkpoint: Path) -> None:
    """Re-validate every fp32 graph in ARTIFACTS against eager PyTorch on CHECKPOINT; non-zero exit on a miss."""
    from s3gen_export.model.checkpoint import CheckpointError
    from s3gen_export.stages.revalidate import revalidate

    try:
        ok = revalidate(artifacts, checkpoint, progress=click.echo)
    except (CheckpointError, S3GenError) as e:
        _fail(str(e))
    if not ok:
        _fail("validation failed: see the error tables above")


def _print_timings(timings: dict, nfe: int, audio_seconds: float) -> None:
    """Per-stage seconds and the real-time factor (synthesis seconds / audio seconds; < 1 is faster)."""
    parts = [f"{k} {v:.2f} s" + (f" ({nfe} calls)" if k == "estimator" else "")
             for k, v in timings.items() if k != "total"]
    parts.append(f"total {timings['total']:.2f} s" + ("" if len(parts) else f" ({nfe} estimator calls)"))
    click.echo(" | ".join(parts))
    click.echo(f"audio {audio_seconds:.2f} s, RTF {timings['total'] / audio_seconds:.3f} "
               "(synthesis seconds / audio seconds)")


def _backend_used(runtime) -> str:
    """The backend name, and for ONNX Runtime the execution providers its sessions really run on."""
    providers = getattr(runtime.runners["vocoder"], "providers", None)
    return runtime.backend + (f" [{', '.join(providers)}]" if providers else "")


def _synth_artifacts(folder: Path, tokens, voice, noise, seed, solver, steps, cfg_rate, precision, backend, threads):
    """The torch-free runtime: the manifest's defaults (or tuning) under the caller's overrides."""
    from s3gen_runtime.pipeline import S3GenRuntime

    options = {} if threads is None else {"intra_op_threads": threads}
    start = time.perf_counter()
    runtime = S3GenRuntime(folder, backend=backend or "onnxruntime", precision=precision, **options)
    threads_note = "" if threads is None else f", {threads} intra-op threads"
    click.echo(f"loaded {folder} ({runtime.variant}, {precision}, {_backend_used(runtime)}{threads_note}) "
               f"in {time.perf_counter() - start:.2f} s")
    click.echo(f"vocoder: {runtime.vocoder}" + (f" ({runtime.manifest.vocoder.source})" if runtime.vocoder != "hift" else ""))
    settings = runtime.resolve(solver, steps, cfg_rate)
    click.echo(f"solver {settings.solver}, {settings.steps} steps, cfg_rate {settings.cfg_rate:g}")
    result = runtime.synthesize(tokens, voice, seed=seed, noise=noise, solver=settings.solver, steps=settings.steps,
                                cfg_rate=settings.cfg_rate)
    return result.mel, result.wav, result.timings, result.nfe, result.seed


def _stream_artifacts(folder: Path, tokens, voice, noise, seed, solver, steps, cfg_rate, precision, backend, threads,
                      first_chunk_tokens, chunk_tokens):
    """synth --stream: the runtime's stream over the whole token array; prints each chunk as it lands."""
    from s3gen_runtime.pipeline import S3GenRuntime

    options = {} if threads is None else {"intra_op_threads": threads}
    runtime = S3GenRuntime(folder, backend=backend or "onnxruntime", precision=precision, **options)
    click.echo(f"loaded {folder} ({runtime.variant}, {precision}, {_backend_used(runtime)})")
    generator = runtime.stream(tokens, voice, seed=seed, noise=noise, solver=solver, steps=steps, cfg_rate=cfg_rate,
                               first_chunk_tokens=first_chunk_tokens, chunk_tokens=chunk_tokens)
    while True:
        try:
            c = next(generator)
        except StopIteration as stop:
            result = stop.value
            break
        click.echo(f"chunk {c.index}: {c.wav.size / SAMPLE_RATE:.2f} s of audio from {c.tokens} tokens at "
                   f"{c.latency:.2f} s (flow {c.timings['flow']:.2f} s, vocoder {c.timings['vocoder']:.2f} s)")
    click.echo(f"time to first audio {result.time_to_first_audio:.2f} s, total {result.total:.2f} s, "
               f"{len(result.chunks)} chunks")
    return result.mel, result.wav, {"total": result.total}, runtime.resolve(solver, steps, cfg_rate).nfe, result.seed


def _synth_checkpoint(checkpoint: Path, tokens, voice, noise, seed, solver, steps, cfg_rate, precision, backend,
                      threads):
    """The eager torch reference: upstream's own algorithm only (Euler with CFG, or meanflow)."""
    from types import SimpleNamespace

    from s3gen_runtime.buckets import Bucket
    from s3gen_runtime.constants import MAX_MEL_FRAMES
    from s3gen_runtime.errors import InputError
    from s3gen_runtime.batching import Request, validate_request
    from s3gen_runtime.pipeline import resolve_settings

    # What does not depend on the variant is checked before the (slow) model load.
    if backend is not None or threads is not None:
        raise InputError("--backend and --threads choose how --artifacts run; the eager reference runs in torch")
    if precision != "fp32":
        raise InputError(f"--precision {precision} needs --artifacts: the eager reference runs in fp32")
    if solver not in (None, "euler", "meanflow"):
        raise InputError(f"--checkpoint runs upstream's solver only (euler, or meanflow for Turbo checkpoints), "
                         f"got {solver!r}; use --artifacts for other solvers")
    # Same checks and seeded noise as the runtime; the only length limit is the positional table.
    row = validate_request(Request(tokens, voice, seed, noise), (Bucket("positional table", MAX_MEL_FRAMES),))

    from s3gen_export.model.s3gen import load_s3gen
    from s3gen_runtime.manifest import Defaults

    from s3gen_export.model.reference import Noise, synthesize

    start = time.perf_counter()
    model = load_s3gen(checkpoint)
    click.echo(f"loaded {checkpoint} ({model.variant}, eager torch reference) in {time.perf_counter() - start:.2f} s")
    # The overrides are resolved exactly as for artifacts of this checkpoint (upstream's defaults, no
    # tuning); resolve_settings reads only these three fields of a manifest.
    exported_as = SimpleNamespace(defaults=Defaults.upstream(model.variant), tuning=None,
                                  checkpoint=SimpleNamespace(variant=model.variant))
    # With the solver limited to euler/meanflow above, this leaves exactly upstream's solver for the variant.
    settings = resolve_settings(exported_as, solver, steps, cfg_rate)
    click.echo(f"solver {settings.solver}, {settings.steps} steps, cfg_rate {settings.cfg_rate:g}")
    start = time.perf_counter()
    out = synthesize(model, row.tokens, voice.prompt_token, voice.prompt_feat, voice.embedding, Noise(**row.noise),
                     n_timesteps=settings.steps, cfg_rate=settings.cfg_rate)
    timings = {"total": time.perf_counter() - start}
    return out["mel"][0], out["wav"][0], timings, settings.nfe, row.seed


@main.command("synth")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), help="Exported artifact folder.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Run the eager torch reference on a checkpoint instead.")
@click.option("--tokens", "tokens_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Speech tokens: .npy, .txt or .npz (speech_tokens).")
@click.option("--voice", "voice_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Voice: .npz or .safetensors with prompt_token, prompt_feat, embedding.")
@click.option("--noise", "noise_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Recorded noise (.npz with z, sine_phase, sine_noise); overrides --seed.")
@click.option("--steps", type=int, default=None, help="Solver steps (default: the manifest's).")
@click.option("--seed", type=int, default=None, help="Noise seed (default: a fresh one, printed).")
@click.option("--solver", default=None, help="euler, heun, midpoint, dpmpp2m or meanflow (default: the manifest's).")
@click.option("--cfg-rate", type=float, default=None, help="Classifier-free guidance rate; 0 skips guidance.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--backend", type=click.Choice(known_backends()), default=None,
              help="Runtime backend for --artifacts (default: onnxruntime).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads per graph for the ONNX Runtime backends (default: all cores).")
@click.option("--stream", is_flag=True, help="Streaming synthesis (--artifacts): prints time to first audio and "
              "per-chunk latencies; writes the concatenated stream.")
@click.option("--first-chunk-tokens", type=int, default=None, help="--stream: tokens of the first chunk.")
@click.option("--chunk-tokens", type=int, default=None, help="--stream: tokens of the second chunk (later ones grow).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .wav or .npz.")
def synth_cmd(artifacts, checkpoint, tokens_file, voice_file, noise_file, steps, seed, solver, cfg_rate, precision,
              backend, threads, stream, first_chunk_tokens, chunk_tokens, out) -> None:
    """Synthesise speech tokens in a voice to OUT (.wav at 24 kHz, or .npz with mel and wav)."""
    from s3gen_runtime.io import load_noise, load_tokens, save_output
    from s3gen_runtime.voice import load_voice

    if (artifacts is None) == (checkpoint is None):
        _fail("give exactly one of --artifacts DIR or --checkpoint CKPT")
    try:
        tokens, voice = load_tokens(tokens_file), load_voice(voice_file)
        noise = None if noise_file is None else load_noise(noise_file)
        if noise is not None and seed is not None:
            click.echo("note: --noise given, --seed is ignored")
        if not stream and (first_chunk_tokens is not None or chunk_tokens is not None):
            _fail("--first-chunk-tokens and --chunk-tokens need --stream")
        if stream and checkpoint is not None:
            _fail("--stream needs --artifacts (the eager reference synthesises offline only)")
        run = _synth_artifacts if artifacts is not None else _synth_checkpoint
        args = (artifacts or checkpoint, tokens, voice, noise, seed, solver, steps, cfg_rate, precision, backend, threads)
        if stream:
            mel, wav, timings, nfe, used_seed = _stream_artifacts(*args, first_chunk_tokens, chunk_tokens)
        else:
            mel, wav, timings, nfe, used_seed = run(*args)
        click.echo(f"noise: {'from ' + str(noise_file) if used_seed is None else f'seed {used_seed}'}")
        _print_timings(timings, nfe, wav.shape[-1] / SAMPLE_RATE)
        click.echo(f"wrote {save_output(out, mel, wav)}")
    except (S3GenError, ValueError) as e:
        _fail(str(e))


@main.command("voice-from-conds")
@click.argument("conds", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trim-odd-frame", is_flag=True,
              help="Drop the odd trailing mel frame when prompt_feat has 2P + 1 frames (the output then differs "
                   "from upstream's, which keeps it).")
def voice_from_conds_cmd(conds: Path, out: Path, trim_odd_frame: bool) -> None:
    """Convert an upstream Chatterbox conds.pt into a voice file (.npz or .safetensors) for the runtime."""
    from s3gen_runtime.voice import save_voice
    from s3gen_export.model.voices import voice_from_conds

    try:
        voice = voice_from_conds(conds, trim_odd_frame=trim_odd_frame)
        save_voice(voice, out)
    except (S3GenError, ValueError) as e:
        _fail(str(e))
    click.echo(f"wrote {out}: {voice.prompt_tokens} prompt tokens, {voice.prompt_frames} mel frames")


@main.command("build-engines")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp16", show_default=True)
@click.option("--buckets", default=None, help="Comma-separated bucket names or mel-frame sizes (default: all).")
@click.option("--min-batch", default=1, show_default=True, type=int)
@click.option("--opt-batch", default=1, show_default=True, type=int)
@click.option("--max-batch", default=4, show_default=True, type=int)
@click.option("--timing-cache", default=None, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strongly-typed", is_flag=True, help="Rewrite the graph to mixed precision instead of per-layer constraints.")
def build_engines_cmd(artifacts: Path, precision: str, buckets: str | None, min_batch: int, opt_batch: int,
                      max_batch: int, timing_cache: Path | None, strongly_typed: bool) -> None:
    """Build, validate and record one TensorRT engine per graph per bucket (needs a CUDA GPU)."""
    from s3gen_export.engines import build_engines

    chosen = None if buckets is None else [b.strip() for b in buckets.split(",") if b.strip()]
    try:
        build_engines(artifacts, precision, buckets=chosen, min_batch=min_batch, opt_batch=opt_batch,
                      max_batch=max_batch, timing_cache=timing_cache, progress=click.echo,
                      strongly_typed=True if strongly_typed else None)
    except (S3GenError, ValueError) as e:
        _fail(str(e))


@main.command("tune")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tokens", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--voice", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target-db", default=30.0, show_default=True, type=float,
              help="Mel SNR against the upstream setting (10-step Euler, CFG 0.7) that a cheaper setting must reach.")
@click.option("--max-nfe", default=32, show_default=True, type=int)
def tune_cmd(artifacts: Path, tokens: Path | None, voice: Path | None, target_db: float, max_nfe: int) -> None:
    """Measure solver/steps against upstream on these artifacts' weights; record the cheapest in the manifest."""
    from s3gen_export.tuning.tune import tune

    try:
        tune(artifacts, tokens=tokens, voice=voice, target_db=target_db, max_nfe=max_nfe, progress=click.echo)
    except (S3GenError, ValueError) as e:
        _fail(str(e))


@main.command("voice")
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--artifacts", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Artifact folder with the speaker_encoder and tokenizer graphs.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Voice file to write (.npz or .safetensors), in the format synth --voice reads.")
@click.option("--loudness-norm/--no-loudness-norm", default=None,
              help="Normalise the reference to -27 LUFS first (default: on for meanflow artifacts, as upstream's Turbo).")
@click.option("--backend", type=click.Choice(known_backends()), default="onnxruntime", show_default=True)
def voice_cmd(reference: Path, artifacts: Path, out: Path, loudness_norm: bool | None, backend: str) -> None:
    """Prepare a voice from a reference recording (torch-free); the first 10 s are used."""
    from s3gen_runtime.voice import save_voice
    from s3gen_runtime.voice_prep import VoicePreparer

    try:
        start = time.perf_counter()
        prepared = VoicePreparer(artifacts, backend).from_file(reference, normalize_loudness=loudness_norm)
        seconds = time.perf_counter() - start
        save_voice(prepared.voice, out)
    except (S3GenError, ValueError) as e:
        _fail(str(e))
    for line in prepared.report.lines():
        click.echo(line)
    click.echo(f"wrote {out} in {seconds:.2f} s")


from .serving import loadtest_cmd, serve_cmd, triton_repo_cmd  # noqa: E402  (torch-free; PyTriton lazily)

main.add_command(serve_cmd)
main.add_command(loadtest_cmd)
main.add_command(triton_repo_cmd)

if __name__ == "__main__":
    main()
