"""TensorRT engine planning (profiles, file names, buckets) and validation (tolerances, records),
on the exported synthetic graphs; no TensorRT needed."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from s3gen_export import engines
from s3gen_export.components import specs_for_variant
from s3gen_export.engines import (
    axis_ranges,
    buildable_graphs,
    engine_file_name,
    engine_tolerances,
    plan_profiles,
    random_feeds,
    resolve_buckets,
    update_manifest,
    validate_engine,
    validation_shapes,
)

from s3gen_runtime.backends.tensorrt.selection import axis_sizes, bucket_frames
from s3gen_runtime.buckets import Bucket, make_buckets
from s3gen_runtime.errors import ArtifactError, InputError
from s3gen_runtime.manifest import Manifest, Tolerance, load_manifest, write_manifest


B = {b.name: b for b in make_buckets()}   # mel256 .. mel4096


# ================================================================ planning

def test_axis_ranges_tile_the_buckets_without_overlap():
    buckets = make_buckets()
    covered = []
    for i, b in enumerate(buckets):
        r = axis_ranges(b, buckets[i - 1] if i else None, 1, 2, 4)
        lo, opt, hi = r["frames"]
        assert (opt, hi) == (b.mel_frames, b.mel_frames)
        covered.append((lo, hi))
        assert r["batch"] == (1, 2, 4)
        assert r["samples"] == tuple(480 * v for v in r["frames"])
        assert r["tokens"] == r["prompt_tokens"] == (1, b.tokens // 2, b.tokens)
        assert r["prompt_frames"] == tuple(2 * v for v in r["tokens"])
    assert covered[0][0] == 1
    assert all(covered[i + 1][0] == covered[i][1] + 1 for i in range(len(covered) - 1))


def test_plan_profiles_estimator(standard):
    _, manifest = standard
    for component in (manifest.component("estimator_cfg"), specs_for_variant("standard")[1]):
        p = plan_profiles(component, B["mel1024"], B["mel512"], 1, 1, 4)
        assert p["x"] == ((1, 80, 513), (1, 80, 1024), (4, 80, 1024))
        assert p["mask"] == ((1, 1, 513), (1, 1, 1024), (4, 1, 1024))
        assert p["spks"] == ((1, 80), (1, 80), (4, 80))
        assert p["t"] == p["cfg_rate"] == ((1,), (1,), (4,))
        assert set(p) == {"x", "mask", "mu", "t", "spks", "cond", "cfg_rate"}
    smallest = plan_profiles(manifest.component("estimator"), B["mel256"], None, 2, 2, 2)
    assert smallest["x"] == ((2, 80, 1), (2, 80, 256), (2, 80, 256))


def test_plan_profiles_encoder(standard):
    _, manifest = standard
    p = plan_profiles(manifest.component("encoder"), B["mel1024"], B["mel512"], 1, 2, 3)
    assert p["tokens"] == ((1, 1), (2, 256), (3, 512))            # capacity 512 tokens, opt half each
    assert p["prompt_tokens"] == ((1, 1), (2, 256), (3, 512))
    assert p["prompt_feat"] == ((1, 2, 80), (2, 512, 80), (3, 1024, 80))   # 2 x prompt_tokens
    assert p["embedding"] == ((1, 192), (2, 192), (3, 192))
    assert p["token_lengths"] == ((1,), (2,), (3,))


def test_plan_profiles_vocoder(standard):
    _, manifest = standard
    p = plan_profiles(manifest.component("vocoder"), B["mel2048"], B["mel1024"], 1, 1, 4)
    assert p["mel"] == ((1, 80, 1025), (1, 80, 2048), (4, 80, 2048))
    assert p["sine_noise"] == ((1, 9, 480 * 1025), (1, 9, 480 * 2048), (4, 9, 480 * 2048))
    assert p["sine_phase"] == ((1, 9, 1), (1, 9, 1), (4, 9, 1))


def test_plan_profiles_rejects_bad_arguments(standard):
    _, manifest = standard
    vocoder = manifest.component("vocoder")
    for args, message in (((2, 1, 4), "min_batch <= opt_batch <= max_batch"), ((1, 5, 4), "opt_batch"),
                          ((0, 1, 4), "min_batch must be a positive"), ((1, 1, True), "max_batch"),
                          ((1.5, 2, 4), "min_batch")):
        with pytest.raises(InputError, match=message):
            plan_profiles(vocoder, B["mel512"], B["mel256"], *args)
    with pytest.raises(InputError, match="must be smaller"):
        plan_profiles(vocoder, B["mel512"], B["mel1024"])
    with pytest.raises(InputError, match="Bucket"):
        plan_profiles(vocoder, 512, None)
    odd = type("C", (), {"inputs": [type("T", (), {"name": "z", "shape": ("batch", "width")})()]})()
    with pytest.raises(InputError, match="no profile rule for axis 'width'"):
        plan_profiles(odd, B["mel512"], None)


def test_validation_shapes_are_real_requests(standard):
    """Each case is a shape a request can have, inside the profile, and ONNX Runtime runs it."""
    folder, manifest = standard
    for name in ("encoder", "estimator_cfg", "vocoder"):
        component = manifest.component(name)
        profile = plan_profiles(component, B["mel512"], B["mel256"], 1, 1, 2)
        cases = validation_shapes(component, B["mel512"], B["mel256"], 1, 1, 2)
        assert list(cases) == ["min", "opt", "max"]
        for case, shapes in cases.items():
            for n, shape in shapes.items():
                lo, _, hi = profile[n]
                assert all(a <= s <= b for s, a, b in zip(shape, lo, hi)), (name, case, n, shape)
            axes = axis_sizes(component, shapes)
            frames = bucket_frames(axes)
            assert 256 < frames <= 512, (name, case, frames)
    enc = validation_shapes(manifest.component("encoder"), B["mel4096"], B["mel2048"], 1, 1, 4)["max"]
    assert 2 * (enc["tokens"][1] + enc["prompt_tokens"][1]) == 4096 < 5000   # within the positional table
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])
    component = manifest.component("vocoder")
    shapes = validation_shapes(component, Bucket("mel8", 8), None, 1, 1, 2)
    for case in ("min", "max"):
        feeds = random_feeds(component, shapes[case], np.random.default_rng(0))
        assert feeds["mel_lengths"][0] == shapes[case]["mel"][2] and feeds["mel_lengths"].dtype == np.int64
        assert feeds["sine_phase"][:, 0].max() == 0.0
        wav, f0 = session.run(None, feeds)
        assert np.isfinite(wav).all() and wav.shape == (shapes[case]["mel"][0], 480 * shapes[case]["mel"][2])


def test_random_feeds_follow_the_inputs_meaning(standard):
    _, manifest = standard
    component = manifest.component("encoder")
    shapes = validation_shapes(component, B["mel256"], None, 1, 1, 3)["max"]
    feeds = random_feeds(component, shapes, np.random.default_rng(1))
    assert feeds["tokens"].max() < 6561 and feeds["tokens"].min() >= 0
    assert (feeds["token_lengths"] <= shapes["tokens"][1]).all() and (feeds["token_lengths"] >= 1).all()
    assert feeds["token_lengths"][0] == shapes["tokens"][1]
    for spec in component.inputs:
        assert feeds[spec.name].dtype == np.dtype(spec.dtype) and feeds[spec.name].shape == shapes[spec.name]
    est = manifest.component("estimator_cfg")
    feeds = random_feeds(est, validation_shapes(est, B["mel256"], None, 1, 1, 2)["max"], np.random.default_rng(2))
    assert set(np.unique(feeds["mask"])) <= {0.0, 1.0} and feeds["mask"][0].all()
    assert (feeds["cfg_rate"] == np.float32(0.7)).all() and (0 <= feeds["t"]).all() and (feeds["t"] <= 0.9).all()


def test_engine_file_name():
    assert engine_file_name("estimator_cfg", B["mel1024"], "fp16", "9.0") == "estimator_cfg.mel1024.fp16.sm90.engine"
    assert engine_file_name("vocoder", "mel256", "bf16", "sm_80") == "vocoder.mel256.bf16.sm80.engine"
    assert engine_file_name("encoder", "mel4096", "fp32", "12.0") == "encoder.mel4096.fp32.sm120.engine"
    with pytest.raises(InputError):
        engine_file_name("../x", "mel256", "fp16", "9.0")
    with pytest.raises(InputError):
        engine_file_name("vocoder", "mel256", "int8", "9.0")
    with pytest.raises(ArtifactError):
        engine_file_name("vocoder", "mel256", "fp16", "hopper")


def test_resolve_buckets_and_graphs(standard):
    _, manifest = standard
    pairs = resolve_buckets(manifest)
    assert [(b.name, p.name if p else None) for b, p in pairs][:2] == [("mel256", None), ("mel512", "mel256")]
    pairs = resolve_buckets(manifest, ["mel4096", 1024, "256"])   # names, sizes, size strings; sorted
    assert [(b.name, p.name if p else None) for b, p in pairs] == [
        ("mel256", None), ("mel1024", "mel256"), ("mel4096", "mel1024")]
    with pytest.raises(InputError, match="mel300.*not in these artifacts' table"):
        resolve_buckets(manifest, ["mel300"])
    assert buildable_graphs(manifest) == ["encoder", "estimator", "estimator_cfg", "vocoder"]
    assert manifest.has_voice   # the voice graphs are there, but run on ONNX Runtime only
    with pytest.raises(InputError, match="tokenizer"):
        buildable_graphs(manifest, ["tokenizer"])
    data = manifest.to_dict()
    probe = {"file": "selftest/estimator_int8.npz", "sha256": "0" * 64, "min_snr_db": {"velocity": 25.0},
             "snr_db": {"velocity": 30.0}, "cpu": {}}
    data["components"]["estimator_int8"] = dict(data["components"]["estimator"], precision="int8",
                                                file="estimator_int8.onnx", selftest=probe)
    with_int8 = Manifest.from_dict(data)
    assert "estimator_int8" not in buildable_graphs(with_int8)   # int8 graphs are for ONNX Runtime
    with pytest.raises(InputError, match="estimator_int8"):
        buildable_graphs(with_int8, ["estimator_int8"])


# ================================================================ validation

def test_engine_tolerances(standard):
    _, manifest = standard
    enc = manifest.component("encoder")
    fp32 = engine_tolerances(enc, "fp32")
    assert fp32["mu"] == enc.validation.tolerance["mu"] and fp32["mask"].atol == 0.0
    fp16 = engine_tolerances(enc, "fp16")
    assert fp16["mu"].min_snr_db == 30.0 and fp16["mask"] == Tolerance(0.0, 0.0)
    assert engine_tolerances(manifest.component("estimator"), "bf16")["velocity"].min_snr_db == 20.0
    assert engine_tolerances(manifest.component("vocoder"), "fp16", {"wav": Tolerance(0, 0, 12.0)})["wav"].min_snr_db == 12
    with pytest.raises(InputError, match="unknown output"):
        engine_tolerances(enc, "fp16", {"nope": Tolerance(0, 0)})


def test_validate_engine_records_errors_and_fails_on_a_miss(standard):
    folder, manifest = standard
    component = manifest.component("vocoder")
    cases = validation_shapes(component, Bucket("mel4", 4), None, 1, 1, 2)
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])

    def reference(feeds):
        return dict(zip(["wav", "f0"], session.run(None, feeds)))

    good = validate_engine(reference, reference, component, cases, "fp16")
    assert good["passed"] and [c["name"] for c in good["cases"]] == ["min", "opt", "max"]
    assert good["cases"][2]["shapes"]["mel"] == [2, 80, 4] and good["tolerance"]["wav"]["min_snr_db"] == 25.0
    json.dumps(good, allow_nan=False)

    def noisy(feeds):
        out = reference(feeds)
        return {k: v + 0.3 * np.std(v) * np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
                for k, v in out.items()}

    bad = validate_engine(noisy, reference, component, cases, "fp16")
    assert not bad["passed"] and any("below the 25 dB floor" in p for c in bad["cases"] for p in c["problems"])
    assert engines.validation_summary(bad).startswith("FAIL")

    def broken(feeds):
        raise InputError("simulated engine failure")

    assert "engine failed" in validate_engine(broken, reference, component, cases, "fp32")["cases"][0]["problems"][0]


# ================================================================ the manifest

def test_engine_records_round_trip_in_a_copy_of_the_artifacts(standard, tmp_path):
    src, manifest = standard
    folder = tmp_path / "copy"
    folder.mkdir()
    for c in manifest.components.values():
        (folder / c.file).symlink_to(src / c.file)
    (folder / "manifest.json").write_text((src / "manifest.json").read_text())
    data = b"serialized engine bytes"
    rel = "engines/" + engine_file_name("estimator_cfg", "mel1024", "fp16", "9.0")
    (folder / "engines").mkdir()
    (folder / rel).write_bytes(data)
    import hashlib
    record = {"file": rel, "sha256": hashlib.sha256(data).hexdigest(), "graph": "estimator_cfg", "bucket": "mel1024",
              "precision": "fp16", "tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
              "min_batch": 1, "max_batch": 4,
              "build_options": {"profile": engines.profile_to_json(plan_profiles(
                  manifest.component("estimator_cfg"), B["mel1024"], B["mel512"])), "frames_range": [513, 1024],
                  "onnx_sha256": manifest.component("estimator_cfg").sha256, "fp32_layers": 237},
              "validation": {"passed": True, "cases": []}}
    updated = update_manifest(manifest, [record], "10.3.0")
    write_manifest(folder, updated)
    again = load_manifest(folder, verify=True)
    assert again.versions.tensorrt == "10.3.0" and len(again.engines) == 1
    assert again.engines[0].to_dict() == record
    assert len(update_manifest(again, [record], "10.3.0").engines) == 1   # same file: replaced, not doubled
    (folder / rel).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="tampered"):
        load_manifest(folder, verify=True)
