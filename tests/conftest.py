"""Shared fixtures: where the golden files are, and the synthetic checkpoint exported once per session.

Golden files live in shared/golden beside the repository (CI lays a copy there). In CI a missing
golden folder is a failure, not a skip: the parity tests must run.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# What a default run holds under its basetemp at its peak (two full-size checkpoints, two exports, the module
# fixtures alive beside them), with margin (README, "Tests", gives the measured peak). Less free space than this ends as
# hundreds of unrelated-looking errors from safetensors and onnx when the disk fills, so refuse up front.
MIN_FREE_GIB = float(os.environ.get("S3GEN_TEST_MIN_FREE_GIB", "12"))


def pytest_sessionstart(session):
    basetemp = session.config.option.basetemp or tempfile.gettempdir()
    probe = Path(basetemp)
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    if free_gib < MIN_FREE_GIB:
        pytest.exit(f"only {free_gib:.1f} GiB free under {probe}; the suite needs about {MIN_FREE_GIB:.0f} GiB "
                    f"there (full-size synthetic checkpoints and exports). Free space, point TMPDIR or --basetemp "
                    f"elsewhere, or lower S3GEN_TEST_MIN_FREE_GIB if you know the run needs less.", returncode=3)


def _find_golden() -> Path | None:
    candidates = [os.environ.get("S3GEN_GOLDEN_DIR"), REPO.parent / "shared" / "golden", REPO / "shared" / "golden"]
    for c in candidates:
        if c and (Path(c) / "s3gen_p25_n35_seed0.npz").is_file():
            return Path(c)
    return None


GOLDEN_DIR = _find_golden()
if GOLDEN_DIR is not None:
    os.environ["S3GEN_GOLDEN_DIR"] = str(GOLDEN_DIR)   # test modules look it up there


def require_golden(name: str) -> Path:
    if GOLDEN_DIR is None or not (GOLDEN_DIR / name).is_file():
        message = f"golden file {name} not found (looked beside the repo in shared/golden and $S3GEN_GOLDEN_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return GOLDEN_DIR / name


@pytest.fixture(scope="session")
def golden():
    """golden('s3gen_p25_n35_seed0.npz') -> Path (fails in CI, skips elsewhere, when missing)."""
    return require_golden


GOLDEN_FILES = {"standard": "s3gen_p25_n35_seed0.npz", "meanflow": "s3gen_meanflow_p25_n35_seed0.npz"}


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory):
    """synthetic_checkpoint('standard'|'meanflow') -> path of the full-size synthetic checkpoint, voice
    models included (what `s3gen-aot synth-checkpoint` writes)."""
    from s3gen_export.model.synthetic import write_synthetic_checkpoint
    from s3gen_export.model.s3gen import expected_layout

    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            layout = expected_layout(variant, voice=True)
            path = tmp_path_factory.mktemp(f"ckpt_{variant}") / f"synthetic_{variant}.safetensors"
            cache[variant] = write_synthetic_checkpoint(path, layout)
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def exported(synthetic_checkpoint, tmp_path_factory):
    """exported('standard'|'meanflow') -> artifact folder of the synthetic checkpoint (exported once).

    $S3GEN_TEST_ARTIFACTS=<folder with standard/ and meanflow/> reuses a previous export (local runs)."""
    from s3gen_export.exporter import export_checkpoint

    cache: dict[str, Path] = {}
    reuse = os.environ.get("S3GEN_TEST_ARTIFACTS")

    def get(variant: str) -> Path:
        if variant not in cache:
            if reuse and (Path(reuse) / variant / "manifest.json").is_file():
                cache[variant] = Path(reuse) / variant
            else:
                out = tmp_path_factory.mktemp(f"artifacts_{variant}")
                # meanflow carries standard's speaker encoder, tokenizer and HiFT: those graphs are linked in
                others = (get("standard"),) if variant == "meanflow" else ()
                export_checkpoint(synthetic_checkpoint(variant), out, force=True, progress=lambda m: None,
                                  reuse_from=others)
                cache[variant] = out
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def voice_models():
    """An nn.Module holding `speaker_encoder` and `tokenizer` with the synthetic weights (the voice keys
    alone: seconds, not the whole checkpoint), in eval mode."""
    import torch
    from s3gen_export.model.s3gen import expected_layout
    from s3gen_export.model.speaker_encoder import CAMPPlus
    from s3gen_export.model.tokenizer import S3TokenizerV2
    from s3gen_export.model.synthetic import synthetic_state_dict

    flow_only = expected_layout("standard")
    layout = {k: v for k, v in expected_layout("standard", voice=True).items() if k not in flow_only}
    holder = torch.nn.Module()
    holder.speaker_encoder = CAMPPlus()
    holder.tokenizer = S3TokenizerV2()
    holder.load_state_dict({k: torch.from_numpy(a) for k, a in synthetic_state_dict(layout).items()}, strict=True)
    return holder.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def vocos_artifacts(exported, tmp_path_factory):
    """(folder, vocos folder, replace_vocoder's manifest dict): the standard artifacts (linked, not copied)
    with a small random-weight Vocos over S3Gen's mel exported as their `vocoder`."""
    sys.path.insert(0, str(Path(__file__).parent / "runtime"))
    from pipeline_helpers import linked_copy
    from s3gen_export.stages.vocos_export import replace_vocoder
    from s3gen_export.model.vocos_features import s3gen_vocos_config
    from s3gen_export.model.vocos_load import write_vocos

    tmp = tmp_path_factory.mktemp("vocos")
    vocos = write_vocos(tmp / "vocos_s3gen", s3gen_vocos_config(dim=128, intermediate_dim=384, num_layers=2))
    folder = linked_copy(exported("standard"), tmp / "artifacts")
    return folder, vocos, replace_vocoder(folder, vocos, progress=lambda m: None)
