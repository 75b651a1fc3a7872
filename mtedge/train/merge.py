"""Merge a fine-tuned adapter into a plain Hugging Face checkpoint, and prove the merge is faithful.

The merged checkpoint is written to a staging directory, loaded back from disk, and its logits are
compared with the PEFT model's on dev batches; only when they agree (max abs diff ≤ ``TOLERANCE``)
does the staging directory become the output. What went in is recorded in ``provenance.json``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mtedge import __version__
from mtedge.errors import UserError
from mtedge.families import FAMILIES, Family, detect_family
from mtedge.train import inputs
from mtedge.train.loop import BEST_DIR, CHECKPOINT_DIR, LOG_NAME
from mtedge.convert.marian_pad import marian_pad_row_is_zero
from mtedge.train.methods import json_safe

TOLERANCE = 1e-4
PROVENANCE = "provenance.json"
DEFAULT_VERIFY_SENTENCES = 64
_VERIFY_BATCH = 16


class MergeVerificationError(UserError):
    """The merged weights do not reproduce the adapted model; nothing was written."""


@dataclass
class MergeResult:
    out_dir: Path
    max_abs_diff: float
    sentences: int
    provenance: dict


@dataclass
class _Source:
    """What is being merged: an adapter (or full fine-tuned weights) and the run that made it."""

    weights_dir: Path        # adapter_config.json + adapter weights, or a full checkpoint
    method: str              # lora | ia3 | full (or another PEFT type for foreign adapters)
    run_dir: Path | None     # the `mtedge train` output it came from, if any
    run: dict | None         # its run.json


def locate(path: str | Path) -> _Source:
    """Accept a training output directory (uses its ``best/``), or ``best/``/``checkpoint/`` itself, or
    any PEFT adapter directory."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"adapter not found: {path}")
    if (path / BEST_DIR).is_dir() and inputs.read_run_record(path) is not None:
        run_dir, weights_dir = path, path / BEST_DIR
    else:
        weights_dir = path
        run_dir = path.parent if path.name in (BEST_DIR, CHECKPOINT_DIR) else None
    run = inputs.read_run_record(run_dir) if run_dir is not None else None
    if (weights_dir / "adapter_config.json").is_file():
        config = json.loads((weights_dir / "adapter_config.json").read_text(encoding="utf-8"))
        method = str(config.get("peft_type", "")).lower()
    elif run and run["method"]["method"] == "full" and (weights_dir / "config.json").is_file():
        method = "full"
    else:
        raise UserError(f"{path} is neither a PEFT adapter (no adapter_config.json) nor an `mtedge train` "
                        f"output directory (no {BEST_DIR}/ and {inputs.RUN_RECORD})")
    return _Source(weights_dir=weights_dir, method=method, run_dir=run_dir if run else None, run=run)


def merge_adapter(adapter: str | Path, out: str | Path, *, dev: str | Path | None = None, force: bool = False,
                  verify_sentences: int = DEFAULT_VERIFY_SENTENCES) -> MergeResult:
    """Write ``out``: the merged model, its tokenizer and generation config, and ``provenance.json``."""
    import torch

    source = locate(adapter)
    out = Path(out)
    _check_output(out, source, force)
    base_dir, base_record = _base_model(source)
    dev_files = _dev_files(source, dev)
    dev_pairs = inputs.load_data(dev_files, "dev")[0][:verify_sentences]

    tokenizer_dir = source.weights_dir if (source.weights_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = inputs.load_tokenizer(tokenizer_dir)
    family = detect_family(base_dir)
    adapted = _load_adapted(source, base_dir)
    languages = (source.run or {}).get("languages") or {}
    if languages.get("target"):
        inputs.apply_languages(family, tokenizer, _plain(adapted), languages["source"], languages["target"])
    batches = _verification_batches(tokenizer, dev_pairs, _plain(adapted))

    pad_row_before = _pad_rows(_plain(adapted)) if family.ct2_zero_pad_row else None
    merged = _merge_adapter(copy.deepcopy(adapted)) if source.method != "full" else copy.deepcopy(adapted)
    _check_embeddings(merged, family, pad_row_before, source.method)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        del merged
        reloaded = inputs.load_model(staging).eval()
        if getattr(reloaded.config, "tie_word_embeddings", False) and not _tied(reloaded):
            raise MergeVerificationError(f"the merged checkpoint lost its tied embeddings on reload; "
                                         f"nothing written to {out}")
        with torch.inference_mode():
            diff = max(_max_abs_diff(adapted(**batch).logits, reloaded(**batch).logits) for batch in batches)
        if not diff <= TOLERANCE:  # also catches NaN
            raise MergeVerificationError(
                f"merge check failed: the merged model's logits differ from the adapted model's by up to "
                f"{diff:.3g} (> {TOLERANCE:g}) on {len(dev_pairs)} dev sentences; "
                f"nothing written to {out}")
        provenance = _provenance(source, base_record, staging, dev_files, len(dev_pairs), diff, reloaded,
                                 family.name)
        (staging / PROVENANCE).write_text(json.dumps(provenance, ensure_ascii=False, indent=2) + "\n",
                                          encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MergeResult(out_dir=out, max_abs_diff=diff, sentences=len(dev_pairs), provenance=provenance)


def _merge_adapter(peft_model):
    """Fold the adapter into the base weights; returns the plain transformers model."""
    return peft_model.merge_and_unload()


# -- inputs ---------------------------------------------------------------------------------------
def _check_output(out: Path, source: _Source, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"output directory {out} already exists; pass --force to replace it")
    resolved = out.resolve()
    weights = source.weights_dir.resolve()
    clashes = resolved == weights or weights in resolved.parents or any(
        resolved == kept.resolve() or resolved in kept.resolve().parents
        for kept in filter(None, [source.weights_dir, source.run_dir]))
    if clashes:
        raise UserError(f"the output {out} would overwrite the adapter it merges; choose another directory")


def _base_model(source: _Source) -> tuple[Path, dict | None]:
    """The base checkpoint the adapter was trained on, checked to be the same weights."""
    if source.method == "full":
        return source.weights_dir, (source.run or {}).get("base_model")
    recorded = (source.run or {}).get("base_model")
    if recorded and Path(recorded["path"]).is_dir():
        base_dir = Path(recorded["path"])
    else:
        config = json.loads((source.weights_dir / "adapter_config.json").read_text(encoding="utf-8"))
        name = (recorded or {}).get("name") or config.get("base_model_name_or_path")
        if not name:
            raise UserError(f"{source.weights_dir}/adapter_config.json does not name its base model")
        base_dir = inputs.resolve_model_dir(name)
    if recorded:
        from mtedge.convert.source import checkpoint_sha256

        if checkpoint_sha256(base_dir) != recorded["sha256"]:
            raise UserError(f"the base model in {base_dir} is not the one the adapter was trained on "
                            f"(its weights' sha256 changed); merge onto the original base model")
        return base_dir, recorded
    family = detect_family(base_dir)
    return base_dir, inputs.base_model_record(str(base_dir), base_dir, family)


def _dev_files(source: _Source, dev) -> list[Path]:
    if dev:
        return [Path(p) for p in ([dev] if isinstance(dev, (str, Path)) else dev)]
    recorded = [Path(f["path"]) for f in ((source.run or {}).get("data") or {}).get("dev", [])]
    if recorded and all(p.is_file() for p in recorded):
        return recorded
    gone = [str(p) for p in recorded if not p.is_file()]
    where = f" (the training dev file {gone[0]} is gone)" if gone else ""
    raise UserError(f"the merge is checked on dev sentences: pass --dev FILE{where}")


def _load_adapted(source: _Source, base_dir: Path):
    """The model as trained: base + adapter (PEFT), or the fine-tuned weights (full), in eval mode."""
    if source.method == "full":
        return inputs.load_model(source.weights_dir).eval()
    from peft import PeftModel
    from transformers import GenerationConfig

    base = inputs.load_model(base_dir)
    if (source.weights_dir / "generation_config.json").is_file():
        base.generation_config = GenerationConfig.from_pretrained(source.weights_dir)
    try:
        return PeftModel.from_pretrained(base, source.weights_dir).eval()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot apply the adapter in {source.weights_dir} to {base_dir}: "
                        f"{str(exc).strip().splitlines()[0]}") from None


def _plain(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _verification_batches(tokenizer, pairs, model) -> list[dict]:
    """Teacher-forced batches: the model sees each dev source and its reference as decoder input.

    Given as ``decoder_input_ids``, not ``labels``: with labels the forward pass also computes a loss, and
    AdaLoRA's adds an orthogonality term that an adapter loaded for inference cannot compute."""
    batches = []
    for start in range(0, len(pairs), _VERIFY_BATCH):
        part = pairs[start:start + _VERIFY_BATCH]
        batch = dict(tokenizer([s for s, _ in part], text_target=[t for _, t in part], padding=True,
                               truncation=True, max_length=256, return_tensors="pt"))
        batch["decoder_input_ids"] = _shift_right(batch.pop("labels"), model.config)
        batches.append(batch)
    return batches


def _shift_right(labels, config):
    """What every seq2seq family does with labels (BART's ``shift_tokens_right``, T5's ``_shift_right``):
    the decoder start token, then the labels but the last, -100 read as pad."""
    import torch

    shifted = torch.full_like(labels, config.pad_token_id)
    shifted[:, 0] = config.decoder_start_token_id
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, config.pad_token_id)


def _max_abs_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


# -- embeddings -----------------------------------------------------------------------------------
def _tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _pad_rows(model):
    pad = model.config.pad_token_id
    return model.get_input_embeddings().weight[pad].detach().clone()


def _check_embeddings(merged, family: Family, pad_row_before, method: str) -> None:
    if getattr(merged.config, "tie_word_embeddings", False) and not _tied(merged):
        raise MergeVerificationError("merging untied the output projection from the input embeddings; "
                                     "nothing written")
    if family.ct2_zero_pad_row and method != "full":
        import torch

        # An adapter on attention/FFN modules never touches the embeddings; if the merge did, CT2's
        # assumption about the decoder-start (<pad>) row would silently break (mtedge/DESIGN.md §4.1).
        if not torch.equal(_pad_rows(merged), pad_row_before):
            raise MergeVerificationError("merging changed Marian's <pad> embedding row; nothing written")


# -- provenance -----------------------------------------------------------------------------------
def _provenance(source: _Source, base_record: dict | None, staging: Path, dev_files: list[Path], n: int, diff: float,
                model, family: str) -> dict:
    from mtedge.convert.source import checkpoint_sha256

    run = source.run or {}
    method_config = run.get("method_config")
    if method_config is None and (source.weights_dir / "adapter_config.json").is_file():
        method_config = json_safe(json.loads((source.weights_dir / "adapter_config.json").read_text("utf-8")))
    return {
        "format": "mtedge-merged/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mtedge_version": __version__,
        "base_model": base_record,
        "method": source.method,
        "method_settings": run.get("method"),
        "method_config": method_config,
        "merged_from": {"path": str(source.weights_dir.resolve()), "run": str(source.run_dir.resolve())
                        if source.run_dir else None},
        "languages": run.get("languages"),
        "data": run.get("data"),
        "training": _training_summary(source),
        "best_dev": _best_dev(source),
        "merge_check": {"max_abs_diff": diff, "tolerance": TOLERANCE, "passed": True, "sentences": n,
                        "dev_files": [str(p.resolve()) for p in dev_files],
                        "inputs": "teacher-forced dev source + reference"},
        "embeddings": {"tied": _tied(model),
                       "marian_pad_row_zero": marian_pad_row_is_zero(model)
                       if FAMILIES[family].ct2_zero_pad_row else None},
        "sha256": checkpoint_sha256(staging),
    }


def _training_summary(source: _Source) -> dict | None:
    run = source.run
    if not run:
        return None
    result = run.get("result") or {}
    return {"steps": result.get("steps"), "stopped": result.get("stopped"), "best_step": result.get("best_step"),
            "train_seconds": result.get("train_seconds"), "loop": run.get("loop"),
            "weights": source.weights_dir.name}


def _best_dev(source: _Source) -> dict | None:
    """The best dev evaluation, from train_log.jsonl (it stays right after an interrupted run too)."""
    if source.weights_dir.name != BEST_DIR or source.run_dir is None or not (source.run_dir / LOG_NAME).is_file():
        return None  # only best/ holds the weights of the best evaluation
    best = None
    for line in (source.run_dir / LOG_NAME).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("best"):
                best = record
    if best is None:
        return None
    return {"step": best["step"], "bleu": best["dev_bleu"], "chrf": best["dev_chrf"], "sentences": best["dev_n"],
            "bleu_signature": best["signature"]["bleu"], "chrf_signature": best["signature"]["chrf"]}
