"""The runtime's public stages (prepare, encode, velocity, solve, vocode) on the exported synthetic
checkpoint: composed by hand they are synthesize_batch bit for bit, and each one does what it says."""
from collections import Counter

import numpy as np
import pytest
from pipeline_helpers import count_calls, max_diff, random_voice, tiny

from s3gen_runtime.audio import apply_trim_fade
from s3gen_runtime.batching import Batch, Request
from s3gen_runtime.constants import TRIM_FADE_SAMPLES
from s3gen_runtime.errors import InputError
from s3gen_runtime.pipeline import Conditioning, Settings

ROW_MEL_ATOL = 5e-5   # as test_pipeline's BATCH_MEL_ATOL: a row alone vs in a padded batch


@pytest.fixture(scope="module")
def requests():
    """Three rows of different prompt and token lengths, seeded; the second has an odd prompt (F = 2P + 1)."""
    rng = np.random.default_rng(21)
    return [Request(rng.integers(0, 6561, n), random_voice(rng, p, odd), seed=40 + i)
            for i, (p, n, odd) in enumerate([(4, 6, False), (2, 9, True), (6, 3, False)])]


@pytest.mark.parametrize("variant, kwargs", [("standard", dict(solver="heun", steps=2, cfg_rate=0.5)),
                                             ("meanflow", dict())])
def test_stages_composed_by_hand_are_synthesize_batch(std, mf, requests, variant, kwargs):
    runtime = std if variant == "standard" else mf
    want = runtime.synthesize_batch(requests, **kwargs)

    batch = runtime.prepare(requests)
    conditioning = runtime.encode(batch)
    settings = runtime.resolve(**kwargs)
    mels = conditioning.mels(runtime.solve(conditioning, settings))
    wavs = runtime.vocode(batch, mels)

    for got_mel, got_wav, result, row in zip(mels, wavs, want, batch.rows):
        assert np.array_equal(got_mel, result.mel) and np.array_equal(got_wav, result.wav)
        assert result.nfe == settings.nfe and result.seed == row.seed


def test_prepare_validates_and_plans_without_running_a_graph(std, requests, monkeypatch):
    calls = count_calls(monkeypatch, std)
    batch = std.prepare(requests)
    assert isinstance(batch, Batch) and len(batch) == 3 and batch.seeds == (40, 41, 42)
    assert (batch.layout.prompt_width, batch.layout.token_width) == (6, 9)
    assert batch.layout.frames == max(2 * (p + n) for p, n in [(4, 6), (2, 9), (6, 3)]) == 22
    assert [r.span for r in batch.rows] == [(8, 20), (5, 22), (12, 18)]   # cut at each row's F
    assert batch.layout.prompt_feat_width == 12
    with pytest.raises(InputError, match="^request 1: tokens are empty"):
        std.prepare([requests[0], Request(np.zeros(0, np.int64), requests[0].voice, 0)])
    assert sum(calls.values()) == 0


def test_encode_gives_trimmed_conditioning_and_each_rows_noise(std, requests, monkeypatch):
    batch = std.prepare(requests)
    calls = count_calls(monkeypatch, std)
    c = std.encode(batch)
    assert calls == Counter({"encoder": 1})
    assert isinstance(c, Conditioning) and len(c) == 3 and c.frames == 22
    assert (c.mask.shape, c.mu.shape, c.cond.shape, c.spks.shape) == ((3, 1, 22), (3, 80, 22), (3, 80, 22), (3, 80))
    assert c.spans == tuple(r.span for r in batch.rows)
    for b, row in enumerate(batch.rows):
        end = row.frames
        assert np.array_equal(c.x0[b, :, :end], row.noise["z"][0]) and not c.x0[b, :, end:].any()
        assert c.mask[b, 0, :end].all() and not c.mask[b, 0, end:].any()


def test_cond_holds_each_rows_own_prompt_frames(std, requests):
    """cond = row b's first F_b prompt frames (odd F included), zeros after: the encoder gets each F."""
    c = std.encode(std.prepare(requests))
    for b, request in enumerate(requests):
        feat = request.voice.prompt_feat[0].T
        f = feat.shape[1]
        assert np.array_equal(c.cond[b, :, :f], feat) and not c.cond[b, :, f:].any()


def test_a_row_cut_from_the_conditioning_solves_like_the_row_alone(std, requests):
    settings = std.resolve(steps=2)
    whole = std.encode(std.prepare(requests))
    batch_mels = whole.mels(std.solve(whole, settings))
    for i, request in enumerate(requests):
        row = whole.row(i)
        assert len(row) == 1 and row.frames == row.spans[0][1]
        alone = std.encode(std.prepare([request]))
        assert max_diff(row.mu, alone.mu) < ROW_MEL_ATOL
        (mel,) = row.mels(std.solve(row, settings))
        assert max_diff(mel, batch_mels[i]) < ROW_MEL_ATOL


def test_velocity_is_the_one_solve_uses(std, requests, monkeypatch):
    c = std.encode(std.prepare(requests))
    one_step = Settings("euler", 1, 0.7)
    calls = count_calls(monkeypatch, std)
    v = std.velocity(c, one_step)(c.x0, 0.0, 1.0)
    assert calls == Counter({"estimator_cfg": 1}) and v.shape == c.x0.shape
    # one Euler step over [0, 1] is x0 + 1.0 * v(x0, 0, 1), exactly
    assert np.array_equal(std.solve(c, one_step), c.x0 + v)
    std.velocity(c, Settings("euler", 1, 0.0))(c.x0, 0.0, 1.0)
    assert calls["estimator"] == 1   # cfg_rate 0: the unguided graph


def test_solve_from_a_given_x0(std, requests):
    c = std.encode(std.prepare(requests))
    settings = std.resolve(steps=2)
    other = np.random.default_rng(0).standard_normal(c.x0.shape).astype(np.float32)
    assert np.array_equal(std.solve(c, settings, c.x0), std.solve(c, settings))
    assert max_diff(std.solve(c, settings, other), std.solve(c, settings)) > 1e-2
    with pytest.raises(InputError, match=r"x0 must have shape \(3, 80, 22\)"):
        std.solve(c, settings, other[:, :, :10])


def test_hand_built_settings_get_the_same_checks(std, mf, requests, monkeypatch):
    c = std.encode(std.prepare(requests))
    calls = count_calls(monkeypatch, std)
    with pytest.raises(InputError, match=r"steps must be at most 1000 \(MAX_STEPS\)"):
        std.solve(c, Settings("euler", 5000, 0.7))
    with pytest.raises(InputError, match=r"cfg_rate must be at most 10 \(MAX_CFG_RATE\)"):
        std.velocity(c, Settings("euler", 2, 50.0))
    with pytest.raises(InputError, match="expected Settings"):
        std.solve(c, ("euler", 2, 0.7))
    with pytest.raises(InputError, match="meanflow artifacts run only the 'meanflow' solver"):
        mf.solve(mf.encode(mf.prepare(requests)), Settings("euler", 2, 0.0))
    assert sum(calls.values()) == 0


def test_vocode_fade_and_checks(std, requests):
    batch = std.prepare(requests)
    c = std.encode(batch)
    mels = c.mels(std.solve(c, std.resolve(steps=2)))
    plain, faded = std.vocode(batch, mels, fade=False), std.vocode(batch, mels)
    for row, p, f in zip(batch.rows, plain, faded):
        assert p.shape == f.shape == (480 * row.vocoded_frames,) == (480 * (2 * row.new - (row.prompt_frames % 2)),)
        assert np.array_equal(f, apply_trim_fade(p))
        assert np.array_equal(f[TRIM_FADE_SAMPLES:], p[TRIM_FADE_SAMPLES:]) and not f[:TRIM_FADE_SAMPLES // 2].any()
    with pytest.raises(InputError, match=r"one mel per row \(3\), got 2"):
        std.vocode(batch, mels[:2])
    assert mels[1].shape == (80, 17)   # row 1's odd prompt (F = 5): 2N - 1 frames
    with pytest.raises(InputError, match=r"mel 1 has shape \(80, 16\); row 1 \(9 new tokens after 5 prompt frames\) "
                                         r"needs \(80, 17\)"):
        std.vocode(batch, [mels[0], mels[1][:, :16], mels[2]])
    with pytest.raises(InputError, match="expected a Batch"):
        std.vocode(batch.rows, mels)


def test_stages_keep_no_state_between_calls(std):
    """Two batches interleaved stage by stage give what each gives alone: the state is in the returned objects."""
    a, b = [Request(*tiny(np.random.default_rng(s)), seed=s) for s in (1, 2)]
    settings = std.resolve(steps=2)
    alone = [std.synthesize_batch([r], steps=2)[0].mel for r in (a, b)]
    batches = [std.prepare([r]) for r in (a, b)]
    conds = [std.encode(x) for x in batches]
    x1s = [std.solve(c, settings) for c in reversed(conds)][::-1]
    for c, x1, want in zip(conds, x1s, alone):
        assert np.array_equal(c.mels(x1)[0], want)
