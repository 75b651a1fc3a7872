"""The inputs of fine-tuning and merging: model, tokenizer, languages, data, and the run record.

Each check here fails with a message the user can act on, before minutes of training are spent.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

from mtedge import __version__
from mtedge.errors import UserError
from mtedge.families import Family

RUN_RECORD = "run.json"
# "owner/name" or "name": what a hub repository id looks like (a path that does not exist locally
# and does not look like one is tried on the hub).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.spm", "*.txt", "*.bin"]


# -- model source ---------------------------------------------------------------------------------
def resolve_model_dir(name: str | Path, what: str = "model") -> Path:
    """A local checkpoint directory for ``name``: the directory itself, or a hub snapshot of it."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if not _HUB_ID.match(str(name)):
        raise UserError(f"{what} not found: {name}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), allow_patterns=_HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated, network: all the same to the user
        raise UserError(f"{what} not found: {name} is not a local directory, and the Hugging Face hub "
                        f"could not provide it ({_first_line(exc)})") from None


def base_model_record(name: str | Path, model_dir: Path, family: Family) -> dict:
    from mtedge.convert.source import checkpoint_sha256

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return {"name": str(name), "path": str(model_dir.resolve()), "sha256": checkpoint_sha256(model_dir),
            "family": family.name, "model_type": config.get("model_type")}


def load_model(model_dir: Path):
    """The checkpoint in float32 (training and the merge check both need full precision)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    try:
        return AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model in {model_dir}: {_first_line(exc)}") from None


def load_tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise UserError(f"tokenizer not found: {tokenizer_dir}")
    try:
        with warnings.catch_warnings():
            # MarianTokenizer asks for sacremoses, which only its (unused) punctuation normalizer needs.
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            return AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"cannot load a tokenizer from {tokenizer_dir}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_tokenizer_matches(model, tokenizer, tokenizer_dir: Path, model_dir: Path) -> None:
    """Refuse a tokenizer whose ids do not fit the model's vocabulary."""
    rows = model.get_input_embeddings().num_embeddings
    hint = "use the tokenizer that was trained with the model"
    if len(tokenizer) > rows:
        raise UserError(f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the model in "
                        f"{model_dir} has {rows} embedding rows: they do not belong together; {hint}")
    for role in ("pad", "eos"):
        tok_id = getattr(tokenizer, f"{role}_token_id")
        model_id = getattr(model.config, f"{role}_token_id")
        if tok_id is not None and model_id is not None and tok_id != model_id:
            raise UserError(f"the tokenizer in {tokenizer_dir} has {role} id {tok_id} but the model in "
                            f"{model_dir} expects {model_id}: they do not belong together; {hint}")


def apply_languages(family: Family, tokenizer, model, source_lang: str | None, target_lang: str | None) -> dict:
    """Select the language tokens of multilingual families; returns the languages used."""
    if not family.multilingual:
        if source_lang or target_lang:
            raise UserError(f"--source-lang/--target-lang select the language tokens of M2M100/NLLB/mBART "
                            f"models; a {family.name} model has no language tokens")
        return {"source": None, "target": None}
    source = source_lang or getattr(tokenizer, "src_lang", None)
    target = target_lang or getattr(tokenizer, "tgt_lang", None)
    if not source or not target:
        raise UserError(f"this {family.name} model translates between many languages: "
                        f"pass --source-lang and --target-lang (e.g. en and de)")
    for lang in (source, target):
        if _language_id(tokenizer, lang) in (None, tokenizer.unk_token_id):
            raise UserError(f"language {lang!r} is not one of this {family.name} tokenizer's language codes")
    tokenizer.src_lang = source  # the setter switches the source prefix tokens
    tokenizer.tgt_lang = target
    model.generation_config.forced_bos_token_id = _language_id(tokenizer, target)
    return {"source": source, "target": target}


def _language_id(tokenizer, lang: str) -> int | None:
    if hasattr(tokenizer, "get_lang_id"):  # M2M100: "de" -> "__de__"
        try:
            return tokenizer.get_lang_id(lang)
        except KeyError:
            return None
    return tokenizer.convert_tokens_to_ids(lang)  # mBART "de_DE", NLLB "deu_Latn"


# -- data -----------------------------------------------------------------------------------------
def load_data(paths, role: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """Pairs and file records (path, sha256, pairs) as ``mtedge pretrain`` reads them; the recorded paths
    are absolute, so that ``mtedge merge`` finds the dev files again from anywhere."""
    from mtedge.train.data import load_files

    if isinstance(paths, (str, Path)):
        paths = [paths]
    return load_files([Path(p).expanduser().resolve() for p in paths], role)


# -- the run record (run.json in the training output directory) -----------------------------------
def new_run_record(**fields) -> dict:
    return {"mtedge_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields,
            "result": None}


def write_run_record(out_dir: Path, record: dict) -> None:
    path = Path(out_dir) / RUN_RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_run_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
