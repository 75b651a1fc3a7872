"""``mtedge pretrain`` and the shared training loop: evaluation log, best checkpoint, resume, NaN, Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import dev_pairs, templated_pairs

torch = pytest.importorskip("torch")

from mtedge.errors import UserError  # noqa: E402
from mtedge.train.loop import LoopConfig, TrainingError  # noqa: E402
from mtedge.train.pretrain import MarianSize, pretrain  # noqa: E402

SIZE = MarianSize(vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64,
                  max_positions=64, dropout=0.1)
TRAIN = templated_pairs(600, seed=0)
DEV = dev_pairs(12)


def _loop(**kw) -> LoopConfig:
    base = dict(max_steps=12, learning_rate=3e-3, warmup_steps=2, batch_tokens=600, eval_every=6,
                eval_max_sentences=12, max_source_length=32, max_target_length=32, seed=0, device="cpu",
                threads=1)
    base.update(kw)
    return LoopConfig(**base)


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def _run(out: Path, **kw):
    return pretrain(TRAIN, DEV, out, SIZE, _loop(**kw), progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    return out, _run(out)


def test_pretrain_writes_a_loadable_marian_with_zero_pad_row_and_an_eval_log(finished_run):
    from transformers import MarianMTModel, MarianTokenizer

    out, result = finished_run
    assert result.steps == 12 and result.stopped == "max_steps"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 6, 12]
    assert all(r["signature"]["bleu"].startswith("nrefs:1|") for r in log)
    assert result.best_bleu == max(r["dev_bleu"] for r in log)
    model = MarianMTModel.from_pretrained(result.best_dir)
    tok = MarianTokenizer.from_pretrained(result.best_dir)
    pad = model.config.pad_token_id
    assert pad == len(tok) - 1 and tok.eos_token_id == 0  # opus-mt conventions (DESIGN §4.6)
    assert float(model.get_input_embeddings().weight[pad].abs().max().detach()) == 0.0  # DESIGN §4.1
    assert model.generation_config.bad_words_ids == [[pad]]


def test_resume_after_interruption_matches_an_uninterrupted_run(finished_run, tmp_path):
    out_full, _ = finished_run
    out = tmp_path / "run"

    # zero_pad_row runs once when the model is built, then after every optimizer step
    def interrupt_at_step_8(model, calls=[0]):
        calls[0] += 1
        if calls[0] == 1 + 8:
            raise KeyboardInterrupt

    from mtedge.train import pretrain as pretrain_mod

    original = pretrain_mod.zero_pad_row
    pretrain_mod.zero_pad_row = lambda model: (original(model), interrupt_at_step_8(model))
    try:
        with pytest.raises(KeyboardInterrupt, match="resumable checkpoint"):
            _run(out)
    finally:
        pretrain_mod.zero_pad_row = original
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)["state"]
    assert state["step"] == 8
    result = _run(out)  # resumes from the checkpoint
    assert result.steps == 12
    full, resumed = _weights(out_full / "checkpoint"), _weights(out / "checkpoint")
    for name, tensor in full.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-6), name


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    from mtedge.train import pretrain as pretrain_mod

    original = pretrain_mod.zero_pad_row

    def poison_after_step_7(model, calls=[0]):
        original(model)
        calls[0] += 1
        if calls[0] == 1 + 7:  # once at build time, then after each step
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    pretrain_mod.zero_pad_row = poison_after_step_7
    try:
        with pytest.raises(TrainingError, match=r"became nan at step 8.*last good checkpoint"):
            _run(tmp_path / "run")
    finally:
        pretrain_mod.zero_pad_row = original
    kept = _weights(tmp_path / "run" / "checkpoint")
    assert all(torch.isfinite(t).all() for t in kept.values())
    state = torch.load(tmp_path / "run" / "checkpoint" / "trainer_state.pt", weights_only=False)["state"]
    assert state["step"] == 6


def test_early_stopping_after_patience(tmp_path):
    # learning rate 0: dev BLEU never improves after the first evaluation
    result = _run(tmp_path / "run", learning_rate=1e-12, max_steps=40, eval_every=2, patience=2)
    assert result.stopped == "early_stopping" and result.steps == 4


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mtedge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-data")
    (root / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in TRAIN), encoding="utf-8")
    (root / "dev.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in DEV), encoding="utf-8")
    (root / "empty.tsv").write_text("", encoding="utf-8")
    return root


@pytest.mark.parametrize("args, message", [
    (["--train", "{d}/missing.tsv", "--dev", "{d}/dev.tsv"], "training file not found"),
    (["--train", "{d}/empty.tsv", "--dev", "{d}/dev.tsv"], "is empty"),
    (["--train", "{d}/train.tsv", "--dev", "{d}/dev.tsv", "--d-model", "30", "--heads", "4"], "divisible"),
    (["--train", "{d}/train.tsv", "--dev", "{d}/dev.tsv", "--vocab-size", "5000"], "smaller --vocab-size"),
])
def test_cli_bad_input_is_one_line_without_traceback(data_files, tmp_path, args, message):
    proc = _cli("pretrain", *[a.format(d=data_files) for a in args], "-o", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_an_existing_output_without_force_or_resume(data_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    proc = _cli("pretrain", "--train", str(data_files / "train.tsv"), "--dev", str(data_files / "dev.tsv"),
                "-o", str(out))
    assert proc.returncode != 0 and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "something").exists()


def test_cli_trains_a_tiny_model(data_files, tmp_path):
    out = tmp_path / "out"
    proc = _cli("pretrain", "--train", str(data_files / "train.tsv"), "--dev", str(data_files / "dev.tsv"),
                "-o", str(out), "--vocab-size", "150", "--d-model", "32", "--encoder-layers", "1",
                "--decoder-layers", "1", "--heads", "2", "--ffn-dim", "64", "--max-steps", "4", "--eval-every", "2",
                "--eval-sentences", "4", "--warmup-steps", "1", "--batch-tokens", "600", "--threads", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == out / "best"
    summary = json.loads((out / "result.json").read_text())
    assert summary["steps"] == 4 and summary["signatures"]["bleu"].startswith("nrefs:1|")


def test_missing_dev_pairs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no dev pairs"):
        pretrain(TRAIN, [], tmp_path / "run", SIZE, _loop(), progress=False, log=lambda m: None)
