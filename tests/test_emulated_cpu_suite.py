"""benchmarks/suites/emulated_cpu.py: its kernel probe on the machine running the tests, and its comparison of
translations (QEMU is not installed here: a launcher that runs the command as it is stands in for it, so the
"emulated" side is this CPU and must match the native side exactly)."""

from __future__ import annotations

import json
import platform
import stat

import pytest

from benchmarks.suites import emulated_cpu
from mtedge.cpu import int8_pairs_saturate

x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="the saturation of pair sums is a property of x86 int8 kernels")


@x86_only
def test_the_kernel_probe_finds_saturation_exactly_where_mtedge_cpu_expects_it():
    probe = {(row["kernel"], row["weight_bits"]): row["relative_error"] for row in emulated_cpu.probe_kernels()}
    # 7-bit weights are what the export writes for CPUs that saturate: exact on any x86 kernel
    assert probe[("gemm", 7)] < 1e-6 and probe[("gemv", 7)] < 1e-6
    # the GEMM kernel saturates 8-bit weights on its most saturating input iff mtedge.cpu says this CPU does
    assert (probe[("gemm", 8)] > 0.01) == int8_pairs_saturate()


def test_the_suite_compares_both_sides_config_by_config(tmp_path, tiny_marian_bundle, tiny_dev_pairs):
    launcher = tmp_path / "same-cpu"
    # takes QEMU's arguments (-cpu MODEL) and runs the rest as it is
    launcher.write_text('#!/bin/sh\nshift 2\nexec "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    test = tmp_path / "dev.tsv"
    test.write_text("".join(f"{source}\t{target}\n" for source, target in tiny_dev_pairs[:6]), encoding="utf-8")
    out = tmp_path / "out"
    emulated_cpu.main([str(tiny_marian_bundle), "--qemu", str(launcher), "--test", str(test), "--sentences", "6",
                       "--max-length", "16", "--configs", "onnx:fp32,onnx:int8,onnx:int9,ct2:int8",
                       "--out", str(out)])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rows = {row["config"]: row for row in report["translations"]}
    assert rows["onnx:fp32"]["native_same_as_fp32"] == 6
    for config in ("onnx:fp32", "onnx:int8", "ct2:int8"):
        assert rows[config]["emulated_same_as_native"] == 6, config
        assert rows[config]["native_bleu"] == rows[config]["emulated_bleu"] is not None
    # a configuration that cannot run is reported with the error, and the others still are
    assert "int9" in rows["onnx:int9"]["errors"]["native"]
    assert report["cpu_features"]["native"] == report["cpu_features"]["emulated"]
    assert len(report["probe"]["native"]) == 4
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| onnx:int8 | " in markdown and "failed: native:" in markdown
    assert not list(out.glob("job.json"))


def test_the_suite_says_how_to_get_qemu_when_it_is_missing(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        emulated_cpu.main(["bundle", "--qemu", str(tmp_path / "nothing"), "--test", str(tmp_path / "t.tsv")])
    assert "qemu-x86_64" in str(exit_.value)


def test_an_empty_test_file_is_a_one_line_error(tmp_path, tiny_marian_bundle):
    launcher = tmp_path / "qemu"
    launcher.write_text("#!/bin/sh\n")
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        emulated_cpu.main([str(tiny_marian_bundle), "--qemu", str(launcher), "--test", str(tmp_path / "empty.tsv"),
                           "--out", str(tmp_path / "out")])
    assert str(exit_.value) == f"error: test file {tmp_path / 'empty.tsv'} is empty"
