"""The bench's runners in-process on the tiny bundles: the raw CTranslate2 peer must ask CT2 for what
our CT2 engine asks, on every family, or the "wrapper overhead" row compares different work."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtedge.bench.runners import make_runner

# Marian forces </s> at the limit (CT2 gets N-1 steps); T5 does not (N steps): the two length rules.
FAMILIES = ["marian", "t5"]


def _runner(kind: str, bundle: Path):
    spec = {"config": {"name": kind, "runner": kind, "engine": "ct2", "precision": "int8", "device": "cpu"},
            "bundle": str(bundle), "threads": 1, "engine_dir": str(bundle / "ct2" / "int8")}
    runner = make_runner(spec)
    runner.load()
    return runner


@pytest.fixture(scope="module", params=FAMILIES)
def ct2_pair(request, tiny_unvalidated_bundles):
    bundle = Path(tiny_unvalidated_bundles(request.param))
    return request.param, _runner("mtedge", bundle), _runner("ct2raw", bundle)


@pytest.mark.parametrize("max_length", [4, 7, 64])
@pytest.mark.parametrize("beam", [1, 4])
def test_raw_ct2_translates_like_our_ct2_engine(ct2_pair, tiny_dev_pairs, max_length, beam):
    # short limits cut most outputs: a length rule off by one shows as a piece more or less
    family, ours, raw = ct2_pair
    sources = [s for s, _ in tiny_dev_pairs[:16]]
    assert raw.translate(sources, beam, max_length, False, 0.0) == \
        ours.translate(sources, beam, max_length, False, 0.0), family


@pytest.mark.parametrize("max_length", [5, 12])
def test_forced_lengths_give_exactly_max_length_tokens(ct2_pair, tiny_dev_pairs, max_length):
    family, ours, raw = ct2_pair
    sources = [s for s, _ in tiny_dev_pairs[:8]]
    got = raw.translate(sources, 4, max_length, True, 0.0)
    assert raw.generated_tokens == len(sources) * max_length, family
    assert got == ours.translate(sources, 4, max_length, True, 0.0)



def test_the_torch_int8_peer_quantizes_every_linear_and_still_translates(tiny_unvalidated_bundles, tiny_dev_pairs):
    import torch

    bundle = Path(tiny_unvalidated_bundles("marian"))
    spec = {"config": {"name": "hf-torch-int8", "runner": "hf-int8", "engine": "torch", "precision": "fp32",
                       "device": "cpu"}, "bundle": str(bundle), "threads": 1, "torch_dir": str(bundle / "torch" / "fp32")}
    runner, reference = make_runner(spec), make_runner({**spec, "config": {**spec["config"], "runner": "hf"}})
    runner.load()
    reference.load()
    modules = list(runner.model.modules())
    assert not [m for m in modules if type(m) is torch.nn.Linear]
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules)
    sources = [s for s, _ in tiny_dev_pairs[:16]]
    got, want = runner.translate(sources, 4, 64, False, 0.0), reference.translate(sources, 4, 64, False, 0.0)
    # int8 is compared by rates (mtedge/DESIGN.md §4.4): most outputs of the trained fixture survive it
    assert sum(a == b for a, b in zip(got, want)) / len(sources) >= 0.5


def test_a_precision_this_cpu_cannot_run_is_refused_before_a_worker_starts(tiny_unvalidated_bundles,
                                                                           monkeypatch, tmp_path):
    from mtedge.bench import exporting, harness
    from mtedge.bench.configs import ALL_CONFIGS
    from mtedge.bundle import Bundle

    bundle = Bundle.open(tiny_unvalidated_bundles("marian"))
    # as on an AMD CPU for int16 (no MKL): CTranslate2 lists what it can run
    monkeypatch.setattr(exporting, "ct2_cpu_compute_types", lambda: {"float32", "int8_float32"})
    for name in ("ct2-int8", "ct2-raw-int8"):
        with pytest.raises(harness.UnsupportedConfig, match="cannot run int8 on this CPU"):
            harness.prepare_spec(ALL_CONFIGS[name], bundle, tmp_path)
    harness.prepare_spec(ALL_CONFIGS["ct2-float32"], bundle, tmp_path)   # what it can run goes ahead
    harness.prepare_spec(ALL_CONFIGS["onnx-int8"], bundle, tmp_path)     # other engines are not asked


def test_a_worker_over_its_timeout_is_killed_and_says_so(tiny_unvalidated_bundles, tmp_path):
    import time

    from mtedge.bench import supervisor

    bundle = Path(tiny_unvalidated_bundles("marian"))
    spec = _spec("hf-torch-fp32", bundle, tmp_path, torch_dir=str(bundle / "torch" / "fp32"))
    started = time.perf_counter()
    outcome = supervisor.run_worker(spec, tmp_path / "logs", timeout_s=0.5)   # importing torch alone takes longer
    assert time.perf_counter() - started < 30
    assert outcome.timed_out and outcome.result is None and outcome.exit_code == -9
    assert outcome.peak_rss_mb > 0       # what the killed worker had used is still known
    assert supervisor.failure_message(outcome, None, 0.5) == "worker timed out: killed after 0.5 s (--timeout)"

def _spec(config: str, bundle: Path, tmp_path: Path, **extra) -> dict:
    import json

    from mtedge.bench import harness
    from mtedge.bench.configs import ALL_CONFIGS

    (tmp_path / "sources.json").write_text(json.dumps(["the cat sees the dog", "the red car"]))
    protocol = harness.Protocol.quick(latency_sentences=1, repeats=1, max_length=8).to_dict()
    return {"config": ALL_CONFIGS[config].to_dict(), "bundle": str(bundle), "threads": 1,
            "sources_path": str(tmp_path / "sources.json"), "protocol": protocol,
            "result_path": str(tmp_path / f"{config}.result.json"), **extra}


def test_a_workers_peak_rss_is_its_own_not_the_harness_process(tiny_unvalidated_bundles, tmp_path):
    """Linux folds the pre-exec address space's peak into ru_maxrss, and a vfork'ed child's pre-exec
    space is the parent's: a harness holding 600 MB (as after a synthetic export) must still report a
    small CT2 worker as small."""
    import resource

    from mtedge.bench import supervisor

    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))    # touch every page: resident
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 600
    bundle = Path(tiny_unvalidated_bundles("marian"))
    outcome = supervisor.run_worker(_spec("ct2-int8", bundle, tmp_path, engine_dir=str(bundle / "ct2" / "int8")),
                                    tmp_path / "logs")
    del ballast
    assert outcome.result is not None, outcome.stderr_tail
    assert 0 < outcome.result["own_peak_rss_mb"] <= outcome.peak_rss_mb < 300
