"""The HTTP routes: LibreTranslate 1.9's API over one bundle, plus mtedge's extensions.

LibreTranslate: ``POST /translate``, ``POST /detect``, ``GET /languages``, ``GET /frontend/settings``;
errors are ``{"error": message}`` with LibreTranslate's messages and status codes.
mtedge extensions: ``GET /health``, ``GET /metrics`` (batching counters), ``POST /translate/stream``
(server-sent events, greedy search).

A client mistake is always a 4xx with a one-line message; an unexpected failure is a 500 whose body
says only that (the traceback goes to the server log).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mtedge.errors import UserError
from mtedge.server.batcher import Batcher, CountingEngine, DecodeKey, Metrics
from mtedge.server.config import ServerConfig, batch_invariant
from mtedge.server.errors import ApiError, bad_request, missing, too_large
from mtedge.server.html import HtmlDocument
from mtedge.server.languages import LanguagePair, language_name
from mtedge.server.limits import ApiKeys, RateLimiter
from mtedge.server.params import read_params
from mtedge.server.streaming import Cancelled, stream_translation

log = logging.getLogger("mtedge.serve")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Authorization",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": str(60 * 60 * 24 * 20),
}


@dataclass
class ServerState:
    """What the routes share: built once by :func:`create_app`, started and stopped by its lifespan."""

    config: ServerConfig
    translator: object
    pair: LanguagePair
    keys: ApiKeys | None
    limiter: RateLimiter
    merge: bool
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher | None = None
    engine_pool: ThreadPoolExecutor | None = None
    stream_pool: ThreadPoolExecutor | None = None
    streams: int = 0
    stopping: bool = False


def create_app(config: ServerConfig, translator) -> Starlette:
    """The Starlette app over an already loaded ``mtedge.Translator`` (the app closes it at shutdown)."""
    source, target = translator.bundle.source_lang, translator.bundle.target_lang
    if not source or not target:
        raise UserError(f"bundle {translator.bundle.name} names no source/target language (manifest source_lang, "
                        f"target_lang): LibreTranslate clients need them; re-export with --source-lang/--target-lang")
    pair = LanguagePair(source, target)
    state = ServerState(config=config, translator=translator, pair=pair,
                        keys=ApiKeys.load(config.api_keys_file) if config.api_keys_file else None,
                        limiter=RateLimiter(config.req_limit),
                        merge=batch_invariant(translator.bundle, translator.engine_name, translator.precision,
                                              translator.shortlist))
    translator.engine = CountingEngine(translator.engine, state.metrics)

    @asynccontextmanager
    async def lifespan(app):
        # one engine thread: the batcher is the concurrency (CTranslate2 and ONNX Runtime release the GIL)
        state.engine_pool = ThreadPoolExecutor(1, thread_name_prefix="mtedge-engine")
        # streams of a thread-safe engine (CT2) get threads of their own; ONNX ones queue on the engine thread
        thread_safe = getattr(translator.engine, "thread_safe", False)
        state.stream_pool = (ThreadPoolExecutor(config.max_streams, thread_name_prefix="mtedge-stream")
                             if thread_safe else state.engine_pool)
        state.batcher = Batcher(translator, state.engine_pool, merge=state.merge, max_queue=config.max_queue,
                                batch_tokens=config.batch_tokens, batch_wait_ms=config.batch_wait_ms,
                                split_sentences=config.split_sentences, metrics=state.metrics)
        await state.batcher.start()
        if not state.merge:
            log.warning("%s %s of this bundle is not batch-invariant (a sentence's output can depend on its batch "
                        "neighbours: onnxruntime's dynamic int8, the MatMulNBits decoders of int8_latency and int4, "
                        "CTranslate2 with a shortlist): each request runs as its own engine call",
                        translator.engine_name, translator.precision)
        try:
            yield
        finally:
            state.stopping = True
            await state.batcher.close()   # serves every accepted request, refuses new ones
            state.engine_pool.shutdown(wait=True)
            if state.stream_pool is not state.engine_pool:
                state.stream_pool.shutdown(wait=True)
            translator.close()
            log.info("mtedge serve stopped: %s", json.dumps(state.metrics.snapshot()))

    def route(path, endpoint, methods):
        return Route(path, functools.partial(endpoint, state), methods=methods)

    routes = [
        route("/", _index, ["GET"]),
        route("/health", _health, ["GET"]),
        route("/metrics", _metrics, ["GET"]),
        route("/languages", _languages_list, ["GET", "POST"]),
        route("/frontend/settings", _frontend_settings, ["GET"]),
        route("/translate", _translate, ["POST"]),
        route("/translate/stream", _stream, ["POST"]),
        route("/detect", _detect, ["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error})
    app.state.mtedge = state
    return CorsMiddleware(app)


class CorsMiddleware:
    """LibreTranslate's CORS headers on every response, and OPTIONS preflights answered directly."""

    def __init__(self, app):
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":
            return await Response(status_code=204, headers=CORS_HEADERS)(scope, receive, send)

        async def with_cors(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)


# -- errors ------------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request, exc: ApiError):
    return _error(exc.status, exc.message, exc.headers)


async def _http_error(request, exc: HTTPException):
    messages = {404: "Not found", 405: "Method not allowed"}
    return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), getattr(exc, "headers", None))


async def _internal_error(request, exc: Exception):
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "Cannot translate text: internal server error (see the server log)")


# -- shared checks -----------------------------------------------------------------------------
def _client(request: Request, key: str | None) -> str:
    # the peer address, not X-Forwarded-For: a local server has no proxy to trust, and the header is free to forge
    return f"key:{key}" if key else f"ip:{request.client.host if request.client else 'unknown'}"


def _access(state: ServerState, request: Request, params: dict, cost: int) -> None:
    """API key, then the per-minute limit (LibreTranslate's order and messages)."""
    key = params.get("api_key") or None
    own_limit = None
    if state.keys is not None:
        if key is not None and (not isinstance(key, str) or key not in state.keys):
            raise ApiError(403, "Invalid API key")
        if key is None and state.config.require_api_key:
            raise bad_request("Please contact the server operator to get an API key")
        own_limit = state.keys.limits.get(key) if key else None
    limit = own_limit if own_limit is not None else state.config.req_limit
    if not state.limiter.allow(_client(request, key), cost, limit):
        raise ApiError(429, f"Slowdown: {RateLimiter.describe(limit)}", {"Retry-After": "60"})


def _texts(state: ServerState, params: dict, is_json: bool) -> tuple[list[str], bool]:
    """q as a list of texts and whether it was a batch; missing/limits checked as LibreTranslate does."""
    q = params.get("q")
    if not q:
        raise missing("q")
    batch = isinstance(q, list)
    if not (batch and all(isinstance(t, str) for t in q)) and not isinstance(q, str):
        raise bad_request("Invalid request: q must be a string or a list of strings")
    if not is_json:
        q = "\n".join(q.splitlines())  # forms: LF line ends only, so the character limit counts alike
    texts = q if batch else [q]
    limits = state.config
    if batch and limits.batch_limit != -1 and len(texts) > limits.batch_limit:
        raise too_large(len(texts), limits.batch_limit)
    if limits.char_limit != -1:
        for text in texts:
            if len(text) > limits.char_limit:
                raise too_large(len(text), limits.char_limit)
    return texts, batch


def _languages(state: ServerState, params: dict) -> str:
    source, target = params.get("source"), params.get("target")
    if not source:
        raise missing("source")
    if not target:
        raise missing("target")
    if not isinstance(source, str) or not isinstance(target, str):
        raise bad_request("Invalid request: source and target must be language codes")
    state.pair.check(source, target)
    return source


def _alternatives(state: ServerState, params: dict) -> int:
    value = params.get("alternatives", 0)
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        number = max(0, int(value if value not in ("", None) else 0))
    except (TypeError, ValueError):
        raise bad_request("Invalid request: alternatives parameter is not a number") from None
    limit = state.config.alternatives_limit
    if limit != -1 and number > limit:
        raise bad_request(f"Invalid request: alternatives parameter must be <= {limit}")
    return number


def _format(params: dict) -> str:
    text_format = params.get("format") or "text"
    if text_format not in ("text", "html"):
        raise bad_request(f"{text_format} format is not supported")
    return text_format


def _cost(params: dict) -> int:
    q = params.get("q")
    return max(1, len(q)) if isinstance(q, list) else 1  # a batch costs one request per text, as in LibreTranslate


async def _submit(state: ServerState, texts: list[str], key: DecodeKey):
    try:
        return await state.batcher.submit(texts, key, state.config.timeout)
    except UserError as exc:  # e.g. an option the bundle cannot honour: the client's to fix
        raise bad_request(f"Invalid request: {exc}") from None


# -- routes ------------------------------------------------------------------------------------
async def _index(state: ServerState, request: Request) -> JSONResponse:
    return JSONResponse({"name": "mtedge", "api": "LibreTranslate", "bundle": state.translator.bundle.name,
                         "endpoints": ["/translate", "/detect", "/languages", "/frontend/settings",
                                       "/translate/stream", "/health", "/metrics"]})


async def _health(state: ServerState, request: Request) -> JSONResponse:
    if state.stopping:
        return JSONResponse({"status": "stopping"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def _metrics(state: ServerState, request: Request) -> JSONResponse:
    translator = state.translator
    return JSONResponse({**state.metrics.snapshot(), "queued": state.batcher.waiting if state.batcher else 0,
                         "streams": state.streams, "merge_across_requests": state.merge,
                         "engine": translator.engine_name, "precision": translator.precision,
                         "batch_wait_ms": state.config.batch_wait_ms, "batch_tokens": state.config.batch_tokens})


async def _languages_list(state: ServerState, request: Request) -> JSONResponse:
    return JSONResponse(state.pair.languages())


async def _frontend_settings(state: ServerState, request: Request) -> JSONResponse:
    config, pair = state.config, state.pair
    return JSONResponse({
        "charLimit": config.char_limit,
        "frontendTimeout": config.frontend_timeout,
        "apiKeys": state.keys is not None,
        "keyRequired": state.keys is not None and config.require_api_key,
        "suggestions": False,
        "filesTranslation": False,
        "supportedFilesFormat": [],
        "language": {"source": {"code": pair.source, "name": language_name(pair.source)},
                     "target": {"code": pair.target, "name": language_name(pair.target)}},
    })


async def _detect(state: ServerState, request: Request) -> JSONResponse:
    params, _ = await read_params(request, state.config.max_body_bytes)
    _access(state, request, params, 1)
    q = params.get("q")
    if not q:
        raise missing("q")
    if isinstance(q, list) and all(isinstance(t, str) for t in q):
        q = "\n".join(q)
    if not isinstance(q, str):
        raise bad_request("Invalid request: q must be a string")
    return JSONResponse([state.pair.detect(q)])


async def _translate(state: ServerState, request: Request) -> JSONResponse:
    params, is_json = await read_params(request, state.config.max_body_bytes)
    _access(state, request, params, _cost(params))
    texts, batch = _texts(state, params, is_json)
    source = _languages(state, params)
    alternatives = _alternatives(state, params)
    text_format = _format(params)

    if text_format == "html":
        documents = [HtmlDocument(text) for text in texts]
        runs = [run for document in documents for run in document.texts]
        beam = state.config.beam_size or state.translator.default_beam_size
        results = await _submit(state, runs, DecodeKey(beam_size=beam)) if runs else []
        translated, offset = [], 0
        for document in documents:
            count = len(document.texts)
            translated.append(document.render([r.text for r in results[offset:offset + count]]))
            offset += count
        others = [[] for _ in texts]  # as LibreTranslate: no alternatives for html
        plain = [" ".join(document.texts) for document in documents]  # detect on the text, not the tags
    else:
        beam = state.config.beam_size or state.translator.default_beam_size
        # n-best needs a beam at least that wide; the widened beam may change the best translation too
        key = (DecodeKey(beam_size=max(beam, alternatives + 1), num_hypotheses=alternatives + 1)
               if alternatives else DecodeKey(beam_size=beam))
        results = await _submit(state, texts, key)
        translated = [r.text for r in results]
        others = [_unique([h.text for h in r.hypotheses[1:]], r.text) for r in results]
        plain = texts

    body: dict = {"translatedText": translated if batch else translated[0]}
    if source == "auto":
        detected = [state.pair.detect(text) for text in plain]
        body["detectedLanguage"] = detected if batch else detected[0]
    if alternatives > 0:
        body["alternatives"] = others if batch else others[0]
    return JSONResponse(body)


def _unique(candidates: list[str], best: str) -> list[str]:
    seen, out = {best}, []
    for text in candidates:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(state: ServerState, request: Request) -> Response:
    """One text's greedy translation as server-sent events: ``token`` events ({"text": delta}), then
    ``done`` ({"translatedText": full}, what /translate returns at beam 1) or ``error`` ({"error"})."""
    params, is_json = await read_params(request, state.config.max_body_bytes)
    _access(state, request, params, 1)
    texts, batch = _texts(state, params, is_json)
    if batch:
        raise bad_request("Invalid request: /translate/stream takes one text, not a list")
    _languages(state, params)
    if _format(params) != "text":
        raise bad_request("html format is not supported for streaming")
    if state.stopping:
        raise ApiError(503, "The server is shutting down; retry later", {"Retry-After": "5"})
    if state.streams >= state.config.max_streams:
        raise ApiError(503, f"Server busy: {state.config.max_streams} streams are running; retry in a moment",
                       {"Retry-After": "1"})

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancel = False
    state.streams += 1
    state.metrics.stream_calls += 1

    def emit(delta: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, ("token", {"text": delta}))

    def work() -> None:
        try:
            full = stream_translation(state.translator, texts[0], state.config.split_sentences, emit,
                                      lambda: cancel)
            loop.call_soon_threadsafe(events.put_nowait, ("done", {"translatedText": full}))
        except Cancelled:
            loop.call_soon_threadsafe(events.put_nowait, None)
        except Exception as exc:  # noqa: BLE001 - reported as an event; the traceback to the log
            log.exception("stream failed", exc_info=exc)
            loop.call_soon_threadsafe(events.put_nowait, ("error", {"error": "Cannot translate text: "
                                                                             "internal server error"}))

    future = loop.run_in_executor(state.stream_pool, work)
    # counted down when the decoding ends, whether or not the client stayed to read it
    future.add_done_callback(lambda f: setattr(state, "streams", state.streams - 1))

    async def body():
        nonlocal cancel
        deadline = loop.time() + state.config.timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    state.metrics.timeouts += 1
                    yield _sse("error", {"error": f"Translation timed out after {state.config.timeout:g} s"})
                    return
                if item is None:
                    return
                yield _sse(*item)
                if item[0] != "token":
                    return
        finally:
            cancel = True  # stops the decoding if the client left early

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
