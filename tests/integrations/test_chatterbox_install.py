"""install() refuses what it cannot serve, naming both sides: another upstream release, the other S3Gen
variant, an object that is not upstream's. And the releases it claims are each checked."""
import importlib.metadata
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from s3gen_runtime.errors import InputError
from s3gen_chatterbox import SUPPORTED_VERSIONS, UnsupportedUpstream, install, upstream_version

UPSTREAM_WHEELS = Path(os.environ.get("S3GEN_UPSTREAM_WHEELS", Path(sys.prefix) / "upstream-wheels"))


def test_an_unsupported_release_is_refused_naming_both(make_tts, exported, monkeypatch):
    tts = make_tts("meanflow")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda dist: "0.1.5" if dist == "chatterbox-tts" else real(dist))
    with pytest.raises(UnsupportedUpstream, match=r"chatterbox-tts 0\.1\.5.*supported: chatterbox-tts 0\.1\.6, 0\.1\.7"):
        install(tts, exported("meanflow"))


def test_the_other_variant_is_refused_naming_both(make_tts, exported):
    tts = make_tts("meanflow")
    with pytest.raises(InputError, match="holds the standard S3Gen, but ChatterboxTurboTTS runs the meanflow one"):
        install(tts, exported("standard"))
    assert not hasattr(tts.s3gen, "runtime")   # nothing replaced


def test_an_object_that_is_not_upstreams_is_refused(exported):
    class MyTTS:
        s3gen = None

    with pytest.raises(UnsupportedUpstream, match="not an upstream Chatterbox class"):
        install(MyTTS(), exported("standard"))


def test_the_installed_release_is_a_supported_one(upstream, make_tts):
    dist, version = upstream_version(make_tts("meanflow"))
    assert version in SUPPORTED_VERSIONS[dist]


CHECK_RELEASE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])          # the unpacked wheel, before the installed release
    import numpy as np, torch
    from s3gen_bench import upstream_chatterbox as U
    U.import_upstream()
    import chatterbox
    assert chatterbox.__file__.startswith(sys.argv[1]), chatterbox.__file__
    from s3gen_chatterbox import install, upstream_version
    s3gen = U.upstream_s3gen(sys.argv[2], meanflow=True)
    rng = np.random.default_rng(0)
    ref = {"prompt_token": torch.from_numpy(rng.integers(0, 6561, (1, 10))), "prompt_token_len": torch.tensor([10]),
           "prompt_feat": torch.from_numpy((rng.standard_normal((1, 20, 80)) * 2 - 5).astype(np.float32)),
           "prompt_feat_len": None, "embedding": torch.from_numpy(rng.standard_normal((1, 192)).astype(np.float32))}
    tts = U.turbo_tts(s3gen, __import__("pathlib").Path(sys.argv[4]), ref)
    tokens = torch.from_numpy(rng.integers(0, 6561, (1, 20)))
    torch.manual_seed(2)
    wav_up, _ = tts.s3gen.inference(tokens, ref_dict=dict(ref), n_cfm_timesteps=2)
    install(tts, sys.argv[3])
    torch.manual_seed(2)
    wav, _ = tts.s3gen.inference(tokens, ref_dict=dict(ref), n_cfm_timesteps=2)
    print(upstream_version(tts)[1], float((wav - wav_up).abs().max()))
""")


def other_supported_releases() -> list[str]:
    """The claimed releases besides the installed one (which every other test here runs)."""
    try:
        installed = importlib.metadata.version("chatterbox-tts")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    return [v for v in SUPPORTED_VERSIONS["chatterbox-tts"] if v != installed]


@pytest.mark.parametrize("version", other_supported_releases())
def test_each_other_supported_release_gives_upstreams_wav(version, upstream, synthetic_checkpoint, exported,
                                                          tmp_path):
    """Each claimed release besides the installed one, from its own wheel (make setup-upstream keeps them), in a
    fresh interpreter: Turbo's S3Gen through install() gives that release's own wav under the same seed."""
    wheels = sorted(UPSTREAM_WHEELS.glob(f"chatterbox_tts-{version}-*.whl"))
    if not wheels:
        if os.environ.get("S3GEN_REQUIRE_UPSTREAM"):
            pytest.fail(f"no chatterbox-tts {version} wheel in {UPSTREAM_WHEELS} (make setup-upstream downloads it)")
        pytest.skip(f"no chatterbox-tts {version} wheel in {UPSTREAM_WHEELS}")
    unpacked = tmp_path / "wheel"
    zipfile.ZipFile(wheels[0]).extractall(unpacked)
    proc = subprocess.run([sys.executable, "-c", CHECK_RELEASE, str(unpacked),
                           str(synthetic_checkpoint("meanflow")), str(exported("meanflow")), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got_version, diff = proc.stdout.split()[-2:]
    assert got_version == version and float(diff) <= 2e-3
