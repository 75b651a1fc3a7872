"""The one exception the routes raise for a client-visible failure; ``app.py`` turns it into
LibreTranslate's ``{"error": message}`` body with the status code."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def missing(name: str) -> ApiError:
    return ApiError(400, f"Invalid request: missing {name} parameter")


def too_large(size: int, limit: int) -> ApiError:
    # LibreTranslate uses this one message for the character limit and the batch limit alike
    return ApiError(400, f"Invalid request: request ({size}) exceeds text limit ({limit})")
