"""Text handling around the engines: input cleaning, sentence splitting, token-budget batching.

Pure Python, no model needed; the Translator composes them.
"""

from mtedge.text.batching import token_budget_batches
from mtedge.text.clean import clean_text, is_blank
from mtedge.text.sentences import Segment, join_segments, split_sentences

__all__ = ["clean_text", "is_blank", "split_sentences", "join_segments", "Segment", "token_budget_batches"]
