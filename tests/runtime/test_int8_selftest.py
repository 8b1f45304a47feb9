"""The int8 self-test at load: a quantized graph whose output on this CPU drifts from fp32 (as ONNX
Runtime's saturating int8 kernels make it on x86 CPUs without VNNI) is refused before any synthesis;
the same artifacts pass where the kernels are accurate."""
import json

import numpy as np
import pytest
from pipeline_helpers import add_int8_standin, linked_copy, tiny

from s3gen_runtime.backends.onnxruntime import OnnxRuntimeRunner
from s3gen_runtime.errors import ArtifactError, ManifestError
from s3gen_runtime.pipeline import S3GenRuntime

pytest.importorskip("onnx")


@pytest.fixture
def int8_folder(exported, tmp_path):
    return add_int8_standin(linked_copy(exported("meanflow"), tmp_path / "art"))


def test_accurate_int8_graph_passes_and_records_its_snr(int8_folder):
    runtime = S3GenRuntime(int8_folder, precision="int8")
    record = runtime.manifest.component("vocoder_int8").selftest
    assert set(record.cpu) >= {"flags", "int8_dot_product"}
    assert set(runtime.selftest_snr_db) == {"vocoder_int8"}
    assert all(v >= record.min_snr_db[k] for k, v in runtime.selftest_snr_db["vocoder_int8"].items())
    tokens, voice = tiny()
    assert runtime.synthesize(tokens, voice, seed=1).wav.size > 0


def test_drifting_int8_kernels_are_refused_at_load(int8_folder, monkeypatch):
    exact = OnnxRuntimeRunner._run

    def saturating(self, feeds, outputs):
        out = exact(self, feeds, outputs)
        if self.name.endswith("_int8"):   # ~11 dB, what the u8s8 path gives on an AVX2-only CPU
            rng = np.random.default_rng(0)
            out = {k: v + rng.standard_normal(v.shape).astype(v.dtype) * 0.28 * np.sqrt(np.mean(v ** 2))
                   for k, v in out.items()}
        return out

    monkeypatch.setattr(OnnxRuntimeRunner, "_run", saturating)
    with pytest.raises(ArtifactError, match=r"vocoder_int8: int8 self-test failed on this CPU: .*wav 1\d\.\d dB "
                                            r"\(floor 25 dB\).*validated on .*this CPU: "):
        S3GenRuntime(int8_folder, precision="int8")
    S3GenRuntime(int8_folder)   # fp32 never opens the int8 graph


def test_tampered_probe_is_refused(int8_folder):
    probe = int8_folder / "selftest" / "vocoder_int8.npz"
    data = bytearray(probe.read_bytes())
    data[-100] ^= 1
    probe.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="components.vocoder_int8.selftest: file selftest/vocoder_int8.npz is "
                                            "tampered or corrupt"):
        S3GenRuntime(int8_folder, precision="int8")


def test_int8_record_without_selftest_is_refused(int8_folder):
    data = json.loads((int8_folder / "manifest.json").read_text())
    data["components"]["vocoder_int8"]["selftest"] = None
    (int8_folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="components.vocoder_int8.selftest is null: an int8 graph needs its "
                                            "self-test probe"):
        S3GenRuntime(int8_folder, precision="int8")
