"""``mtedge train``: LoRA / AdaLoRA / IA3 / full (and partly frozen) fine-tuning of every family's tiny model, merge and reload, resume
after an interruption, and every bad input (one line on stderr through the CLI, never a traceback)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtedge.convert.source import checkpoint_sha256, safetensors_header
from mtedge.train.finetune import FinetuneRequest, finetune
from mtedge.train.loop import STATE_NAME, LoopConfig, TrainingError
from mtedge.train.merge import TOLERANCE, merge_adapter
from mtedge.train.methods import MethodSettings
from tests.cli_helpers import assert_user_error, run_cli, write_tsv

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
torch.set_num_threads(1)  # a shared 2-core machine; also what makes reruns bit-identical

# A few steps on tiny batches: enough to move every weight the method trains, seconds per run.
FAST = LoopConfig(max_steps=4, eval_every=2, eval_max_sentences=6, batch_tokens=600, warmup_steps=1,
                  max_source_length=40, max_target_length=40, learning_rate=3e-3, threads=1)
FAST_CLI = ["--max-steps", "2", "--eval-every", "2", "--eval-sentences", "4", "--batch-tokens", "600",
            "--warmup-steps", "1", "--max-length", "40", "--threads", "1", "--quiet"]
METHODS = ("lora", "adalora", "ia3", "full")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_train_pairs, tiny_dev_pairs) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return write_tsv(root / "train.tsv", tiny_train_pairs[:160]), write_tsv(root / "dev.tsv", tiny_dev_pairs[:8])


def make_request(model: Path, data, out: Path, method: str = "lora", **changes) -> FinetuneRequest:
    loop = replace(FAST, **changes.pop("loop", {}))
    return FinetuneRequest(model=str(model), train=[data[0]], dev=[data[1]], out=out,
                           method=MethodSettings(method=method, **changes.pop("settings", {})), loop=loop,
                           progress=False, **changes)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def teacher_forced_logits(model, tokenizer, pairs):
    batch = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs], padding=True, return_tensors="pt")
    # decoder inputs, not labels: with labels an AdaLoRA model loaded for inference fails on its loss term
    labels = batch.pop("labels")
    config = model.config
    start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
    batch["decoder_input_ids"] = torch.cat([start, labels[:, :-1]], dim=1)
    with torch.inference_mode():
        return model(**batch).logits


# -- train → evaluate → merge → reload, every method on every family -----------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", ["marian", "t5", "m2m100"])
def test_train_merge_reload(family, method, tiny_models, data, tiny_dev_pairs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    base_dir = tiny_models(family)
    languages = {"source_lang": "en", "target_lang": "de"} if family == "m2m100" else {}
    run = finetune(make_request(base_dir, data, tmp_path / "run", method, merge=True, **languages))

    # evaluated at the start and every 2 steps, with sacrebleu signatures
    log = read_log(run.out_dir)
    assert [r["step"] for r in log] == [0, 2, 4] and run.loop.steps == 4
    for record in log:
        assert 0 <= record["dev_bleu"] <= 100 and 0 <= record["dev_chrf"] <= 100 and record["dev_n"] == 6
        assert record["signature"]["bleu"].startswith("nrefs:1|") and "chrF" not in record["signature"]["bleu"]
    best_names = {p.name for p in (run.out_dir / "best").iterdir()}
    if method == "full":
        assert {"config.json", "model.safetensors", "generation_config.json"} <= best_names
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= best_names and "config.json" not in best_names

    # --merge wrote a plain checkpoint of best/ with its provenance
    provenance = json.loads((run.out_dir / "merged" / "provenance.json").read_text())
    assert provenance["method"] == method and provenance["base_model"]["sha256"] == checkpoint_sha256(base_dir)
    assert provenance["best_dev"]["bleu"] == run.loop.best_bleu
    assert provenance["best_dev"]["bleu_signature"] == run.loop.signatures["bleu"]
    assert provenance["data"]["train"][0]["sha256"] and provenance["training"]["steps"] == 4
    assert provenance["merge_check"]["max_abs_diff"] <= TOLERANCE and provenance["merge_check"]["passed"]

    # the last checkpoint holds trained (non-initial) adapter weights: merge it too and check it ourselves
    merged = merge_adapter(run.out_dir / "checkpoint", tmp_path / "merged-last")
    assert merged.max_abs_diff <= TOLERANCE and merged.provenance["training"]["weights"] == "checkpoint"
    header = safetensors_header(merged.out_dir / "model.safetensors")
    assert not any("lora_" in name or "ia3_" in name or name.startswith("base_model.") for name in header)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(merged.out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged.out_dir)
    base = AutoModelForSeq2SeqLM.from_pretrained(base_dir).eval()
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight  # still tied
    changed = [name for name, tensor in reloaded.state_dict().items()
               if not torch.equal(tensor, base.state_dict()[name])]
    assert changed, "training + merge left every weight as it was"
    if family == "marian":
        pad = reloaded.config.pad_token_id
        assert not reloaded.get_input_embeddings().weight[pad].any()  # mtedge/DESIGN.md §4.1
        assert provenance["embeddings"]["marian_pad_row_zero"] is True

    # independent check: the reloaded merge reproduces the model as trained
    if method == "full":
        trained = AutoModelForSeq2SeqLM.from_pretrained(run.out_dir / "checkpoint").eval()
    else:
        trained = PeftModel.from_pretrained(base, run.out_dir / "checkpoint").eval()
    pairs = tiny_dev_pairs[:4]
    diff = (teacher_forced_logits(trained, tokenizer, pairs) - teacher_forced_logits(reloaded, tokenizer, pairs))
    assert float(diff.abs().max()) <= TOLERANCE
    with torch.inference_mode():
        out = reloaded.generate(**tokenizer([pairs[0][0]], return_tensors="pt"), max_new_tokens=20)
    assert tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


def test_cli_train_with_merge(tiny_marian, data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", tiny_marian, "--train", data[0], "--dev", data[1], "-o", out,
                                "--method", "ia3", "--merge", *FAST_CLI)
    assert code == 0, err
    assert stdout.strip() == str(out / "merged")
    assert "best dev BLEU" in err and "nrefs:1|" in err and "merged; logits max abs diff" in err
    run = json.loads((out / "run.json").read_text())
    assert run["method"]["method"] == "ia3" and run["result"]["steps"] == 2
    assert sorted(run["method_config"]["target_modules"]) == ["fc2", "k_proj", "v_proj"]
    assert run["method_config"]["feedforward_modules"] == ["fc2"]


# -- resume ---------------------------------------------------------------------------------------
def _tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _tensors(a), _tensors(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def _scores(run_dir: Path) -> dict:
    return {r["step"]: (r["dev_bleu"], r["dev_chrf"]) for r in read_log(run_dir)}


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tiny_marian, data, tmp_path):
    # LoRA dropout on: the resumed run must also restore the random state, not just the weights.
    settings = {"lora_dropout": 0.1}
    loop = {"max_steps": 6}
    whole = finetune(make_request(tiny_marian, data, tmp_path / "whole", settings=settings, loop=loop))

    steps = []

    def ctrl_c_at_step_3(model):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="resumable checkpoint"):
        finetune(make_request(tiny_marian, data, tmp_path / "cut", settings=settings, loop=loop),
                 after_step=ctrl_c_at_step_3)
    state = torch.load(tmp_path / "cut" / "checkpoint" / STATE_NAME, weights_only=False)
    assert state["state"]["step"] == 3
    resumed = finetune(make_request(tiny_marian, data, tmp_path / "cut", settings=settings, loop=loop,
                                    resume=True))

    assert resumed.loop.steps == whole.loop.steps == 6
    _assert_same_weights(tmp_path / "whole" / "checkpoint", tmp_path / "cut" / "checkpoint")
    _assert_same_weights(tmp_path / "whole" / "best", tmp_path / "cut" / "best")
    assert _scores(tmp_path / "cut") == _scores(tmp_path / "whole")
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["resumed"]


def test_more_steps_after_max_steps_match_one_longer_run(tiny_marian, data, tmp_path):
    # full fine-tuning: all weights in the checkpoint, and Marian's pad row re-zeroed after each step
    whole = finetune(make_request(tiny_marian, data, tmp_path / "whole", "full", loop={"max_steps": 4}))
    finetune(make_request(tiny_marian, data, tmp_path / "parts", "full", loop={"max_steps": 2}))
    parts = finetune(make_request(tiny_marian, data, tmp_path / "parts", "full", loop={"max_steps": 4},
                                  resume=True))
    assert parts.loop.steps == whole.loop.steps == 4
    _assert_same_weights(tmp_path / "whole" / "checkpoint", tmp_path / "parts" / "checkpoint")
    weights = _tensors(tmp_path / "parts" / "checkpoint")
    pad = json.loads((tiny_marian / "config.json").read_text())["pad_token_id"]
    assert not weights["model.shared.weight"][pad].any()


def test_resume_refuses_other_data(tiny_marian, data, tmp_path, capsys):
    out = tmp_path / "run"
    finetune(make_request(tiny_marian, data, out, loop={"max_steps": 2}))
    other = write_tsv(tmp_path / "other.tsv", [("the cat", "die Katze"), ("the dog", "der Hund")])
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", other, "--dev", data[1], "-o", out,
                           "--resume", *FAST_CLI)
    assert_user_error(code, err, "cannot resume", "data")


# -- NaN loss ---------------------------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_marian, data, tmp_path):
    steps = []

    def poison_after_step_3(model):
        steps.append(1)
        if len(steps) == 3:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss became nan at step 4.*last good checkpoint is .*checkpoint"):
        finetune(make_request(tiny_marian, data, out, loop={"max_steps": 6}), after_step=poison_after_step_3)
    state = torch.load(out / "checkpoint" / STATE_NAME, weights_only=False)
    assert state["state"]["step"] == 2  # the evaluation at step 2 wrote it; step 3's weights never were
    assert all(torch.isfinite(t).all() for t in _tensors(out / "checkpoint").values())


def test_cli_absurd_learning_rate_gives_nan_message(tiny_marian, data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", data[0], "--dev", data[1], "-o", out,
                           "--learning-rate", "1e30", "--max-steps", "3", "--batch-tokens", "600", "--threads", "1",
                           "--quiet")
    assert_user_error(code, err, "training loss became nan", "last good checkpoint")
    assert (out / "checkpoint" / STATE_NAME).is_file()


# -- bad input through the CLI --------------------------------------------------------------------
def test_missing_and_empty_data(tiny_marian, data, tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", tmp_path / "nope.tsv", "--dev", data[1],
                           "-o", tmp_path / "a", *FAST_CLI)
    assert_user_error(code, err, "training file not found", "nope.tsv")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", data[0], "--dev", empty, "-o", tmp_path / "b",
                           *FAST_CLI)
    assert_user_error(code, err, "dev file", "is empty")
    blank = tmp_path / "blank.tsv"
    blank.write_text("\n\n")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", blank, "--dev", data[1], "-o", tmp_path / "c",
                           *FAST_CLI)
    assert_user_error(code, err, "blank.tsv")  # the data layer says why nothing is usable
    assert not any((tmp_path / name).exists() for name in "abc")


def test_unsupported_model_names_the_supported_families(data, tmp_path, capsys):
    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "is_encoder_decoder": False}))
    code, _, err = run_cli(capsys, "train", model, "--train", data[0], "--dev", data[1], "-o", tmp_path / "o",
                           *FAST_CLI)
    assert_user_error(code, err, "not an encoder-decoder model", "Marian", "T5", "M2M100", "mBART")
    (model / "config.json").write_text(json.dumps({"model_type": "pegasus", "is_encoder_decoder": True}))
    code, _, err = run_cli(capsys, "train", model, "--train", data[0], "--dev", data[1], "-o", tmp_path / "o",
                           *FAST_CLI)
    assert_user_error(code, err, "'pegasus' is not a supported", "M2M100/NLLB")
    code, _, err = run_cli(capsys, "train", tmp_path / "no-model", "--train", data[0], "--dev", data[1],
                           "-o", tmp_path / "o", *FAST_CLI)
    assert_user_error(code, err, "model not found")


def test_tokenizer_that_does_not_match_the_model(tiny_marian, tiny_m2m100, tiny_t5, data, tmp_path, capsys):
    common = ["--train", data[0], "--dev", data[1], "-o", tmp_path / "o", *FAST_CLI]
    code, _, err = run_cli(capsys, "train", tiny_marian, "--tokenizer", tiny_m2m100, *common)
    assert_user_error(code, err, "has 281 tokens", "180 embedding rows", "do not belong together")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--tokenizer", tiny_t5, *common)
    assert_user_error(code, err, "pad id 0", "expects 179")
    # the model's own directory with a grown vocabulary
    model = shutil.copytree(tiny_marian, tmp_path / "grown")
    vocab = json.loads((model / "vocab.json").read_text())
    vocab.update({f"extra{i}": len(vocab) + i for i in range(10)})
    (model / "vocab.json").write_text(json.dumps(vocab))
    code, _, err = run_cli(capsys, "train", model, *common)
    assert_user_error(code, err, "embedding rows")


def test_existing_output_needs_force(tiny_marian, data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --force")
    args = ["train", tiny_marian, "--train", data[0], "--dev", data[1], "-o", out, *FAST_CLI]
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, "already exists", "--force", "--resume")
    assert (out / "old.txt").exists()
    code, _, err = run_cli(capsys, *args, "--force", "--resume")
    assert_user_error(code, err, "pass one of them")
    code, stdout, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    assert not (out / "old.txt").exists() and stdout.strip() == str(out / "best")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", data[0], "--dev", data[1],
                           "-o", tmp_path / "fresh", "--resume", *FAST_CLI)
    assert_user_error(code, err, "nothing to resume")


def test_force_never_deletes_the_inputs(tiny_marian, data, tmp_path, capsys):
    out = tmp_path / "run"
    model = shutil.copytree(tiny_marian, out / "model")
    code, _, err = run_cli(capsys, "train", model, "--train", data[0], "--dev", data[1], "-o", out, "--force",
                           *FAST_CLI)
    assert_user_error(code, err, "refusing --force", "inside the output directory")
    assert (model / "config.json").exists()


def test_target_modules(tiny_marian, tiny_t5, data, tmp_path, capsys):
    common = ["--train", data[0], "--dev", data[1], "-o", tmp_path / "o", *FAST_CLI]
    code, _, err = run_cli(capsys, "train", tiny_t5, "--target-modules", "q,q_proj", *common)
    assert_user_error(code, err, "'q_proj' is not in this t5 model", "k, o, q, v, wi, wo")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--target-modules", "lm_head", *common)
    assert_user_error(code, err, "tied to the input embeddings")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--method", "full", "--target-modules", "q_proj", *common)
    assert_user_error(code, err, "--method full trains every weight")
    code, _, err = run_cli(capsys, "train", tiny_marian, "--target-lang", "de", *common)
    assert_user_error(code, err, "a marian model has no language tokens")
    # a narrowed override is honoured
    run = finetune(make_request(tiny_marian, data, tmp_path / "narrow", settings={
        "target_modules": ["encoder_attn.q_proj", "fc1"]}, loop={"max_steps": 1, "eval_every": 1}))
    adapted = [k for k in _tensors(run.out_dir / "best") if "lora_A" in k]
    assert adapted and all("encoder_attn.q_proj" in k or "fc1" in k for k in adapted)
    assert not any("self_attn" in k for k in adapted)


# -- full fine-tuning with parts frozen ------------------------------------------------------------------
@pytest.mark.parametrize("freeze", [["encoder"], ["encoder", "embeddings"], ["decoder"]])
def test_freeze_keeps_the_frozen_parts_exactly(tiny_marian, data, tmp_path, freeze):
    from safetensors.torch import load_file

    run = finetune(make_request(tiny_marian, data, tmp_path / "run", "full", settings={"freeze": freeze}))
    before = load_file(str(Path(tiny_marian) / "model.safetensors"))
    after = load_file(str(run.out_dir / "checkpoint" / "model.safetensors"))
    shared = {name for name in before if "shared" in name or "embed_tokens" in name or "lm_head" in name}
    encoder = {name for name in before if ".encoder." in name and name not in shared and "embed_positions" not in name}
    decoder = {name for name in before if ".decoder." in name and name not in shared and "embed_positions" not in name}
    unchanged = lambda names: all(torch.equal(before[n], after[n]) for n in names if n in after)  # noqa: E731
    changed = lambda names: any(not torch.equal(before[n], after[n]) for n in names if n in after)  # noqa: E731
    assert unchanged(encoder) if "encoder" in freeze else changed(encoder)
    assert unchanged(decoder) if "decoder" in freeze else changed(decoder)
    if "embeddings" in freeze:
        assert unchanged(shared)
    record = json.loads((run.out_dir / "run.json").read_text())
    assert record["method_config"]["frozen"] == freeze and record["method_config"]["frozen_parameters"] > 0


@pytest.mark.parametrize("args, message", [
    (["--method", "lora", "--freeze", "encoder"], "--freeze applies to --method full"),
    (["--method", "full", "--freeze", "attention"], "unknown part; choose from encoder, decoder, embeddings"),
    (["--method", "full", "--freeze", "encoder,decoder,embeddings"], "leaves nothing to train"),
])
def test_freeze_bad_input_is_one_line(tiny_marian, data, tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "train", tiny_marian, "--train", data[0], "--dev", data[1],
                           "-o", tmp_path / "run", *args, *FAST_CLI)
    assert_user_error(code, err, message)


def test_adalora_prunes_ranks_toward_the_target_budget(tiny_marian, data, tmp_path):
    # 12 steps: AdaLoRA starts at 1.5x --lora-r and its allocator must have run (rank pattern recorded)
    run = finetune(make_request(tiny_marian, data, tmp_path / "run", "adalora", settings={"lora_r": 4},
                                loop={"max_steps": 12, "eval_every": 12}))
    config = json.loads((run.out_dir / "checkpoint" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["init_r"] == 6 and config["target_r"] == 4
    assert config["total_step"] == 12
