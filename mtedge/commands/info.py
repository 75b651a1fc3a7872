"""``mtedge info``: what is in a bundle (manifest, sizes, validation, broken files) or an HF checkpoint.

Light: no torch/transformers — checkpoint facts come from config.json and safetensors headers.
"""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

import click

from mtedge.errors import BundleError, UserError

MB = 1024 * 1024


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB"


def _validation_line(record: dict | None) -> str:
    if not record:
        return "not validated"
    if "skipped" in record:
        return f"not validated ({record['skipped']})"
    parts = []
    for mode in ("greedy", "beam4"):
        m = record.get(mode)
        if not m:
            continue
        text = f"{mode}: agree {m['agreement']:.0%}, BLEU vs torch {m['bleu_vs_torch']:.1f}"
        if m.get("bleu_ref") is not None:
            text += f", BLEU {m['bleu_ref']:.1f} (Δ {m['bleu_delta']:+.2f})"
        parts.append(text)
    return "; ".join(parts)


def _int8_scheme_line(options: dict) -> str | None:
    if options.get("quantization") != "rowwise":
        return None
    from mtedge.engines.onnx_engine import DECODER_FILE
    from mtedge.engines.rowwise_int8 import is_stale

    if is_stale(options):   # mtedge/DESIGN.md §4.12
        return ("row-wise int8 exported before 2026-12-02: onnxruntime's fusion drops its biases; "
                "re-export with `mtedge export`")
    if options.get("weight_bits") == 4:   # int4: both graphs in MatMulNBits' 4-bit blocks
        return f"int8 activations per row, {options['weights']}; for one sentence at a time (MatMulNBits)"
    line = f"row-wise int8, {options['weight_bits']}-bit weights (preset {options.get('preset', '?')})"
    if (options.get("kernels") or {}).get(DECODER_FILE) == "gemv":
        line += ", decoder for one sentence at a time (MatMulNBits)"
    return line


def _listed(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def describe_bundle(path: Path, deep: bool) -> tuple[list[str], list[str]]:
    from mtedge.bundle import Bundle

    bundle = Bundle.open(path)
    m = bundle.manifest
    src = m.get("source_model", {})
    gen = bundle.manifest.get("generation") or {}
    lines = [
        f"bundle        {bundle.path}",
        f"name          {bundle.name}   (format {m['format_version']}, mtedge {m.get('mtedge_version')}, "
        f"created {m.get('created')})",
        f"family        {bundle.family} ({m.get('architecture')})",
        f"languages     {bundle.source_lang or '?'} → {bundle.target_lang or '?'}",
        f"source model  {src.get('path')}  sha256 {str(src.get('sha256'))[:16]}…",
        f"generation    beams {gen.get('num_beams')}, max_new_tokens {gen.get('max_new_tokens')}, "
        f"length_penalty {gen.get('length_penalty')}, early_stopping {gen.get('early_stopping')}",
        f"tokenizer     {sum(f['size'] for f in m['tokenizer'].get('files', {}).values()) / MB:.2f} MB "
        f"({', '.join(m['tokenizer'].get('files', {}))})",
    ]
    if "ct2" in m["engines"] and bundle.generation.early_stopping is not True:
        from mtedge.engines.ct2_engine import STOPPING_RULE_NOTE

        lines.append("note          " + STOPPING_RULE_NOTE.format(value=bundle.generation.early_stopping))
    pad = m.get("export", {}).get("ct2_marian_pad")
    if pad and pad.get("pad_row_zeroed"):
        lines.append(f"note          CT2 models use a zeroed Marian <pad> row (was norm {pad['pad_row_norm']:.4g})")
    shortlist = m.get("shortlist")
    if shortlist:
        lines.append(f"shortlist     {shortlist.get('file')} in {', '.join(shortlist.get('engines') or [])}: "
                     f"{shortlist.get('per_token')} target tokens per source token "
                     f"({shortlist.get('source_tokens_mapped')} mapped), {shortlist.get('always')} always, from "
                     f"{shortlist.get('pairs')} pairs of {_listed(shortlist.get('data'))} (--shortlist; on ct2 "
                     f"outputs depend on the batch)")
        checked = shortlist.get("check")
        if checked:
            lines.append(f"              keeps {checked.get('token_coverage', 0):.1%} of the reference tokens of "
                         f"{checked.get('data')} ({checked.get('sentences_covered', 0):.1%} of its sentences whole)")
    lines.append("engines")
    signature = None
    for engine, precisions in bundle.engines().items():
        for precision in precisions:
            record = m["engines"][engine][precision]
            size = sum(f["size"] for f in record.get("files", {}).values())
            lines.append(f"  {engine:<5} {precision:<13} {_mb(size):>10}   {_validation_line(record.get('validation'))}")
            options = record.get("options") or {}
            for detail in (_int8_scheme_line(options), options.get("decoder") and f"decoder: {options['decoder']}"):
                if detail:
                    lines.append(f"  {'':<5} {'':<13} {'':>10}   {detail}")
            signature = signature or ((record.get("validation") or {}).get("greedy") or {}).get("signature")
    ref = m.get("validation_reference")
    if ref:
        torch_ref = ref.get("torch") or {}
        bleu = ", ".join(f"{mode} {v['bleu_ref']:.1f}" for mode, v in torch_ref.items())
        lines.append(f"validation    n={ref['n']} from {ref['source']}, max_length {ref['max_length']}"
                     + (f"; PyTorch BLEU vs references: {bleu}" if bleu else "; no references"))
    if signature:
        lines.append(f"signatures    {signature['bleu']}  {signature['chrf']}")
    return lines, bundle.verify(deep=deep)


def _estimate_params(config: dict) -> int | None:
    """Rough parameter count of an encoder-decoder transformer from its config."""
    d = config.get("d_model")
    vocab = config.get("vocab_size")
    if not d or not vocab:
        return None
    inner = config.get("num_heads", 0) * config.get("d_kv", 0) or d
    enc_layers = config.get("encoder_layers", config.get("num_layers", 0))
    dec_layers = config.get("decoder_layers", config.get("num_decoder_layers") or enc_layers)
    enc_ffn = config.get("encoder_ffn_dim", config.get("d_ff", 4 * d))
    dec_ffn = config.get("decoder_ffn_dim", config.get("d_ff", 4 * d))
    attention = 4 * d * inner
    encoder = enc_layers * (attention + 2 * d * enc_ffn)
    decoder = dec_layers * (2 * attention + 2 * d * dec_ffn)
    untied = 0 if config.get("tie_word_embeddings", True) else vocab * d
    return vocab * d + untied + encoder + decoder


def describe_checkpoint(path: Path) -> list[str]:
    from mtedge.convert.source import safetensors_header, weight_files
    from mtedge.families import detect_family

    files = sorted(p for p in path.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():
        cfg = json.loads(adapter.read_text(encoding="utf-8"))
        return [f"checkpoint    {path}",
                f"kind          PEFT adapter ({cfg.get('peft_type', '?')}, r={cfg.get('r')}, "
                f"target modules {cfg.get('target_modules')})",
                f"base model    {cfg.get('base_model_name_or_path')}",
                f"size          {_mb(total)}",
                f"next step     merge it: `mtedge merge {path} -o MERGED_DIR`, then `mtedge export MERGED_DIR`"]
    family = detect_family(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    params, source = None, "estimate from config"
    lora = []
    safetensors = [p for p in weight_files(path) if p.suffix == ".safetensors"]
    if safetensors:
        params, source = 0, "from safetensors headers"
        for file in safetensors:
            for name, entry in safetensors_header(file).items():
                if name != "__metadata__":
                    params += prod(entry["shape"])
                    if "lora_" in name:
                        lora.append(name)
    else:
        params = _estimate_params(config)
    layers = f"{config.get('encoder_layers', config.get('num_layers'))}+" \
             f"{config.get('decoder_layers', config.get('num_decoder_layers') or config.get('num_layers'))}"
    lines = [
        f"checkpoint    {path}",
        f"family        {family.name} ({(config.get('architectures') or [family.architecture])[0]}, "
        f"model_type {config.get('model_type')})",
        f"shape         d_model {config.get('d_model')}, layers {layers}, vocab {config.get('vocab_size')}",
        f"parameters    {params / 1e6:.2f} M ({source})" if params else "parameters    unknown",
        f"size          {_mb(total)} in {len(files)} files",
        f"peft adapter  {'yes: the weights still hold LoRA tensors; merge first' if lora else 'no'}",
    ]
    return lines


@click.command("info")
@click.argument("path", type=click.Path())
@click.option("--deep", is_flag=True, help="Also check every bundle file's sha256.")
def command(path, deep):
    """Describe a bundle (engines, sizes, validation, broken files) or a Hugging Face checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"not found: {path}")
    from mtedge.bundle import Bundle

    if Bundle.is_bundle_dir(path):
        lines, problems = describe_bundle(path, deep)
        click.echo("\n".join(lines))
        if problems:
            click.echo("problems", err=True)
            for problem in problems:
                click.echo(f"  {problem}", err=True)
            raise BundleError(f"bundle {path} has {len(problems)} problem(s): {problems[0]}")
        click.echo(f"files         ok ({'sha256 checked' if deep else 'sizes checked; --deep for sha256'})")
        return
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        click.echo("\n".join(describe_checkpoint(path)))
        return
    raise UserError(f"{path} is neither an mtedge bundle (no manifest.json) nor a Hugging Face checkpoint "
                    f"(no config.json)")
