"""CTranslate2 engine: ``ctranslate2.Translator.translate_batch`` behind the id-level Engine interface.

CTranslate2 takes and returns token *strings*: ids go through the bundle vocabulary both ways.
For Marian that is not optional — CT2 drops the ``<pad>`` row, so its ids are not the model's.

Option mapping, checked against HF ``generate`` on the fixture models (mtedge/DESIGN.md §4.2):
- ``max_decoding_length`` counts decoding steps: the forced target prefix (language token) and a
  generated ``</s>`` count, like HF ``max_new_tokens``. HF models with a ``forced_eos_token_id``
  spend their last step on a forced ``</s>``, so they get ``max_length - 1`` steps here; models
  without one (T5) get ``max_length``. Same tokens either way.
- ``min_decoding_length=M`` behaves as HF ``min_new_tokens=M`` (prefix counted); the runtime's
  ``min_length`` counts the ``</s>`` too, so ``M = min_length - 1``.
- scores (``return_end_token=True``): CT2's normalised score equals HF's ``sequences_scores``
  (sum of log-probs with the forced prefix at log-prob 0, divided by length ** length_penalty,
  ``</s>`` included). One difference is corrected: when a forced-EOS model hits the length limit,
  HF appends the forced ``</s>`` (log-prob 0) and divides by one more token.

Known differences from HF ``generate`` that no CT2 option removes:
- beam search stops once ``beam_size`` hypotheses have ended, which is HF ``early_stopping=True``;
  HF's default (``False``) may search on and find other lower-ranked n-best entries, and rarely a
  better best one (1 of 40 sentences of a t5 fixture trained on an AMD EPYC; every other fixture agreed);
  export validation therefore compares beam search with ``early_stopping=True``;
- tokens a constraint forbids (``</s>`` before ``min_length``, bad words) are removed *before* the
  softmax, so the remaining log-probs are renormalised: HF's ``renormalize_logits=True``. Models
  without it (T5, M2M100 by default) score such steps lower in HF, and beam search under
  ``min_length`` can then rank hypotheses differently; greedy search is unaffected.
"""

from __future__ import annotations

import re
from pathlib import Path

from mtedge.engines.base import Engine
from mtedge.errors import UserError
from mtedge.types import DecodeOptions, Hypothesis, TargetSpec

# What `mtedge info` tells users of a bundle whose beam search does not stop early (see above).
STOPPING_RULE_NOTE = ("ct2 beam search stops like HF early_stopping=True; this bundle's generation says "
                      "early_stopping={value}, which the onnx and torch engines follow: their beam outputs can "
                      "differ from ct2's on rare sentences")


def _corrupt(path: Path, detail: str):
    from mtedge.bundle import corrupt_file

    return corrupt_file(path, path.parent.parent.parent, detail)  # <bundle>/ct2/<precision>/<file>


def decoding_steps(max_length: int, forced_eos: bool) -> int:
    """CT2 ``max_decoding_length`` for a runtime ``max_length`` (HF ``max_new_tokens``, ``</s>``
    included): a forced-EOS model spends its last HF step on the forced ``</s>``, which CT2 does not
    generate, so it gets one step less (mtedge/DESIGN.md §4.2). Shared with the bench's raw-CT2 peer."""
    return max_length - 1 if forced_eos else max_length


class CT2Engine(Engine):
    """One ``ctranslate2.Translator``. Thread-safe: CTranslate2 queues concurrent calls on its own
    ``workers`` (``inter_threads``), each running batches on ``threads`` (``intra_threads``)."""

    name = "ct2"
    thread_safe = True

    def __init__(self, model_dir: Path, target: TargetSpec, pieces: list[str], *, precision: str = "default",
                 device: str = "cpu", device_index: int = 0, threads: int | None = None, workers: int = 1,
                 unk_id: int = 0, forced_eos: bool = True, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, shortlist: bool = False):
        import ctranslate2

        self.target = target
        self.pieces = pieces
        self.piece_ids = {}
        for index, piece in enumerate(pieces):
            self.piece_ids.setdefault(piece, index)
        self.unk_id = unk_id
        self.forced_eos = forced_eos
        self.repetition_penalty = float(repetition_penalty or 1.0)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size or 0)
        # CTranslate2 reads vmap.txt from the model directory and keeps, per call, the union of the candidates
        # of the batch's source tokens (mtedge/convert/shortlist.py): outputs then depend on the batch
        self.shortlist = bool(shortlist)
        self.eos_piece = pieces[target.eos_id]
        self.prefix_pieces = [pieces[i] for i in target.target_prefix_ids]
        model_dir = Path(model_dir)
        vocabulary = set(self._ct2_vocabulary(model_dir))  # a corrupt JSON file is named before CT2 reads it
        try:
            self.translator = ctranslate2.Translator(
                str(model_dir), device=device, device_index=device_index, compute_type=precision,
                intra_threads=threads or 0, inter_threads=max(1, int(workers)))
        except RuntimeError as exc:
            hint = missing_cuda_library(str(exc)) if device != "cpu" else None
            if hint:
                raise UserError(hint) from None
            if device != "cpu" and "cuda" in str(exc).lower():
                raise
            # the JSON files parsed above, so what CTranslate2 could not read is the weights file
            raise _corrupt(model_dir / "model.bin", f"CTranslate2: {exc}") from None
        # bad_words_ids → suppress_sequences; a token CT2 does not have (Marian <pad>) needs none.
        self.suppress = [[pieces[i] for i in word] for word in target.bad_words_ids
                         if all(pieces[i] in vocabulary for i in word)] if vocabulary else []

    @staticmethod
    def _ct2_vocabulary(model_dir: Path) -> list[str]:
        """The target vocabulary, after checking that every JSON file of the model dir parses."""
        import json

        parsed = {}
        for name in ("config.json", "shared_vocabulary.json", "source_vocabulary.json", "target_vocabulary.json"):
            path = model_dir / name
            if not path.is_file():
                continue
            try:
                parsed[name] = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _corrupt(path, "not valid JSON") from exc
            expected = dict if name == "config.json" else list
            if not isinstance(parsed[name], expected):
                raise _corrupt(path, f"expected a JSON {'object' if expected is dict else 'list'}")
        for name in ("shared_vocabulary.json", "target_vocabulary.json"):
            if name in parsed:
                return [str(token) for token in parsed[name]]
        return []

    def _ids(self, tokens: list[str]) -> list[int]:
        return [self.piece_ids.get(t, self.unk_id) for t in tokens]

    def translate_ids(self, batch: list[list[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        if not batch:
            return []
        steps = decoding_steps(options.max_length, self.forced_eos)
        if steps <= len(self.prefix_pieces):
            # nothing left to generate but the forced </s> (HF: log-prob 0); CT2 refuses length 0
            return [[Hypothesis([], 0.0 if options.return_scores else None)
                     for _ in range(options.num_hypotheses)] for _ in batch]
        try:
            results = self._translate_batch(batch, options, steps)
        except RuntimeError as exc:
            hint = missing_cuda_library(str(exc))
            if hint:
                raise UserError(hint) from None
            raise
        return [[self._hypothesis(tokens, score if options.return_scores else None, options)
                 for tokens, score in zip(result.hypotheses, result.scores or [None] * len(result.hypotheses))]
                for result in results]

    def _translate_batch(self, batch: list[list[int]], options: DecodeOptions, steps: int):
        return self.translator.translate_batch(
            [[self.pieces[i] for i in ids] for ids in batch],
            beam_size=options.beam_size,
            num_hypotheses=options.num_hypotheses,
            length_penalty=options.length_penalty,
            max_decoding_length=steps,
            max_input_length=0,  # the Translator truncates to the model's limit, with a warning
            min_decoding_length=max(0, options.min_length - 1),
            target_prefix=[list(self.prefix_pieces)] * len(batch) if self.prefix_pieces else None,
            return_scores=options.return_scores,
            return_end_token=True,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            suppress_sequences=self.suppress or None,
            max_batch_size=0,
            sampling_topk=1,
            use_vmap=self.shortlist,
        )

    def _hypothesis(self, tokens: list[str], score: float | None, options: DecodeOptions) -> Hypothesis:
        ended = bool(tokens) and tokens[-1] == self.eos_piece
        length = len(tokens)  # prefix and </s> included: the length CT2 normalised by
        body = tokens[len(self.prefix_pieces):]
        if ended:
            body = body[:-1]
        elif score is not None and self.forced_eos and length > 0 and options.length_penalty != 0:
            # HF adds a forced </s> (log-prob 0) at the limit and normalises by length + 1
            score = score * (length / (length + 1)) ** options.length_penalty
        return Hypothesis(ids=self._ids(body), score=None if score is None else float(score))

    def close(self) -> None:
        translator, self.translator = getattr(self, "translator", None), None
        if translator is not None:
            del translator


_NOT_LOADED = re.compile(r"Library (\S+) is not found or cannot be loaded")


def missing_cuda_library(message: str) -> str | None:
    """The one-line error for CTranslate2's "Library libcublas.so.12 is not found or cannot be loaded": it loads
    cuBLAS at its first GPU call, by the name of the CUDA its wheel was built for (4.x: CUDA 12), so a machine
    with CUDA 13 alone fails there (CTranslate2 issue #1933); None for any other message."""
    found = _NOT_LOADED.search(message)
    if not found:
        return None
    import ctranslate2

    return (f"CTranslate2 {ctranslate2.__version__} could not load {found.group(1)}, the CUDA library its GPU build "
            f"needs: install it (CUDA 12's cuBLAS: pip install nvidia-cublas-cu12), or use device 'cpu'")
