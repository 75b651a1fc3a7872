"""``mtedge serve``: a LibreTranslate-compatible HTTP server over one bundle (see mtedge/server/).

Light at import: Starlette and uvicorn (the ``serve`` extra) are imported only when the command runs,
so ``mtedge --help`` works on the base install and ``mtedge serve`` there names the extra to install.
"""

from __future__ import annotations

from pathlib import Path

import click

from mtedge.commands.translate import POSITIVE, _Number
from mtedge.errors import UserError
from mtedge.server.config import ServerConfig  # dataclass only: no Starlette at import


def _default(name: str):
    """The option's default is ServerConfig's: one home for each."""
    return ServerConfig.__dataclass_fields__[name].default

LIMIT = _Number(int, -1, "integer (-1: no limit)")
SECONDS = _Number(float, 0.001, "number of seconds")
MILLISECONDS = _Number(float, 0, "number of milliseconds")
PORT = _Number(int, 0, "port number")


@click.command("serve")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default=_default("host"), show_default=True,
              help="Address to listen on (0.0.0.0 exposes the server to the network; it has no TLS).")
@click.option("--port", type=PORT, default=_default("port"), show_default=True)
@click.option("--engine", default=_default("engine"), show_default=True, help="ct2 | onnx.")
@click.option("--precision", default=None, help="Engine precision (default: int8).")
@click.option("--device", default=_default("device"), show_default=True, help="auto | cpu | cuda.")
@click.option("--threads", type=POSITIVE, default=None, help="Compute threads (default: the engine's).")
@click.option("--beam", "beam_size", type=POSITIVE, default=None,
              help="Beam size for /translate (default: the bundle's; /translate/stream is always greedy).")
@click.option("--api-keys", "api_keys_file", type=click.Path(path_type=Path), default=None,
              help="File of API keys, one per line, optionally 'KEY REQUESTS_PER_MINUTE'.")
@click.option("--require-api-key", is_flag=True, help="With --api-keys: refuse requests that carry no key.")
@click.option("--char-limit", type=LIMIT, default=_default("char_limit"), show_default=True, help="Characters per text (-1: none).")
@click.option("--batch-limit", type=LIMIT, default=_default("batch_limit"), show_default=True, help="Texts per request (-1: none).")
@click.option("--req-limit", type=LIMIT, default=_default("req_limit"), show_default=True,
              help="Requests per minute per API key or client address (-1: none).")
@click.option("--alternatives-limit", type=LIMIT, default=_default("alternatives_limit"), show_default=True,
              help="Most alternatives one request may ask for.")
@click.option("--max-queue", type=POSITIVE, default=_default("max_queue"), show_default=True,
              help="Requests waiting for the engine before new ones get 503.")
@click.option("--max-streams", type=POSITIVE, default=_default("max_streams"), show_default=True, help="Concurrent /translate/stream responses.")
@click.option("--timeout", type=SECONDS, default=_default("timeout"), show_default=True,
              help="Seconds a request may wait for its translation before 504.")
@click.option("--batch-wait-ms", type=MILLISECONDS, default=_default("batch_wait_ms"), show_default=True,
              help="How long the batcher waits for more requests to merge into one engine call.")
@click.option("--batch-tokens", type=POSITIVE, default=_default("batch_tokens"), show_default=True,
              help="Source tokens per merged engine call.")
@click.option("--max-body-bytes", type=POSITIVE, default=_default("max_body_bytes"), show_default=True, help="Largest request body.")
@click.option("--split-sentences/--no-split-sentences", default=_default("split_sentences"), show_default=True,
              help="Translate a paragraph sentence by sentence.")
@click.option("--shortlist", is_flag=True,
              help="Score only the bundle's vocabulary shortlist (ct2, onnx): faster; on ct2 requests then run one "
                   "at a time.")
@click.option("--log-level", default=_default("log_level"), show_default=True, help="debug | info | warning | error.")
def command(bundle, **options):
    """Serve BUNDLE over HTTP with LibreTranslate's API (POST /translate, /detect, GET /languages)."""
    if options["engine"] not in ("ct2", "onnx"):
        raise UserError(f"mtedge serve runs engine 'ct2' or 'onnx', not {options['engine']!r}")
    if options["api_keys_file"] is None and options["require_api_key"]:
        raise UserError("--require-api-key needs --api-keys FILE")
    if options["log_level"] not in ("debug", "info", "warning", "error"):
        raise UserError(f"unknown --log-level {options['log_level']!r}; choose debug, info, warning or error")

    from mtedge.server.main import serve

    serve(ServerConfig(bundle=bundle, **options))
