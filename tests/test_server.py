"""``mtedge serve`` end to end: real servers in subprocesses over the tiny trained Marian bundle, driven by
the real ``libretranslatepy`` client and by httpx. One server per configuration (module scope):

- ``server``: ct2 int8, API keys, small limits — the LibreTranslate API, every error, the load test;
- ``slow_server``: a 2 s batching window, a queue of 1 and a 0.5 s timeout — 503 and 504 on purpose;
- ``onnx_server``: onnx int8 (row-wise, batch-invariant) at beam 1 — merged like ct2, streaming over our own
  decoder.

Unit tests of the pure parts (limits, detection, html, the batching rule) need no server.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import httpx
import pytest

from tests.factories import dev_pairs
from tests.server_helpers import ServerProcess

pytestmark = pytest.mark.timeout(300)

CHAR_LIMIT, BATCH_LIMIT, ALTERNATIVES_LIMIT, BODY_LIMIT = 300, 8, 3, 64 * 1024
SENTENCES = [src for src, _ in dev_pairs(40)]


@pytest.fixture(scope="module")
def bundle(tiny_unvalidated_bundles):
    return tiny_unvalidated_bundles("marian")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "keys.txt"
    path.write_text("# test keys\ngood-key\nslow-key 2   # two requests a minute\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(bundle, keys_file, tmp_path_factory):
    with ServerProcess(bundle, "--api-keys", keys_file, "--char-limit", CHAR_LIMIT, "--batch-limit", BATCH_LIMIT,
                       "--alternatives-limit", ALTERNATIVES_LIMIT, "--max-body-bytes", BODY_LIMIT,
                       "--batch-wait-ms", 20, "--max-queue", 1000,
                       log_path=tmp_path_factory.mktemp("serve") / "server.log") as proc:
        yield proc
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def reference(bundle):
    """The serial Translator every server answer must equal (the server's engine, precision and options)."""
    from mtedge import Translator

    translator = Translator(bundle, engine="ct2", precision="int8", threads=1)
    cache: dict = {}

    def translate(text: str, **options) -> str:
        key = (text, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = translator.translate([text], split_sentences=True, **options)[0]
        return cache[key]

    yield translate
    translator.close()


def _post(server, path="/translate", **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- the LibreTranslate API through its own client ------------------------------------------------
def test_libretranslatepy_client_translates_detects_and_lists(server, reference):
    from libretranslatepy import LibreTranslateAPI

    client = LibreTranslateAPI(server.url)
    for text in SENTENCES[:3]:
        assert client.translate(text, "en", "de") == reference(text).text
    assert client.translate(SENTENCES[0], "auto", "de") == reference(SENTENCES[0]).text
    assert client.detect("the red cat sees the dog") == [{"confidence": 100.0, "language": "en"}]
    assert client.languages() == [{"code": "en", "name": "English", "targets": ["de"]},
                                  {"code": "de", "name": "German", "targets": []}]
    keyed = LibreTranslateAPI(server.url, api_key="good-key")
    assert keyed.translate(SENTENCES[1], "en", "de") == reference(SENTENCES[1]).text


def test_json_batch_keeps_shape_order_and_blank_texts(server, reference):
    texts = [SENTENCES[4], "", SENTENCES[5], "   "]
    body = _ok(_post(server, json={"q": texts, "source": "en", "target": "de"}))
    assert body == {"translatedText": [reference(SENTENCES[4]).text, "", reference(SENTENCES[5]).text, ""]}


def test_auto_source_reports_the_detected_language(server, reference):
    body = _ok(_post(server, json={"q": SENTENCES[6], "source": "auto", "target": "de"}))
    assert body["translatedText"] == reference(SENTENCES[6]).text
    assert body["detectedLanguage"] == {"confidence": 100.0, "language": "en"}
    batch = _ok(_post(server, json={"q": [SENTENCES[6], "Анна"], "source": "auto", "target": "de"}))
    assert batch["detectedLanguage"] == [{"confidence": 100.0, "language": "en"},
                                         {"confidence": 0.0, "language": "en"}]


def test_alternatives_are_the_n_best_without_the_best(server, reference):
    body = _ok(_post(server, json={"q": SENTENCES[7], "source": "en", "target": "de", "alternatives": 2}))
    expected = reference(SENTENCES[7], beam_size=4, num_hypotheses=3)
    assert body["translatedText"] == expected.text
    others = [h.text for h in expected.hypotheses[1:] if h.text != expected.text]
    assert body["alternatives"] == list(dict.fromkeys(others))
    batch = _ok(_post(server, json={"q": [SENTENCES[7], SENTENCES[8]], "source": "en", "target": "de",
                                    "alternatives": 1}))
    assert isinstance(batch["alternatives"], list) and all(isinstance(a, list) for a in batch["alternatives"])
    plain = _ok(_post(server, json={"q": SENTENCES[7], "source": "en", "target": "de"}))
    assert "alternatives" not in plain


def test_multipart_form_as_a_browser_sends_it(server, reference):
    body = _ok(_post(server, data={"q": SENTENCES[9], "source": "en", "target": "de"},
                     files={"unused": ("x.txt", b"ignored")}))
    assert body == {"translatedText": reference(SENTENCES[9]).text}


def test_frontend_settings_health_and_cors(server):
    settings = httpx.get(server.url + "/frontend/settings").json()
    assert settings == {"charLimit": CHAR_LIMIT, "frontendTimeout": 500, "apiKeys": True, "keyRequired": False,
                        "suggestions": False, "filesTranslation": False, "supportedFilesFormat": [],
                        "language": {"source": {"code": "en", "name": "English"},
                                     "target": {"code": "de", "name": "German"}}}
    health = httpx.get(server.url + "/health")
    assert health.json() == {"status": "ok"} and health.headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(server.url + "/translate", headers={
        "Origin": "http://example.org", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]


# -- every error, LibreTranslate's status and message ---------------------------------------------
JSON = {"headers": {"Content-Type": "application/json"}}
ERRORS = {
    "missing q": ({"json": {"source": "en", "target": "de"}}, 400, "Invalid request: missing q parameter"),
    "empty q": ({"data": {"q": "", "source": "en", "target": "de"}}, 400, "Invalid request: missing q parameter"),
    "missing source": ({"json": {"q": "a cat", "target": "de"}}, 400, "Invalid request: missing source parameter"),
    "missing target": ({"data": {"q": "a cat", "source": "en"}}, 400, "Invalid request: missing target parameter"),
    "unsupported source": ({"json": {"q": "a cat", "source": "fr", "target": "de"}}, 400,
                           "fr is not supported (this server translates en to de only)"),
    "unsupported target": ({"json": {"q": "a cat", "source": "en", "target": "es"}}, 400,
                           "es is not supported (this server translates en to de only)"),
    "reversed pair": ({"json": {"q": "eine Katze", "source": "de", "target": "en"}}, 400, "de is not supported"),
    "char limit": ({"json": {"q": "a" * (CHAR_LIMIT + 1), "source": "en", "target": "de"}}, 400,
                   f"Invalid request: request ({CHAR_LIMIT + 1}) exceeds text limit ({CHAR_LIMIT})"),
    "char limit in a batch": ({"json": {"q": ["a cat", "b" * (CHAR_LIMIT + 5)], "source": "en", "target": "de"}},
                              400, f"Invalid request: request ({CHAR_LIMIT + 5}) exceeds text limit ({CHAR_LIMIT})"),
    "batch limit": ({"json": {"q": ["a cat"] * (BATCH_LIMIT + 1), "source": "en", "target": "de"}}, 400,
                    f"Invalid request: request ({BATCH_LIMIT + 1}) exceeds text limit ({BATCH_LIMIT})"),
    "invalid json": ({"content": b'{"q": "a cat", ', **JSON}, 400, "Invalid JSON format"),
    "json not an object": ({"content": b'["a cat"]', **JSON}, 400, "Invalid JSON format"),
    "json not utf-8": ({"content": b'{"q": "\xff"}', **JSON}, 400, "Invalid JSON format"),
    "q not text": ({"json": {"q": 42, "source": "en", "target": "de"}}, 400,
                   "Invalid request: q must be a string or a list of strings"),
    "q list of numbers": ({"json": {"q": [1, 2], "source": "en", "target": "de"}}, 400,
                          "Invalid request: q must be a string or a list of strings"),
    "bad format": ({"json": {"q": "a cat", "source": "en", "target": "de", "format": "xml"}}, 400,
                   "xml format is not supported"),
    "alternatives not a number": ({"json": {"q": "a cat", "source": "en", "target": "de", "alternatives": "many"}},
                                  400, "Invalid request: alternatives parameter is not a number"),
    "too many alternatives": ({"json": {"q": "a cat", "source": "en", "target": "de", "alternatives": 99}}, 400,
                              f"Invalid request: alternatives parameter must be <= {ALTERNATIVES_LIMIT}"),
    "invalid api key": ({"json": {"q": "a cat", "source": "en", "target": "de", "api_key": "nope"}}, 403,
                        "Invalid API key"),
    "invalid api key in a form": ({"data": {"q": "a cat", "source": "en", "target": "de", "api_key": "nope"}}, 403,
                                  "Invalid API key"),
    "body too large": ({"content": b"q=" + b"a" * (BODY_LIMIT + 10),
                        "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 413,
                       f"exceeds the limit of {BODY_LIMIT} bytes"),
    "stream of a list": ({"json": {"q": ["a", "b"], "source": "en", "target": "de"}, "path": "/translate/stream"},
                         400, "Invalid request: /translate/stream takes one text, not a list"),
    "stream of html": ({"json": {"q": "<b>a</b>", "source": "en", "target": "de", "format": "html"},
                        "path": "/translate/stream"}, 400, "html format is not supported for streaming"),
    "detect without q": ({"json": {}, "path": "/detect"}, 400, "Invalid request: missing q parameter"),
    "unknown path": ({"json": {}, "path": "/nowhere"}, 404, "Not found"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_client_mistakes_get_libretranslate_errors(server, case):
    kwargs, status, message = ERRORS[case]
    kwargs = dict(kwargs)
    response = _post(server, kwargs.pop("path", "/translate"), **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and message in body["error"], body
    assert "Traceback" not in response.text
    assert response.headers["access-control-allow-origin"] == "*"


def test_wrong_method_is_a_json_405(server):
    response = httpx.get(server.url + "/translate")
    assert response.status_code == 405 and response.json() == {"error": "Method not allowed"}


def test_per_key_rate_limit_is_429_slowdown(server):
    request = {"q": "the cat", "source": "en", "target": "de", "api_key": "slow-key"}
    assert [_post(server, json=request).status_code for _ in range(2)] == [200, 200]
    response = _post(server, json=request)
    assert response.status_code == 429 and response.json() == {"error": "Slowdown: 2 per 1 minute"}
    # another key (and no key) is not held back by this one's limit
    assert _post(server, json={**request, "api_key": "good-key"}).status_code == 200


# -- html ------------------------------------------------------------------------------------------
class _Markup(HTMLParser):
    """Tags (with attributes), raw-text contents and text runs of a document, to compare two of them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.texts = [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, None))

    def handle_data(self, data):
        self.texts.append(data)


def test_html_translates_text_nodes_and_keeps_markup(server, reference):
    document = ('<!DOCTYPE html><div class="x" title="Tom &amp; Anna"><p>the red cat sees the dog</p>'
                '<script>if (a < b && c) { say("the cat"); }</script><br/>'
                '<span translate="no">the big car</span><!-- the old tree --><p> Anna &amp; Tom </p></div>')
    body = _ok(_post(server, json={"q": document, "source": "en", "target": "de", "format": "html"}))
    out = body["translatedText"]
    assert _Markup(out).tags == _Markup(document).tags
    assert '<script>if (a < b && c) { say("the cat"); }</script>' in out        # raw text untouched
    assert '<span translate="no">the big car</span>' in out and "<!-- the old tree -->" in out
    assert '<div class="x" title="Tom &amp; Anna">' in out                       # attributes verbatim
    assert f"<p>{html.escape(reference('the red cat sees the dog').text, quote=False)}</p>" in out
    assert f"<p> {html.escape(reference('Anna & Tom').text, quote=False)} </p>" in out
    assert "alternatives" not in body


def test_html_document_round_trips_entities():
    from mtedge.server.html import HtmlDocument

    source = '<p class="a&amp;b">Tom &amp; Anna &lt;3 caf&eacute; &#169;</p><style>p > a { x: "&amp;" }</style>'
    document = HtmlDocument(source)
    assert document.texts == ["Tom & Anna <3 café ©"]
    assert document.render(document.texts) == \
        '<p class="a&amp;b">Tom &amp; Anna &lt;3 café ©</p><style>p > a { x: "&amp;" }</style>'
    assert document.render(["A <b> & C"]) == '<p class="a&amp;b">A &lt;b&gt; &amp; C</p><style>p > a { x: "&amp;" }</style>'


# -- batching under load ---------------------------------------------------------------------------
def test_concurrent_clients_get_their_own_results_and_requests_merge(server, reference):
    clients, per_client = 32, 10
    before = server.metrics()

    def client(number: int) -> list[tuple[object, object]]:
        got = []
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for i in range(per_client):
                k = (number * per_client + i) % len(SENTENCES)
                q = SENTENCES[k] if i % 3 else [SENTENCES[k], SENTENCES[(k + 7) % len(SENTENCES)]]
                response = http.post("/translate", json={"q": q, "source": "en", "target": "de"})
                got.append((q, response.status_code, response.json()))
        return got

    with ThreadPoolExecutor(clients) as pool:
        results = [item for chunk in pool.map(client, range(clients), timeout=240) for item in chunk]
    assert len(results) == clients * per_client
    errors = [(q, status, body) for q, status, body in results if status != 200]
    assert errors == []
    for q, _, body in results:
        expected = [reference(t).text for t in q] if isinstance(q, list) else reference(q).text
        assert body["translatedText"] == expected, q
    after = server.metrics()
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == clients * per_client
    assert after["engine_calls"] - before["engine_calls"] < requests
    assert batches < requests and after["merged_batches"] > before["merged_batches"]
    assert after["merge_across_requests"] is True


# -- streaming -------------------------------------------------------------------------------------
def _stream(server, text: str) -> tuple[list[str], dict]:
    deltas, done = [], None
    with httpx.stream("POST", server.url + "/translate/stream", timeout=60,
                      json={"q": text, "source": "en", "target": "de"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert event in ("token", "done"), data
                if event == "token":
                    deltas.append(data["text"])
                else:
                    done = data
    return deltas, done


def test_stream_ends_with_the_greedy_translation(server, reference):
    text = f"{SENTENCES[10]}. {SENTENCES[11]}."   # two sentences: split, streamed and joined as /translate does
    deltas, done = _stream(server, text)
    assert len(deltas) > 3
    assert done == {"translatedText": reference(text, beam_size=1).text}
    assert "".join(deltas) == done["translatedText"]


# -- overload: 503 and 504 -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_server(bundle, tmp_path_factory):
    # the batcher holds each batch open 2 s: a request times out (0.5 s) before it is dispatched, and a second
    # request meanwhile finds the one-request queue full
    with ServerProcess(bundle, "--batch-wait-ms", 2000, "--max-queue", 1, "--timeout", 0.5,
                       log_path=tmp_path_factory.mktemp("serve") / "slow.log") as proc:
        yield proc


def test_full_queue_is_503_and_a_late_result_is_504(slow_server):
    request = {"q": "the cat", "source": "en", "target": "de"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, slow_server, json=request)
        deadline = time.monotonic() + 10  # the first request must be in the queue before the second comes
        while slow_server.metrics()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = _post(slow_server, json=request)
        first = first.result(timeout=30)
    assert second.status_code == 503 and "queue is full" in second.json()["error"]
    assert second.headers["retry-after"] == "1"
    assert first.status_code == 504 and first.json() == {"error": "Translation timed out after 0.5 s; the server "
                                                                  "is overloaded or the text is too long"}
    time.sleep(2.0)  # the abandoned job is dropped at dispatch; the server carries on
    metrics = slow_server.metrics()
    assert metrics["rejected_queue_full"] == 1 and metrics["timeouts"] == 1 and metrics["queued"] == 0


# -- onnx int8: row-wise int8 is batch-invariant, so requests are merged as on ct2 ---------------------
@pytest.fixture(scope="module")
def onnx_server(bundle, tmp_path_factory):
    with ServerProcess(bundle, "--engine", "onnx", "--precision", "int8", "--beam", 1, "--batch-wait-ms", 20,
                       log_path=tmp_path_factory.mktemp("serve") / "onnx.log") as proc:
        yield proc


def test_onnx_int8_merges_requests_and_streams(onnx_server, bundle):
    from mtedge import Translator

    with Translator(bundle, engine="onnx", precision="int8", threads=1) as serial:
        texts = SENTENCES[:12]
        expected = [serial.translate([t], beam_size=1, split_sentences=True)[0].text for t in texts]
    before = onnx_server.metrics()
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda t: _ok(_post(onnx_server, json={"q": t, "source": "en", "target": "de"})),
                               texts, timeout=120))
    assert [b["translatedText"] for b in bodies] == expected
    after = onnx_server.metrics()
    assert after["merge_across_requests"] is True
    assert after["batches"] - before["batches"] <= len(texts)
    deltas, done = _stream(onnx_server, texts[0])
    assert done == {"translatedText": expected[0]} and "".join(deltas) == expected[0]


# -- shutdown and the command line -----------------------------------------------------------------
def test_sigterm_finishes_the_request_in_flight_and_exits_cleanly(bundle, tmp_path, reference):
    proc = ServerProcess(bundle, "--batch-wait-ms", 500, "--log-level", "info", log_path=tmp_path / "term.log")
    proc.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_post, proc, json={"q": SENTENCES[12], "source": "en", "target": "de"})
            time.sleep(0.2)    # accepted, and held in the 500 ms batching window
            code = proc.terminate(timeout=60)
            response = pending.result(timeout=30)
    finally:
        proc.stop()
    assert code == 0, proc.log()
    assert response.status_code == 200 and response.json() == {"translatedText": reference(SENTENCES[12]).text}
    log = proc.log()
    assert "Traceback" not in log and "Finished server process" in log and "stopped by signal" in log, log


def test_serve_without_the_extra_names_it(tmp_path):
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['starlette'] = None; "
            "from mtedge.cli import main; main(['serve', 'no-such-bundle'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'mtedge[serve]'" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_refuses_a_missing_bundle_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtedge.cli", "serve", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


# -- the pure parts --------------------------------------------------------------------------------
def test_rate_limiter_is_a_sliding_minute():
    from mtedge.server.limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")                  # per client
    now[0] = 59.9
    assert not limiter.allow("a")
    now[0] = 60.1                              # the first three fall out of the window
    assert limiter.allow("a", cost=3) and not limiter.allow("a")
    assert RateLimiter(-1).allow("a", cost=10**6)


def test_api_keys_file(tmp_path):
    from mtedge.errors import UserError
    from mtedge.server.limits import ApiKeys

    path = tmp_path / "keys"
    path.write_text("a\n\n# comment\nb 10 # ten a minute\n", encoding="utf-8")
    assert ApiKeys.load(path).limits == {"a": None, "b": 10}
    path.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(UserError, match="expected 'KEY'"):
        ApiKeys.load(path)


def test_detection_confidence_is_the_share_of_the_source_script():
    from mtedge.server.languages import script_confidence

    assert script_confidence("Hello world", "en") == 100.0
    assert script_confidence("Hello мир", "en") == 62.5
    assert script_confidence("Привет мир", "ru") == 100.0
    assert script_confidence("1234 !?", "en") == 0.0


def test_only_batch_invariant_engines_merge_requests(bundle):
    import copy

    from mtedge.bundle import Bundle
    from mtedge.server.config import batch_invariant

    opened = Bundle.open(bundle)
    assert batch_invariant(opened, "ct2", "int8") and batch_invariant(opened, "ct2", "float32")
    assert batch_invariant(opened, "onnx", "fp32") and not batch_invariant(opened, "torch", "fp32")
    assert opened.engine_record("onnx", "int8")["options"]["quantization"] == "rowwise"
    assert batch_invariant(opened, "onnx", "int8")
    # MatMulNBits' sums move by an ulp with the rows in the call
    assert not batch_invariant(opened, "onnx", "int8_latency") and not batch_invariant(opened, "onnx", "int4")
    # a bundle exported before that was known recorded int8_latency as invariant: its kernels decide
    older = Bundle(opened.path, copy.deepcopy(opened.manifest))
    older.manifest["engines"]["onnx"]["int8_latency"]["options"]["batch_invariant"] = True
    assert not batch_invariant(older, "onnx", "int8_latency")
    # an export made with onnxruntime's dynamic int8 (per-batch activation scale) is not merged
    dynamic = Bundle(opened.path, copy.deepcopy(opened.manifest))
    dynamic.manifest["engines"]["onnx"]["int8"]["options"] = {"quantization": "dynamic", "batch_invariant": False}
    assert not batch_invariant(dynamic, "onnx", "int8")


def test_server_modules_do_not_import_torch():
    code = ("import sys; import mtedge.server.app, mtedge.server.main, mtedge.commands.serve; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

