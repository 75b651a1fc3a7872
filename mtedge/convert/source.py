"""What the export needs to know about the source checkpoint, read from its files (no torch).

Every check here runs before minutes of export work, so a wrong input fails fast with a message
the user can act on.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from mtedge.errors import UnsupportedModelError, UserError
from mtedge.families import Family, detect_family, read_model_config

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
# Files of a training run that the torch reference copy does not need.
TRAINING_LEFTOVERS = {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"}

# The HF generation settings the bundle records, with transformers' defaults.
GENERATION_DEFAULTS = {
    "decoder_start_token_id": None, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "bad_words_ids": None,
    "num_beams": 1, "max_length": 20, "max_new_tokens": None, "length_penalty": 1.0,
    "early_stopping": False, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
    "renormalize_logits": False,
}
# The model's special token ids: HF generate falls back to config.json for these even when a
# generation_config.json exists; every other setting then comes from that file alone.
TOKEN_ID_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class SourceModel:
    path: Path
    family: Family
    config: dict
    generation: dict
    tokenizer_config: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or [self.family.architecture])[0]

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])


def weight_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    names = [p for p in model_dir.iterdir() if p.is_file() and (
        p.name in WEIGHT_FILES or (p.suffix in {".safetensors", ".bin"} and p.name.startswith(("model-", "pytorch_model-"))))]
    return sorted(names)


def safetensors_header(path: Path) -> dict:
    """The JSON header of a ``.safetensors`` file: tensor names, dtypes and shapes (no torch needed)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise UserError(f"{path} is not a valid safetensors file")
        return json.loads(handle.read(length))


def _check_not_peft(model_dir: Path) -> None:
    adapter = (model_dir / "adapter_config.json").is_file()
    if adapter and not any((model_dir / n).is_file() for n in WEIGHT_FILES):
        raise UserError(f"{model_dir} is a PEFT adapter, not a full model; merge it first with "
                        f"`mtedge merge {model_dir} -o MERGED_DIR` and export the merged directory")
    # A model saved while still wrapped by PEFT carries the adapter tensors in its weights.
    for path in weight_files(model_dir):
        if path.suffix == ".safetensors":
            names = safetensors_header(path).keys()
            wrapped = [n for n in names if "lora_A" in n or "lora_B" in n or n.startswith("base_model.model.")]
            if wrapped:
                raise UserError(f"{path} still holds PEFT/LoRA tensors (e.g. {wrapped[0]}); merge the adapter "
                                f"first with `mtedge merge` and export the merged model")


def checkpoint_sha256(model_dir: Path) -> str:
    """One hash over the checkpoint's config and weight files (name + content, in name order)."""
    from mtedge.bundle import sha256_file

    digest = hashlib.sha256()
    files = [Path(model_dir) / "config.json", *weight_files(model_dir)]
    if (Path(model_dir) / "generation_config.json").is_file():
        files.append(Path(model_dir) / "generation_config.json")
    for path in sorted(files):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def read_generation(model_dir: Path, config: dict) -> dict:
    """What HF ``generate`` uses: generation_config.json over transformers' defaults when the checkpoint has
    one (config.json then only supplies the special token ids), else config.json over the defaults.

    MBartConfig writes ``forced_eos_token_id: 2`` into config.json by default; a model saved with its own
    generation_config.json (our mBART fixture) does not force ``</s>`` in HF generate, and reading the
    config.json value made the export end every length-limited output one token early."""
    path = Path(model_dir) / "generation_config.json"
    try:
        gen_file = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    generation = {}
    for key, default in GENERATION_DEFAULTS.items():
        if gen_file is None:
            generation[key] = config.get(key, default)
        else:
            generation[key] = gen_file.get(key, config.get(key, default) if key in TOKEN_ID_KEYS else default)
    if generation["decoder_start_token_id"] is None:
        generation["decoder_start_token_id"] = generation["pad_token_id"]
    if generation["max_new_tokens"] is None:
        # HF counts the decoder start token in max_length for encoder-decoders: at most max_length - 1
        # tokens are generated. The runtime's max_length has max_new_tokens semantics (mtedge/DESIGN.md §4.2).
        generation["max_new_tokens"] = max(1, int(generation["max_length"]) - 1)
    return generation


def inspect_source(model_dir: str | Path) -> SourceModel:
    """Family, config, generation settings; raises a UserError for anything the export cannot use."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise UserError(f"{model_dir} is a file; give the checkpoint directory")
    if model_dir.exists():
        _check_not_peft(model_dir)
    config = read_model_config(model_dir)
    family = detect_family(model_dir)
    if not weight_files(model_dir):
        raise UserError(f"{model_dir} has no model weights (expected one of {', '.join(WEIGHT_FILES[:2])})")
    missing = [n for n in family.checkpoint_tokenizer_files if not (model_dir / n).is_file()]
    if missing:
        raise UserError(f"{model_dir} lacks the tokenizer file(s) {', '.join(missing)} that a {family.name} "
                        f"model needs; copy them from the base model")
    tok_config_path = model_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
    if tok_config.get("separate_vocabs"):  # only MarianTokenizer has the option
        raise UnsupportedModelError(f"{model_dir}: Marian models with separate source/target vocabularies "
                                    f"are not supported yet")
    return SourceModel(model_dir, family, config, read_generation(model_dir, config), tok_config)
