"""int8 on a CPU this machine is not: a bundle's engines run natively and under QEMU's emulation of another
x86 CPU (default Haswell: AVX2 without VNNI or AVX-512), their translations compared.

    .venv/bin/python -m benchmarks.suites.emulated_cpu BUNDLE [BUNDLE ...] --qemu PATH/qemu-x86_64 \\
        --test benchmarks/corpora/data/bible/dev.tsv --sentences 150 --out benchmarks/results/emulated-haswell

onnxruntime (MLAS) and CTranslate2 choose their int8 kernels from CPUID when they start, and under
``qemu-x86_64 -cpu MODEL`` CPUID answers for MODEL, so the emulated process runs the kernels that CPU would
get: the ones whose 16-bit pair sums can saturate 8-bit weights (:mod:`mtedge.cpu`) on a CPU without VNNI.
What the emulation is good for is correctness; its speed (~100x slower) means nothing, and none is reported.

Two parts, each run natively and emulated:

- **Kernel probe**: each int8 MatMul op the row-wise int8 graphs use (``MatMulIntegerToFloat``, the GEMM
  kernel; ``MatMulNBits``, the one-row kernel of ``int8_latency``) on the input that saturates a pair sum
  most (every activation and weight at its largest, all of one sign), with 8-bit and with 7-bit weights; the
  report gives each result's relative error against the exact product.
- **Translations**: greedy, ``--sentences`` sources of ``--test`` through every ``--configs`` of every
  bundle; per configuration, sentences identical to the first bundle's native fp32 (natively and emulated),
  emulated identical to native, and BLEU/chrF against the references. Export the bundles with explicit
  ``--onnx-quant-preset`` values: the export's default preset is read from this (host) CPU's flags.

QEMU user mode passes the host's ``/proc/cpuinfo`` through, so inside the emulation :mod:`mtedge.cpu` (which
reads it) describes the host, and the ONNX engine's saturation warning does not fire there. QEMU needs TCG
AVX2, which came in 7.2. Without root on Debian 12 (bookworm)::

    apt-get download qemu-user libcapstone4 liburing2 && for deb in *.deb; do dpkg -x "$deb" ~/qemu; done
    export LD_LIBRARY_PATH=~/qemu/usr/lib/x86_64-linux-gnu     # and pass --qemu ~/qemu/usr/bin/qemu-x86_64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.suites.reports import write_report

DEFAULT_CONFIGS = ("onnx:fp32", "onnx:int8", "onnx:int8_latency", "ct2:int8")
PROBE_K, PROBE_N = 512, 16


def probe_kernels() -> list[dict]:
    """Each row-wise int8 MatMul op on its most saturating input, 8- and 7-bit weights: relative error."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mtedge.engines.onnx_portability import portable_ir_version, portable_nbits_block
    from mtedge.engines.rowwise_int8 import KERNEL_OPS

    def session(node, inputs, output, initializers):
        graph = helper.make_graph([node], "probe", inputs, [output], initializers)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=portable_ir_version(opsets))
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rows = []
    for bits in (8, 7):
        top = 2 ** (bits - 1) - 1
        weights = np.full((PROBE_K, PROBE_N), top, dtype=np.int8)          # every product as large as it gets
        exact = 255.0 * top * PROBE_K                                       # u8 activations at 255 (zero point 0)
        gemm = session(helper.make_node(KERNEL_OPS["gemm"], ["a", "b", "a_scale", "b_scale"], ["y"],
                                        domain="com.microsoft"),
                       [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, PROBE_K])],
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, PROBE_N]),
                       [numpy_helper.from_array(weights, "b"),
                        numpy_helper.from_array(np.ones(1, np.float32), "a_scale"),
                        numpy_helper.from_array(np.ones(PROBE_N, np.float32), "b_scale")])
        got = gemm.run(None, {"a": np.full((1, PROBE_K), 255, np.uint8)})[0]
        rows.append({"kernel": "gemm", "op": KERNEL_OPS["gemm"], "weight_bits": bits,
                     "relative_error": float(np.abs(got - exact).max() / exact)})
        # MatMulNBits: unsigned storage with zero point 128, in the export's blocks (mtedge/convert/rowwise_int8.py);
        # the kernel quantizes the float activation itself, so the largest |x| everywhere is its worst case
        block = portable_nbits_block(PROBE_K)
        stored = (weights.T.astype(np.int32) + 128).astype(np.uint8).reshape(PROBE_N, PROBE_K // block, block)
        gemv = session(helper.make_node(KERNEL_OPS["gemv"], ["x", "b", "scales"], ["y"], domain="com.microsoft",
                                        K=PROBE_K, N=PROBE_N, bits=8, block_size=block, accuracy_level=4),
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, PROBE_K])],
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, PROBE_N]),
                       [numpy_helper.from_array(stored, "b"),
                        numpy_helper.from_array(np.ones((PROBE_N, PROBE_K // block), np.float32), "scales")])
        got = gemv.run(None, {"x": np.ones((1, PROBE_K), np.float32)})[0]
        exact = float(top * PROBE_K)
        rows.append({"kernel": "gemv", "op": KERNEL_OPS["gemv"], "weight_bits": bits,
                     "relative_error": float(np.abs(got - exact).max() / exact)})
    return rows


def cpu_features() -> list[str]:
    """The CPUID features numpy dispatches on: inside QEMU, the emulated CPU's (``/proc/cpuinfo`` is the host's)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core   # numpy 2 moved it
    return sorted(name for name, present in core._multiarray_umath.__cpu_features__.items() if present)


def worker(job: str, sources: list[str], max_length: int) -> dict:
    """One job in this process: ``probe``, or ``BUNDLE|engine:precision`` translated greedily."""
    if job == "probe":
        return {"cpu_features": cpu_features(), "probe": probe_kernels()}
    from mtedge import Translator

    bundle, config = job.split("|")
    engine, precision = config.split(":")
    translator = Translator(bundle, engine=engine, precision=precision, device="cpu", threads=2)
    texts = [t.text for t in translator.translate(sources, beam_size=1, max_length=max_length)]
    translator.close()
    return {"outputs": texts}


def run_worker(prefix: list[str], args: argparse.Namespace, job: str, out: Path) -> dict:
    """``job`` in a fresh process (under ``prefix``, the emulator, when given): QEMU has crashed (SIGSEGV) in
    a process that had already run one engine and went on to load another, so every job gets its own."""
    command = prefix + [sys.executable, "-m", "benchmarks.suites.emulated_cpu", "--worker", str(out), "--job", job,
                        "--test", str(args.test), "--sentences", str(args.sentences),
                        "--max-length", str(args.max_length)]
    started = time.perf_counter()
    finished = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    print(f"  {'emulated' if prefix else 'native'} {job}: {time.perf_counter() - started:.1f} s", file=sys.stderr,
          flush=True)
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.splitlines() if "TCG doesn't support" not in line]
        return {"error": f"exit {finished.returncode}: " + (lines[-1] if lines else "")}
    result = json.loads(out.read_text(encoding="utf-8"))
    out.unlink()
    return result


def run(args: argparse.Namespace) -> dict:
    from mtedge.bench.machine import describe_machine
    from mtedge.bench.metrics import quality
    from mtedge.bench.testset import load_test_set

    args.out.mkdir(parents=True, exist_ok=True)
    test = load_test_set(args.test, args.sentences)
    sources, references = test.sources, test.references
    machine = describe_machine()
    emulator = [str(args.qemu), "-cpu", args.cpu]
    scratch = args.out / "job.json"
    native, emulated = run_worker([], args, "probe", scratch), run_worker(emulator, args, "probe", scratch)
    for side, result in (("native", native), ("emulated", emulated)):
        if "error" in result:
            sys.exit(f"error: the {side} kernel probe failed ({result['error']})")
    native["outputs"], emulated["outputs"] = {}, {}
    for bundle in args.bundles:
        for config in args.configs:
            job = f"{bundle}|{config}"
            native["outputs"][job] = run_worker([], args, job, scratch)
            emulated["outputs"][job] = run_worker(emulator, args, job, scratch)
    baseline = native["outputs"].get(f"{args.bundles[0]}|onnx:fp32", {}).get("outputs")

    def same(a: list[str], b: list[str] | None) -> int | None:
        return None if b is None else sum(x == y for x, y in zip(a, b))

    rows = []
    for key, native_result in native["outputs"].items():
        bundle, config = key.split("|")
        emulated_result = emulated["outputs"][key]
        errors = {side: result["error"] for side, result in (("native", native_result), ("emulated", emulated_result))
                  if "error" in result}
        if errors:
            rows.append({"bundle": bundle, "config": config, "errors": errors})
            continue
        native_texts, emulated_texts = native_result["outputs"], emulated_result["outputs"]
        native_quality, emulated_quality = quality(native_texts, references), quality(emulated_texts, references)
        rows.append({"bundle": bundle, "config": config,
                     "native_same_as_fp32": same(native_texts, baseline),
                     "emulated_same_as_fp32": same(emulated_texts, baseline),
                     "emulated_same_as_native": same(emulated_texts, native_texts),
                     "native_bleu": native_quality["bleu"], "emulated_bleu": emulated_quality["bleu"],
                     "native_chrf": native_quality["chrf"], "emulated_chrf": emulated_quality["chrf"],
                     "bleu_signature": native_quality["bleu_signature"]})
    report = {"machine": machine, "load_average_end": [round(v, 2) for v in os.getloadavg()],
              "settings": {"bundles": [str(b) for b in args.bundles], "configs": args.configs, "cpu": args.cpu,
                           "qemu": str(args.qemu), "test": str(args.test), "sentences": len(sources),
                           "max_length": args.max_length, "decoding": "greedy, batch of all sentences",
                           "note": args.note},
              "cpu_features": {"native": native["cpu_features"], "emulated": emulated["cpu_features"]},
              "probe": {"native": native["probe"], "emulated": emulated["probe"]}, "translations": rows}
    write_report(args.out, report, markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    native_only = sorted(set(report["cpu_features"]["native"]) - set(report["cpu_features"]["emulated"]))
    n = settings["sentences"]
    lines = [f"# int8 natively and on an emulated {settings['cpu']}", "",
             f"Native: {machine['cpu_model']}, {machine['usable_cores']} usable cores, int8 kernel "
             f"{machine['onnxruntime_int8_kernel']}; load average {machine['load_average']} at start. "
             f"Emulated: `qemu-x86_64 -cpu {settings['cpu']}`, which lacks "
             f"{', '.join(native_only) or 'nothing numpy reports'} (numpy's CPUID features).",
             f"{n} sentences of `{settings['test']}`, {settings['decoding']}, at most {settings['max_length']} tokens; "
             "2 threads. Emulated speed is meaningless and not reported.", ""]
    if settings.get("note"):
        lines += [f"**Note:** {settings['note']}", ""]
    lines += ["## Kernel probe: most saturating input, relative error vs the exact product", "",
              "| kernel | op | weight bits | native | emulated |", "|---|---|---:|---:|---:|"]
    for mine, theirs in zip(report["probe"]["native"], report["probe"]["emulated"]):
        lines.append(f"| {mine['kernel']} | {mine['op']} | {mine['weight_bits']} | {mine['relative_error']:.4f} | "
                     f"{theirs['relative_error']:.4f} |")
    lines += ["", "## Translations", "",
              f"Same as fp32: sentences identical to `{Path(settings['bundles'][0]).name}` onnx fp32 run natively.", "",
              "| bundle | config | native same as fp32 | emulated same as fp32 | emulated same as native | "
              "BLEU native | BLEU emulated | chrF native | chrF emulated |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(value, digits=1):
        return "—" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else f"{value}/{n}")

    for row in report["translations"]:
        if "errors" in row:
            failed = "; ".join(f"{side}: {error}" for side, error in row["errors"].items())
            lines.append(f"| {Path(row['bundle']).name} | {row['config']} | failed: {failed} |||||||")
            continue
        lines.append(f"| {Path(row['bundle']).name} | {row['config']} | {cell(row['native_same_as_fp32'])} | "
                     f"{cell(row['emulated_same_as_fp32'])} | {cell(row['emulated_same_as_native'])} | "
                     f"{cell(row['native_bleu'])} | {cell(row['emulated_bleu'])} | {cell(row['native_chrf'])} | "
                     f"{cell(row['emulated_chrf'])} |")
    signature = next((row["bleu_signature"] for row in report["translations"] if row.get("bleu_signature")), None)
    if signature:
        lines += ["", f"BLEU signature: `{signature}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*")
    parser.add_argument("--qemu", type=Path, help="qemu-x86_64 (user mode, ≥ 7.2)")
    parser.add_argument("--cpu", default="Haswell", help="QEMU CPU model (`qemu-x86_64 -cpu help` lists them)")
    parser.add_argument("--test", type=Path, required=True,
                        help="TSV/JSONL with references, or plain sources (mtedge.bench.testset.load_test_set)")
    parser.add_argument("--sentences", type=int, default=150)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--configs", type=lambda s: s.split(","), default=list(DEFAULT_CONFIGS),
                        help="engine:precision, comma-separated")
    parser.add_argument("--note", default="", help="Recorded with the result.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/emulated-cpu"))
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from mtedge.bench.testset import load_test_set

        sources = load_test_set(args.test, args.sentences).sources
        args.worker.write_text(json.dumps(worker(args.job, sources, args.max_length)), encoding="utf-8")
        return
    if not args.bundles:
        parser.error("name at least one bundle")
    if args.qemu is None or not args.qemu.exists():
        sys.exit("error: --qemu must name qemu-x86_64 (user mode, ≥ 7.2); the module docstring says how to get it")
    from mtedge.errors import UserError

    try:
        run(args)
    except UserError as exc:   # a missing, empty or undecodable --test file
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
