"""Upstream chatterbox-tts objects for the drop-in's tests and bench section j (upstream is installed --no-deps
by `make setup-upstream`; never a dependency of s3gen-aot): a torchaudio stand-in, upstream's S3Gen on the
synthetic checkpoint, and TTS objects whose T3 has random weights (tiny for the tests, the real size for the
bench) and a head that makes it stop after a chosen number of tokens on average."""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import numpy as np

TINY_LLAMA = "s3gen_aot_tiny_llama"
TINY_GPT2 = "s3gen_aot_tiny_gpt2"
REAL_SIZE = {"standard": "Llama_520M", "meanflow": "GPT2_medium"}
SPEECH_IDS = np.arange(100, 110)       # the ids the T3s emit (any 10 valid speech tokens)


def stub_torchaudio() -> None:
    """Upstream imports torchaudio at module level, and the torchaudio wheels here are CUDA builds that do not
    load beside the CPU torch. Nothing on the paths these tests run calls it (embed_ref's resampler and fbank
    are compared through the golden voice files instead), so an empty stand-in that refuses use is enough."""
    if "torchaudio" in sys.modules:
        return

    def module(name):
        mod = types.ModuleType(name)
        mod.__path__ = []
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = mod
        return mod

    torchaudio = module("torchaudio")
    for sub in ("compliance", "transforms", "functional"):
        setattr(torchaudio, sub, module(f"torchaudio.{sub}"))
    torchaudio.compliance.kaldi = module("torchaudio.compliance.kaldi")

    class Resample:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchaudio is a stand-in in these tests")

    torchaudio.transforms.Resample = Resample


class UpstreamMissing(ImportError):
    """chatterbox-tts (or what its modules import) is not installed."""


def import_upstream() -> None:
    """Import upstream chatterbox (torchaudio stood in for); UpstreamMissing where it is not installed."""
    stub_torchaudio()
    try:
        import perth

        if perth.PerthImplicitWatermarker is None:
            # resemble-perth's neural watermarker needs pkg_resources, which this environment lacks; the
            # watermarker is not S3Gen's business, so perth's own pass-through one stands in
            perth.PerthImplicitWatermarker = perth.DummyWatermarker
        importlib.import_module("chatterbox.tts")
    except ImportError as e:
        raise UpstreamMissing(f"upstream chatterbox-tts not installed ({e}); make setup-upstream installs it") from e


def random_ref_dict(prompt_tokens: int = 150, seed: int = 0) -> dict:
    """A voice (prompt_tokens / 25 s) in upstream's ref_dict form (random prompt tokens, a log-mel-like prompt, an x-vector)."""
    import torch

    rng = np.random.default_rng(seed)
    return {"prompt_token": torch.from_numpy(rng.integers(0, 6561, (1, prompt_tokens))),
            "prompt_token_len": torch.tensor([prompt_tokens]),
            "prompt_feat": torch.from_numpy((rng.standard_normal((1, 2 * prompt_tokens, 80)) * 2 - 5).astype(np.float32)),
            "prompt_feat_len": None,
            "embedding": torch.from_numpy(rng.standard_normal((1, 192)).astype(np.float32))}


def upstream_s3gen(checkpoint, meanflow: bool):
    """Upstream's own S3Token2Wav with the synthetic checkpoint's tensors, eval mode."""
    from safetensors.torch import load_file
    from chatterbox.models.s3gen import S3Gen

    model = S3Gen(meanflow=meanflow).eval()
    missing = model.load_state_dict(load_file(str(checkpoint)), strict=False)
    if not set(missing.missing_keys) <= set(S3Gen.ignore_state_dict_missing) or missing.unexpected_keys:
        raise ValueError(f"{checkpoint} does not fit upstream S3Gen: missing {missing.missing_keys[:5]}, "
                         f"unexpected {missing.unexpected_keys[:5]}")
    return model


def _stop_biased_head(t3, mean_tokens: float, temperature: float = 0.8):
    """Zero weights and a bias that leaves only SPEECH_IDS and the stop token, stop with probability
    1 / mean_tokens per step at generate's default temperature: T3 then ends after mean_tokens tokens on
    average instead of running to its 1000-token limit, whatever its random layers compute."""
    import torch

    head = torch.nn.Linear(t3.speech_head.in_features, t3.speech_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-30.0)
        head.bias[SPEECH_IDS] = 0.0
        head.bias[t3.hp.stop_speech_token] = temperature * float(np.log(len(SPEECH_IDS) / (mean_tokens - 1)))
    t3.speech_head = head


def _register_configs():
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    LLAMA_CONFIGS.setdefault(TINY_LLAMA, dict(
        # upstream's perceiver resampler is built 1024 wide, so the width stays; one layer keeps it small
        LLAMA_CONFIGS["Llama_520M"], intermediate_size=1024, num_hidden_layers=1, torch_dtype="float32"))
    LLAMA_CONFIGS.setdefault(TINY_GPT2, dict(
        LLAMA_CONFIGS["GPT2_medium"], n_embd=64, hidden_size=64, n_head=4, n_layer=2, n_ctx=2048, n_positions=2048))


def char_tokenizer_file(path, extra=()):
    """A character-level tokenizers.Tokenizer file with upstream's special tokens (EnTokenizer's format)."""
    from tokenizers import AddedToken, Tokenizer, models

    specials = ["[START]", "[STOP]", "[UNK]", "[SPACE]", *extra]
    symbols = specials + list("abcdefghijklmnopqrstuvwxyz.,!?'")
    tokenizer = Tokenizer(models.BPE({s: i for i, s in enumerate(symbols)}, [], unk_token="[UNK]"))
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in specials])
    tokenizer.save(str(path))
    return path


def standard_tts(s3gen, tmp_path, ref_dict, real_size: bool = False, mean_tokens: float = 11.0):
    """ChatterboxTTS with a random Llama T3 (tiny, or the real 520M layout), upstream's voice encoder, a
    character tokenizer and conditionals."""
    import torch
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS, Conditionals

    _register_configs()
    torch.manual_seed(0)
    hp = T3Config.english_only()
    hp.llama_config_name = REAL_SIZE["standard"] if real_size else TINY_LLAMA
    t3 = T3(hp).eval()
    _stop_biased_head(t3, mean_tokens)
    cond = T3Cond(speaker_emb=torch.randn(1, 256), cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 150)),
                  emotion_adv=0.5 * torch.ones(1, 1, 1))
    tokenizer = EnTokenizer(str(char_tokenizer_file(tmp_path / "tokenizer.json")))
    return ChatterboxTTS(t3, s3gen, VoiceEncoder().eval(), tokenizer, "cpu", Conditionals(cond, dict(ref_dict)))


def turbo_tts(s3gen, tmp_path, ref_dict, real_size: bool = False, mean_tokens: float = 11.0):
    """ChatterboxTurboTTS with a random GPT-2 T3 (tiny, or the real GPT-2 medium layout) and a character
    tokenizer. Turbo's default top_p (0.95) drops the stop token below 5 % mass: generate with top_p=1.0 for
    mean_tokens above ~20."""
    import torch
    from transformers import PreTrainedTokenizerFast
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts_turbo import ChatterboxTurboTTS, Conditionals

    _register_configs()
    torch.manual_seed(0)
    hp = T3Config(text_tokens_dict_size=64)
    hp.llama_config_name = REAL_SIZE["meanflow"] if real_size else TINY_GPT2
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    t3 = T3(hp).eval()
    _stop_biased_head(t3, mean_tokens)
    del t3.tfmr.wte
    cond = T3Cond(speaker_emb=torch.randn(1, 256), cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 375)),
                  emotion_adv=None)
    path = char_tokenizer_file(tmp_path / "turbo_tokenizer.json", extra=["[PAD]"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), unk_token="[UNK]", pad_token="[PAD]")
    return ChatterboxTurboTTS(t3, s3gen, VoiceEncoder().eval(), tokenizer, "cpu", Conditionals(cond, dict(ref_dict)))
