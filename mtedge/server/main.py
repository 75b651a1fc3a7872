"""Run the server: load the Translator (load errors are the CLI's one-line UserErrors), then uvicorn.

uvicorn handles SIGINT/SIGTERM: it stops accepting connections, lets in-flight requests finish (up to
``config.shutdown_grace`` seconds), then runs the app's shutdown, where the batcher serves what it had
accepted and the engine is closed. A second signal forces the exit. After such an orderly stop the
command exits 0 (uvicorn would re-raise the signal and die by it, which reads as a crash to a service
manager or a test).
"""

from __future__ import annotations

import contextlib
import logging

from mtedge.server.config import ServerConfig, batch_invariant

log = logging.getLogger("mtedge.serve")


def serve(config: ServerConfig) -> None:
    import uvicorn  # the serve extra; imported first so a missing extra is reported before loading a model

    from mtedge.server.app import create_app
    from mtedge.translator import Translator

    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    translator = Translator(config.bundle, engine=config.engine, precision=config.precision, device=config.device,
                            threads=config.threads, batch_tokens=config.batch_tokens, shortlist=config.shortlist)
    app = create_app(config, translator)
    log.info("bundle %s (%s→%s), engine %s %s on %s; merging requests across clients: %s",
             translator.bundle.name, translator.bundle.source_lang, translator.bundle.target_lang,
             translator.engine_name, translator.precision, translator.device,
             "yes" if batch_invariant(translator.bundle, translator.engine_name, translator.precision,
                                      translator.shortlist) else "no (not batch-invariant)")
    # limit_concurrency: a backstop against connection floods (uvicorn answers 503 past it); the queue is the real bound
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                              timeout_graceful_shutdown=int(config.shutdown_grace) + 1, access_log=False,
                              limit_concurrency=config.max_queue + config.max_streams + 64)
    server = _server_class()(settings)
    server.run()
    if server.stopped_by:
        names = ", ".join(getattr(sig, "name", str(sig)) for sig in server.stopped_by)
        log.info("stopped by signal %s after a graceful shutdown", names)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the stop signal once the graceful shutdown is done."""

        stopped_by: list = []

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):   # uvicorn >= 0.29 re-raises these on leaving
                        self.stopped_by = list(captured)
                        captured.clear()

    return Server

