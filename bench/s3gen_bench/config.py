"""What each benchmark section measures, for the full run and for --quick."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False
    # a. speed: e2e (tokens -> wav) at each audio length after a fixed prompt, upstream's setting
    speed_prompt_tokens: int = 150                      # 6 s at 25 tokens/s
    speed_lengths_s: tuple = (5, 10, 20, 40)
    speed_repeats: tuple = (3, 2, 1, 1)                # per length (fewer for long audio)
    speed_warmup_new_tokens: int = 25
    # OpenMP threads of the torch configurations sleep instead of spinning at barriers. On an idle
    # machine this changes nothing (estimator call, 550 frames: 1.47 s default, 1.50 s passive); on
    # this shared 2-core machine libgomp's default spin-wait made eager calls up to 10x slower
    # whenever another process was busy (200 frames: 0.5-11.5 s default, 0.49-0.56 s passive),
    # which would inflate every speedup against eager. None keeps the default.
    torch_omp_wait_policy: str | None = "PASSIVE"
    compile: bool = True
    compile_timeout_s: float = 600.0
    compile_expected_s: float = 200.0                   # attempted only when this much budget is left
    compile_e2e_lengths_s: tuple = (5,)                 # elsewhere: estimator calls only (compile
    compile_component_calls: int = 2                    # changes only the estimator; e2e runs cost minutes)
    worker_timeout_s: float = 900.0
    speed_budget_s: float = 930.0                       # extra repeats / compile runs only while they fit
    # b. fidelity: solvers x NFE against a converged solution, several seeds, two lengths
    fidelity_prompt_tokens: int = 10
    fidelity_lengths_s: tuple = (0.6, 1.2)              # generated audio after the prompt (50 / 80 frames)
    fidelity_seeds: tuple = (0, 1)
    fidelity_nfe: tuple = (2, 4, 8, 16, 32)
    fidelity_reference_solver: str = "euler"            # see fidelity.py for why Euler
    fidelity_reference_steps: int = 256                 # every row; the shortest row also at twice as many
    fidelity_reference_min_steps: int = 128             # the least the time budget may cut it to
    fidelity_budget_s: float = 540.0
    fidelity_min_nfe_cap: int = 16                      # the grid's largest NFE may drop to this to fit
    # c. scaling
    scaling_frames: tuple = (256, 512, 1024, 2048)
    scaling_repeats: int = 2
    batch_sizes: tuple = (1, 2, 4, 8)
    batch_frames: int = 256
    batch_repeats: int = 1
    profile_frames: tuple = (550, 1300)                 # the 5 s and 20 s cases: 2 (150 + N)
    # d. memory: weights from the graphs; RSS from each configuration's own process (section a)
    # e. meanflow (Turbo): its own checkpoint and export, 2 steps without CFG, eager vs ORT fp32 / int8
    meanflow_lengths_s: tuple = (5, 10, 20, 40)
    meanflow_repeats: tuple = (2, 1, 1, 1)
    meanflow_budget_s: float = 420.0
    # f. voice preparation of a 12 s clip (cropped to 10 s), after one warm-up
    voice_repeats: int = 3
    # g. Vocos vs HiFT: batch-1 vocoder graph runs per audio length, after one warm-up
    vocos_lengths_s: tuple = (5, 20)
    vocos_repeats: int = 3
    # j. Chatterbox generate(): real-size T3 (random weights) stopping after ~this many tokens (1.6 s of audio), repeats
    chatterbox_mean_tokens: float = 40.0
    chatterbox_repeats: int = 2
    # the whole run (export included): sections shrink their optional work to stay within it
    total_budget_s: float = 27.5 * 60.0
    reserve_fidelity_s: float = 300.0     # kept for section b when section a's budget is set
    reserve_scaling_s: float = 120.0

    @classmethod
    def quick_config(cls) -> "BenchConfig":
        return cls(quick=True, speed_prompt_tokens=50, speed_lengths_s=(2,), speed_repeats=(1,), speed_warmup_new_tokens=5, compile=False,
                   speed_budget_s=120.0, fidelity_lengths_s=(0.6,), fidelity_seeds=(0,), fidelity_nfe=(2, 4),
                   fidelity_reference_steps=8, fidelity_reference_min_steps=4, fidelity_budget_s=40.0,
                   scaling_frames=(128, 256), scaling_repeats=1, batch_sizes=(1, 2), batch_frames=128, profile_frames=(128,), fidelity_min_nfe_cap=4,
                   batch_repeats=1, worker_timeout_s=300.0, total_budget_s=180.0, reserve_fidelity_s=30.0,
                   reserve_scaling_s=15.0, meanflow_lengths_s=(2,), meanflow_repeats=(1,), meanflow_budget_s=90.0,
                   voice_repeats=1, vocos_lengths_s=(2,), vocos_repeats=1)

    def to_dict(self) -> dict:
        return asdict(self)
