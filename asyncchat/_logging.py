"""The `asyncchat` logger, switched on by ASYNCCHAT_LOG (or OPENAI_LOG) = debug | info.

Nothing here ever formats a header: the API key cannot reach a log line.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson

logger = logging.getLogger("asyncchat")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_LOG_FORMAT = "[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s"
_MAX_LOGGED_STRING = 200


def configure_from_environment() -> None:
    """Apply ASYNCCHAT_LOG / OPENAI_LOG once; a handler is added only if none is set up."""
    setting = (os.environ.get("ASYNCCHAT_LOG") or os.environ.get("OPENAI_LOG") or "").lower()
    level = _LEVELS.get(setting)
    if level is None:
        return
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logger.addHandler(handler)


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_LOGGED_STRING:
        return f"{value[:_MAX_LOGGED_STRING]}... ({len(value)} chars)"
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item) for item in value]
    return value


def describe_body(body: dict[str, Any]) -> str:
    """The request options for a debug line, long strings (base64 images) cut short."""
    return orjson.dumps(_shorten(body), default=str).decode()


def describe_request(request: Any) -> str:
    """`describe_body` of a request's JSON body ("" when it has none)."""
    if not request.body:
        return "{}"
    try:
        return describe_body(orjson.loads(request.body))
    except orjson.JSONDecodeError:
        return f"<{len(request.body)} bytes>"
