"""Upstream chatterbox-tts objects for the drop-in's tests (built by s3gen_bench.upstream_chatterbox, which bench
section j shares)."""
import os

import pytest

from s3gen_bench import upstream_chatterbox

PROMPT_TOKENS = 25
MAKE_TTS = {"standard": upstream_chatterbox.standard_tts, "meanflow": upstream_chatterbox.turbo_tts}


@pytest.fixture(scope="session")
def upstream():
    """Upstream chatterbox imported; skipped where it is not installed, unless S3GEN_REQUIRE_UPSTREAM is set
    (make test sets it, so CI fails rather than skips)."""
    try:
        upstream_chatterbox.import_upstream()
    except upstream_chatterbox.UpstreamMissing as e:
        if os.environ.get("S3GEN_REQUIRE_UPSTREAM"):
            pytest.fail(f"{e} (S3GEN_REQUIRE_UPSTREAM is set)")
        pytest.skip(str(e))
    return upstream_chatterbox


def random_ref_dict(seed: int = 0) -> dict:
    """A ref_dict as embed_ref returns it, with PROMPT_TOKENS prompt tokens (F = 2P)."""
    return upstream_chatterbox.random_ref_dict(PROMPT_TOKENS, seed)


@pytest.fixture(scope="session")
def upstream_model(upstream, synthetic_checkpoint):
    """upstream_model(variant) -> upstream's own S3Token2Wav on the synthetic checkpoint (one per session)."""
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = upstream.upstream_s3gen(synthetic_checkpoint(variant), variant == "meanflow")
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def make_tts(upstream, upstream_model, tmp_path_factory):
    """make_tts(variant) -> a new upstream TTS object (ChatterboxTTS / ChatterboxTurboTTS, tiny T3) over
    upstream's S3Gen."""
    def make(variant):
        return MAKE_TTS[variant](upstream_model(variant), tmp_path_factory.mktemp(f"tts_{variant}"), random_ref_dict())

    return make
