"""bench/solvers.py measures the runtime itself: a FlowProblem is a runtime batch, and its solves are
the runtime's, bit for bit, so tune and the fidelity benchmark report what synthesize would produce."""
import numpy as np
import pytest

from s3gen_export.tuning.synthetic_requests import synthetic_tokens, synthetic_voice
from s3gen_export.tuning.flow_problems import prepare_cases, solve_mel, subproblem
from s3gen_runtime.batching import Request
from s3gen_runtime.errors import InputError
from s3gen_runtime.pipeline import S3GenRuntime

CASES = [(synthetic_tokens(5, seed=1), synthetic_voice(3, seed=2)), (synthetic_tokens(8, seed=3), synthetic_voice(2, seed=4))]
SEEDS = (0, 9)


@pytest.fixture(scope="module")
def runtime(exported):
    return S3GenRuntime(exported("standard"))


@pytest.mark.parametrize("solver, steps, cfg_rate", [("heun", 2, 0.7), ("dpmpp2m", 3, 0.0)])
def test_solve_mel_is_the_runtimes_synthesis(runtime, solver, steps, cfg_rate):
    problem = prepare_cases(runtime, CASES, SEEDS, cfg_rate)
    assert problem.keys == ((0, 0), (0, 9), (1, 0), (1, 9)) and problem.seeds == SEEDS
    mels, seconds, nfe = solve_mel(problem, solver, steps)
    assert nfe == runtime.resolve(solver, steps).nfe and seconds > 0
    requests = [Request(CASES[c][0], CASES[c][1], seed=s) for c, s in problem.keys]
    results = runtime.synthesize_batch(requests, solver=solver, steps=steps, cfg_rate=cfg_rate)
    for mel, result in zip(mels, results):
        assert np.array_equal(mel, result.mel)


def test_subproblem_is_the_row_alone(runtime):
    problem = prepare_cases(runtime, CASES, SEEDS, 0.7)
    batch_mels, _, _ = solve_mel(problem, "euler", 2)
    (mel,), _, _ = solve_mel(subproblem(problem, 3), "euler", 2)
    alone = runtime.synthesize(CASES[1][0], CASES[1][1], seed=9, solver="euler", steps=2, cfg_rate=0.7).mel
    assert subproblem(problem, 3).keys == ((1, 9),)
    assert np.abs(mel - alone).max() < 5e-5 and np.abs(mel - batch_mels[3]).max() < 5e-5


def test_settings_outside_the_runtimes_limits_are_refused(runtime):
    problem = prepare_cases(runtime, CASES[:1], (0,), 0.7)
    with pytest.raises(InputError, match="at most 1000"):
        solve_mel(problem, "euler", 1001)
