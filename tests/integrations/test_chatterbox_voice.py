"""embed_ref and the tokenizer of the drop-in against upstream's own outputs on the same clips (the golden
voice files: upstream's embed_ref with the synthetic weights), at the golden voice README's tolerances; and
the checks on what upstream's callers pass."""
import numpy as np
import pytest
import torch

from s3gen_runtime import frontend
from s3gen_runtime.errors import InputError
from s3gen_runtime.fsq import fsq_tokens
from s3gen_chatterbox import S3GenDropIn
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice_prep import run_tokenizer

CASES = ["voice_aishell_16k", "voice_espeak_enus_22k"]
PROMPT_FEAT_TOL, EMBEDDING_TOL = 1e-3, 1e-5


@pytest.fixture(scope="module")
def drop_in(exported):
    """Over the meanflow artifacts: the same voice graphs as the standard ones, and 2-step syntheses."""
    return S3GenDropIn(S3GenRuntime(exported("meanflow")))


def golden_voice(golden, case):
    g = np.load(golden(f"voice/{case}.npz"))
    return {k: g[k] for k in g.files}


def tokens_match(got, g):
    """Exact, except where the golden FSQ value lies within 1e-4 of a rounding boundary."""
    want = g["tokenizer_tokens"][0]
    assert got.shape == want.shape
    near = (np.abs(np.abs(g["tokenizer_fsq"][0]) - 0.5) < 1e-4).any(axis=1)
    assert np.array_equal(got[~near], want[~near])


@pytest.mark.parametrize("case", CASES)
def test_embed_ref_matches_upstreams(drop_in, golden, case):
    g = golden_voice(golden, case)
    ref = drop_in.embed_ref(torch.from_numpy(g["wav24"]), 24000)
    assert set(ref) == {"prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding"}
    assert ref["prompt_token"].dtype == torch.int64 and ref["prompt_feat"].dtype == torch.float32
    np.testing.assert_array_equal(ref["prompt_token"].numpy(), g["prompt_token"])
    assert int(ref["prompt_token_len"][0]) == int(g["prompt_token_len"][0])
    assert ref["prompt_feat"].shape == g["prompt_feat"].shape and ref["prompt_feat_len"] is None
    assert np.abs(ref["prompt_feat"].numpy() - g["prompt_feat"]).max() <= PROMPT_FEAT_TOL
    assert np.abs(ref["embedding"].numpy() - g["embedding"]).max() <= EMBEDDING_TOL


@pytest.mark.parametrize("case", CASES)
def test_tokenizer_matches_upstreams(drop_in, golden, case):
    g = golden_voice(golden, case)
    tokens, lengths = drop_in.tokenizer(torch.from_numpy(g["wav16"]))   # a (1, L) tensor, as ChatterboxVC passes
    assert tokens.dtype == torch.int64 and tokens.shape[0] == 1 and int(lengths[0]) == tokens.shape[1]
    tokens_match(tokens[0].numpy(), g)
    # a list with max_len, as prepare_conditionals passes: upstream cuts the clip's log-mel (its max - 8 floor
    # taken over the whole clip) to 4 max_len frames before the encoder
    cut, cut_lengths = drop_in.tokenizer.forward([g["wav16"][0]], max_len=40)
    mel = frontend.tokenizer_log_mel(g["wav16"][0])[:, : 4 * 40]
    want = fsq_tokens(run_tokenizer(drop_in._voice_graphs()["tokenizer"], mel)).tokens
    assert cut.shape == (1, 40) and int(cut_lengths[0]) == 40
    np.testing.assert_array_equal(cut[0].numpy(), want)


def test_tokenizer_pads_a_batch_of_clips(drop_in, golden):
    a, b = (golden_voice(golden, c)["wav16"][0] for c in CASES)
    tokens, lengths = drop_in.tokenizer([a, b])
    assert tokens.shape == (2, int(lengths.max())) and int(lengths.min()) < int(lengths.max())
    short = int(np.argmin(lengths.numpy()))
    assert not tokens[short, int(lengths[short]):].any()


def test_ref_wav_instead_of_ref_dict_gives_the_same_audio(drop_in, golden):
    g = golden_voice(golden, CASES[0])
    tokens = torch.from_numpy(g["speech_tokens"])
    torch.manual_seed(1)
    wav_ref, _ = drop_in.inference(tokens, ref_dict=drop_in.embed_ref(g["wav24"], 24000), n_cfm_timesteps=2)
    torch.manual_seed(1)
    wav_wav, _ = drop_in.inference(tokens, ref_wav=torch.from_numpy(g["wav24"]), ref_sr=24000, n_cfm_timesteps=2)
    assert torch.equal(wav_ref, wav_wav)


def test_bad_calls_are_refused_by_name(drop_in, golden):
    g = golden_voice(golden, CASES[0])
    ref = drop_in.embed_ref(g["wav24"], 24000)
    tokens = torch.from_numpy(g["speech_tokens"])
    cases = [
        (lambda: drop_in.inference(tokens), "exactly one of ref_wav"),
        (lambda: drop_in.inference(tokens, ref_wav=g["wav24"], ref_sr=24000, ref_dict=ref), "exactly one of ref_wav"),
        (lambda: drop_in.inference(torch.tensor([[6561, 6562]]), ref_dict=ref), "empty after dropping ids >= 6561"),
        (lambda: drop_in.inference(torch.tensor([[1, 6561]]), ref_dict=ref, drop_invalid_tokens=False), "6561"),
        (lambda: drop_in.inference(torch.zeros(2, 5, dtype=torch.long), ref_dict=ref), "one utterance per call"),
        (lambda: drop_in.inference(tokens, ref_dict={**ref, "prompt_feat": ref["prompt_feat"][:, :7]}), "prompt"),
        (lambda: drop_in.inference(tokens, ref_dict={"prompt_token": ref["prompt_token"]}), "lacks"),
        (lambda: drop_in.embed_ref(np.full(24000, np.nan, np.float32), 24000), "NaN"),
        (lambda: drop_in.embed_ref(g["wav24"], 0), "ref_sr"),
        (lambda: drop_in.flow_inference(tokens, ref_dict=ref), "finalize=False"),
        (lambda: drop_in.hift_inference(torch.zeros(1, 80, 4), torch.zeros(1, 1, 8)), "cache_source"),
        (lambda: drop_in.hift_inference(torch.zeros(1, 40, 4)), "(1, 80, M)"),
    ]
    for call, words in cases:
        with pytest.raises(InputError) as e:
            call()
        assert words in str(e.value), (words, str(e.value))


def test_hift_inference_vocodes_the_flows_mel(drop_in, golden):
    """flow_inference then hift_inference (upstream's two halves) = inference without its fade-in."""
    g = golden_voice(golden, CASES[0])
    ref = drop_in.embed_ref(g["wav24"], 24000)
    tokens = torch.from_numpy(g["speech_tokens"])
    torch.manual_seed(5)
    mel = drop_in.flow_inference(tokens, ref_dict=ref, n_cfm_timesteps=2, finalize=True)
    wav, source = drop_in.hift_inference(mel)
    torch.manual_seed(5)
    whole, _ = drop_in.inference(tokens, ref_dict=ref, n_cfm_timesteps=2)
    assert source is None and wav.shape == whole.shape == (1, 480 * mel.shape[2])
    assert float((wav[:, 960:] - whole[:, 960:]).abs().max()) <= 1e-5   # past the 40 ms fade
