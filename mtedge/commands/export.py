"""``mtedge export``: HF checkpoint → validated bundle (ONNX + CTranslate2 + torch copy)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from mtedge.convert.rowwise_int8 import DEFAULT_INT4_BLOCK, INT4_BLOCKS
from mtedge.errors import UserError


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError("an empty list was given; name at least one item")
    return items


def _interrupt_on_sigterm(signum, frame):
    # Turn SIGTERM into the KeyboardInterrupt path, so the staging directory is cleaned up too.
    raise KeyboardInterrupt


@click.command("export")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "output", type=click.Path(file_okay=False),
              help="Bundle directory to write (default: export/<model dir name>/).")
@click.option("--engines", default="onnx,ct2", show_default=True, help="Comma-separated: onnx, ct2.")
@click.option("--onnx-precisions", default="fp32,int8", show_default=True,
              help="Comma-separated: fp32, int8, int8_latency, int4, fp16 (fp16 needs a CUDA GPU). int8_latency: "
                   "int8 with the decoder written for one sentence at a time (interactive use): faster at "
                   "batch 1, slower on batches. int4: 4-bit weights in blocks, for one sentence at a time: the "
                   "smallest files (with --onnx-int4-block 128 also the fastest batch 1), at some quality (the "
                   "export's validation measures it).")
@click.option("--ct2-precisions", default="float32,int8", show_default=True,
              help="Comma-separated: float32, int8, int8_float32, int16; GPU types float16, int8_float16, bfloat16.")
@click.option("--onnx-int8", default="rowwise", show_default=True, type=click.Choice(["rowwise", "dynamic"]),
              help="ONNX int8 scheme. rowwise: one activation scale per token (a sentence's output does not "
                   "depend on its batch neighbours; lm_head int8 too). dynamic: onnxruntime's per-tensor dynamic "
                   "quantization (batch-dependent).")
@click.option("--onnx-int4-block", default=str(DEFAULT_INT4_BLOCK), show_default=True,
              type=click.Choice([str(b) for b in INT4_BLOCKS]),
              help="Values per scale of int4's 4-bit weights: smaller blocks lose less quality, larger ones make "
                   "smaller files and a faster batch 1.")
@click.option("--onnx-decoder", default="auto", show_default=True, type=click.Choice(["auto", "optimum"]),
              help="auto: Marian, M2M100/NLLB and mBART decoders are written op by op with onnxruntime's fused "
                   "attention (a tenth of the nodes, the same outputs); T5, and 'optimum', use optimum's traced graph.")
@click.option("--onnx-quant-preset", type=click.Choice(["avx512_vnni", "avx512", "avx2", "arm64"]),
              help="The CPU the int8 ONNX graphs are made for (default: this machine's). --onnx-int8 dynamic: "
                   "optimum's preset; rowwise: 8-bit weights for avx512_vnni (VNNI/AMX kernels do not saturate), "
                   "7-bit for the others.")
@click.option("--no-torch", is_flag=True, help="Do not copy the checkpoint for the PyTorch reference engine.")
@click.option("--validation-file", type=click.Path(dir_okay=False),
              help="TSV (source<TAB>reference) or JSONL dev set (default: a built-in English sample, no references).")
@click.option("--validate-n", type=click.IntRange(min=1), default=200, show_default=True,
              help="Sentences to validate each export on.")
@click.option("--no-validate", is_flag=True, help="Skip validation (and the quality gate).")
@click.option("--max-bleu-drop", type=float,
              help="Fail, and write no bundle, when an export loses more BLEU than this vs PyTorch "
                   "(vs references when the validation file has them, else 100 − BLEU vs PyTorch output).")
@click.option("--strict-pad", is_flag=True,
              help="Refuse a Marian model whose <pad> embedding is nonzero instead of zeroing it for CT2.")
@click.option("--source-lang", help="Source language (M2M100/mBART: selects the language token).")
@click.option("--target-lang", help="Target language (M2M100/mBART: selects the forced language token).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for validation.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at the output path.")
def command(model, output, engines, onnx_precisions, ct2_precisions, onnx_int8, onnx_int4_block, onnx_decoder,
            onnx_quant_preset, no_torch, validation_file,
            validate_n, no_validate, max_bleu_drop, strict_pad, source_lang, target_lang, threads, force):
    """Export MODEL (a merged Hugging Face checkpoint dir) to a self-contained bundle."""
    from mtedge.convert import export_bundle

    if no_validate and max_bleu_drop is not None:
        raise UserError("--max-bleu-drop needs validation; drop --no-validate")
    out = Path(output) if output else Path("export") / Path(model).resolve().name
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        export_bundle(model, out, engines=_csv(engines), onnx_precisions=_csv(onnx_precisions),
                      ct2_precisions=_csv(ct2_precisions), include_torch=not no_torch, force=force,
                      validate=not no_validate, validation_file=validation_file, validate_n=validate_n,
                      max_bleu_drop=max_bleu_drop, onnx_quant_preset=onnx_quant_preset, onnx_int8=onnx_int8,
                      onnx_decoder=onnx_decoder, onnx_int4_block=int(onnx_int4_block), strict_pad=strict_pad,
                      source_lang=source_lang, target_lang=target_lang, threads=threads)
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(str(out))
