"""A whole (not streamed) answer's body: its JSON object, or the error it is."""

from __future__ import annotations

from typing import Any

import orjson

from asyncchat.errors import APIError, status_error, stream_error_status
from asyncchat.quirks import is_error_body

__all__ = ["decode_object"]


def decode_object(content: bytes, status: int, url: str, method: str = "POST") -> dict[str, Any]:
    """A successful response's JSON object; an error for anything else, an error
    object sent with a 2xx status (some servers do) included."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = _json_before_done(content)
        if data is None:
            preview = content[:200].decode("utf-8", "replace")
            raise APIError(
                f"{method} {url} answered {status} with a body that is not JSON: {preview!r}"
            ) from None
    if not isinstance(data, dict):
        raise APIError(f"{method} {url} answered {status} with JSON that is not an object")
    if is_error_body(data):
        raise status_error(stream_error_status(data), data, url=url, method=method)
    return data


def _json_before_done(content: bytes) -> Any:
    """The JSON of a body that has an event stream's `data: [DONE]` after it (routers
    that frame a whole answer as a stream's end); None for any other body."""
    head = content.rstrip()
    if not head.endswith(b"[DONE]"):
        return None
    head = head[: -len(b"[DONE]")].rstrip()
    if not head.endswith(b"data:"):
        return None
    try:
        return orjson.loads(head[: -len(b"data:")])
    except orjson.JSONDecodeError:
        return None
