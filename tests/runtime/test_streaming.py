"""Streaming synthesis (streaming.py, stream_vocoder.py): the exactness rules and bad input.

Exactness: a stream whose first chunk covers the whole utterance is offline synthesis (same seed);
any stream has exactly the offline sample count; what it yields concatenated is what it returns.
The flow part of a multi-chunk stream differs from offline by design (attention over frames that
did not exist yet); the vocoder part alone is checked against offline on the offline mel."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import count_calls, golden_case, max_diff, random_voice
from s3gen_runtime.errors import BucketError, InputError
from s3gen_runtime.metrics import snr_db
from s3gen_runtime.noise import draw_noise
from s3gen_runtime.stream_vocoder import VocoderState, crossfade_weights, vocode_step
from s3gen_runtime.streaming import LOOKAHEAD_FRAMES, Schedule, TokenStream, collect

FAST = {"steps": 2}


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(5)
    return {"even": random_voice(rng, 8), "odd": random_voice(rng, 8, odd=True),
            "tokens": rng.integers(0, 6561, 36)}


@pytest.mark.parametrize("prompt", ["even", "odd"])
def test_one_chunk_stream_is_offline_synthesis(std, case, prompt):
    voice, tokens = case[prompt], case["tokens"]
    offline = std.synthesize(tokens, voice, seed=7, **FAST)
    chunks, result = collect(std.stream(tokens, voice, seed=7, first_chunk_tokens=len(tokens), **FAST))
    assert len(chunks) == 1 and chunks[0].final
    assert max_diff(result.mel, offline.mel) < 1e-3
    assert max_diff(result.wav, offline.wav) < 2e-3


@pytest.mark.parametrize("variant", ["standard", "meanflow"])
def test_one_chunk_stream_matches_golden(variant, std, mf, golden):
    from pipeline_helpers import GOLDEN

    tokens, voice, noise, g = golden_case(golden(GOLDEN[variant]))
    runtime = std if variant == "standard" else mf
    _, result = collect(runtime.stream(tokens, voice, noise=noise, first_chunk_tokens=tokens.shape[-1]))
    assert max_diff(result.mel, g["mel"][0]) < 1e-3
    assert max_diff(result.wav, g["wav"][0]) < 2e-3


@pytest.mark.parametrize("prompt,solver", [("even", "euler"), ("odd", "heun")])
def test_chunked_stream_keeps_the_offline_length_and_yields_what_it_returns(std, case, prompt, solver):
    voice, tokens = case[prompt], case["tokens"]
    offline = std.synthesize(tokens, voice, seed=7, solver=solver, steps=1)
    chunks, result = collect(std.stream(tokens, voice, seed=7, solver=solver, steps=1, first_chunk_tokens=10,
                                        chunk_tokens=8, growth=1.5, hold_frames=6))
    assert len(chunks) >= 3 and chunks[-1].final and not any(c.final for c in chunks[:-1])
    assert result.wav.shape == offline.wav.shape and result.mel.shape == offline.mel.shape
    np.testing.assert_array_equal(np.concatenate([c.wav for c in chunks]), result.wav)
    assert [c.start_sample for c in chunks] == list(np.cumsum([0] + [c.wav.size for c in chunks[:-1]]))
    # the first chunk's frames were computed from the same noise as offline: close, not equal
    first = 2 * 10 - LOOKAHEAD_FRAMES - (voice.prompt_frames % 2)
    assert np.all(np.isfinite(result.wav)) and result.time_to_first_audio == chunks[0].latency
    assert snr_db(result.mel[:, :first], offline.mel[:, :first]) > snr_db(result.mel, offline.mel) - 20


def test_meanflow_streams(mf, case):
    voice, tokens = case["even"], case["tokens"]
    offline = mf.synthesize(tokens, voice, seed=2)
    chunks, result = collect(mf.stream(tokens, voice, seed=2, first_chunk_tokens=12, chunk_tokens=12))
    assert len(chunks) >= 2 and result.wav.shape == offline.wav.shape


def test_streamed_vocoder_on_the_offline_mel_is_the_offline_wav(std, case):
    """Left context, hold, crossfade and the carried sine phase: with the defaults the seams vanish
    (a phase restarted per window, or a crossfade not summing to 1, costs tens of dB here)."""
    voice, tokens = case["odd"], np.tile(case["tokens"], 2)
    offline = std.synthesize(tokens, voice, seed=4, **FAST)
    noise = draw_noise(4, voice.prompt_tokens, tokens.size, voice.prompt_frames)
    schedule, state, pieces = Schedule(), VocoderState(), []
    frames = offline.mel.shape[1]
    for end in [30, 55, 80, 110, frames]:
        piece = vocode_step(std.runners["vocoder"], offline.mel[:, :end], end == frames, state, left=schedule.left,
                            hold=schedule.hold, phase0=noise["sine_phase"],
                            noise_at=lambda a, b: noise["sine_noise"][..., 480 * a:480 * b])
        pieces += [] if piece is None else [piece]
    assert len(pieces) == 5
    assert snr_db(np.concatenate(pieces), offline.wav) > 60.0


def test_crossfade_weights_sum_to_exactly_one():
    for n in (2, 7, 480):
        fade_out, fade_in = crossfade_weights(n)
        assert np.all(fade_out + fade_in == np.float32(1.0))
        assert fade_in[0] < 0.5 < fade_in[-1] and np.all(np.diff(fade_in) > 0)


def test_schedule_boundaries():
    s = Schedule(first=10, chunk=20, growth=2.0)
    assert s.boundaries(200) == [10, 30, 70, 200]       # after 70 the rest (130) is within 2 x 80: taken at once
    assert s.boundaries(250) == [10, 30, 70, 150, 250]
    assert s.boundaries(50) == [10, 50]                 # the rest (40) is within 2 x 20
    assert s.boundaries(5) == [5]                       # the first chunk never grows (time to first audio)
    assert Schedule(first=10, chunk=20, growth=1.0).boundaries(52) == [10, 30, 52]   # 2-token remainder joins
    assert Schedule(first=10, chunk=20, growth=2.0, cap=30).boundaries(100) == [10, 30, 60, 90, 100]
    # the defaults on 5 / 10 / 20 s of speech (125 / 250 / 500 tokens): 2, 3 and 3 flow passes
    d = Schedule()
    assert [d.boundaries(n) for n in (125, 250, 500)] == [[15, 125], [15, 65, 250], [15, 65, 500]]


def test_iterable_streams_depend_on_the_schedule_not_on_arrival(std, case):
    voice, tokens = case["even"], case["tokens"]
    split = lambda k: [tokens[i:i + k] for i in range(0, tokens.size, k)]   # noqa: E731
    opts = dict(seed=9, first_chunk_tokens=10, chunk_tokens=12, growth=1.0, steps=1)
    _, by_one = collect(std.stream(iter(split(1)), voice, **opts))
    _, by_seven = collect(std.stream(iter(split(7)), voice, **opts))
    np.testing.assert_array_equal(by_one.wav, by_seven.wav)
    assert by_one.wav.shape == (480 * 2 * tokens.size,) and by_one.seed == 9


@pytest.mark.parametrize("option,value", [("first_chunk_tokens", 3), ("first_chunk_tokens", 2501),
                                          ("chunk_tokens", 0), ("chunk_tokens", 1.5), ("growth", 0.5),
                                          ("left_context_frames", -1), ("hold_frames", 0), ("steps", 0)])
def test_bad_options_are_refused_before_any_graph(std, case, monkeypatch, option, value):
    calls = count_calls(monkeypatch, std)
    with pytest.raises(InputError, match=option.split("_")[0]):
        std.stream(case["tokens"], case["even"], seed=0, **{option: value})
    assert sum(calls.values()) == 0


def test_too_long_and_noise_without_a_total_are_refused(std, case, monkeypatch):
    calls = count_calls(monkeypatch, std)
    with pytest.raises(BucketError):
        std.stream(np.zeros(3000, np.int64), case["even"], seed=0)
    noise = draw_noise(0, 8, 36)
    with pytest.raises(InputError, match="whole token array"):
        std.stream(iter([case["tokens"]]), case["even"], noise=noise)
    assert sum(calls.values()) == 0


def test_bad_tokens_in_a_later_chunk_end_the_stream_naming_the_chunk(std, case):
    voice, tokens = case["even"], case["tokens"]
    bad = tokens[:12].copy()
    bad[3] = 6561
    gen = std.stream(iter([tokens[:12], bad, tokens]), voice, seed=0, first_chunk_tokens=10, steps=1)
    first = next(gen)                                  # the first chunk was synthesised and yielded
    assert first.index == 0 and first.wav.size > 0
    with pytest.raises(InputError, match=r"token chunk 2 \(after 12 tokens\).*6561.*the stream is ended"):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def test_a_stream_fed_after_it_finished_is_refused(std, case):
    stream = TokenStream(std, case["even"], seed=0, schedule=Schedule(first=10), settings=std.resolve(steps=1))
    stream.feed(case["tokens"][:20])
    pieces = stream.finish()
    assert pieces and pieces[-1].final
    assert stream.result().wav.shape == (480 * 40,)
    with pytest.raises(InputError, match="finished"):
        stream.feed(case["tokens"][:5])
    with pytest.raises(InputError, match="finished"):
        stream.finish()
    empty = TokenStream(std, case["even"], seed=0)
    with pytest.raises(InputError, match="no tokens"):
        empty.finish()
