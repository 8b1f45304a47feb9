"""The TensorRT backend's pure parts: compatibility and freshness checks, engine selection, the
manifest's engine records, and the clear errors when TensorRT is missing (no GPU needed)."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from s3gen_runtime.backends.tensorrt.bucketed import open_tensorrt
from s3gen_runtime.backends.tensorrt.compat import (
    EngineMismatchWarning,
    TensorRTUnavailableError,
    check_engine_compatible,
    check_engine_fresh,
    parse_compute_capability,
    parse_version,
    sm_tag,
)
from s3gen_runtime.backends.tensorrt.runner import TensorRTRunner
from s3gen_runtime.backends.tensorrt.selection import axis_sizes, bucket_frames, engines_for, select_engine
from s3gen_runtime.errors import ArtifactError, BucketError, EngineMismatchError, InputError, S3GenError
from s3gen_runtime.manifest import Engine, Manifest, load_manifest
from tiny_engines import engine_record, record, write_tiny_artifacts

REPO = Path(__file__).resolve().parents[2]


# ================================================================ compatibility (pure)

def test_parse_version_and_compute_capability():
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("v11.4") == (11, 4)
    for value, want in (("9.0", (9, 0)), ("sm90", (9, 0)), ("sm_86", (8, 6)), ("80", (8, 0)), ((12, 0), (12, 0)),
                        ("sm100", (10, 0)), ("12.1", (12, 1))):
        assert parse_compute_capability(value) == want
    assert sm_tag("9.0") == "sm90" and sm_tag("10.0") == "sm100"
    with pytest.raises(ArtifactError):
        parse_compute_capability("hopper")
    with pytest.raises(ArtifactError):
        parse_version("")


def _engine(**changes) -> Engine:
    base = engine_record("engines/estimator.mel256.fp16.sm90.engine", b"x", "mel256", 0, 256, "0" * 64)
    base.update(changes)
    return Engine.from_dict(base, "engine")


def test_foreign_gpu_engine_is_refused_with_the_rebuild_command():
    foreign = _engine(compute_capability="8.0", tensorrt="10.0.1", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.0\.1.*10\.3\.0") as e:
        check_engine_compatible(foreign, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3", folder="/art")
    assert "rebuild for this GPU: s3gen-aot build-engines /art --precision fp16" in str(e.value)
    same_trt = _engine(compute_capability="8.0", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.0.*9\.0") as e:
        check_engine_compatible(same_trt, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
    assert "rebuild for this GPU: s3gen-aot build-engines DIR --precision fp16" in str(e.value)
    assert isinstance(e.value, ArtifactError) and isinstance(e.value, S3GenError)


def test_same_gpu_engine_is_accepted_and_another_name_only_warns():
    engine = _engine()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
        check_engine_compatible(engine, "10.3.0.26", "sm90", "NVIDIA H100 80GB HBM3")   # build number only
    with pytest.warns(EngineMismatchWarning, match="NVIDIA H100 NVL"):
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 NVL")
    with pytest.raises(EngineMismatchError):
        check_engine_compatible(engine, "10.4.0", "9.0", "NVIDIA H100 80GB HBM3")


def test_stale_engine_is_refused():
    engine = _engine(build_options={"onnx_sha256": "a" * 64})
    component = SimpleNamespace(sha256="b" * 64)
    with pytest.raises(EngineMismatchError, match="stale"):
        check_engine_fresh(engine, component)
    check_engine_fresh(engine, SimpleNamespace(sha256="a" * 64))
    with pytest.raises(ArtifactError, match="onnx_sha256"):
        check_engine_fresh(_engine(build_options={}), component)


# ================================================================ engine selection (pure)

def test_select_engine_picks_the_smallest_bucket_that_fits(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    for frames, bucket in ((1, "mel256"), (256, "mel256"), (257, "mel512"), (512, "mel512"), (513, "mel1024"),
                           (1024, "mel1024")):
        assert select_engine(manifest, "estimator", frames, 1, "fp16").bucket == bucket
    assert select_engine(manifest, "estimator", 300, 2, "fp16", compute_capability="9.0").bucket == "mel512"
    with pytest.raises(BucketError, match="1025.*mel1024"):
        select_engine(manifest, "estimator", 1025, 1, "fp16")
    with pytest.raises(InputError, match="batch of 3.*1..2"):
        select_engine(manifest, "estimator", 100, 3, "fp16")
    with pytest.raises(ArtifactError, match="no fp32 TensorRT engine.*build-engines DIR --precision fp32"):
        select_engine(manifest, "estimator", 100, 1, "fp32")
    with pytest.raises(ArtifactError, match="compute capability 8.0"):
        select_engine(manifest, "estimator", 100, 1, "fp16", compute_capability="8.0")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 0, 1, "fp16")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 10, 1, "int8")
    assert [e.bucket for e in engines_for(manifest, "estimator", "fp16")] == ["mel256", "mel512", "mel1024"]


def test_select_engine_refuses_a_gap_between_engines(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    data = manifest.to_dict()
    data["engines"] = [e for e in data["engines"] if e["bucket"] != "mel512"]   # mel1024 still starts at 513
    gapped = Manifest.from_dict(data)
    with pytest.raises(ArtifactError, match="513..1024"):
        select_engine(gapped, "estimator", 300, 1, "fp16")
    assert select_engine(gapped, "estimator", 600, 1, "fp16").bucket == "mel1024"


def test_bucket_frames_per_graph():
    assert bucket_frames({"batch": 2, "frames": 700}) == 700
    assert bucket_frames({"batch": 1, "mel_frames": 300, "samples": 144000}) == 300
    assert bucket_frames({"batch": 1, "tokens": 200, "prompt_tokens": 150, "prompt_frames": 300}) == 700
    with pytest.raises(InputError):
        bucket_frames({"batch": 1})
    component = SimpleNamespace(inputs=[SimpleNamespace(name="x", shape=("batch", 80, "frames")),
                                        SimpleNamespace(name="t", shape=("batch",))])
    assert axis_sizes(component, {"x": (2, 80, 33), "t": (2,)}) == {"batch": 2, "frames": 33}


# ================================================================ the manifest round trip

def test_engine_records_round_trip_through_the_strict_parser(tmp_path, fake_gpu):
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder)
    again = load_manifest(folder, verify=True)
    assert again.engines == manifest.engines
    assert again.engines[0].build_options["frames_range"] == [1, 256]
    text = (folder / "manifest.json").read_text()
    data = json.loads(text)
    data["engines"][0]["surprise"] = 1
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="unknown key engines\\[0\\].surprise"):
        load_manifest(folder)


# ================================================================ missing pieces

def test_missing_tensorrt_gives_the_install_command(tiny, monkeypatch):
    folder, manifest = tiny
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import tensorrt -> ImportError
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed: pip install 's3gen-aot\[tensorrt\]'"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))
    with pytest.raises(S3GenError, match="TensorRT is not installed"):
        open_tensorrt(folder, manifest, "estimator")


def test_runtime_backend_imports_neither_torch_nor_tensorrt():
    code = ("import sys; import s3gen_runtime.backends.tensorrt.bucketed, s3gen_runtime.backends.onnxruntime_cuda, "
            "s3gen_runtime.backends.gpu; "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
