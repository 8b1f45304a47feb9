"""Streaming synthesis: waveform pieces while the speech tokens are still arriving.

    for chunk in runtime.stream(tokens_or_chunks, voice, seed=0):   # S3GenRuntime.stream
        play(chunk.wav)                                              # chunk.latency, chunk.timings

The estimator and the encoder attend over every frame (Chatterbox's weights have no chunk mask), so
a frame computed before its right context exists differs from the offline one. Each chunk therefore
re-runs the flow over prompt + the whole token prefix and keeps only the frames not committed yet;
a non-final chunk also leaves its last 3 tokens' frames (6) uncommitted, since the encoder's
3-token pre-lookahead has not seen their right context. The flow's noise is one buffer per stream
indexed by absolute frame, so a frame starts from the same noise in every re-run and in offline
synthesis. The vocoder side (left context, held-back tail, crossfade, carried sine phase) is in
stream_vocoder.py.

Noise: a whole token array gets the offline noise of its seed (so a stream whose first chunk covers
everything is offline synthesis, and streamed vs offline compares like with like); tokens from an
iterable, whose total is unknown, get a buffer that grows in fixed blocks from the seed (the same
seed gives the same stream, but not the offline draw, which depends on the total length).

The runtime stays stateless: everything a stream needs lives in its TokenStream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .batching import Request, check_noise, check_seed
from .buckets import pick_bucket
from .constants import MAX_MEL_FRAMES, MEL_BINS, N_HARMONICS, SAMPLE_RATE, SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from .errors import InputError
from .io import validate_tokens
from .noise import draw_noise
from .stream_vocoder import VocoderState, vocode_step

LOOKAHEAD_FRAMES = 6            # the encoder's 3-token pre-lookahead, in mel frames
MIN_CHUNK_TOKENS = 4            # a first chunk must commit at least one frame past the lookahead
MAX_CHUNK_TOKENS = MAX_MEL_FRAMES // TOKEN_MEL_RATIO
# Defaults, chosen from bench/results/streaming.json (README "Streaming"): 15 tokens first (0.22 s of audio
# after the lookahead and the hold; 10 commits only 40 ms), then 50 x 4: with a known total planned
# (Schedule.boundaries) that is 2 / 3 / 3 flow passes and 1.34 / 1.42 / 1.20x offline at 5 / 10 / 20 s
# (10 first, then 25 x 2: 1.71 / 1.66 / 1.52x), time to first audio 0.07x offline at 20 s.
# Vocoder left context 16 frames and hold 12: the streamed vocoder alone is then the offline wav to
# 116-122 dB (4 frames: 27-30 dB; none: 16-21 dB).
DEFAULT_FIRST_CHUNK_TOKENS = 15
DEFAULT_CHUNK_TOKENS = 50
DEFAULT_GROWTH = 4.0
DEFAULT_LEFT_FRAMES = 16
DEFAULT_HOLD_FRAMES = 12
_GROW_BLOCK = 50                # frames per block of a growing noise buffer (1 s)
_F32 = np.float32


def _int_in(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Schedule:
    """Chunk sizes in tokens: first, then chunk, chunk * growth, chunk * growth^2, ... (capped at cap).
    Small first chunks give early audio; growing later ones keep the re-run cost bounded."""

    first: int = DEFAULT_FIRST_CHUNK_TOKENS
    chunk: int = DEFAULT_CHUNK_TOKENS
    growth: float = DEFAULT_GROWTH
    cap: int = MAX_CHUNK_TOKENS
    left: int = DEFAULT_LEFT_FRAMES       # vocoder left context, frames
    hold: int = DEFAULT_HOLD_FRAMES       # vocoder output held back at a window's right end, frames

    def checked(self) -> "Schedule":
        _int_in(self.first, "first_chunk_tokens", MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS)
        _int_in(self.chunk, "chunk_tokens", 1, MAX_CHUNK_TOKENS)
        _int_in(self.cap, "max_chunk_tokens", self.chunk, MAX_CHUNK_TOKENS)
        _int_in(self.left, "left_context_frames", 0, 200)
        _int_in(self.hold, "hold_frames", 1, 200)
        g = self.growth
        if isinstance(g, bool) or not isinstance(g, (int, float, np.integer, np.floating)) or not 1.0 <= g <= 16.0:
            raise InputError(f"growth must be a number in [1, 16], got {g!r}")
        return self

    def size(self, index: int) -> int:
        """Tokens of chunk `index` (0 is the first)."""
        if index == 0:
            return self.first
        return int(min(self.cap, round(self.chunk * float(self.growth) ** (index - 1))))

    def boundaries(self, total: int) -> list[int]:
        """Token counts at which a chunk is synthesised for a known total; the last is the total.

        Every chunk re-runs the flow over prompt + prefix, so a known total is planned to need fewer
        re-runs: a chunk after the first takes the whole rest when the rest is at most `growth` times
        its own size (and within the cap), instead of leaving a last chunk that would cost a whole
        flow pass for less than the next chunk's share. A remainder below MIN_CHUNK_TOKENS joins the
        chunk before it. Streams of unknown length (an iterable) follow `size` until they end."""
        out, n, i = [], 0, 0
        while n < total:
            size = self.size(i)
            rest = total - n
            if i > 0 and rest <= min(self.cap, size * float(self.growth)):
                size = rest
            n += size
            i += 1
            out.append(min(n, total))
        if len(out) > 1 and out[-1] - out[-2] < MIN_CHUNK_TOKENS:
            out.pop(-2)
        return out


@dataclass(frozen=True)
class StreamChunk:
    """One yielded piece: wav (float32), its first sample in the stream, the tokens it was computed
    from, latency (s since the stream started), timings of this chunk (flow, vocoder, total)."""

    index: int
    wav: np.ndarray
    start_sample: int
    tokens: int
    final: bool
    latency: float
    timings: dict


@dataclass(frozen=True)
class StreamResult:
    """What a stream returns (the generator's return value): the concatenation of what it yielded."""

    wav: np.ndarray
    mel: np.ndarray
    sample_rate: int
    chunks: tuple
    seed: int | None
    time_to_first_audio: float | None
    total: float


class _Noise:
    """The stream's one noise buffer: z over solver frames, sine noise over generated frames."""

    def __init__(self, prompt_frames: int, fixed: dict | None = None, seed: int | None = None):
        self.prompt_frames = prompt_frames
        if fixed is not None:
            self.z, self.phase, self.sine = fixed["z"], fixed["sine_phase"], fixed["sine_noise"]
            self._rngs = None
            return
        z_seq, s_seq = np.random.SeedSequence(seed).spawn(2)
        self._rngs = (np.random.default_rng(z_seq), np.random.default_rng(s_seq))
        phase = self._rngs[1].uniform(-np.pi, np.pi, (1, N_HARMONICS, 1)).astype(_F32)
        phase[:, 0, :] = 0.0    # the fundamental starts at phase 0, as in draw_noise
        self.phase = np.minimum(phase, np.nextafter(_F32(np.pi), _F32(0)))
        self.z = np.zeros((1, MEL_BINS, 0), _F32)
        self.sine = np.zeros((1, N_HARMONICS, 0), _F32)

    def _grow(self, solver_frames: int) -> None:
        while self._rngs is not None and self.z.shape[2] < solver_frames:
            z = self._rngs[0].standard_normal((1, _GROW_BLOCK, MEL_BINS), dtype=_F32).transpose(0, 2, 1)
            s = self._rngs[1].standard_normal((1, N_HARMONICS, _GROW_BLOCK * SAMPLES_PER_FRAME), dtype=_F32)
            self.z = np.concatenate([self.z, z], axis=2)
            self.sine = np.concatenate([self.sine, s], axis=2)

    def request_noise(self, solver_frames: int) -> dict:
        """The noise of a request of T solver frames: every array a prefix of the stream's buffer."""
        self._grow(solver_frames)
        generated = solver_frames - self.prompt_frames
        return {"z": self.z[..., :solver_frames], "sine_phase": self.phase,
                "sine_noise": self.sine[..., : generated * SAMPLES_PER_FRAME]}

    def sine_at(self, start: int, end: int) -> np.ndarray:
        """Sine noise for generated frames [start, end)."""
        return np.ascontiguousarray(self.sine[..., start * SAMPLES_PER_FRAME: end * SAMPLES_PER_FRAME])


class TokenStream:
    """One stream's state. feed(tokens) returns the pieces that became ready; finish() the rest.
    A refused chunk (bad tokens, too long) ends the stream: later calls are refused too."""

    def __init__(self, runtime, voice, *, seed=None, noise=None, total_tokens=None, schedule: Schedule | None = None,
                 settings=None):
        from .batching import check_voice

        self.runtime = runtime
        self.voice = check_voice(voice)
        self.schedule = (schedule or Schedule()).checked()
        self.settings = settings if settings is not None else runtime.resolve()
        prompt, frames = self.voice.prompt_tokens, self.voice.prompt_frames
        if total_tokens is None:
            if noise is not None:
                raise InputError("explicit noise needs the whole token array (its shapes depend on the total length)")
            self.seed = check_seed(seed)
            self.noise = _Noise(frames, seed=self.seed)
        else:
            self.seed = None if noise is not None else check_seed(seed)
            fixed = (check_noise(noise, prompt, total_tokens, frames) if noise is not None
                     else draw_noise(self.seed, prompt, total_tokens, frames))
            self.noise = _Noise(frames, fixed=fixed)
        self.total_tokens = total_tokens
        if total_tokens is not None:
            self._check_length(total_tokens)     # before any graph runs
        self._boundaries = self.schedule.boundaries(total_tokens) if total_tokens is not None else None
        self._tokens = np.zeros(0, np.int64)
        self._fed = 0                 # chunks of tokens fed (for error messages)
        self._done_chunks = 0         # synthesised chunks
        self._synthesised = 0         # tokens the last flow pass covered
        self._mel = np.zeros((MEL_BINS, 0), _F32)   # committed generated frames
        self._vocoder = VocoderState()
        self._chunks: list[StreamChunk] = []
        self._closed: str | None = None
        self._start = time.perf_counter()

    # ------------------------------------------------------------ feeding

    def feed(self, tokens) -> list:
        """Append a chunk of tokens; returns the StreamChunks that are ready (possibly none)."""
        self._check_open()
        self._fed += 1
        try:
            new = validate_tokens(tokens)
            self._check_length(self._tokens.shape[0] + new.shape[0])
        except InputError as e:
            self._closed = f"token chunk {self._fed} was refused: {e}"
            raise InputError(f"token chunk {self._fed} (after {self._tokens.shape[0]} tokens): {e}; "
                             "the stream is ended") from e
        self._tokens = np.concatenate([self._tokens, new])
        ready = []
        while True:
            target = self._next_boundary()
            if target is None or self._tokens.shape[0] < target or target >= self._final_count():
                break
            ready += self._synthesise(target, final=False)
        if self.total_tokens is not None and self._tokens.shape[0] == self.total_tokens:
            ready += self.finish()
        return ready

    def finish(self) -> list:
        """No more tokens: synthesise what is left (the final chunk commits every frame)."""
        self._check_open()
        n = self._tokens.shape[0]
        if n == 0:
            self._closed = "finished"
            raise InputError("the stream got no tokens: need at least one speech token")
        if self.total_tokens is not None and n != self.total_tokens:
            self._closed = "finished"
            raise InputError(f"the stream was declared with {self.total_tokens} tokens but got {n}")
        ready = self._synthesise(n, final=True)
        self._closed = "finished"
        return ready

    def result(self) -> StreamResult:
        """The concatenation of every piece yielded so far, with the stream's timings."""
        wav = (np.concatenate([c.wav for c in self._chunks]) if self._chunks else np.zeros(0, _F32))
        first = next((c.latency for c in self._chunks if c.wav.size), None)
        return StreamResult(wav, self._mel.copy(), SAMPLE_RATE, tuple(self._chunks), self.seed, first,
                            time.perf_counter() - self._start)

    # ------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed == "finished":
            raise InputError("this stream is finished: tokens fed after the end are refused; open a new stream")
        if self._closed is not None:
            raise InputError(f"this stream is ended ({self._closed})")

    def _check_length(self, n: int) -> None:
        if self.total_tokens is not None and n > self.total_tokens:
            raise InputError(f"{n} tokens is more than the {self.total_tokens} the stream was declared with")
        pick_bucket(self.runtime.buckets, TOKEN_MEL_RATIO * (self.voice.prompt_tokens + n))   # BucketError

    def _final_count(self) -> int:
        return self.total_tokens if self.total_tokens is not None else MAX_CHUNK_TOKENS + 1

    def _next_boundary(self) -> int | None:
        if self._boundaries is not None:
            return self._boundaries[self._done_chunks] if self._done_chunks < len(self._boundaries) else None
        return self._synthesised + self.schedule.size(self._done_chunks)

    def _flow(self, n: int, final: bool) -> np.ndarray:
        """Prompt + the first n tokens through encoder and solver; the frames not committed yet."""
        solver_frames = TOKEN_MEL_RATIO * (self.voice.prompt_tokens + n)
        rt = self.runtime
        batch = rt.prepare([Request(self._tokens[:n], self.voice, noise=self.noise.request_noise(solver_frames))])
        conditioning = rt.encode(batch)
        mel = conditioning.mels(rt.solve(conditioning, self.settings))[0]
        end = mel.shape[1] if final else max(self._mel.shape[1], mel.shape[1] - LOOKAHEAD_FRAMES)
        return mel[:, self._mel.shape[1]:end]

    def _synthesise(self, n: int, final: bool) -> list:
        clock = time.perf_counter
        begin = clock()
        self._mel = np.concatenate([self._mel, self._flow(n, final)], axis=1)
        after_flow = clock()
        piece = vocode_step(self.runtime.runners["vocoder"], self._mel, final, self._vocoder,
                            left=self.schedule.left, hold=self.schedule.hold, noise_at=self.noise.sine_at,
                            phase0=self.noise.phase)
        end = clock()
        self._done_chunks += 1
        self._synthesised = n
        if piece is None:
            return []
        start_sample = sum(c.wav.shape[0] for c in self._chunks)
        chunk = StreamChunk(len(self._chunks), piece, start_sample, n, final, end - self._start,
                            {"flow": after_flow - begin, "vocoder": end - after_flow, "total": end - begin})
        self._chunks.append(chunk)
        return [chunk]


def _as_chunks(tokens):
    """A whole array (one chunk, total known) or an iterable of token chunks (total unknown)."""
    if isinstance(tokens, np.ndarray) or (isinstance(tokens, (list, tuple)) and tokens
                                          and all(isinstance(t, (int, np.integer)) for t in tokens)):
        whole = validate_tokens(tokens)
        return [whole], int(whole.shape[0])
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
        raise InputError(f"tokens must be an array of speech tokens or an iterable of token chunks, "
                         f"got {type(tokens).__name__}")
    return tokens, None


def stream(runtime, tokens, voice, *, seed=None, noise=None, solver=None, steps=None, cfg_rate=None,
           first_chunk_tokens=None, chunk_tokens=None, growth=None, left_context_frames=None, hold_frames=None):
    """Generator of StreamChunks; returns (StopIteration.value) the StreamResult. Every option is
    checked before the first graph runs; see S3GenRuntime.stream."""
    defaults = Schedule()
    schedule = Schedule(first=defaults.first if first_chunk_tokens is None else first_chunk_tokens,
                        chunk=defaults.chunk if chunk_tokens is None else chunk_tokens,
                        growth=defaults.growth if growth is None else growth,
                        left=defaults.left if left_context_frames is None else left_context_frames,
                        hold=defaults.hold if hold_frames is None else hold_frames).checked()
    settings = runtime.resolve(solver, steps, cfg_rate)
    chunks, total = _as_chunks(tokens)
    state = TokenStream(runtime, voice, seed=seed, noise=noise, total_tokens=total, schedule=schedule,
                        settings=settings)
    return _drive(state, chunks, total)


def _drive(state: TokenStream, chunks, total):
    for piece in chunks:
        if total is not None:
            for start in range(0, total, state.schedule.first):   # arrival granularity does not matter:
                yield from state.feed(piece[start:start + state.schedule.first])   # the boundaries do
        else:
            yield from state.feed(piece)
    if total is None:
        yield from state.finish()
    return state.result()


def collect(generator) -> tuple[list, StreamResult]:
    """Run a stream to its end: (the yielded chunks, the returned StreamResult)."""
    chunks = []
    while True:
        try:
            chunks.append(next(generator))
        except StopIteration as stop:
            return chunks, stop.value


__all__ = ["stream", "collect", "TokenStream", "Schedule", "StreamChunk", "StreamResult", "LOOKAHEAD_FRAMES",
           "MIN_CHUNK_TOKENS", "MAX_CHUNK_TOKENS", "DEFAULT_FIRST_CHUNK_TOKENS", "DEFAULT_CHUNK_TOKENS"]
