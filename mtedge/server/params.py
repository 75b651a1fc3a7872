"""Reading a request's parameters the way LibreTranslate (Flask) does: a JSON object, or form fields
(``application/x-www-form-urlencoded`` as libretranslatepy sends, or ``multipart/form-data`` as a
browser ``FormData`` sends), or the query string. Bodies over the size limit are refused before they
are read in full.

Forms are parsed with the standard library (``urllib.parse``, ``email``) so that the serve extra needs
no ``python-multipart``.
"""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from starlette.requests import Request

from mtedge.server.errors import ApiError, bad_request


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"Invalid request: body of {size} bytes or more exceeds the limit of {limit} bytes")


async def read_params(request: Request, limit: int) -> tuple[dict, bool]:
    """(parameters, whether they came as JSON). JSON values keep their types (q may be a list);
    form and query values are strings, the first one of a repeated field winning, as in Flask."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise bad_request("Invalid JSON format")
        return data, True
    params = _first(parse_qsl(request.url.query, keep_blank_values=True))
    if kind == "multipart/form-data":
        params.update(_multipart(content_type, body))
    elif body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("Invalid request: the form body is not UTF-8") from None
        params.update(_first(parse_qsl(text, keep_blank_values=True)))
    return params, False


def _first(pairs) -> dict:
    params: dict = {}
    for key, value in pairs:
        params.setdefault(key, value)
    return params


def _multipart(content_type: str, body: bytes) -> dict:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise bad_request("Invalid request: malformed multipart/form-data body")
    fields: dict = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename() is not None:
            continue  # files are not parameters (no /translate_file here)
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            fields.setdefault(name, payload.decode(charset))
        except (LookupError, UnicodeDecodeError):
            raise bad_request(f"Invalid request: field {name!r} is not valid {charset}") from None
    return fields
