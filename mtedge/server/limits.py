"""API keys and the per-client request limit (a sliding one-minute window).

The keys file: one key per line, optionally followed by whitespace and that key's own limit in
requests per minute (LibreTranslate keeps the same two facts in its key database); ``#`` starts a
comment. With a keys file every translate/detect request must carry a listed key.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from mtedge.errors import UserError

WINDOW_S = 60.0


@dataclass(frozen=True)
class ApiKeys:
    limits: dict[str, int | None]      # key -> its own per-minute limit (None: the server's)

    @classmethod
    def load(cls, path: Path) -> "ApiKeys":
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the API keys file {path}: {exc}") from None
        limits: dict[str, int | None] = {}
        for number, line in enumerate(lines, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
                raise UserError(f"{path}:{number}: expected 'KEY' or 'KEY REQUESTS_PER_MINUTE', got {line.strip()!r}")
            limits[fields[0]] = int(fields[1]) if len(fields) == 2 else None
        if not limits:
            raise UserError(f"the API keys file {path} lists no key")
        return cls(limits)

    def __contains__(self, key: str) -> bool:
        return key in self.limits


class RateLimiter:
    """At most ``limit`` request units per client in any 60 s window (a batch of N texts costs N, as
    in LibreTranslate). Thread-safe; old entries are dropped as clients come back."""

    def __init__(self, limit: int, clock=time.monotonic):
        self.limit = limit
        self.clock = clock
        self._hits: dict[str, deque] = {}
        self._lock = threading.Lock()

    def allow(self, client: str, cost: int = 1, limit: int | None = None) -> bool:
        limit = self.limit if limit is None else limit
        if limit is None or limit < 0:
            return True
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(client, deque())
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) + cost > limit:
                return False
            hits.extend([now] * cost)
            if len(self._hits) > 10_000:  # forget idle clients so the table cannot grow without bound
                for name in [n for n, h in self._hits.items() if not h or h[-1] <= now - WINDOW_S]:
                    del self._hits[name]
            return True

    @staticmethod
    def describe(limit: int) -> str:
        return f"{limit} per 1 minute"  # flask-limiter's wording, which LibreTranslate puts after "Slowdown:"
