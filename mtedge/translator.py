"""``Translator``: text in, text out, over any engine of a bundle.

    >>> from mtedge import Translator
    >>> translator = Translator("export/opus-mt-en-de", engine="ct2", precision="int8")
    >>> translator.translate(["Hello world."])[0].text

What it does around the engine (``mtedge.engines``, which works on ids):
- tokenizes with the bundle's own tokenizer (``BundleTokenizer``, no transformers);
- cleans inputs (control characters, lone surrogates: ``mtedge.text.clean``); empty or whitespace-only
  inputs give an empty translation in place and never reach the engine;
- with ``split_sentences=True`` translates each sentence of a paragraph on its own and puts the
  paragraph back together with its original spacing and line breaks;
- an input longer than the model's source limit (``model_max_length`` tokens, prefix/suffix included)
  is translated sentence by sentence (as with ``split_sentences``); a sentence that is still too long
  is truncated to the limit, and an :class:`InputTruncatedWarning` (``warnings.warn``) names the input;
- batches by a padded-token budget (``batch_tokens``), longest first, and restores the input order;
- works through the inputs ``chunk_size`` at a time, so 10,000 sentences cost the memory of one chunk
  (``translate_iter`` streams results; ``translate`` collects them).

Defaults for beam size, ``max_length`` (generated tokens incl. ``</s>``, HF ``max_new_tokens``) and length
penalty come from the bundle's ``manifest["generation"]``.

Thread safety: one Translator may be shared by threads. Engines that are not thread-safe (ONNX, torch)
run one call at a time behind a lock; CTranslate2 is thread-safe and runs up to ``workers`` calls at
once (its ``inter_threads``), each with ``threads`` compute threads.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtedge.bundle import Bundle
from mtedge.engines import build_engine, check_engine, resolve_device, resolve_precision
from mtedge.types import DecodeOptions
from mtedge.errors import UserError
from mtedge.text import Segment, clean_text, is_blank, join_segments, split_sentences, token_budget_batches
from mtedge.tokenizer import BundleTokenizer

DEFAULT_BATCH_TOKENS = 4096   # padded source tokens per engine call
DEFAULT_CHUNK_SIZE = 1024     # inputs tokenized, batched and translated together
# |length_penalty| beyond this only overflows (length ** penalty) without changing any ranking that matters.
MAX_LENGTH_PENALTY = 10.0


class InputTruncatedWarning(UserWarning):
    """An input sentence was longer than the model accepts and was cut."""


class ThreadsCappedWarning(UserWarning):
    """More threads (or workers) were asked for than this process may run on; the count was lowered."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_to_cpus(name: str, value: int | None, stacklevel: int = 2) -> int | None:
    """``value`` lowered to :func:`available_cpus` with a :class:`ThreadsCappedWarning` (``None`` stays)."""
    if value is None:
        return None
    cpus = available_cpus()
    if value > cpus:
        warnings.warn(f"{name} {value} is more than the {cpus} CPU(s) available; using {cpus}",
                      ThreadsCappedWarning, stacklevel=stacklevel + 1)
        return cpus
    return value


@dataclass
class TranslationHypothesis:
    text: str
    score: float | None = None


@dataclass
class Translation:
    """One input's translation. ``score`` (with ``return_scores=True``) is the HF sequence score of
    the best hypothesis: sum of log-probs / length ** length_penalty; for an input translated in
    several parts (sentences), the mean over the parts. Empty inputs: ``""``, no score, no hypotheses."""

    text: str
    score: float | None = None
    hypotheses: list[TranslationHypothesis] = field(default_factory=list)


@dataclass
class _Part:
    """One engine input: a sentence (or a whole text) of input ``index``."""

    index: int
    ids: list[int]
    before: str = ""


class Translator:
    def __init__(self, bundle: str | Path | Bundle, engine: str = "ct2", precision: str | None = None,
                 device: str = "auto", threads: int | None = None, workers: int = 1,
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 graph_optimization: str = "all", shortlist: bool = False):
        """``precision`` defaults to int8 (fp32 for the torch reference); ``device``: auto | cpu | cuda.
        ``shortlist``: compute logits only for the bundle's vocabulary shortlist (``mtedge shortlist``; ct2 and
        onnx engines): faster; on ct2 a sentence's output may then depend on the other sentences of its batch
        (the onnx engine keeps each sentence to its own candidates)."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        check_engine(engine)
        _check_positive("threads", threads, allow_none=True)
        _check_positive("workers", workers)
        _check_positive("batch_tokens", batch_tokens)
        _check_positive("chunk_size", chunk_size)
        threads = cap_to_cpus("threads", threads)
        workers = cap_to_cpus("workers", workers)
        self.engine_name = engine
        self.precision = resolve_precision(engine, precision)
        self.bundle.engine_record(engine, self.precision)  # lists what the bundle has when it lacks this
        self.device = resolve_device(engine, device, self.precision)
        self.batch_tokens = batch_tokens
        self.chunk_size = chunk_size
        self.tokenizer = BundleTokenizer(self.bundle.tokenizer_dir())
        self.engine = build_engine(self.bundle, engine, self.precision, self.device, threads,
                                   tokenizer=self.tokenizer, workers=workers, graph_optimization=graph_optimization,
                                   shortlist=bool(shortlist))
        self.shortlist = bool(shortlist)
        self._lock = None if getattr(self.engine, "thread_safe", False) else threading.Lock()
        generation = self.bundle.generation
        self.default_beam_size = generation.num_beams
        self.default_max_length = generation.max_length
        self.default_length_penalty = generation.length_penalty
        self.early_stopping = generation.early_stopping
        # The most target tokens a call may ask for: the model's positions (what the tokenizer
        # records as its limit), or the bundle's own default where that is larger.
        self.max_length_limit = max(self.tokenizer.model_max_length, self.default_max_length)

    # -- public API ----------------------------------------------------------------------------
    def translate(self, texts: list[str], beam_size: int | None = None, max_length: int | None = None,
                  min_length: int = 0, length_penalty: float | None = None, num_hypotheses: int = 1,
                  return_scores: bool = False, split_sentences: bool = False,
                  batch_tokens: int | None = None, early_stopping: bool | str | None = None) -> list[Translation]:
        """Translate ``texts``; one :class:`Translation` per text, in order.

        ``max_length``/``min_length`` count generated target tokens including ``</s>`` (per sentence
        when splitting). ``num_hypotheses`` ≤ ``beam_size`` alternatives land in ``hypotheses``.
        ``early_stopping`` (HF beam-search semantics; default: the bundle's) — CTranslate2's beam search
        always stops like HF ``early_stopping=True``; with ``False`` its lower n-best ranks can differ,
        and rarely its best one (1 of 40 t5 fixture sentences).
        """
        if isinstance(texts, str):
            raise UserError("translate() takes a list of strings; wrap a single text in a list")
        _check_iterable("translate()", texts)
        return list(self.translate_iter(texts, beam_size=beam_size, max_length=max_length,
                                        min_length=min_length, length_penalty=length_penalty,
                                        num_hypotheses=num_hypotheses, return_scores=return_scores,
                                        split_sentences=split_sentences, batch_tokens=batch_tokens,
                                        early_stopping=early_stopping))

    def translate_iter(self, texts: Iterable[str], beam_size: int | None = None, max_length: int | None = None,
                       min_length: int = 0, length_penalty: float | None = None, num_hypotheses: int = 1,
                       return_scores: bool = False, split_sentences: bool = False,
                       batch_tokens: int | None = None, early_stopping: bool | str | None = None
                       ) -> Iterator[Translation]:
        """Like :meth:`translate`, but reads ``texts`` lazily and yields results in order, one chunk
        (``chunk_size`` inputs) at a time: memory stays bounded however many texts come in.
        Options are checked at the call, not at the first ``next()``."""
        if isinstance(texts, str):
            raise UserError("translate_iter() takes an iterable of strings, not a single string")
        _check_iterable("translate_iter()", texts)
        options = self.decode_options(beam_size, max_length, min_length, length_penalty, num_hypotheses,
                                      return_scores, early_stopping)
        budget = self.batch_tokens if batch_tokens is None else batch_tokens
        _check_positive("batch_tokens", budget)
        return self._chunks(iter(texts), options, split_sentences, budget)

    def _chunks(self, iterator: Iterator[str], options: DecodeOptions, split: bool, budget: int
                ) -> Iterator[Translation]:
        offset = 0
        while chunk := list(itertools.islice(iterator, self.chunk_size)):
            yield from self._translate_chunk(chunk, offset, options, split, budget)
            offset += len(chunk)

    def decode_options(self, beam_size=None, max_length=None, min_length=0, length_penalty=None,
                       num_hypotheses=1, return_scores=False, early_stopping=None, *,
                       names: dict[str, str] | None = None) -> DecodeOptions:
        """Validated engine options, the bundle's defaults filled in. ``names`` maps parameter names
        to what the caller calls them in messages (the CLI: ``{"num_hypotheses": "--n-best", ...}``)."""
        def name(key: str) -> str:
            return (names or {}).get(key, key)

        beam_size = self.default_beam_size if beam_size is None else beam_size
        max_length = self.default_max_length if max_length is None else max_length
        length_penalty = self.default_length_penalty if length_penalty is None else length_penalty
        early_stopping = self.early_stopping if early_stopping is None else early_stopping
        DecodeOptions(beam_size=beam_size, max_length=max_length, min_length=min_length,
                      num_hypotheses=num_hypotheses).check(name)
        vocab = len(self.tokenizer.pieces)
        if beam_size > vocab:
            raise UserError(f"{name('beam_size')} must be at most {vocab} (the target vocabulary's size), "
                            f"got {beam_size}")
        if max_length > self.max_length_limit:
            raise UserError(f"{name('max_length')} must be at most {self.max_length_limit} (the model's limit "
                            f"of target tokens), got {max_length}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
                or not math.isfinite(length_penalty):
            raise UserError(f"{name('length_penalty')} must be a finite number, got {length_penalty!r}")
        if abs(length_penalty) > MAX_LENGTH_PENALTY:
            raise UserError(f"{name('length_penalty')} must be between {-MAX_LENGTH_PENALTY:g} and "
                            f"{MAX_LENGTH_PENALTY:g}, got {length_penalty!r}")
        if early_stopping not in (True, False, "never"):
            raise UserError(f"{name('early_stopping')} must be True, False or 'never', got {early_stopping!r}")
        prefix = len(self.tokenizer.target_prefix_ids)
        if max_length <= prefix:
            raise UserError(f"{name('max_length')} must be more than the {prefix} forced target-language token(s)")
        self._check_beam_memory(beam_size, max_length, vocab, name)
        return DecodeOptions(beam_size=beam_size, max_length=max_length, min_length=min_length,
                             length_penalty=float(length_penalty), num_hypotheses=num_hypotheses,
                             early_stopping=early_stopping, return_scores=bool(return_scores))

    def _check_beam_memory(self, beam_size: int, max_length: int, vocab: int, name) -> None:
        """Refuse a search that cannot fit in memory for even ONE sentence, before the engine tries (a
        beam of 100,000 once asked onnxruntime for 29.8 GiB and died with a traceback)."""
        needed = beam_search_bytes(beam_size, max_length, vocab, self.bundle.manifest.get("model_shape") or {})
        available = _available_memory()
        if available and needed > available:
            raise UserError(f"{name('beam_size')} {beam_size} with {name('max_length')} {max_length} needs about "
                            f"{needed / 2**30:.1f} GiB for a single sentence; this machine has "
                            f"{available / 2**30:.1f} GiB available: use a smaller beam or max length")

    def close(self) -> None:
        """Free the engine; the Translator cannot translate afterwards."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> "Translator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Translator({self.bundle.name!r}, engine={self.engine_name!r}, precision={self.precision!r}, "
                f"device={self.device!r})")

    # -- the pipeline --------------------------------------------------------------------------
    def _translate_chunk(self, texts: list, offset: int, options: DecodeOptions, split: bool,
                         budget: int) -> list[Translation]:
        parts: list[_Part] = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise UserError(f"input {offset + index} is {type(text).__name__}, not a string")
            parts += self._parts(index, offset + index, text, split)
        hypotheses = self._run(parts, options, budget)
        by_text: list[list[tuple[_Part, list]]] = [[] for _ in texts]
        for part, hyps in zip(parts, hypotheses):
            by_text[part.index].append((part, hyps))
        return [self._assemble(items, options) for items in by_text]

    def _parts(self, index: int, number: int, text: str, split: bool) -> list[_Part]:
        """The engine inputs of one text: nothing for a blank one, one per sentence when splitting or
        when the text is over the model's limit, and a sentence still over it truncated (warning)."""
        if is_blank(text):
            return []
        segments = split_sentences(text) if split else [Segment(text.strip())]
        limit = self.tokenizer.model_max_length - self.tokenizer.num_special_tokens
        parts = []
        for segment in segments:
            cleaned = clean_text(segment.text).strip()
            if not cleaned:
                continue
            body = self.tokenizer.encode_body(cleaned)
            if not body:
                continue  # nothing the model can read (U+200B, U+FFFD…): blank in, blank out
            if len(body) <= limit:
                parts.append(_Part(index, self.tokenizer.wrap(body), segment.before))
                continue
            sentences = [Segment(cleaned)] if split else split_sentences(cleaned)
            for position, sentence in enumerate(sentences):
                body = self.tokenizer.encode_body(sentence.text) if len(sentences) > 1 else body
                if not body:
                    continue
                if len(body) > limit:
                    warnings.warn(f"input {number}: a sentence of {len(body) + self.tokenizer.num_special_tokens} "
                                  f"source tokens is longer than the model's limit of "
                                  f"{self.tokenizer.model_max_length}; it was truncated, the rest is not "
                                  f"translated", InputTruncatedWarning, stacklevel=2)
                    body = body[:limit]
                parts.append(_Part(index, self.tokenizer.wrap(body),
                                   segment.before if position == 0 else sentence.before))
        return parts

    def _run(self, parts: list[_Part], options: DecodeOptions, budget: int) -> list[list]:
        if self.engine is None:
            raise UserError("this Translator was closed")
        results: list[list | None] = [None] * len(parts)
        for batch in token_budget_batches([len(p.ids) for p in parts], budget):
            ids = [parts[i].ids for i in batch]
            if self._lock is None:
                output = self.engine.translate_ids(ids, options)
            else:
                with self._lock:
                    output = self.engine.translate_ids(ids, options)
            for i, hyps in zip(batch, output):
                results[i] = hyps
        return results

    def _assemble(self, items: list[tuple[_Part, list]], options: DecodeOptions) -> Translation:
        if not items:
            return Translation("")
        segments = [Segment("", part.before) for part, _ in items]
        alternatives = []
        for rank in range(min(len(hyps) for _, hyps in items)):
            texts = [self.tokenizer.decode(hyps[rank].ids) for _, hyps in items]
            scores = [hyps[rank].score for _, hyps in items]
            score = sum(scores) / len(scores) if options.return_scores and None not in scores else None
            alternatives.append(TranslationHypothesis(join_segments(segments, texts), score))
        best = alternatives[0]
        return Translation(best.text, best.score, alternatives)


def _check_iterable(what: str, texts) -> None:
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise UserError(f"{what} takes a list of strings, got {type(texts).__name__} (decode it first)")
    try:
        iter(texts)
    except TypeError:
        raise UserError(f"{what} takes a list of strings, got {type(texts).__name__}") from None


def beam_search_bytes(beam_size: int, max_length: int, vocab: int, model_shape: dict) -> int:
    """A lower bound on the memory one sentence's beam search takes: the step's fp32 scores over the
    vocabulary (logits, log-softmax and the candidates: ~3 copies of [beam, vocab]) and the decoder's
    self-attention cache at full length (keys and values of every layer, fp32)."""
    layers = int(model_shape.get("decoder_layers") or 1)
    width = int(model_shape.get("d_model") or 0)
    scores = 3 * beam_size * vocab * 4
    cache = 2 * layers * beam_size * max_length * width * 4
    return scores + cache


def _available_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency; an exotic platform may not report
        return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not _is_int(value) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
