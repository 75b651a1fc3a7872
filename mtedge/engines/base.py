"""What every engine does: translate batches of source token ids into n-best target token ids.

The engines work on ids; ``mtedge.translator.Translator`` owns text, tokenization, batching and
defaults. The values they exchange (and their length convention) are in :mod:`mtedge.types`.
No torch or transformers here.
"""

from __future__ import annotations

from mtedge.types import DecodeOptions, Hypothesis


class Engine:
    """One loaded model. Engines are NOT required to be thread-safe: the Translator serialises calls."""

    name = "base"

    def translate_ids(self, batch: list[list[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        """``batch``: source ids (prefix/suffix/</s> already added). Returns n-best per source."""
        raise NotImplementedError

    def close(self) -> None:
        pass
