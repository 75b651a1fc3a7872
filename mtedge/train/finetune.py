"""``mtedge train``: fine-tune a supported Hugging Face seq2seq translation model on the user's data.

Every check that can fail (data, model family, tokenizer, target modules, output directory) runs
before the output directory is touched; the training itself is the shared loop (:mod:`.loop`).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mtedge.errors import UserError
from mtedge.families import detect_family
from mtedge.train import inputs
from mtedge.train.loop import STATE_NAME, LoopConfig, LoopResult, train_loop
from mtedge.convert.marian_pad import zero_marian_pad_row
from mtedge.train.methods import AdaLoraStepHook, MethodSettings, apply_method, check_method

MERGED_DIR = "merged"
# Learning rates that suit each method when the user names none: adapters start from zero and
# need larger steps; full fine-tuning of a trained model needs small ones.
DEFAULT_LEARNING_RATES = {"lora": 5e-4, "adalora": 5e-4, "ia3": 3e-3, "full": 5e-5}
# What must not change between a run and its --resume (the loop settings may: more steps, say).
_SAME_ON_RESUME = ("base_model.sha256", "tokenizer", "languages", "method", "data")


@dataclass
class FinetuneRequest:
    model: str
    train: list[Path]                 # one or more files of each role (TSV/JSONL/.po/.mo)
    dev: list[Path]
    out: Path
    method: MethodSettings = field(default_factory=MethodSettings)
    loop: LoopConfig = field(default_factory=LoopConfig)
    tokenizer: str | None = None      # default: the model's own
    source_lang: str | None = None    # M2M100/NLLB/mBART language codes
    target_lang: str | None = None
    force: bool = False               # replace an existing output directory
    resume: bool = False              # carry on from OUT/checkpoint
    merge: bool = False               # also write OUT/merged (a plain HF checkpoint)
    progress: bool = True


@dataclass
class FinetuneResult:
    out_dir: Path
    loop: LoopResult
    merged: object | None = None      # a merge.MergeResult with --merge


def finetune(request: FinetuneRequest, *, after_step: Callable | None = None) -> FinetuneResult:
    """Train ``request.model`` as asked; ``after_step(model)`` runs after each optimizer step."""
    import torch

    check_method(request.method)
    out = Path(request.out)
    _check_output_dir(out, request)
    train_pairs, train_files = inputs.load_data(request.train, "training")
    dev_pairs, dev_files = inputs.load_data(request.dev, "dev")
    model_dir = inputs.resolve_model_dir(request.model)
    family = detect_family(model_dir)
    tokenizer_dir = inputs.resolve_model_dir(request.tokenizer, "tokenizer") if request.tokenizer else model_dir
    _check_not_inside(out, [model_dir, tokenizer_dir, *(Path(f["path"]) for f in train_files + dev_files)], request)

    if request.loop.threads:
        torch.set_num_threads(request.loop.threads)
    tokenizer = inputs.load_tokenizer(tokenizer_dir)
    model = inputs.load_model(model_dir)
    inputs.check_tokenizer_matches(model, tokenizer, tokenizer_dir, model_dir)
    languages = inputs.apply_languages(family, tokenizer, model, request.source_lang, request.target_lang)
    record = inputs.new_run_record(
        base_model=inputs.base_model_record(request.model, model_dir, family),
        tokenizer=str(Path(tokenizer_dir).resolve()), languages=languages, method=request.method.to_dict(),
        data={"train": train_files, "dev": dev_files},
        loop=asdict(request.loop))
    if request.resume:
        record = _continue_record(out, record)

    torch.manual_seed(request.loop.seed)  # adapter initialisation is random too
    model, record["method_config"] = apply_method(model, family.name, request.method, request.loop.max_steps)
    zero_pad_row = request.method.method == "full" and family.ct2_zero_pad_row
    if zero_pad_row:
        zero_marian_pad_row(model)  # mtedge/DESIGN.md §4.1, before the first step as after every one

    _prepare_output_dir(out, request)
    inputs.write_run_record(out, record)
    save_model, load_model = _model_io(request.method.method, tokenizer)
    result = train_loop(model, tokenizer, train_pairs, dev_pairs, out, request.loop, save_model=save_model,
                        load_model=load_model, after_step=_after_step(zero_pad_row, after_step),
                        step_hook=AdaLoraStepHook() if request.method.method == "adalora" else None,
                        progress=request.progress, meta={"method": request.method.method, "family": family.name})
    record["result"] = {"steps": result.steps, "stopped": result.stopped, "best_step": result.best_step,
                        "best_bleu": result.best_bleu, "best_chrf": result.best_chrf,
                        "signatures": result.signatures, "train_seconds": result.wall_seconds}
    inputs.write_run_record(out, record)

    merged = None
    if request.merge:
        from mtedge.train.merge import merge_adapter

        merged = merge_adapter(out, out / MERGED_DIR, force=True)
    return FinetuneResult(out_dir=out, loop=result, merged=merged)


# -- output directory -----------------------------------------------------------------------------
def _check_output_dir(out: Path, request: FinetuneRequest) -> None:
    if request.force and request.resume:
        raise UserError("--force starts over and --resume carries on; pass one of them")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if request.resume:
        if not (out / "checkpoint" / STATE_NAME).is_file():
            raise UserError(f"nothing to resume: {out} holds no training checkpoint ({out}/checkpoint/)")
        if inputs.read_run_record(out) is None:
            raise UserError(f"cannot resume: {out} has no {inputs.RUN_RECORD}; it was not written by `mtedge train`")
    elif occupied and not request.force:
        raise UserError(f"output directory {out} already exists; pass --resume to carry on its training "
                        f"or --force to replace it")


def _check_not_inside(out: Path, paths: list[Path], request: FinetuneRequest) -> None:
    """--force deletes the output directory: never when the model or the data live in it."""
    if not request.force or not out.exists():
        return
    root = out.resolve()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved == root or root in resolved.parents:
            raise UserError(f"refusing --force: {path} is inside the output directory {out}")


def _prepare_output_dir(out: Path, request: FinetuneRequest) -> None:
    if request.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _continue_record(out: Path, record: dict) -> dict:
    """The earlier run's record, after checking that this run trains the same thing on the same data."""
    previous = inputs.read_run_record(out)
    changed = [key for key in _SAME_ON_RESUME if _lookup(previous, key) != _lookup(record, key)]
    if changed:
        raise UserError(f"cannot resume {out}: {', '.join(changed)} differ(s) from the interrupted run; "
                        f"resume with the same model, tokenizer, method and data, or start over with --force")
    previous["loop"] = record["loop"]
    previous.setdefault("resumed", []).append(record["created"])
    return previous


def _lookup(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# -- what a checkpoint holds ---------------------------------------------------------------------
def _model_io(method: str, tokenizer):
    """``save_model``/``load_model`` for the loop: adapter weights for PEFT, all weights for full.

    Both also write the tokenizer and generation config, so ``best/`` is usable on its own.
    """
    if method == "full":
        def save_full(model, path: Path) -> None:
            model.save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)

        return save_full, load_full_weights

    def save_adapter(model, path: Path) -> None:
        model.save_pretrained(path)  # adapter_config.json + adapter_model.safetensors
        model.get_base_model().generation_config.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return save_adapter, load_adapter_weights


def load_adapter_weights(model, path: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(Path(path) / "adapter_model.safetensors"))
    if result.unexpected_keys:
        raise UserError(f"{path} holds adapter weights this model has no place for "
                        f"(e.g. {result.unexpected_keys[0]}); was it trained with another method or targets?")


def load_full_weights(model, path: Path) -> None:
    """Every weight from ``path``'s safetensors files into ``model`` (tied copies are stored once)."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("model*.safetensors"))
    if not files:
        raise UserError(f"{path} holds no model*.safetensors weights")
    state = {}
    for file in files:
        state.update(load_file(file))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise UserError(f"{path} holds weights this model has no place for (e.g. {result.unexpected_keys[0]})")
    # Not missing: tied copies (stored once), and frozen weights that training never changes and
    # save_pretrained leaves out (Marian's sinusoidal position tables).
    current = model.state_dict()
    loaded = {current[name].data_ptr() for name in state}
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    missing = [name for name in result.missing_keys if current[name].data_ptr() not in loaded and name not in frozen]
    if missing:
        raise UserError(f"{path} lacks weights of this model (e.g. {missing[0]})")


def _after_step(zero_pad_row: bool, user_hook: Callable | None) -> Callable | None:
    if not zero_pad_row:
        return user_hook

    def hook(model) -> None:
        zero_marian_pad_row(model)  # full training moves the tied pad row; CT2 needs it zero (§4.1)
        if user_hook is not None:
            user_hook(model)

    return hook
