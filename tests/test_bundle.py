"""mtedge.bundle: manifest checks and broken-file detection, on a small hand-made bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtedge.bundle import FORMAT, FORMAT_VERSION, Bundle, describe_files
from mtedge.errors import BundleError


def make_bundle(root: Path) -> Path:
    bundle = root / "b"
    (bundle / "tokenizer").mkdir(parents=True)
    (bundle / "tokenizer" / "vocab.json").write_text('{"</s>": 0}')
    for engine, precision, names in [("onnx", "fp32", ["encoder_model.onnx", "decoder_model_merged.onnx"]),
                                     ("onnx", "int8", ["encoder_model.onnx", "decoder_model_merged.onnx"]),
                                     ("ct2", "int8", ["model.bin", "config.json"])]:
        d = bundle / engine / precision
        d.mkdir(parents=True)
        for name in names:
            (d / name).write_bytes(f"{engine}-{precision}-{name}".encode() * 10)
    engines = {}
    for engine in ("onnx", "ct2"):
        for precision_dir in sorted((bundle / engine).iterdir()):
            files = describe_files(precision_dir)
            engines.setdefault(engine, {})[precision_dir.name] = {
                "dir": f"{engine}/{precision_dir.name}", "files": files,
                "size_bytes": sum(f["size"] for f in files.values()), "options": {}, "validation": None}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": "demo", "family": "marian",
                "source_lang": "en", "target_lang": "de", "generation": {"num_beams": 4, "max_new_tokens": 63},
                "tokenizer": {"dir": "tokenizer", "files": describe_files(bundle / "tokenizer")},
                "engines": engines}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def rewrite_manifest(bundle: Path, **changes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_open_reads_the_manifest(tmp_path):
    bundle = Bundle.open(make_bundle(tmp_path))
    assert bundle.name == "demo" and bundle.family == "marian"
    assert (bundle.source_lang, bundle.target_lang) == ("en", "de")
    assert bundle.engines() == {"onnx": ["fp32", "int8"], "ct2": ["int8"]}
    assert bundle.engine_dir("onnx", "int8") == tmp_path / "b" / "onnx" / "int8"
    assert bundle.tokenizer_dir() == tmp_path / "b" / "tokenizer"
    assert bundle.generation.num_beams == 4
    assert bundle.verify(deep=True) == []


def test_missing_precision_lists_what_the_bundle_has(tmp_path):
    bundle = Bundle.open(make_bundle(tmp_path))
    with pytest.raises(BundleError, match=r"has no ct2 float32; it has onnx: fp32, int8; ct2: int8"):
        bundle.engine_dir("ct2", "float32")
    with pytest.raises(BundleError, match="has no torch fp32"):
        bundle.engine_dir("torch", "fp32")


def test_deleted_file_is_named(tmp_path):
    path = make_bundle(tmp_path)
    (path / "onnx" / "int8" / "decoder_model_merged.onnx").unlink()
    bundle = Bundle.open(path)
    with pytest.raises(BundleError, match=r"missing file .*onnx/int8/decoder_model_merged\.onnx"):
        bundle.engine_dir("onnx", "int8")
    bundle.engine_dir("onnx", "fp32")  # the other precisions still load
    assert len(bundle.verify()) == 1 and "decoder_model_merged.onnx" in bundle.verify()[0]


def test_truncated_file_is_named(tmp_path):
    path = make_bundle(tmp_path)
    target = path / "ct2" / "int8" / "model.bin"
    target.write_bytes(target.read_bytes()[:5])
    with pytest.raises(BundleError, match=r"wrong size for .*ct2/int8/model\.bin: 5 bytes"):
        Bundle.open(path).engine_dir("ct2", "int8")


def test_tokenizer_files_are_checked(tmp_path):
    path = make_bundle(tmp_path)
    (path / "tokenizer" / "vocab.json").unlink()
    with pytest.raises(BundleError, match=r"missing file .*tokenizer/vocab\.json"):
        Bundle.open(path).tokenizer_dir()


def test_deep_verify_catches_same_size_corruption(tmp_path):
    path = make_bundle(tmp_path)
    target = path / "onnx" / "fp32" / "encoder_model.onnx"
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    bundle = Bundle.open(path)
    assert bundle.verify() == []  # sizes still match
    problems = bundle.verify(deep=True)
    assert len(problems) == 1 and "checksum mismatch" in problems[0] and "encoder_model.onnx" in problems[0]


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, r"format version 99; this mtedge reads version\(s\) 1"),
    ({"format_version": None}, r"format version None"),
    ({"format": "something-else"}, r"not an mtedge bundle manifest"),
])
def test_unknown_format_is_refused(tmp_path, change, message):
    path = make_bundle(tmp_path)
    rewrite_manifest(path, **change)
    with pytest.raises(BundleError, match=message):
        Bundle.open(path)


def test_bad_or_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        Bundle.open(tmp_path / "nope")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(BundleError, match=r"no manifest\.json .*mtedge export"):
        Bundle.open(tmp_path / "hf")
    path = make_bundle(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(path)


def test_missing_required_field(tmp_path):
    path = make_bundle(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["engines"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks the required field 'engines'"):
        Bundle.open(path)


def test_bundle_module_stays_light():
    """The runtime imports mtedge.bundle; it must not pull in torch/transformers/optimum."""
    code = ("import sys, mtedge.bundle, mtedge.commands.info, mtedge.commands.export, mtedge.convert; "
            "heavy = [m for m in ('torch', 'transformers', 'optimum', 'peft') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
