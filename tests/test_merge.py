"""``mtedge merge``: the logits check refuses a bad merge, tied embeddings and Marian's pad row are kept,
and each way of pointing at an adapter (run dir, best/, checkpoint/, a bare PEFT adapter) works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mtedge.train import merge as merge_module
from mtedge.train.finetune import FinetuneRequest, finetune
from mtedge.train.loop import LoopConfig
from mtedge.train.merge import MergeVerificationError, merge_adapter
from tests.cli_helpers import assert_user_error, run_cli, write_tsv

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
torch.set_num_threads(1)


def nothing_left(directory: Path, name: str) -> bool:
    return not (directory / name).exists() and not any(p.name.startswith(f".{name}") for p in directory.iterdir())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_marian, tiny_train_pairs, tiny_dev_pairs) -> Path:
    """A finished LoRA run on the tiny Marian model: run.json, train_log.jsonl, best/, checkpoint/."""
    root = tmp_path_factory.mktemp("merge")
    train = write_tsv(root / "train.tsv", tiny_train_pairs[:160])
    dev = write_tsv(root / "dev.tsv", tiny_dev_pairs[:8])
    loop = LoopConfig(max_steps=4, eval_every=2, eval_max_sentences=6, batch_tokens=600, warmup_steps=1,
                      max_source_length=40, max_target_length=40, learning_rate=3e-3, threads=1)
    finetune(FinetuneRequest(model=str(tiny_marian), train=[train], dev=[dev], out=root / "run", loop=loop,
                             progress=False))
    return root / "run"


@pytest.fixture
def run_copy(lora_run, tmp_path) -> Path:
    return Path(shutil.copytree(lora_run, tmp_path / "run"))


def _corrupting(monkeypatch, corrupt) -> None:
    real = merge_module._merge_adapter

    def merge_then_corrupt(peft_model):
        merged = real(peft_model)
        with torch.no_grad():
            corrupt(merged)
        return merged

    monkeypatch.setattr(merge_module, "_merge_adapter", merge_then_corrupt)


# -- the checks that refuse a bad merge --------------------------------------------------------------
def test_a_corrupted_merge_is_refused_and_nothing_written(lora_run, tmp_path, monkeypatch):
    _corrupting(monkeypatch, lambda m: m.model.decoder.layers[0].self_attn.q_proj.weight.add_(1e-2))
    with pytest.raises(MergeVerificationError, match=r"merge check failed: .* differ .* by up to .*nothing written"):
        merge_adapter(lora_run / "checkpoint", tmp_path / "merged")
    assert nothing_left(tmp_path, "merged")


def test_a_corrupted_merge_through_the_cli(lora_run, tmp_path, monkeypatch, capsys):
    # one element: a uniform shift of the whole bias would vanish in the following layer norm
    _corrupting(monkeypatch, lambda m: m.model.encoder.layers[1].fc2.bias[0].add_(1e-2))
    code, out, err = run_cli(capsys, "merge", lora_run / "checkpoint", "-o", tmp_path / "merged")
    assert_user_error(code, err, "merge check failed", "(> 0.0001)", "nothing written")
    assert out == "" and nothing_left(tmp_path, "merged")


def test_a_merge_that_unties_the_embeddings_is_refused(lora_run, tmp_path, monkeypatch):
    def untie(model):
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())

    _corrupting(monkeypatch, untie)
    with pytest.raises(MergeVerificationError, match="untied"):
        merge_adapter(lora_run / "checkpoint", tmp_path / "merged")
    assert nothing_left(tmp_path, "merged")


def test_a_merge_that_moves_the_marian_pad_row_is_refused(lora_run, tmp_path, monkeypatch):
    _corrupting(monkeypatch, lambda m: m.get_input_embeddings().weight[m.config.pad_token_id].fill_(0.1))
    with pytest.raises(MergeVerificationError, match="<pad> embedding row"):
        merge_adapter(lora_run / "checkpoint", tmp_path / "merged")


# -- what can be merged --------------------------------------------------------------------------------
def test_merge_a_run_directory_uses_best(lora_run, tiny_marian, tmp_path, capsys):
    out = tmp_path / "merged"
    code, stdout, err = run_cli(capsys, "merge", lora_run, "-o", out)
    assert code == 0, err
    assert stdout.strip() == str(out) and "logits max abs diff" in err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["merged_from"]["path"] == str((lora_run / "best").resolve())
    assert provenance["base_model"]["path"] == str(tiny_marian.resolve())
    assert provenance["method_config"]["peft_type"] == "LORA" and provenance["method_config"]["r"] == 16
    assert provenance["best_dev"]["bleu_signature"].startswith("nrefs:1|")
    assert {"config.json", "model.safetensors", "generation_config.json", "source.spm", "vocab.json"} <= {
        p.name for p in out.iterdir()}
    # an existing output needs --force
    code, _, err = run_cli(capsys, "merge", lora_run, "-o", out)
    assert_user_error(code, err, "already exists", "--force")
    code, _, err = run_cli(capsys, "merge", lora_run, "-o", out, "--force", "--verify-sentences", "3")
    assert code == 0, err
    assert json.loads((out / "provenance.json").read_text())["merge_check"]["sentences"] == 3


def test_merge_a_bare_peft_adapter(lora_run, tiny_dev_pairs, tmp_path, capsys):
    adapter = Path(shutil.copytree(lora_run / "checkpoint", tmp_path / "adapter"))  # no run.json beside it
    code, _, err = run_cli(capsys, "merge", adapter, "-o", tmp_path / "merged")
    assert_user_error(code, err, "pass --dev FILE")
    dev = write_tsv(tmp_path / "dev.tsv", tiny_dev_pairs[:5])
    result = merge_adapter(adapter, tmp_path / "merged", dev=dev)
    assert result.sentences == 5 and result.max_abs_diff <= merge_module.TOLERANCE
    assert result.provenance["data"] is None and result.provenance["training"] is None
    assert result.provenance["base_model"]["sha256"]  # from adapter_config.json's base_model_name_or_path


def test_the_base_model_must_be_the_one_trained_on(run_copy, tmp_path, capsys):
    record = json.loads((run_copy / "run.json").read_text())
    record["base_model"]["sha256"] = "0" * 64
    (run_copy / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "merge", run_copy, "-o", tmp_path / "merged")
    assert_user_error(code, err, "is not the one the adapter was trained on")


def test_a_moved_dev_file_needs_dev(run_copy, tiny_dev_pairs, tmp_path, capsys):
    record = json.loads((run_copy / "run.json").read_text())
    record["data"]["dev"][0]["path"] = str(tmp_path / "moved.tsv")
    (run_copy / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "merge", run_copy, "-o", tmp_path / "merged")
    assert_user_error(code, err, "pass --dev FILE", "moved.tsv is gone")
    dev = write_tsv(tmp_path / "elsewhere.tsv", tiny_dev_pairs[:4])
    code, _, err = run_cli(capsys, "merge", run_copy, "-o", tmp_path / "merged", "--dev", dev)
    assert code == 0, err


def test_bad_adapter_paths(lora_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "merge", tmp_path / "nope", "-o", tmp_path / "merged")
    assert_user_error(code, err, "adapter not found")
    (tmp_path / "plain").mkdir()
    code, _, err = run_cli(capsys, "merge", tmp_path / "plain", "-o", tmp_path / "merged")
    assert_user_error(code, err, "neither a PEFT adapter")
    code, _, err = run_cli(capsys, "merge", lora_run, "-o", lora_run / "best" / "merged")
    assert_user_error(code, err, "would overwrite the adapter")
