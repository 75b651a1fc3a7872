"""Token streaming for ``POST /translate/stream``: one text, greedy search, tokens as they are decoded.

Neither the engines nor the Translator stream, so this is a thin adapter over the public engine objects:

- CTranslate2: ``ctranslate2.Translator.generate_tokens`` (greedy only), with the same options
  ``CT2Engine.translate_ids`` passes to ``translate_batch`` (length limits, prefix, suppressed sequences,
  repetition settings), so the tokens are the ones a beam-1 ``/translate`` produces;
- ONNX: mtedge's own search (``mtedge.decoding.decode``) over an ``OnnxDecoderState`` wrapped so that
  every decoder step reports the token chosen at the step before.

The text is cut into engine inputs by the Translator itself (``Translator._parts``: sentence splitting,
the model's length limit, cleaning), and the pieces are put together with ``join_segments`` as
``Translator.translate`` does: the final text is exactly what ``/translate`` returns at beam 1. The
deltas sent on the way are differences of successive decodes of the tokens so far; when a decode
changes text already sent (sentencepiece detokenization is not always prefix-stable) nothing is sent
until it agrees again, and the final ``done`` event always carries the full text.
"""

from __future__ import annotations

from collections.abc import Callable

from mtedge.types import DecodeOptions
from mtedge.text import Segment, join_segments


class Cancelled(Exception):
    """The client went away or ran out of time: stop decoding."""


def _ct2_tokens(engine, ids: list[int], options: DecodeOptions, on_id: Callable[[int], None],
                cancelled: Callable[[], bool]) -> list[int]:
    from mtedge.engines.ct2_engine import decoding_steps

    steps = decoding_steps(options.max_length, engine.forced_eos)
    if steps <= len(engine.prefix_pieces):
        return []  # as CT2Engine: nothing to generate but the forced </s>
    out: list[int] = []
    prefix = list(engine.prefix_pieces)
    stream = engine.translator.generate_tokens(
        [engine.pieces[i] for i in ids], target_prefix=prefix or None, max_decoding_length=steps,
        min_decoding_length=max(0, options.min_length - 1), sampling_topk=1,
        repetition_penalty=engine.repetition_penalty, no_repeat_ngram_size=engine.no_repeat_ngram_size,
        suppress_sequences=engine.suppress or None, max_input_length=0)
    try:
        for step in stream:
            if cancelled():
                raise Cancelled()
            if step.token == engine.eos_piece:
                break
            if prefix and step.token == prefix[0] and len(out) < len(engine.prefix_pieces):
                prefix.pop(0)   # the forced language token, if CT2 reports it: not output
                continue
            token_id = engine.piece_ids.get(step.token, engine.unk_id)
            out.append(token_id)
            on_id(token_id)
    finally:
        stream.close()  # stops CT2's decoding when we leave early
    return out


class _TapState:
    """An ``OnnxDecoderState`` that reports the previous step's token each time the search asks for logits."""

    def __init__(self, state, on_id: Callable[[int], None], cancelled: Callable[[], bool], skip: int):
        self._state, self._on_id, self._cancelled = state, on_id, cancelled
        self._calls = 0
        self._skip = skip            # the forced target prefix comes back as tokens too: not output

    def logits(self, tokens):
        if self._cancelled():
            raise Cancelled()
        if self._calls:
            if self._skip:
                self._skip -= 1
            else:
                self._on_id(int(tokens[0, -1]))
        self._calls += 1
        return self._state.logits(tokens)

    def __getattr__(self, name):
        return getattr(self._state, name)


def _onnx_tokens(engine, ids: list[int], options: DecodeOptions, on_id: Callable[[int], None],
                 cancelled: Callable[[], bool]) -> list[int]:
    from mtedge.decoding import decode
    from mtedge.engines.onnx_engine import OnnxDecoderState, pad_batch

    state = OnnxDecoderState(engine, *pad_batch([ids], engine.target.pad_id))
    # the first call feeds decoder start + forced prefix at once; later calls one chosen token each
    result = decode(_TapState(state, on_id, cancelled, skip=0), 1, engine.rules, options)
    return result[0][0].ids


BACKENDS = {"ct2": _ct2_tokens, "onnx": _onnx_tokens}


def stream_translation(translator, text: str, split_sentences: bool, emit: Callable[[str], None],
                       cancelled: Callable[[], bool]) -> str:
    """Decode ``text`` greedily, calling ``emit(delta)`` as text appears; returns the full translation.
    Runs on a worker thread (blocking); raises :class:`Cancelled` when ``cancelled()`` turns true."""
    backend = BACKENDS.get(translator.engine_name)
    if backend is None:
        raise ValueError(f"streaming is not available on the {translator.engine_name} engine")
    options = translator.decode_options(beam_size=1)
    parts = translator._parts(0, 0, text, split_sentences)
    segments = [Segment("", part.before) for part in parts]
    done: list[str] = []
    sent = ""

    def show(current_ids: list[int]) -> None:
        nonlocal sent
        partial = translator.tokenizer.decode(current_ids)
        current = join_segments(segments[:len(done) + 1], done + [partial])
        if current.startswith(sent) and len(current) > len(sent):
            emit(current[len(sent):])
            sent = current

    for part in parts:
        so_far: list[int] = []

        def on_id(token_id: int, so_far=so_far) -> None:
            so_far.append(token_id)
            show(so_far)

        final_ids = backend(translator.engine, part.ids, options, on_id, cancelled)
        done.append(translator.tokenizer.decode(final_ids))
    full = join_segments(segments, done) if parts else ""
    if full.startswith(sent) and len(full) > len(sent):
        emit(full[len(sent):])
    return full
