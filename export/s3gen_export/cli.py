"""`s3gen-aot`: a thin click layer over the library functions.

Runtime commands (synth --artifacts) import no torch: each command imports what it needs inside,
so a service that installs only the runtime can still run them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from s3gen_runtime.errors import S3GenError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(package_name="s3gen-aot")
def main() -> None:
    """Export Chatterbox S3Gen to ONNX / TensorRT and synthesise speech with the torch-free runtime."""


@main.command("synth-checkpoint")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--meanflow", is_flag=True, help="Turbo (meanflow) layout instead of the standard one.")
@click.option("--weight-norm", type=click.Choice(["parametrizations", "weight_g", "folded"]),
              default="parametrizations", show_default=True, help="How weight-normed convs are stored.")
def synth_checkpoint(out: Path, meanflow: bool, weight_norm: str) -> None:
    """Write the deterministic synthetic checkpoint (real architecture and sizes) to OUT."""
    from .model.s3gen import expected_state_dict
    from .checkpoint import write_synthetic_checkpoint

    variant = "meanflow" if meanflow else "standard"
    layout = {k: (shape, "float32") for k, shape in expected_state_dict(variant).items()}
    path = write_synthetic_checkpoint(out, layout, weight_norm=weight_norm)
    click.echo(f"wrote {variant} synthetic checkpoint {path} ({path.stat().st_size / 1e6:.0f} MB)")


@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Artifact folder.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output folder.")
@click.option("--int8", is_flag=True, help="Also write int8 (dynamic, selective) encoder and estimator graphs.")
@click.option("--buckets", default=None, help="Comma-separated mel-frame buckets, e.g. 256,512,1024,2048,4096.")
def export_cmd(checkpoint: Path, out: Path, force: bool, int8: bool, buckets: str | None) -> None:
    """Export CHECKPOINT's graphs to ONNX, validate them against PyTorch, write the manifest."""
    from s3gen_runtime.buckets import DEFAULT_BUCKETS
    from .checkpoint import CheckpointError
    from .exporter import ExportError, export_checkpoint

    sizes = DEFAULT_BUCKETS if buckets is None else tuple(int(s) for s in buckets.split(","))
    try:
        export_checkpoint(checkpoint, out, force=force, int8=int8, buckets=sizes, progress=click.echo)
    except (ExportError, CheckpointError, S3GenError, ValueError) as e:
        _fail(str(e))


@main.command("validate")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate_cmd(artifacts: Path, checkpoint: Path) -> None:
    """Re-validate every fp32 graph in ARTIFACTS against eager PyTorch on CHECKPOINT; non-zero exit on a miss."""
    from .checkpoint import CheckpointError
    from .revalidate import revalidate

    try:
        ok = revalidate(artifacts, checkpoint, progress=click.echo)
    except (CheckpointError, S3GenError) as e:
        _fail(str(e))
    if not ok:
        _fail("validation failed: see the error tables above")


if __name__ == "__main__":
    main()
