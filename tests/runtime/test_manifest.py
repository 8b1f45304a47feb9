import copy
import hashlib
import json

import pytest

from s3gen_runtime.buckets import Bucket
from s3gen_runtime.errors import ArtifactError, ManifestError
from s3gen_runtime.manifest import (
    SCHEMA_VERSION,
    Audio,
    Manifest,
    load_manifest,
    sha256_file,
    write_manifest,
)

FILES = {"encoder.onnx": b"encoder graph bytes", "estimator.onnx": b"estimator graph bytes" * 100,
         "engines/estimator_mel256.engine": b"serialized engine"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def component(file: str) -> dict:
    return {
        "file": file, "sha256": sha(FILES[file]), "format": "onnx", "precision": "fp32", "opset": 17,
        "spec_hash": "abc123",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 80, "frames"]},
                   {"name": "t", "dtype": "float32", "shape": ["batch"]}],
        "outputs": [{"name": "v", "dtype": "float32", "shape": ["batch", 80, "frames"]}],
        "validation": {"passed": True,
                       "cases": [{"name": "T120", "max_abs": {"v": 1.2e-5}, "max_rel": {"v": 3e-4}, "snr_db": {"v": 80.5}}],
                       "tolerance": {"v": {"atol": 1e-4, "rtol": 1e-3, "min_snr_db": None}}},
        "selftest": None,
    }


def manifest_dict() -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "s3gen-aot", "version": "0.1.0"},
        "versions": {"python": "3.11.9", "torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0",
                     "tensorrt": None},
        "checkpoint": {"file": "s3gen.safetensors", "sha256": sha(b"ckpt"), "variant": "standard"},
        "audio": Audio.current().to_dict(),
        "defaults": {"solver": "euler", "steps": 10, "cfg_rate": 0.7},
        "buckets": [{"name": "mel256", "mel_frames": 256}, {"name": "mel512", "mel_frames": 512}],
        "components": {"encoder": component("encoder.onnx"), "estimator": component("estimator.onnx")},
        "engines": [{
            "file": "engines/estimator_mel256.engine", "sha256": sha(FILES["engines/estimator_mel256.engine"]),
            "graph": "estimator", "bucket": "mel256", "precision": "fp16", "tensorrt": "10.9.0",
            "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "min_batch": 1, "max_batch": 4,
            "build_options": {"workspace_gb": 4, "fp32_layers": ["LayerNorm", "Softmax"]},
            "validation": {"max_abs": {"v": 0.002}},
        }],
        "tuning": {"solver": "dpmpp2m", "steps": 6, "cfg_rate": 0.7, "target_db": 30.0,
                   "measured": {"euler": {"6": 27.5}, "dpmpp2m": {"6": 31.2}}},
    }


@pytest.fixture
def folder(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_dict()))
    return tmp_path


def write_dict(folder, data):
    (folder / "manifest.json").write_text(json.dumps(data))


# ---------------------------------------------------------------- round trip

def test_round_trip(folder):
    m = load_manifest(folder)
    assert m.schema_version == SCHEMA_VERSION
    assert m.buckets == (Bucket("mel256", 256), Bucket("mel512", 512))
    assert m.component("estimator").inputs[0].shape == ("batch", 80, "frames")
    assert m.engines[0].graph == "estimator" and m.tuning.steps == 6
    assert m.to_dict() == manifest_dict()
    write_manifest(folder, m)
    text = (folder / "manifest.json").read_text()
    assert text == m.dumps() and text.startswith('{\n  "audio"')   # indent 2, sorted keys
    assert load_manifest(folder) == m
    assert Manifest.loads(m.dumps()) == m


def test_optional_nulls_and_empty_engines(folder):
    data = manifest_dict()
    data["engines"], data["tuning"], data["versions"]["torch"] = [], None, None
    write_dict(folder, data)
    m = load_manifest(folder)
    assert m.engines == () and m.tuning is None and m.versions.torch is None
    assert m.to_dict() == data


def test_component_lookup_lists_available(folder):
    with pytest.raises(ArtifactError, match="no component 'vocoder'.*available: encoder, estimator"):
        load_manifest(folder).component("vocoder")


# ---------------------------------------------------------------- strictness

def mutated(path_setter):
    data = manifest_dict()
    path_setter(data)
    return data


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(extra=1), "unknown key extra"),
    (lambda d: d["tool"].update(homepage="x"), r"unknown key tool\.homepage"),
    (lambda d: d["components"]["encoder"]["inputs"][0].update(foo=1),
     r"unknown key components\.encoder\.inputs\[0\]\.foo"),
    (lambda d: d["components"]["estimator"]["validation"]["cases"][0].update(p99=1),
     r"unknown key components\.estimator\.validation\.cases\[0\]\.p99"),
    (lambda d: d["engines"][0].update(timing=3), r"unknown key engines\[0\]\.timing"),
])
def test_unknown_keys_are_refused_with_their_path(folder, mutate, match):
    write_dict(folder, mutated(mutate))
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("defaults"), "missing key defaults"),
    (lambda d: d.pop("tuning"), "missing key tuning"),
    (lambda d: d["checkpoint"].pop("sha256"), r"missing key checkpoint\.sha256"),
    (lambda d: d["components"]["encoder"]["outputs"][0].pop("dtype"),
     r"missing key components\.encoder\.outputs\[0\]\.dtype"),
    (lambda d: d["engines"][0].pop("compute_capability"), r"missing key engines\[0\]\.compute_capability"),
])
def test_missing_keys_are_refused(folder, mutate, match):
    write_dict(folder, mutated(mutate))
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["defaults"].update(steps="ten"), r"defaults\.steps must be an integer, got str 'ten'"),
    (lambda d: d["defaults"].update(steps=10.0), r"defaults\.steps must be an integer"),
    (lambda d: d["defaults"].update(steps=True), r"defaults\.steps must be an integer"),
    (lambda d: d["defaults"].update(steps=0), r"defaults\.steps must be >= 1"),
    (lambda d: d["defaults"].update(cfg_rate="0.7"), r"defaults\.cfg_rate must be a finite number"),
    (lambda d: d["defaults"].update(steps=1001), r"defaults\.steps must be <= 1000, got 1001"),
    (lambda d: d["tuning"].update(cfg_rate=10.5), r"tuning\.cfg_rate must be <= 10, got 10.5"),
    (lambda d: d["defaults"].update(solver="rk4"), r"defaults\.solver is 'rk4'; expected one of euler"),
    (lambda d: d["checkpoint"].update(variant="turbo"), r"checkpoint\.variant is 'turbo'"),
    (lambda d: d["checkpoint"].update(sha256="ABC"), r"checkpoint\.sha256 must be 64 lowercase hex"),
    (lambda d: d["versions"].update(python=None), r"versions\.python must be a string"),
    (lambda d: d["tool"].update(name="other"), "made by 's3gen-aot'"),
    (lambda d: d.update(buckets={"mel256": 256}), "buckets must be a list"),
    (lambda d: d["buckets"].reverse(), "sorted by mel_frames"),
    (lambda d: d["buckets"][0].update(mel_frames=255), r"buckets\[0\]:.*multiple of 2"),
    (lambda d: d.update(components=[]), "components must be an object"),
    (lambda d: d["components"]["encoder"].update(format="torchscript"), r"format is 'torchscript'"),
    (lambda d: d["components"]["encoder"].update(precision="fp16"), r"precision is 'fp16'"),
    (lambda d: d["components"]["encoder"].update(file="../escape.onnx"), "relative path inside"),
    (lambda d: d["components"]["encoder"].update(file="/abs/encoder.onnx"), "relative path inside"),
    (lambda d: d["components"]["encoder"]["inputs"][0].update(dtype="float8"), r"dtype is 'float8'"),
    (lambda d: d["components"]["encoder"]["inputs"][0].update(shape=[1, 2.5]),
     r"inputs\[0\]\.shape\[1\] must be a non-negative integer or an axis name"),
    (lambda d: d["components"]["encoder"]["inputs"][1].update(name="x"), "duplicate tensor names"),
    (lambda d: d["components"]["encoder"]["validation"].update(passed="yes"), r"passed must be true or false"),
    (lambda d: d["components"]["encoder"]["validation"]["cases"][0]["max_abs"].update(v=-1.0),
     r"max_abs\.v must be >= 0"),
    (lambda d: d["engines"][0].update(graph="vocoder"), r"engines\[0\]\.graph 'vocoder' is not a component"),
    (lambda d: d["engines"][0].update(bucket="mel9999"), r"engines\[0\]\.bucket 'mel9999' is not a bucket"),
    (lambda d: d["engines"][0].update(max_batch=0), r"max_batch must be >= 1"),
    (lambda d: d["engines"][0].update(min_batch=8), "max_batch 4 is below min_batch 8"),
    (lambda d: d["engines"][0].update(build_options=None), r"build_options must be an object"),
    (lambda d: d["tuning"].update(target_db="high"), r"tuning\.target_db must be a finite number"),
    (lambda d: d["audio"].update(sample_rate=22050), r"audio\.sample_rate is 22050 but this runtime is built for 24000"),
])
def test_wrong_types_and_values_are_refused(folder, mutate, match):
    write_dict(folder, mutated(mutate))
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder)


@pytest.mark.parametrize("version", [1, SCHEMA_VERSION + 1])
def test_other_schema_versions_are_refused_before_their_keys(folder, version):
    data = manifest_dict()
    data["schema_version"] = version
    data["streaming"] = {"chunk": 25}
    write_dict(folder, data)
    with pytest.raises(ManifestError, match=f"schema_version {version} is not supported: this runtime reads "
                                            f"schema_version {SCHEMA_VERSION}"):
        load_manifest(folder)


@pytest.mark.parametrize("text, match", [
    ('{"schema_version": "1"}', "schema_version must be an integer"),
    ("[1, 2]", "must be a JSON object"),
    ("{}", "missing key schema_version"),
    ("{not json", "not valid JSON"),
    ('{"schema_version": 2, "schema_version": 2}', "duplicate key 'schema_version'"),
])
def test_malformed_files(folder, text, match):
    (folder / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder)


def test_missing_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_manifest(tmp_path)


# ---------------------------------------------------------------- file verification

def test_tampered_file_is_refused(folder):
    path = folder / "estimator.onnx"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    expected = sha(FILES["estimator.onnx"])[:12]
    with pytest.raises(ArtifactError, match=rf"components\.estimator: file estimator\.onnx is tampered or corrupt.*{expected}"):
        load_manifest(folder)
    assert load_manifest(folder, verify=False).component("estimator").file == "estimator.onnx"


def test_missing_files_are_named(folder):
    (folder / "engines" / "estimator_mel256.engine").unlink()
    with pytest.raises(ArtifactError, match=r"engines\[0\]: file engines/estimator_mel256\.engine is missing"):
        load_manifest(folder)
    (folder / "encoder.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"file encoder\.onnx is missing"):
        load_manifest(folder)


def test_sha256_file_streams(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=1000) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_to_dict_is_a_copy(folder):
    m = load_manifest(folder)
    d = m.to_dict()
    d["engines"][0]["build_options"]["workspace_gb"] = 99
    assert m.engines[0].build_options["workspace_gb"] == 4
    assert copy.deepcopy(m.to_dict()) == manifest_dict()


def test_write_refuses_what_the_reader_would_refuse(folder, tmp_path):
    from dataclasses import replace

    m = load_manifest(folder)
    bad = replace(m, defaults=replace(m.defaults, solver="rk4"))
    with pytest.raises(ManifestError, match="rk4"):
        write_manifest(tmp_path / "out", bad)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------- validation records

def failed(validation_changes: dict, case_changes: dict) -> dict:
    """manifest_dict() with the estimator's validation record edited and marked failed."""
    data = manifest_dict()
    record = data["components"]["estimator"]["validation"]
    record["cases"][0].update(case_changes)
    record.update(passed=False, **validation_changes)
    return data


@pytest.mark.parametrize("data, match", [
    (failed({}, {"max_abs": {"v": 5e-3}, "max_rel": {"v": 5e-3}}),
     r"components\.estimator\.validation\.passed is false: case 'T120' output 'v': max abs error 0\.005 "
     r"exceeds atol 0\.0001 \+ rtol 0\.001 \* peak 1"),
    (failed({"tolerance": {"v": {"atol": 0.0, "rtol": 0.0, "min_snr_db": 30.0}}}, {"snr_db": {"v": 21.5}}),
     r"case 'T120' output 'v': SNR 21\.5 dB below the 30 dB floor"),
    (failed({}, {"max_abs": {}, "max_rel": {}, "snr_db": {}}), r"output 'v': not measured \(shape mismatch or NaN/Inf\)"),
    (failed({"cases": []}, {}), "no validation case was recorded"),
])
def test_a_component_that_failed_validation_is_refused_naming_the_check(folder, tmp_path, data, match):
    write_dict(folder, data)
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder, verify=False)
    bad = Manifest.from_dict(data)   # the parser reads it; loading and writing refuse it
    with pytest.raises(ManifestError, match="did not validate"):
        write_manifest(tmp_path / "out", bad)
    assert not (tmp_path / "out").exists()


def test_a_failed_engine_record_is_refused_and_an_unvalidated_one_is_not(folder):
    data = manifest_dict()
    data["engines"][0]["validation"] = {"passed": False, "error": "",
                                        "cases": [{"name": "max", "problems": ["v: SNR 12.0 dB below the 25 dB floor"]}]}
    write_dict(folder, data)
    with pytest.raises(ManifestError, match=r"engines\[0\] \(estimator mel256\)\.validation\.passed is false: "
                                            r"case 'max': v: SNR 12\.0 dB below the 25 dB floor"):
        load_manifest(folder)
    data["engines"][0]["validation"] = None   # built with validation off: nothing claims a failure
    write_dict(folder, data)
    assert load_manifest(folder).engines[0].validation is None


def test_a_passed_record_within_its_tolerance_has_no_failures(folder):
    m = load_manifest(folder)
    assert [c.validation.failures() for c in m.components.values()] == [[], []]
    assert m.engines[0].failures() == []


# ---------------------------------------------------------------- optional voice graphs

def voice_components(precision="fp32") -> dict:
    """The two voice graphs as the exporter records them (files need not exist: from_dict only)."""
    out = {}
    for name, inputs, outputs in (
            ("speaker_encoder", [("fbank", "float32", ["batch", "fbank_frames", 80])],
             [("embedding", "float32", ["batch", 192])]),
            ("tokenizer", [("mel", "float32", ["batch", 128, "mel_frames"]), ("mel_lengths", "int64", ["batch"])],
             [("fsq", "float32", ["batch", "tokens", 8]), ("fsq_lengths", "int64", ["batch"])])):
        c = component("encoder.onnx")
        selftest = None if precision == "fp32" else {"file": f"selftest/{name}.npz", "sha256": sha(b"probe"),
                                                     "min_snr_db": {"x": 25.0}, "snr_db": {"x": 30.0}, "cpu": {}}
        c.update(file=f"{name}.onnx", precision=precision, selftest=selftest,
                 inputs=[{"name": n, "dtype": d, "shape": s} for n, d, s in inputs],
                 outputs=[{"name": n, "dtype": d, "shape": s} for n, d, s in outputs],
                 validation={"passed": True, "cases": [], "tolerance": {}})
        out[name] = c
    return out


def test_voice_graphs_are_optional_and_read():
    assert not Manifest.from_dict(manifest_dict()).has_voice
    data = manifest_dict()
    data["components"].update(voice_components())
    m = Manifest.from_dict(data)
    assert m.has_voice
    assert [t.name for t in m.component("tokenizer").outputs] == ["fsq", "fsq_lengths"]
    assert m.component("speaker_encoder").inputs[0].shape == ("batch", "fbank_frames", 80)
    assert Manifest.from_dict(m.to_dict()) == m


def test_voice_graphs_come_together_and_in_fp32():
    data = manifest_dict()
    data["components"]["tokenizer"] = voice_components()["tokenizer"]
    with pytest.raises(ManifestError, match="has tokenizer but not speaker_encoder"):
        Manifest.from_dict(data)
    data["components"].update(voice_components(precision="int8"))
    with pytest.raises(ManifestError, match=r"components.speaker_encoder.precision must be fp32"):
        Manifest.from_dict(data)


# ---------------------------------------------------------------- export record

def export_record() -> dict:
    build = {"key": sha(b"encoder key"), "reused": False, "export_s": 61.2, "validate_s": 2.3}
    return {"jobs": 2, "seconds": 117.0, "graphs": {"encoder": build, "estimator": {**build, "reused": True}}}


def test_export_record_round_trips_and_is_optional(folder):
    assert load_manifest(folder).export is None and "export" not in load_manifest(folder).to_dict()
    data = {**manifest_dict(), "export": export_record()}
    write_dict(folder, data)
    m = load_manifest(folder)
    assert m.export.jobs == 2 and m.export.graphs["estimator"].reused and m.export.graphs["encoder"].export_s == 61.2
    assert m.to_dict() == data


@pytest.mark.parametrize("mutate, match", [
    (lambda e: e["graphs"]["encoder"].update(key="abc"), r"export\.graphs\.encoder\.key"),
    (lambda e: e["graphs"]["encoder"].update(seconds=1.0), r"unknown key export\.graphs\.encoder\.seconds"),
    (lambda e: e["graphs"]["encoder"].update(export_s=-1.0), r"export\.graphs\.encoder\.export_s"),
    (lambda e: e.update(jobs=0), r"export\.jobs must be >= 1"),
])
def test_a_bad_export_record_is_refused(folder, mutate, match):
    record = export_record()
    mutate(record)
    write_dict(folder, {**manifest_dict(), "export": record})
    with pytest.raises(ManifestError, match=match):
        load_manifest(folder)
