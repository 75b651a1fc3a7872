"""Waiting for a freshly started ``mtedge serve`` process to answer ``GET /health`` (tests, benchmarks)."""

from __future__ import annotations

import time


def wait_until_ready(url: str, process, timeout: float) -> str | None:
    """Poll ``url``/health until it answers 200: None once it does, else why not (the process exited, or
    ``timeout`` seconds passed)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the server exited with {process.returncode}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return f"the server did not answer /health within {timeout} s"
