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
from mtedge.train.pretrain import ModelShape, pretrain  # noqa: E402

SIZE = ModelShape(vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64,
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
    assert pad == len(tok) - 1 and tok.eos_token_id == 0  # opus-mt conventions (mtedge/DESIGN.md §4.6)
    assert float(model.get_input_embeddings().weight[pad].abs().max().detach()) == 0.0  # mtedge/DESIGN.md §4.1
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


def test_sigterm_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(finished_run, tmp_path):
    """``kill`` of a background run (where SIGINT is ignored) keeps every finished step."""
    import os
    import signal

    out_full, _ = finished_run
    out = tmp_path / "run"

    def terminate_at_step_8(model, calls=[0]):
        calls[0] += 1
        if calls[0] == 1 + 8:
            os.kill(os.getpid(), signal.SIGTERM)

    from mtedge.train import pretrain as pretrain_mod

    original = pretrain_mod.zero_pad_row
    pretrain_mod.zero_pad_row = lambda model: (original(model), terminate_at_step_8(model))
    try:
        with pytest.raises(KeyboardInterrupt, match="at step 8; resumable checkpoint"):
            _run(out)
    finally:
        pretrain_mod.zero_pad_row = original
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop's handler is gone again
    assert _run(out).steps == 12
    full, resumed = _weights(out_full / "checkpoint"), _weights(out / "checkpoint")
    for name, tensor in full.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-6), name


def test_init_from_starts_at_the_published_model_with_its_vocabulary(finished_run, tmp_path):
    out_full, _ = finished_run
    last_eval = json.loads((out_full / "train_log.jsonl").read_text().splitlines()[-1])  # at the checkpoint's step
    out = tmp_path / "continued"
    pretrain(TRAIN, DEV, out, SIZE, _loop(max_steps=2, eval_every=2), init_from=out_full / "checkpoint",
             progress=False, log=lambda m: None)
    start = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert start["step"] == 0 and (start["dev_bleu"], start["dev_chrf"]) == (last_eval["dev_bleu"], last_eval["dev_chrf"])
    for name in ("source.spm", "vocab.json"):
        assert (out / "tokenizer" / name).read_bytes() == (out_full / "checkpoint" / name).read_bytes()
    assert json.loads((out / "pretrain_config.json").read_text())["init_from"] == str(out_full / "checkpoint")


def test_init_from_a_model_of_another_shape_is_refused_naming_it(finished_run, tmp_path):
    out_full, _ = finished_run
    wider = ModelShape(**{**SIZE.__dict__, "d_model": 64})
    with pytest.raises(UserError, match=r"another shape: d_model 32 \(asked 64\)"):
        pretrain(TRAIN, DEV, tmp_path / "x", wider, _loop(), init_from=out_full / "checkpoint", progress=False,
                 log=lambda m: None)
    with pytest.raises(UserError, match="no config.json"):
        pretrain(TRAIN, DEV, tmp_path / "y", SIZE, _loop(), init_from=tmp_path, progress=False, log=lambda m: None)


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


def test_cli_linear_decay_reaches_zero_at_max_steps(data_files, tmp_path):
    out = tmp_path / "out"
    proc = _cli("pretrain", "--train", str(data_files / "train.tsv"), "--dev", str(data_files / "dev.tsv"),
                "-o", str(out), "--vocab-size", "150", "--d-model", "32", "--encoder-layers", "1",
                "--decoder-layers", "1", "--heads", "2", "--ffn-dim", "64", "--max-steps", "4", "--eval-every", "2",
                "--eval-sentences", "4", "--warmup-steps", "1", "--batch-tokens", "600", "--threads", "1",
                "--learning-rate", "3e-3", "--decay", "linear", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "pretrain_config.json").read_text())["loop"]["decay"] == "linear"
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}
    # warmup 1 step, then 3e-3 * (4 - step) / 3: halfway down at step 2... (2/3), nothing left at step 4
    assert lrs[2] == pytest.approx(2e-3) and lrs[4] == 0.0


def test_missing_dev_pairs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no dev pairs"):
        pretrain(TRAIN, [], tmp_path / "run", SIZE, _loop(), progress=False, log=lambda m: None)


# -- the v2 recipe's features: m2m100 (pre-LN), bf16 autocast, snapshots + averaging, held-out exclusion -----
M2M_SIZE = ModelShape(arch="m2m100", vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=1,
                      attention_heads=2, ffn_dim=64, max_positions=64, dropout=0.1)


@pytest.fixture(scope="module")
def m2m100_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain-m2m100") / "run"
    result = pretrain(TRAIN, DEV, out, M2M_SIZE, _loop(max_steps=16, eval_every=4, keep_snapshots=3,
                                                       precision="bf16"), progress=False, log=lambda m: None)
    return out, result


def test_m2m100_pretrain_writes_a_model_that_translates_with_its_language_tokens(m2m100_run):
    from transformers import M2M100ForConditionalGeneration, M2M100Tokenizer

    out, result = m2m100_run
    assert result.steps == 16
    model = M2M100ForConditionalGeneration.from_pretrained(result.best_dir)
    tok = M2M100Tokenizer.from_pretrained(result.best_dir)
    assert model.config.model_type == "m2m_100" and model.config.tie_word_embeddings
    assert model.config.vocab_size >= len(tok)  # every language token has an embedding row
    assert model.generation_config.forced_bos_token_id == tok.get_lang_id("de")
    enc = tok(["the small dog"], return_tensors="pt")
    assert enc["input_ids"][0, 0] == tok.get_lang_id("en")  # the source-language prefix
    text = tok.batch_decode(model.generate(**enc, max_new_tokens=8), skip_special_tokens=True)[0]
    assert "__de__" not in text and "__en__" not in text


def test_snapshots_keep_the_last_n_evaluations_and_average_to_their_mean(m2m100_run, tmp_path):
    from mtedge.train.averaging import average_snapshots, list_snapshots

    out, _ = m2m100_run
    snapshots = list_snapshots(out)
    assert [p.name for p in snapshots] == ["step-0000008", "step-0000012", "step-0000016"]
    averaged = average_snapshots(snapshots[-2:], tmp_path / "avg")
    a, b, mean = _weights(snapshots[-2]), _weights(snapshots[-1]), _weights(averaged)
    assert set(mean) == set(a)
    changed = [name for name in a if not torch.equal(a[name], b[name])]
    assert changed, "the two snapshots should differ after 4 training steps"
    for name in a:
        assert torch.allclose(mean[name], (a[name].double() + b[name].double()).div(2).to(a[name].dtype)), name
    assert json.loads((averaged / "averaged_from.json").read_text())["count"] == 2
    with pytest.raises(UserError, match="already exists"):
        average_snapshots(snapshots, averaged)


def test_average_without_snapshots_is_a_clear_error(finished_run):
    from mtedge.train.averaging import list_snapshots

    out, _ = finished_run  # trained without --keep-snapshots
    with pytest.raises(UserError, match="--keep-snapshots"):
        list_snapshots(out)


def test_bf16_autocast_is_used_when_asked_and_fp32_otherwise():
    from mtedge.train.precision import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(UserError, match="supported: fp32, bf16, auto"):
        resolve_precision("fp8", cpu)


def test_bf16_training_learns_like_fp32(tmp_path):
    # the same 12 steps in both precisions: bf16 must lower the loss about as much as fp32 does
    fp32 = _run(tmp_path / "fp32", eval_every=12)
    bf16 = _run(tmp_path / "bf16", eval_every=12, precision="bf16")
    loss = lambda run: [r["train_loss"] for r in run.history if r["train_loss"] is not None][-1]  # noqa: E731
    assert abs(loss(bf16) - loss(fp32)) < 0.05 * loss(fp32)


def test_resume_with_another_shape_is_refused_naming_the_change(finished_run, tmp_path):
    import shutil

    out, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    wider = ModelShape(**{**SIZE.__dict__, "ffn_dim": 128})
    with pytest.raises(UserError, match=r"cannot resume .*ffn_dim 64 -> 128"):
        pretrain(TRAIN, DEV, copy, wider, _loop(max_steps=20), progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="training/dev files"):
        pretrain(TRAIN, DEV, copy, SIZE, _loop(max_steps=20), data_meta={"train": [{"sha256": "other"}]},
                 progress=False, log=lambda m: None)


def test_cli_exclude_drops_training_pairs_whose_source_is_held_out(data_files, tmp_path):
    held = tmp_path / "held.tsv"
    held.write_text("".join(f"{s}\t{t}\n" for s, t in TRAIN[:50]), encoding="utf-8")
    out = tmp_path / "out"
    proc = _cli("pretrain", "--arch", "m2m100", "--train", str(data_files / "train.tsv"),
                "--dev", str(data_files / "dev.tsv"), "--exclude", str(held), "-o", str(out),
                "--vocab-size", "150", "--d-model", "32", "--encoder-layers", "1", "--decoder-layers", "1",
                "--heads", "2", "--ffn-dim", "64", "--max-steps", "2", "--eval-every", "2", "--eval-sentences", "4",
                "--warmup-steps", "1", "--batch-tokens", "600", "--threads", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "pretrain_config.json").read_text())
    from mtedge.data import load_pairs

    held_sources = {p.src for p in load_pairs(held)}
    expected = sum(p.src in held_sources for p in load_pairs(data_files / "train.tsv"))  # as loaded: cleaned
    assert expected > 0 and config["data"]["excluded"]["dropped_training_pairs"] == expected
    assert config["size"]["arch"] == "m2m100"
