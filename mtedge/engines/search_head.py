"""The contract between the exported merged decoder's search head and the ONNX engine.

The export (``mtedge/convert/search_head.py``) appends log-softmax, the bans and top-k to the decoder graph,
so a step's [rows, vocab] logits never leave ONNX Runtime; the engine feeds the bans and reads ``[rows, k]``.
The names and the normalisation mode live here, on the runtime floor, so the engine needs nothing from the
export stage to use them.
"""

from __future__ import annotations

BIAS_INPUT = "search_bias"           # float32 [1 or rows, vocab]: 0, or -inf for a banned id
K_INPUT = "search_k"                 # int64 [1]: candidates per row
IDS_OUTPUT = "top_ids"               # int64 [rows, k], best first, ties to the lower id
LOG_PROBS_OUTPUT = "top_log_probs"   # float32 [rows, k], Hugging Face's scores of those ids
MODE_METADATA = "mtedge_search_head"   # the graph's metadata key naming which log-softmax it computes
# HF ``renormalize_logits``: log-softmax over the raw logits, then the bans (False), or over the banned
# logits (True). Fixed at export from the checkpoint's generation config.
MODES = {False: "log_softmax_before_bans", True: "log_softmax_after_bans"}


def head_mode(output_names, metadata: dict) -> str | None:
    """The head's mode, or None when the graph has no search head (a bundle exported before it)."""
    names = set(output_names)
    if IDS_OUTPUT not in names or LOG_PROBS_OUTPUT not in names:
        return None
    return metadata.get(MODE_METADATA)
