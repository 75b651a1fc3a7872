"""``mtedge serve``: a LibreTranslate-compatible local HTTP server over one bundle.

Needs the ``serve`` extra (Starlette, uvicorn): ``pip install 'mtedge[serve]'``. One module per job:

- ``config``    every setting and its default (``ServerConfig``), and which engines may merge requests
- ``app``       the routes (LibreTranslate's API + mtedge extensions), CORS, error bodies
- ``params``    reading JSON / form / multipart parameters within the body size limit
- ``limits``    API keys and the per-minute request limit
- ``languages`` the bundle's language pair, ``/languages`` and the detection heuristic
- ``html``      ``format=html``: translate text nodes, keep the markup
- ``batcher``   the queue that merges concurrent requests into engine calls
- ``streaming`` token streaming for ``/translate/stream``
- ``main``      loading the Translator and running uvicorn with graceful shutdown
"""
