"""``export_bundle``: HF checkpoint → self-contained bundle directory (format in export/README.md).

The bundle is built in a hidden staging directory next to the target (same filesystem) and renamed
into place only when every step, the validation and the quality gate have passed, so a failure or
Ctrl-C never leaves a half-written bundle at the target.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mtedge import __version__
from mtedge.bundle import (FORMAT, FORMAT_VERSION, GPU_PRECISIONS, PRECISIONS, Bundle, GenerationSettings,
                           describe_files, write_manifest)
from mtedge.convert import (ct2_export, host, onnx_export, rowwise_int8, source as source_mod, tokenizer_files,
                            validation)
from mtedge.engines import cuda_available
from mtedge.errors import UserError
from mtedge.tokenizer import BundleTokenizer

ENGINES = ("onnx", "ct2")
DEFAULT_ONNX_PRECISIONS = ("fp32", "int8")
DEFAULT_CT2_PRECISIONS = ("float32", "int8")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_precisions(engine: str, precisions, cuda: bool) -> list[str]:
    precisions = list(dict.fromkeys(precisions))
    unknown = [p for p in precisions if p not in PRECISIONS[engine]]
    if unknown:
        raise UserError(f"unknown {engine} precision(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(PRECISIONS[engine])}")
    if engine == "onnx" and "fp16" in precisions and not cuda:
        raise UserError("onnx fp16 is exported on a CUDA GPU and none was found; leave fp16 out of "
                        "--onnx-precisions on this machine")
    return precisions


def check_target(target: Path, force: bool) -> None:
    """Refuse to overwrite an existing bundle without ``force``, and anything that is not a bundle."""
    if not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        return
    if not Bundle.is_bundle_dir(target):
        raise UserError(f"{target} exists and is not an mtedge bundle; refusing to replace it "
                        f"(choose another -o)")
    if not force:
        raise UserError(f"{target} already exists; pass --force to replace it")


def copy_checkpoint(model_dir: Path, dest: Path) -> None:
    """The source checkpoint's top-level files, minus training-run leftovers (torch reference engine)."""
    dest.mkdir(parents=True)
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and path.name not in source_mod.TRAINING_LEFTOVERS and not path.name.startswith("rng_state"):
            shutil.copy2(path, dest / path.name)


def model_shape(config: dict) -> dict:
    """Layer/head sizes the runtime needs (e.g. to build empty ONNX KV caches), across config styles."""
    d_model = config.get("d_model")
    enc_heads = config.get("encoder_attention_heads", config.get("num_heads"))
    dec_heads = config.get("decoder_attention_heads", config.get("num_heads"))
    return {
        "d_model": d_model,
        "encoder_layers": config.get("encoder_layers", config.get("num_layers")),
        "decoder_layers": config.get("decoder_layers", config.get("num_decoder_layers") or config.get("num_layers")),
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": dec_heads,
        "head_dim": config.get("d_kv") or (d_model // dec_heads if d_model and dec_heads else None),
        "vocab_size": config.get("vocab_size"),
    }


def _engine_record(bundle: Path, rel_dir: str, options: dict) -> dict:
    files = describe_files(bundle / rel_dir)
    return {"dir": rel_dir, "files": files, "size_bytes": sum(f["size"] for f in files.values()),
            "options": options, "validation": None}


def _publish(staging: Path, target: Path, force: bool) -> None:
    check_target(target, force)  # something may have appeared there while we worked
    if target.exists() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "bundle")
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old / "bundle", target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)  # rename(2) also replaces an empty directory


def export_bundle(model_dir: str | Path, out_dir: str | Path, *, engines=ENGINES,
                  onnx_precisions=DEFAULT_ONNX_PRECISIONS, ct2_precisions=DEFAULT_CT2_PRECISIONS,
                  include_torch: bool = True, force: bool = False, validate: bool = True,
                  validation_file: str | Path | None = None, validation_pairs=None, validate_n: int = 200,
                  max_bleu_drop: float | None = None, onnx_quant_preset: str | None = None,
                  onnx_int8: str = "rowwise", onnx_decoder: str = "auto",
                  onnx_int4_block: int = rowwise_int8.DEFAULT_INT4_BLOCK, strict_pad: bool = False,
                  source_lang: str | None = None, target_lang: str | None = None,
                  threads: int | None = None, name: str | None = None, log=_stderr) -> Path:
    """Export ``model_dir`` into the bundle ``out_dir``; returns ``out_dir``.

    ``validation_pairs`` (list of (source, reference)) takes precedence over ``validation_file``;
    without either, the built-in English sample is translated and the exports are compared with
    PyTorch's outputs only. ``max_bleu_drop`` turns on the quality gate (see validation.py).
    """
    started = time.perf_counter()
    model_dir, target = Path(model_dir), Path(out_dir)
    engines = list(dict.fromkeys(engines))
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise UserError(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    log(f"[export] reading {model_dir}")
    source = source_mod.inspect_source(model_dir)
    cuda = cuda_available("torch")  # fp16 exports are traced on the GPU by PyTorch
    onnx_precisions = _check_precisions("onnx", onnx_precisions, cuda) if "onnx" in engines else []
    ct2_precisions = _check_precisions("ct2", ct2_precisions, cuda) if "ct2" in engines else []
    preset = onnx_quant_preset or host.host_quant_preset()
    if preset not in host.QUANT_PRESETS:
        raise UserError(f"unknown ONNX quantization preset {preset!r}; choose from {', '.join(host.QUANT_PRESETS)}")
    if onnx_int8 not in onnx_export.INT8_SCHEMES:
        raise UserError(f"unknown ONNX int8 scheme {onnx_int8!r}; choose from {', '.join(onnx_export.INT8_SCHEMES)}")
    quantized = onnx_export.QUANTIZED_PRECISIONS
    one_row = [p for p in onnx_precisions if p in quantized and quantized[p].follows_int8_scheme
               and quantized[p].decoder_kernel != "gemm"]
    if onnx_int8 != "rowwise" and one_row:
        raise UserError(f"onnx {one_row[0]} is a row-wise int8 (its decoder's kernel takes row-wise weights); "
                        f"drop it from --onnx-precisions or use --onnx-int8 rowwise")
    if onnx_int4_block not in rowwise_int8.INT4_BLOCKS:
        raise UserError(f"--onnx-int4-block must be one of {', '.join(map(str, rowwise_int8.INT4_BLOCKS))}, "
                        f"not {onnx_int4_block}")
    if onnx_decoder not in onnx_export.DECODERS:
        raise UserError(f"unknown ONNX decoder {onnx_decoder!r}; choose from {', '.join(onnx_export.DECODERS)}")
    vset = None
    if validate:
        vset = validation.pairs_set(list(validation_pairs)[:validate_n], "given pairs") if validation_pairs \
            else validation.load_validation_set(validation_file, validate_n)
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        manifest = _build(source, staging, name or target.name, onnx_precisions, ct2_precisions, include_torch,
                          preset, onnx_int8, onnx_int4_block, onnx_decoder, strict_pad, source_lang, target_lang,
                          log)
        if validate:
            _validate(source, staging, manifest, vset, threads, cuda, log)
            validation.check_gate({(e, p): rec["validation"] for e, precs in manifest["engines"].items()
                                   for p, rec in precs.items()}, max_bleu_drop)
        _publish(staging, target, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"[export] wrote {target} in {time.perf_counter() - started:.1f}s")
    return target


def _build(source, staging: Path, name: str, onnx_precisions, ct2_precisions, include_torch: bool,
           preset: str, int8_scheme: str, int4_block: int, onnx_decoder: str, strict_pad: bool, source_lang,
           target_lang, log) -> dict:
    log("[export] tokenizer")
    tok_spec, generation = tokenizer_files.write_tokenizer(source, staging / "tokenizer", source_lang, target_lang)
    engines: dict[str, dict] = {}
    notes: dict = {"onnx_quant_preset": preset, "host_quant_preset": host.host_quant_preset()}

    if onnx_precisions:
        renormalize = bool(generation.get("renormalize_logits"))   # which log-softmax the search head computes
        onnx_options: dict[str, dict] = {}   # precision -> how it was made; recorded once its files are final
        onnx_root = staging / "onnx"
        onnx_root.mkdir()
        quantized = {p: how for p, how in onnx_export.QUANTIZED_PRECISIONS.items() if p in onnx_precisions}
        need_fp32 = "fp32" in onnx_precisions or bool(quantized)
        fp32_dir = onnx_root / ("fp32" if "fp32" in onnx_precisions else ".fp32-for-int8")
        if need_fp32:
            log("[export] onnx fp32 (encoder + merged decoder with KV cache)")
            fp32_options = onnx_export.export_onnx(source.path, fp32_dir, source.family.optimum_type, "fp32",
                                                   renormalize=renormalize, decoder=onnx_decoder)
            log(f"[export] onnx decoder: {fp32_options['decoder']}")
            if "fp32" in onnx_precisions:
                onnx_options["fp32"] = fp32_options
        for precision, how in quantized.items():
            weights = f"{how.weight_bits}-bit weights in blocks of {int4_block}; " if how.weight_bits else ""
            weights += "batch-invariant" if how.batch_invariant else "not batch-invariant (MatMulNBits' sums)"
            log(f"[export] onnx {precision} (row-wise: per-token activation scales; {weights}; decoder for "
                f"{'one sentence at a time' if how.decoder_kernel == 'gemv' else 'batches'}; If-subgraphs included)"
                if int8_scheme == "rowwise" or not how.follows_int8_scheme else
                f"[export] onnx int8 (onnxruntime dynamic, per-channel, preset {preset}, If-subgraphs included)")
            options = onnx_export.quantize_onnx(fp32_dir, onnx_root / precision, precision, int8_scheme, preset,
                                                int4_block)
            # the graph it was made from (and whether it has the shortlist's output layer)
            options.update({key: fp32_options[key] for key in ("decoder", "graph_revision", "shortlist_head")
                            if key in fp32_options})
            onnx_options[precision] = options
        if "fp32" not in onnx_precisions and fp32_dir.exists():
            shutil.rmtree(fp32_dir)
        if "fp16" in onnx_precisions:
            log("[export] onnx fp16 (CUDA)")
            options = onnx_export.export_onnx(source.path, onnx_root / "fp16", source.family.optimum_type, "fp16",
                                              renormalize=renormalize)
            onnx_options["fp16"] = options
        engines["onnx"] = {}
        for precision, options in onnx_options.items():   # last: the int8 graphs are made from fp32's
            onnx_export.store_weights_apart(onnx_root / precision)
            engines["onnx"][precision] = _engine_record(staging, f"onnx/{precision}", options)

    if ct2_precisions:
        log(f"[export] ctranslate2 {', '.join(ct2_precisions)}")
        ct2_root = staging / "ct2"
        ct2_root.mkdir()
        options, ct2_notes = ct2_export.export_ct2(
            source.path, ct2_root, ct2_precisions, family=source.family,
            pad_id=source.generation.get("pad_token_id"), strict_pad=strict_pad,
            decoder_start_token=BundleTokenizer(staging / "tokenizer").decoder_start_token, log=log)
        engines["ct2"] = {p: _engine_record(staging, f"ct2/{p}", options[p]) for p in ct2_precisions}
        if ct2_notes:
            notes["ct2_marian_pad"] = ct2_notes

    if include_torch:
        log("[export] torch fp32 (copy of the source checkpoint)")
        copy_checkpoint(source.path, staging / "torch" / "fp32")
        engines["torch"] = {"fp32": _engine_record(staging, "torch/fp32", {"copy_of": str(source.path)})}

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mtedge_version": __version__,
        "family": source.family.name,
        "architecture": source.architecture,
        "source_lang": tok_spec["source_lang"],
        "target_lang": tok_spec["target_lang"],
        "source_model": {"path": str(source.path.resolve()), "sha256": source_mod.checkpoint_sha256(source.path),
                         "model_type": source.config.get("model_type"), "vocab_size": source.vocab_size},
        "max_source_positions": tok_spec["model_max_length"],
        "model_shape": model_shape(source.config),
        "tokenizer": {"dir": "tokenizer", "files": describe_files(staging / "tokenizer")},
        "generation": generation,
        "export": notes,
        "validation_reference": None,
        "engines": engines,
    }
    write_manifest(staging, manifest)
    return manifest


def _validate(source, staging: Path, manifest: dict, vset, threads, cuda: bool, log) -> None:
    from mtedge.translator import Translator  # the exports are checked through what users run

    generation = GenerationSettings.from_record(manifest["generation"])
    max_new, length_penalty = generation.max_length, generation.length_penalty
    log(f"[export] validation: PyTorch reference on {len(vset.sources)} sentences (greedy, beam 4)")
    tok = tokenizer_files.load_hf_tokenizer(source, manifest["source_lang"], manifest["target_lang"])
    torch_out = validation.torch_outputs(
        source.path, tok, vset.sources, max_new_tokens=max_new, length_penalty=length_penalty,
        forced_bos_token_id=generation.forced_bos_token_id,
        max_source_length=manifest["max_source_positions"], threads=threads)
    torch_ref = validation.reference_scores(torch_out, vset.references)
    manifest["validation_reference"] = {"n": len(vset.sources), "source": vset.origin, "max_length": max_new,
                                        "length_penalty": length_penalty, "torch": torch_ref or None}
    for engine, precisions in manifest["engines"].items():
        for precision, record in precisions.items():
            if precision in GPU_PRECISIONS.get(engine, ()) and not cuda:
                record["validation"] = {"skipped": "needs a CUDA device"}
                continue
            log(f"[export] validation: {engine} {precision}")
            record["validation"] = validation.validate_export(
                Translator, staging, engine, precision, vset, torch_out, torch_ref, max_new_tokens=max_new,
                length_penalty=length_penalty, device="cuda" if precision in GPU_PRECISIONS.get(engine, ()) else "cpu",
                threads=threads)
            greedy, beam = record["validation"]["greedy"], record["validation"]["beam4"]
            log(f"           agreement greedy {greedy['agreement']:.0%} beam4 {beam['agreement']:.0%}; "
                f"BLEU vs torch {greedy['bleu_vs_torch']:.1f}/{beam['bleu_vs_torch']:.1f} ({greedy['signature']['bleu']})")
    write_manifest(staging, manifest)
