"""One benchmark configuration in its own process, so its peak RSS is its own.

    python -m s3gen_bench.worker CONFIG --checkpoint CKPT --artifacts DIR

CONFIG is eager (the project's PyTorch reference, upstream's algorithm), compile (the same with
torch.compile of the estimator), ort-fp32 or ort-int8 (S3GenRuntime). The worker loads once, then
answers JSON commands, one per line on stdin; each answer is one stdout line starting with
RESULT_PREFIX (anything else a library prints is ignored by the parent). Commands:

    {"op": "warmup", "prompt": P, "new": N}            a 1-step synthesis (compiles for `compile`)
    {"op": "e2e", "prompt": P, "new": N, "seed": S, "save": PATH|null}
    {"op": "estimator", "prompt": P, "new": N, "calls": K}  K estimator calls on real conditioning
    {"op": "rss"}   {"op": "quit"}

Every synthesis uses the same synthetic voice and tokens for (P, N) and noise from draw_noise(S, P, N),
so outputs of different configurations are comparable sample by sample.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

from s3gen_runtime.noise import draw_noise

from s3gen_export.tuning.synthetic_requests import synthetic_tokens, synthetic_voice

from .common import current_rss_mb, peak_rss_mb

RESULT_PREFIX = "@@bench "
CONFIGS = ("eager", "compile", "ort-fp32", "ort-int8")


def upstream_setting(variant: str) -> dict:
    """Upstream's algorithm for a model variant (standard: 10 Euler steps, CFG 0.7; meanflow: 2 steps)."""
    from s3gen_runtime.manifest import Defaults

    return Defaults.upstream(variant).to_dict()


UPSTREAM = upstream_setting("standard")
_clock = time.perf_counter


def request(prompt: int, new: int, seed: int = 0):
    """The benchmark's request of P prompt and N new tokens: fixed voice and tokens, seeded noise."""
    return synthetic_tokens(new, seed=4321 + new), synthetic_voice(prompt, seed=1234 + prompt), draw_noise(seed, prompt, new)


class Timings:
    def __init__(self):
        self.encoder, self.vocoder, self.calls = [], [], []

    def reset(self):
        for values in (self.encoder, self.vocoder, self.calls):
            values.clear()   # in place: the instrumentation holds these lists


def _timed_estimator_class():
    from torch import nn

    class TimedEstimator(nn.Module):
        """The estimator (eager or compiled) with a clock around each call; keeps `meanflow`."""

        def __init__(self, inner, meanflow: bool, calls: list):
            super().__init__()
            self.inner, self.meanflow, self.calls = inner, meanflow, calls

        def forward(self, *args):
            start = _clock()
            out = self.inner(*args)
            self.calls.append(_clock() - start)
            return out

    return TimedEstimator


def _TimedEstimator(inner, meanflow, calls):
    return _timed_estimator_class()(inner, meanflow, calls)


class EagerWorker:
    def __init__(self, checkpoint: str, compile_estimator: bool):
        import torch

        from s3gen_export.model.s3gen import load_s3gen

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        self.model = load_s3gen(checkpoint)
        self.timings = Timings()
        self.compiled = compile_estimator
        est = self.model.flow.decoder.estimator
        inner = torch.compile(est, dynamic=True) if compile_estimator else est
        self.model.flow.decoder.estimator = _TimedEstimator(inner, est.meanflow, self.timings.calls)
        self.setting = upstream_setting(self.model.variant)
        self._instrument()

    def _instrument(self):
        """Time encoder, each estimator call and the vocoder without touching the reference code."""
        t, model = self.timings, self.model
        encode = model.flow.encode

        def timed_encode(*a, **k):
            start = _clock()
            out = encode(*a, **k)
            t.encoder.append(_clock() - start)
            return out

        model.flow.encode = timed_encode
        starts = []
        model.mel2wav.register_forward_pre_hook(lambda m, a: starts.append(_clock()))
        model.mel2wav.register_forward_hook(lambda m, a, o: t.vocoder.append(_clock() - starts.pop()))

    def synthesize(self, prompt, new, seed, steps):
        from s3gen_export.model.reference import Noise, synthesize

        tokens, voice, noise = request(prompt, new, seed)
        out = synthesize(self.model, tokens, voice.prompt_token, voice.prompt_feat, voice.embedding, Noise(**noise),
                         n_timesteps=steps, cfg_rate=self.setting["cfg_rate"])
        return out["mel"][0], out["wav"][0]

    def estimator_calls(self, prompt, new, calls):
        from s3gen_export.model.estimator import GuidedEstimator

        torch = self.torch
        tokens, voice, noise = request(prompt, new)
        with torch.inference_mode():
            enc = self.model.flow.encode(torch.as_tensor(tokens).reshape(1, -1), torch.tensor([new]),
                                         torch.as_tensor(voice.prompt_token), torch.tensor([prompt]),
                                         torch.as_tensor(voice.prompt_feat), torch.tensor([voice.prompt_frames]),
                                         torch.as_tensor(voice.embedding))
            guided = GuidedEstimator(self.model.flow.decoder.estimator)
            x = torch.as_tensor(noise["z"])
            for _ in range(calls):
                guided(x, enc["mask"], enc["mu"], torch.tensor([0.5]), enc["spks"], enc["cond"], torch.tensor([0.7]))


class OrtWorker:
    def __init__(self, artifacts: str, precision: str):
        from s3gen_runtime.pipeline import S3GenRuntime

        self.runtime = S3GenRuntime(artifacts, precision=precision)
        self.timings = Timings()
        self.setting = upstream_setting(self.runtime.variant)
        runner = self.runtime.runners["estimator_cfg" if self.setting["cfg_rate"] > 0 else "estimator"]
        run, calls = runner.run, self.timings.calls

        def timed_run(*a, **k):
            start = _clock()
            out = run(*a, **k)
            calls.append(_clock() - start)
            return out

        runner.run = timed_run   # an instance attribute: the per-call clock, nothing else changes

    def synthesize(self, prompt, new, seed, steps):
        tokens, voice, noise = request(prompt, new, seed)
        result = self.runtime.synthesize(tokens, voice, noise=noise, solver=self.setting["solver"], steps=steps,
                                         cfg_rate=self.setting["cfg_rate"])
        self.timings.encoder.append(result.timings["encoder"])
        self.timings.vocoder.append(result.timings["vocoder"])
        return result.mel, result.wav

    def estimator_calls(self, prompt, new, calls):
        from s3gen_export.tuning.flow_problems import prepare_problem

        tokens, voice, noise = request(prompt, new)
        problem = prepare_problem(self.runtime, tokens, voice, (0,), self.setting["cfg_rate"])
        velocity, x0 = problem.velocity(), problem.conditioning.x0
        for _ in range(calls):
            velocity(x0, 0.5, 0.6)


def handle(worker, cmd: dict) -> dict:
    op = cmd["op"]
    if op == "rss":
        return {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb()}
    if op == "estimator":
        worker.timings.reset()
        worker.estimator_calls(cmd["prompt"], cmd["new"], cmd["calls"])
        return {"calls": list(worker.timings.calls)}
    if op in ("warmup", "e2e"):
        worker.timings.reset()
        steps = 1 if op == "warmup" else worker.setting["steps"]
        start = _clock()
        mel, wav = worker.synthesize(cmd["prompt"], cmd["new"], cmd.get("seed", 0), steps)
        total = _clock() - start
        if cmd.get("save"):
            np.savez(cmd["save"], mel=mel, wav=wav)
        t = worker.timings
        return {"total": total, "encoder": sum(t.encoder), "vocoder": sum(t.vocoder), "calls": list(t.calls),
                "nfe": len(t.calls), "audio_seconds": wav.shape[-1] / 24000.0, "peak_rss_mb": peak_rss_mb(),
                "rss_after_mb": current_rss_mb(),
                "finite": bool(np.all(np.isfinite(mel)) and np.all(np.isfinite(wav)))}
    raise ValueError(f"unknown op {op!r}")


def reply(data: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(data) + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", choices=CONFIGS)
    parser.add_argument("--checkpoint")
    parser.add_argument("--artifacts")
    args = parser.parse_args(argv)
    start = _clock()
    try:
        if args.config in ("eager", "compile"):
            worker = EagerWorker(args.checkpoint, args.config == "compile")
        else:
            worker = OrtWorker(args.artifacts, args.config.split("-")[1])
    except Exception as e:   # the parent records why this configuration has no numbers
        reply({"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
        return 1
    reply({"ok": True, "load_seconds": _clock() - start, "rss_mb": current_rss_mb(), "peak_rss_mb": peak_rss_mb()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            reply({"ok": True, "peak_rss_mb": peak_rss_mb()})
            return 0
        try:
            reply({"ok": True, **handle(worker, cmd)})
        except Exception as e:
            reply({"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
