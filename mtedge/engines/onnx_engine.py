"""Our own ONNX Runtime seq2seq decoder: the encoder once per batch, then ``decoder_model_merged.onnx``
step by step, driven by the engine-agnostic searches in :mod:`mtedge.decoding`.

Graph names are optimum's (export/README.md): encoder ``input_ids, attention_mask →
last_hidden_state``; decoder ``encoder_attention_mask, input_ids, encoder_hidden_states,
past_key_values.{i}.{decoder|encoder}.{key|value}, use_cache_branch → logits,
present.{i}.{decoder|encoder}.{key|value}``.

How the caches are handled:
- Step 1 runs the no-cache branch (``use_cache_branch=False``, empty past) with ONE row per source
  sentence — all beams are identical then — and the decoder start + forced prefix in one call. Its
  ``present.*.encoder.*`` outputs are the cross-attention keys/values, kept per source and never
  recomputed; the encoder hidden states are not needed after that (the cache branch does not read
  them; a 1x1xd placeholder fills the input).
- Later steps run the cache branch and ask only for the scores and ``present.*.decoder.*`` (the branch's
  ``present.*.encoder.*`` outputs are empty placeholders anyway). The scores are the search head's top k
  (``top_ids``, ``top_log_probs``: bans, top-k and log-softmax in the graph, mtedge/engines/search_head.py)
  where the graph has one that fits the checkpoint's generation settings, else the full ``logits``.
- A beam reorder gathers only the self-attention cache rows — or none: a beam search on a graph with the
  in-place body (mtedge's lean decoder, since GRAPH_REVISION 5) keeps that cache in place after the first step
  (``InPlaceCache``, mtedge/engines/in_place_cache.py), bound as both past and present, and a reorder
  rewrites its indirection table. Greedy searches feed past and present. The cross-attention cache (and the
  encoder mask) is the same for all beams of a sentence, so it is expanded from the per-source copy
  (``np.take`` by source index) only when the set of live sentences changes — at the first
  expansion to ``beam_size`` rows and when finished sentences leave — not on every reorder. A graph
  whose metadata says ``CROSS_METADATA: per_source`` (mtedge's lean decoder) is not expanded at all
  while the rows are equal blocks per sentence: it gets one row per live sentence.

The runtime path: numpy + onnxruntime only (no torch, no transformers).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mtedge.bundle import Bundle, GenerationSettings, corrupt_file
from mtedge.decoding import TokenRules, decode
from mtedge.engines import in_place_cache
from mtedge.engines.base import Engine
from mtedge.engines.in_place_cache import InPlaceCache
from mtedge.engines.onnx_portability import ir_too_new, nbits_block_refused
from mtedge.engines.rowwise_int8 import check_graph
from mtedge.engines.row_gather import RowGather
from mtedge.engines.search_head import BIAS_INPUT, IDS_OUTPUT, K_INPUT, LOG_PROBS_OUTPUT, MODES, head_mode
from mtedge.engines import shortlist as vocabulary_shortlist
from mtedge.engines.shortlist import BatchShortlist, CandidateTable
from mtedge.types import DecodeOptions, Hypothesis, TargetSpec
from mtedge.errors import BundleError, UserError

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model_merged.onnx"
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_PAST = re.compile(r"^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")
# Graph metadata of a decoder whose cross-attention takes its keys/values (and the encoder mask) with one row
# per source sentence when the decoder rows are equal blocks per sentence (mtedge/convert/lean_decoder.py)
CROSS_METADATA = "mtedge_cross_attention"
CROSS_PER_SOURCE = "per_source"


def _import_onnxruntime():
    import onnxruntime

    return onnxruntime


def session_options(threads: int | None, graph_optimization: str, *, spin: bool = True):
    """``spin=False``: the session's idle threads sleep instead of spinning (see the encoder's, OnnxEngine)."""
    ort = _import_onnxruntime()
    if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserError(f"unknown graph optimization level {graph_optimization!r}; choose from "
                        f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0 if threads is None else int(threads)   # 0: ORT picks (physical cores)
    options.inter_op_num_threads = 1      # one graph at a time; parallelism is inside the ops
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # errors only: the search head's optional inputs (mtedge/convert/search_head.py) are initializers that
    # are also graph inputs, which ORT reports as a warning on every load
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    return options


def providers_for(device: str) -> list:
    ort = _import_onnxruntime()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("device='cuda' needs onnxruntime with the CUDA execution provider "
                            "(pip install onnxruntime-gpu); this onnxruntime has only "
                            f"{', '.join(ort.get_available_providers())}")
        # TF32 off: fp32 means fp32, as in PyTorch's default matmuls (the parity the export proves); fp16 is the
        # fast GPU precision
        return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    raise UserError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")


def load_session(path: Path, options, providers):
    ort = _import_onnxruntime()
    if not path.is_file():
        raise BundleError(f"missing ONNX model file {path}")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
        too_new = ir_too_new(str(exc))
        if too_new:
            raise BundleError(f"{path} declares ONNX IR version {too_new[0]}, newer than onnxruntime {ort.__version__} "
                              f"reads (up to {too_new[1]}): re-export the bundle with this mtedge, which writes the "
                              f"lowest IR version a graph needs, or upgrade onnxruntime") from None
        refused_block = nbits_block_refused(str(exc))
        if refused_block:
            raise BundleError(f"{path} holds MatMulNBits weight blocks of {refused_block[0]} values, which "
                              f"onnxruntime {ort.__version__} does not run (it takes {refused_block[1]}): re-export "
                              f"the bundle with this mtedge, whose blocks onnxruntime 1.31 and later run") from None
        raise corrupt_file(path, path.parent.parent.parent, f"ONNX Runtime: {exc}") from None
    # Where the CUDA provider's libraries (cuBLAS, cuDNN, the CUDA runtime) do not load, onnxruntime only logs
    # a warning and runs the session on the CPU: asked for CUDA, that is an error, not a slow surprise.
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if session.get_providers()[0] != wanted:
        raise UserError(f"onnxruntime could not start {wanted} for {path.name} (its log above says which "
                        f"library failed to load) and would run on {session.get_providers()[0]}; install the CUDA "
                        f"libraries onnxruntime-gpu {ort.__version__} was built for, or use device 'cpu'")
    return session


class DecoderGraph:
    """Names and cache shapes of the merged decoder, read off the graph's inputs."""

    def __init__(self, session, model_shape: Mapping):
        inputs = {i.name: i for i in session.get_inputs()}
        required = {"encoder_attention_mask", "input_ids", "encoder_hidden_states", "use_cache_branch"}
        missing = required - inputs.keys()
        if missing:
            raise BundleError(f"{DECODER_FILE} is not an optimum merged decoder: no input(s) "
                              f"{', '.join(sorted(missing))}")
        layers = sorted({int(m.group(1)) for m in map(_PAST.match, inputs) if m})
        if not layers or layers != list(range(len(layers))):
            raise BundleError(f"{DECODER_FILE} has no past_key_values.<i>.* inputs (exported without past?)")
        self.num_layers = len(layers)
        key_shape = inputs["past_key_values.0.decoder.key"].shape    # [batch, heads, past, head_dim]
        self.num_heads = _static(key_shape[1], model_shape.get("decoder_attention_heads"), "heads")
        self.head_dim = _static(key_shape[3], model_shape.get("head_dim"), "head_dim")
        hidden_shape = inputs["encoder_hidden_states"].shape
        self.hidden_size = _static(hidden_shape[2], model_shape.get("d_model"), "d_model")
        self.self_inputs = [f"past_key_values.{i}.decoder.{kv}" for i in range(self.num_layers)
                            for kv in ("key", "value")]
        self.cross_inputs = [f"past_key_values.{i}.encoder.{kv}" for i in range(self.num_layers)
                             for kv in ("key", "value")]
        self.self_outputs = [name.replace("past_key_values", "present") for name in self.self_inputs]
        self.cross_outputs = [name.replace("past_key_values", "present") for name in self.cross_inputs]
        outputs = {o.name: o for o in session.get_outputs()}
        # bans, top-k and log-softmax inside the graph (mtedge/engines/search_head.py); None for a bundle
        # exported before the head
        metadata = session.get_modelmeta().custom_metadata_map
        self.search_head = head_mode(outputs, metadata)
        self.cross_per_source = metadata.get(CROSS_METADATA) == CROSS_PER_SOURCE
        # the with-past body that keeps the self-attention cache in place (mtedge/engines/in_place_cache.py)
        overridable = {i.name for i in session.get_overridable_initializers()} | inputs.keys()
        self.in_place_cache = (metadata.get(in_place_cache.METADATA) == in_place_cache.IN_PLACE
                               and overridable.issuperset(in_place_cache.INPUTS))
        # the second output layer over a vocabulary shortlist's candidates (mtedge/engines/shortlist.py)
        self.shortlist = (overridable.issuperset(vocabulary_shortlist.INPUTS)
                          and vocabulary_shortlist.HEAD_OUTPUT in outputs)
        self.vocab_size = (_static(outputs["logits"].shape[2], model_shape.get("vocab_size"), "vocab size")
                           if self.search_head else None)
        self.cache_dtype = _numpy_type(inputs["past_key_values.0.decoder.key"].type)
        self.hidden_dtype = _numpy_type(inputs["encoder_hidden_states"].type)


def _numpy_type(onnx_type: str):
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


def _static(dim, fallback, what: str) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    if fallback:
        return int(fallback)
    raise BundleError(f"cannot tell the decoder's {what} from the ONNX graph or the manifest model_shape")


class OnnxEngine(Engine):
    """``OnnxEngine(model_dir, target, model_shape)``: ``model_dir`` is a bundle's ``onnx/<precision>/``.

    ``generation`` is the bundle's parsed generation record (HF ``generation_config``); it decides
    whether ``</s>`` is forced at the length limit (``forced_eos_token_id``) and whether scores are
    renormalised after the bans (``renormalize_logits``). ``None`` reads it from the bundle that
    holds ``model_dir``. ``shortlist``: score only these candidates of each sentence (a vocabulary shortlist,
    mtedge/engines/shortlist.py; the graph must have its output layer).
    """

    name = "onnx"

    def __init__(self, model_dir: Path, target: TargetSpec, model_shape: Mapping | None = None, *,
                 device: str = "cpu", threads: int | None = None, graph_optimization: str = "all",
                 generation: GenerationSettings | None = None, in_place_cache: bool = True,
                 shortlist: CandidateTable | None = None):
        self.model_dir = Path(model_dir)
        self.target = target
        self.device = device
        providers = providers_for(device)
        options = session_options(threads, graph_optimization)
        # The encoder runs once per batch and the decoder right after it: an encoder thread that spins while
        # waiting for work (onnxruntime's default) holds a core the decoder's steps need. Batch-1 greedy at
        # opus-mt's shape, int8, 2 threads, 2-vCPU AMD EPYC: 4.78 -> 3.65 ms per token (5 interleaved rounds).
        # The decoder keeps spinning: its steps come back to back (with both asleep: 4.06 ms, against 3.25 ms
        # with only the encoder asleep, in a 3-round run).
        self.encoder = load_session(self.model_dir / ENCODER_FILE,
                                    session_options(threads, graph_optimization, spin=False), providers)
        self.decoder = load_session(self.model_dir / DECODER_FILE, options, providers)
        self.graph = DecoderGraph(self.decoder, model_shape or {})
        bundle = _bundle_of(self.model_dir)
        check_graph(_precision_options(bundle, self.model_dir), self.decoder.get_modelmeta().custom_metadata_map,
                    flags=None if device == "cpu" else set())   # on a GPU, no CPU kernel to saturate
        if generation is None:
            generation = (bundle or Bundle.holding(self.model_dir)).generation   # no bundle: its error
        self.rules = TokenRules.from_target(target, forced_eos_id=generation.forced_eos_token_id,
                                            renormalize=generation.renormalize_logits)
        _warn_unsupported(generation)
        # CUDA: IO binding keeps the caches on the GPU (None: plain numpy runs on CPU)
        self.io_runner = IOBindingRunner("cuda") if device == "cuda" else None
        self.row_gather = RowGather() if self.io_runner is None else None   # the beam reorder on CPU
        # beam searches on CPU keep the self-attention cache in place where the graph can (False: past and
        # present, for comparisons). CUDA keeps past/present: the in-place path is unverified there
        self.in_place = bool(in_place_cache) and self.graph.in_place_cache
        self.shortlist = shortlist
        if shortlist is not None:
            if not self.graph.shortlist:
                raise UserError(f"{self.model_dir / DECODER_FILE} has no output layer for a vocabulary shortlist (only "
                                f"mtedge's lean decoder with a tied output layer has one, and bundles exported before "
                                f"it lack it: re-export the bundle, or use engine 'ct2')")
            if not self.decoder_supports_top_k():
                raise UserError("the vocabulary shortlist runs on the ONNX engine's CPU path only (its search head); "
                                "use device 'cpu', or engine 'ct2'")

    def translate_ids(self, batch: list[list[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        if not batch:
            return []
        if any(len(ids) == 0 for ids in batch):
            raise UserError("cannot translate an empty token sequence (the tokenizer adds </s>)")
        # Greedy keeps past and present: with no beam reorder to save, the in-place step was the slower one
        # (opus-mt int8, 2 threads, AMD EPYC Zen 4: b32 greedy 0.93x, batch 1 3.05 vs 2.38 ms a step; b32
        # beam 4 a step + reorder 49 vs 62 ms)
        state = OnnxDecoderState(self, *pad_batch(batch, self.target.pad_id),
                                 in_place=self.in_place and self.io_runner is None and options.beam_size > 1)
        if self.shortlist is not None:   # the search takes 2 x beam candidates a row: at least that many columns
            state.shortlist = BatchShortlist(self.shortlist, batch, 2 * options.beam_size)
        return decode(state, len(batch), self.rules, options)

    def decoder_supports_top_k(self) -> bool:
        """Whether searches on this engine take their bans, top k and scores from the graph's search head."""
        return search_head_serves(self, self.rules.renormalize)

    def close(self) -> None:
        self.encoder = self.decoder = None


def _bundle_of(model_dir: Path) -> Bundle | None:
    try:
        return Bundle.holding(model_dir)
    except (BundleError, UserError):
        return None


def _precision_options(bundle: Bundle | None, model_dir: Path) -> dict:
    """The bundle's record of how ``model_dir``'s graphs were made (empty: no bundle, or not recorded)."""
    try:
        return bundle.engine_record("onnx", model_dir.name).get("options") or {} if bundle else {}
    except BundleError:
        return {}


def _warn_unsupported(generation: GenerationSettings) -> None:
    """HF processors the searches do not implement: say so instead of silently differing from HF."""
    if ignored := generation.unsupported_by_searches():
        warnings.warn(f"the ONNX engine ignores the checkpoint's {', '.join(ignored)}: its outputs will "
                      f"differ from HF generate (the ct2 engine applies them)", stacklevel=3)


def pad_batch(batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest source (as HF tokenizers do): ``input_ids``, ``attention_mask``."""
    longest = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, :len(ids)] = ids
        mask[row, :len(ids)] = 1
    return input_ids, mask


class OnnxDecoderState:
    """One batch's decoder state: a :class:`mtedge.decoding.StepModel` over the ONNX sessions."""

    def __init__(self, engine: OnnxEngine, input_ids: np.ndarray, attention_mask: np.ndarray,
                 in_place: bool = False):
        self.engine = engine
        self.keep_in_place = in_place   # the self-attention cache after the first step (needs the graph's body)
        self.graph = engine.graph
        self.input_ids = input_ids
        self.source_mask = attention_mask
        self.self_cache: list | None = None     # [rows, heads, past, head_dim] per self_inputs name
        self.kept: InPlaceCache | None = None   # instead of self_cache when the cache is kept in place
        self.binding: InPlaceBinding | None = None
        self.counters = {in_place_cache.PAST_LENGTH_INPUT: np.zeros(1, np.int32),   # bound once, set each step
                         in_place_cache.BEAM_WIDTH_INPUT: np.zeros(1, np.int32)}
        self.source_cross: list | None = None   # [sources, heads, src_len, head_dim] per cross_inputs name
        self.cross: list | None = None          # the same, one row per decoder row
        self.mask: np.ndarray | None = None     # encoder mask, one row per decoder row
        self.row_sources: np.ndarray | None = None
        self.use_cache = np.array([True])
        self.shortlist: BatchShortlist | None = None   # the batch's candidates, when the engine has a shortlist
        self.hidden_placeholder = np.zeros((1, 1, self.graph.hidden_size), dtype=self.graph.hidden_dtype)

    # -- StepModel --------------------------------------------------------------------------
    def logits(self, tokens: np.ndarray) -> np.ndarray:
        return _last_position(self._step(tokens, ["logits"], {})[0])

    def supports_top_k(self, renormalize: bool) -> bool:
        return search_head_serves(self.engine, renormalize)

    @property
    def vocab_size(self) -> int | None:
        return self.graph.vocab_size

    def top_k(self, tokens: np.ndarray, bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The graph's search head (mtedge/engines/search_head.py): ``(ids, log_probs)`` [rows, k]."""
        feeds = {BIAS_INPUT: bias, K_INPUT: np.array([k], dtype=np.int64)}
        wanted = [IDS_OUTPUT, LOG_PROBS_OUTPUT]
        shortlist = self.shortlist
        if shortlist is None:
            ids, log_probs = self._step(tokens, wanted, feeds)
            return _host(ids), _host(log_probs)
        # the candidates' columns: the bias mapped to them, each row's mask, their rows of the output layer
        # once the first step has gathered them; the chosen columns mapped back to ids
        sources = self.row_sources if self.row_sources is not None else np.arange(tokens.shape[0])
        feeds.update(shortlist.feeds(sources))
        feeds[BIAS_INPUT] = shortlist.bias(bias)
        first = shortlist.head is None
        outputs = self._step(tokens, wanted + [vocabulary_shortlist.HEAD_OUTPUT] if first else wanted, feeds)
        if first:
            shortlist.head = _host(outputs[2])
        return shortlist.ids(_host(outputs[0])), _host(outputs[1])

    def select(self, rows: np.ndarray, sources: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if not (rows.size == len(self.row_sources) and np.array_equal(rows, np.arange(rows.size))):
            if self.kept is not None:
                blocks = source_blocks(sources)
                self.kept.select(rows, 1 if blocks is None else len(rows) // len(blocks))
            else:
                self.self_cache = [self._take(cache, rows) for cache in self.self_cache]
        if not np.array_equal(sources, self.row_sources):
            self._expand_cross(np.asarray(sources, dtype=np.int64))

    # -- internals --------------------------------------------------------------------------
    def _step(self, tokens: np.ndarray, wanted: list[str], extra_feeds: dict) -> list:
        """One decoder call: returns the ``wanted`` outputs and keeps the self-attention cache."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if self.self_cache is None and self.kept is None:
            return self._first_step(tokens, wanted, extra_feeds)
        if self.kept is not None:
            return self._in_place_step(tokens, wanted, extra_feeds)
        feeds = {"encoder_attention_mask": self.mask, "input_ids": tokens,
                 "encoder_hidden_states": self.hidden_placeholder, "use_cache_branch": self.use_cache}
        feeds.update(zip(self.graph.self_inputs, self.self_cache))
        feeds.update(zip(self.graph.cross_inputs, self.cross))
        feeds.update(extra_feeds)
        outputs = self._run(wanted + self.graph.self_outputs, feeds)
        self.self_cache = outputs[len(wanted):]
        return outputs[:len(wanted)]

    def _first_step(self, tokens: np.ndarray, wanted: list[str], extra_feeds: dict) -> list:
        graph, sources = self.graph, tokens.shape[0]
        hidden = self._run(["last_hidden_state"], {"input_ids": self.input_ids,
                                                   "attention_mask": self.source_mask},
                           session=self.engine.encoder)[0]
        empty = np.zeros((sources, graph.num_heads, 0, graph.head_dim), dtype=graph.cache_dtype)
        feeds = {"encoder_attention_mask": self.source_mask, "input_ids": tokens,
                 "encoder_hidden_states": hidden, "use_cache_branch": np.array([False])}
        feeds.update((name, empty) for name in graph.self_inputs + graph.cross_inputs)
        feeds.update(extra_feeds)
        outputs = self._run(wanted + graph.self_outputs + graph.cross_outputs, feeds)
        layers, first = len(graph.self_outputs), len(wanted)
        self.self_cache = outputs[first:first + layers]
        if self.keep_in_place:
            # the engine's gather, not self._take: that bound method made a cycle (state -> cache -> state) which
            # kept every batch's buffers until Python's cyclic GC ran (mtedge/DESIGN.md §4.14)
            self.kept, self.self_cache = InPlaceCache(self.self_cache, take=self.engine.row_gather.take), None
        self.source_cross = outputs[first + layers:]
        self.cross, self.mask = self.source_cross, self.source_mask
        self.row_sources = np.arange(sources)
        return outputs[:first]

    def _in_place_step(self, tokens: np.ndarray, wanted: list[str], extra_feeds: dict) -> list:
        """A later step on the in-place cache: the buffers are bound as both past and present, so the graph
        writes the new position into them (mtedge/engines/in_place_cache.py)."""
        cache = self.kept
        cache.reserve()
        if self.binding is None or self.binding.wanted != wanted:
            self.binding = InPlaceBinding(self.engine.decoder, wanted)
        self.counters[in_place_cache.PAST_LENGTH_INPUT][0] = cache.length
        self.counters[in_place_cache.BEAM_WIDTH_INPUT][0] = cache.width
        feeds = {"encoder_attention_mask": self.mask, "input_ids": tokens,
                 "encoder_hidden_states": self.hidden_placeholder, "use_cache_branch": self.use_cache,
                 in_place_cache.IN_PLACE_INPUT: self.use_cache, in_place_cache.INDIRECTION_INPUT: cache.indirection,
                 **self.counters, **dict(zip(self.graph.cross_inputs, self.cross)), **extra_feeds}
        for name, value in feeds.items():
            self.binding.input(name, value)
        for past, present, buffer in zip(self.graph.self_inputs, self.graph.self_outputs, cache.buffers):
            self.binding.shared(past, present, buffer)
        outputs = self.binding.run()
        cache.advance()
        return outputs

    def _expand_cross(self, sources: np.ndarray) -> None:
        blocks = source_blocks(sources) if self.graph.cross_per_source else None
        if blocks is not None and np.array_equal(blocks, np.arange(len(self.source_mask))):
            self.cross, self.mask = self.source_cross, self.source_mask   # every sentence still live
        else:
            picked = sources if blocks is None else blocks
            self.cross = [self._take(cache, picked) for cache in self.source_cross]
            self.mask = self.source_mask[picked]
        self.row_sources = sources

    def _run(self, output_names, feeds, session=None):
        session = session or self.engine.decoder
        if self.engine.io_runner is not None:
            return self.engine.io_runner.run(session, output_names, feeds)
        return session.run(output_names, feeds)

    def _take(self, array, rows: np.ndarray):
        if self.engine.io_runner is not None:
            return self.engine.io_runner.take(array, rows)
        return self.engine.row_gather.take(array, rows)


class InPlaceBinding:
    """The IO binding of one batch's in-place steps. An array stays bound from step to step (its ``OrtValue``
    shares its memory, so the indirection table and the counters are updated in place); only a new array is
    bound again: at batch 1 beam 4 binding all ~35 inputs afresh cost ~0.6 ms of a ~5 ms step. Inputs go
    through ``bind_ortvalue_input``: ``bind_cpu_input`` refuses the inputs that carry defaults."""

    def __init__(self, session, wanted: list[str]):
        self.session, self.wanted = session, list(wanted)
        self.binding = session.io_binding()
        self.bound: dict = {}     # name -> (the array bound, its OrtValue: kept alive while bound)
        for name in wanted:        # first: the outputs come back in binding order
            self.binding.bind_output(name, "cpu")

    def input(self, name: str, array: np.ndarray) -> None:
        # a strided array is bound as a copy, which would not see later changes: bound again every step
        if name not in self.bound or self.bound[name][0] is not array or not array.flags.c_contiguous:
            value = _import_onnxruntime().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
            self.binding.bind_ortvalue_input(name, value)
            self.bound[name] = (array, value)

    def shared(self, past: str, present: str, buffer: np.ndarray) -> None:
        """``buffer`` as both the input ``past`` and the output ``present``: the step writes into it."""
        if past not in self.bound or self.bound[past][0] is not buffer:
            value = _import_onnxruntime().OrtValue.ortvalue_from_numpy(buffer)
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
            self.bound[past] = (buffer, value)

    def run(self) -> list[np.ndarray]:
        for name in self.wanted:   # afresh each run: a bound output keeps the last run's shape
            self.binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(self.binding)
        return [value.numpy() for value in self.binding.get_outputs()[:len(self.wanted)]]


def source_blocks(sources: np.ndarray) -> np.ndarray | None:
    """The source of each block when ``sources`` (one per decoder row) is equal-length blocks of one source
    each — the beams of each live sentence, as the beam search orders them — else ``None``."""
    sources = np.asarray(sources)
    starts = np.flatnonzero(np.r_[True, sources[1:] != sources[:-1]])
    size = len(sources) // len(starts)
    if size * len(starts) != len(sources) or not np.array_equal(starts, np.arange(0, len(sources), size)) \
            or len(np.unique(sources[starts])) != len(starts):
        return None
    return sources[starts]


def search_head_serves(engine: OnnxEngine, renormalize: bool) -> bool:
    """Whether the graph's search head computes the scores this checkpoint's search needs. Not with the IO
    binding runner (CUDA): the head's inputs carry defaults (initializers), and onnxruntime 1.32's
    ``bind_cpu_input``, which it uses, refuses such an input ("Failed to find NodeArg with name: search_bias in
    the def list"; ``bind_ortvalue_input`` takes it, as the in-place steps do)."""
    if engine.io_runner is not None:
        return False
    return engine.graph.search_head is not None and engine.graph.search_head == MODES[bool(renormalize)]


def _host(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.numpy()


def _last_position(logits) -> np.ndarray:
    """[rows, t, vocab] → [rows, vocab] float32 of the last position, writable (the search bans in place)."""
    if not isinstance(logits, np.ndarray):
        logits = logits.numpy()
    last = logits[:, -1, :]
    if last.dtype != np.float32:
        return last.astype(np.float32)
    return np.ascontiguousarray(last)


class IOBindingRunner:
    """Runs the sessions with IO binding, keeping the caches on ``device`` between steps; the logits
    come to the host for the search. Used for CUDA; on "cpu" it runs the same code path, which is
    how the tests check it on machines without a GPU.

    Kept simple: a gather (beam reorder, a sentence leaving) goes through host memory. Inputs may
    be numpy arrays or ``OrtValue``s already on the device.
    """

    def __init__(self, device: str = "cuda", device_id: int = 0):
        self.ort = _import_onnxruntime()
        self.device, self.device_id = device, device_id

    def run(self, session, output_names, feeds):
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in output_names:
            if not name.startswith("present."):  # logits / the search head's top k: the search runs on the host
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()   # in binding order
        return [value if name.startswith("present.") else value.numpy() for name, value in zip(output_names, outputs)]

    def take(self, value, rows: np.ndarray):
        host = value if isinstance(value, np.ndarray) else value.numpy()
        gathered = np.ascontiguousarray(np.take(host, rows, axis=0))
        return self.ort.OrtValue.ortvalue_from_numpy(gathered, self.device, self.device_id)
