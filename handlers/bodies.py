"""Reading request bodies: content type, JSON syntax, then the OpenAPI schema."""

from __future__ import annotations

import io
import json
from typing import IO, Any

from flask import Request, current_app

from .errors import InvalidInput, UnsupportedContentType, UploadTooLarge
from .openapi import validate


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepted, they would break canonical recipe hashing.
    raise ValueError(f"{name} is not valid JSON")


class SpoolingRequest(Request):
    """Uploaded files over 500 KB are spooled to the store's own disk (``ObjectStore.spool``),
    not the system temp folder: one filesystem to watch, and a full one is the store's 503."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        if total_content_length is not None and total_content_length <= 500 * 1024:
            return io.BytesIO()
        return current_app.extensions["stl"].store.spool()


class LimitedReader:
    """A file's stream that refuses to yield more than ``limit`` bytes (UploadTooLarge)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise UploadTooLarge("the file is larger than the limit (MAX_DOWNLOAD_BYTES)")
        return data


def content_type(request: Request) -> str:
    return (request.mimetype or "").lower()


def read_body(request: Request) -> bytes:
    """The whole body, refusing one over MAX_CONTENT_LENGTH, chunked bodies included.

    With a Content-Length, Werkzeug refuses an oversized body itself. A chunked
    body has none, and Werkzeug then hands over nothing (or a cut stream), so it
    is read here, one byte past the limit at most.
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return request.get_data(cache=True)
    stream = request.environ["wsgi.input"]
    parts, size = [], 0
    while size <= limit:
        part = stream.read(min(65536, limit + 1 - size))
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    raise UploadTooLarge("request body is larger than the limit (MAX_DOWNLOAD_BYTES)")


def json_body(request: Request, schema_name: str) -> dict[str, Any]:
    """The body as a dict that matches ``schema_name``, or InvalidInput/UnsupportedContentType."""
    if content_type(request) != "application/json":
        raise UnsupportedContentType(
            f"expected Content-Type application/json, got {request.mimetype or 'none'}"
        )
    raw = read_body(request)
    if not raw.strip():
        raise InvalidInput("request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8, no guessing
    except UnicodeDecodeError:
        raise InvalidInput("malformed JSON: the body is not UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"malformed JSON: {e}") from None
    _refuse_lone_surrogates(body, "")
    validate(body, schema_name)
    return body


def _refuse_lone_surrogates(value: Any, where: str) -> None:
    """JSON's ``\\ud800`` escapes decode to half a character, which no URL, path or label can be
    (and which UTF-8 cannot encode, deep inside whatever meets it first): a 400 naming the field."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{where or 'request body'} is not valid Unicode text (a lone surrogate escape)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key, where or "request body")
            _refuse_lone_surrogates(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{where}[{i}]")
