"""Every setting of ``mtedge serve`` in one place, with its default (the CLI only fills this in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtedge.engines.rowwise_int8 import kernels_batch_invariant


def batch_invariant(bundle, engine: str, precision: str, shortlist: bool = False) -> bool:
    """Whether a sentence's output on this engine/precision of ``bundle`` is independent of the other
    sentences of its batch, so that strangers' requests may share an engine call.

    CTranslate2 (every precision) and ONNX fp32 are (tests/test_batch_invariance.py). ONNX int8 is only when
    exported row-wise (one activation scale per token): onnxruntime's dynamic int8 picks one scale per batch,
    and one user's text would change another's translation. ONNX int8_latency and int4 are not: their
    decoders' kernel (MatMulNBits) rounds a row's sums differently with the rows in the call (the export
    records it; bundles exported before 2026-12-04 recorded int8_latency as invariant, so the kernels the
    record names decide too). The
    PyTorch reference is not (padding changes float summation order), and it is not a serving engine anyway.
    Nor is CTranslate2 with a vocabulary shortlist: it scores the union of the batch's candidates for every
    sentence. The ONNX engine limits each row to its own sentence's candidates (mtedge/engines/shortlist.py), so
    a shortlist leaves its precision as it was.
    """
    if shortlist and engine == "ct2":
        return False
    if engine == "ct2" or (engine, precision) == ("onnx", "fp32"):
        return True
    if engine == "onnx":   # int8, int8_latency, int4: the export records it
        options = bundle.engine_record(engine, precision).get("options") or {}
        return options.get("batch_invariant") is True and \
            kernels_batch_invariant((options.get("kernels") or {}).values())
    return False


@dataclass
class ServerConfig:
    bundle: Path
    host: str = "127.0.0.1"            # local only unless asked: this server has no TLS
    port: int = 5000                    # LibreTranslate's port, so clients' defaults work
    engine: str = "ct2"
    precision: str | None = None        # the engine's default (int8)
    device: str = "auto"
    threads: int | None = None
    beam_size: int | None = None        # beam for /translate (None: the bundle's); /translate/stream is greedy
    api_keys_file: Path | None = None   # one key per line, optionally "KEY LIMIT" (requests per minute)
    require_api_key: bool = False       # with a keys file: refuse requests without a key (else keys only lift limits)
    char_limit: int = 5000              # characters per text (-1: none), as LibreTranslate --char-limit
    batch_limit: int = 64               # texts per request (-1: none), as LibreTranslate --batch-limit
    req_limit: int = -1                 # requests per minute per key or client address (-1: none)
    alternatives_limit: int = 4         # most alternatives a request may ask for (LibreTranslate #978)
    max_queue: int = 256                # requests waiting for the engine before 503
    max_streams: int = 4                # concurrent /translate/stream responses before 503
    timeout: float = 60.0               # seconds a request may wait for its translation before 504
    batch_wait_ms: float = 5.0          # how long the batcher waits for more requests to merge
    batch_tokens: int = 4096            # source tokens per merged engine call
    max_body_bytes: int = 1 << 20       # request bodies larger than this get 413 before being read
    split_sentences: bool = True        # translate a paragraph sentence by sentence (what LibreTranslate does)
    shortlist: bool = False             # the bundle's vocabulary shortlist (ct2, onnx; mtedge shortlist)
    frontend_timeout: int = 500         # LibreTranslate's /frontend/settings value (ms, for its web UI)
    log_level: str = "info"

    @property
    def shutdown_grace(self) -> float:
        """Seconds uvicorn waits for in-flight requests on SIGTERM: long enough for any of them to end."""
        return self.timeout + 5.0
