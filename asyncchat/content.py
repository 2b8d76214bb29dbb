"""Builders for multi-part message content: text and images."""

from __future__ import annotations

import base64
import os
from typing import Any

__all__ = ["image_part", "text_part"]

_DETAILS = frozenset({"auto", "low", "high"})


def text_part(text: str) -> dict[str, Any]:
    """A text content part: `{"type": "text", "text": ...}`."""
    if not isinstance(text, str):
        raise TypeError(f"text_part expects a str, got {type(text).__name__}")
    return {"type": "text", "text": text}


def image_mime_type(data: bytes) -> str:
    """The MIME type of an image, read from its first bytes (not its file name)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError(
        f"not a PNG, JPEG, GIF or WebP image (it starts with {data[:12]!r}); "
        "these are the formats chat-completions APIs accept"
    )


def image_part(source: str | bytes | os.PathLike[str], detail: str | None = None) -> dict[str, Any]:
    """An `image_url` content part for a user message.

    `source` is an http(s) or `data:` URL (passed as is), a file path, or the
    image's bytes; files and bytes become a base64 `data:` URL whose MIME type
    comes from the image's own bytes. `detail` is "auto", "low" or "high".
    """
    if detail is not None and detail not in _DETAILS:
        raise ValueError(f"detail must be one of 'auto', 'low', 'high' or None, got {detail!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        url = _data_url(bytes(source))
    elif isinstance(source, str) and source.startswith(("http://", "https://", "data:")):
        url = source
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise ValueError(f"cannot read image file {path!r}: {exc.strerror}") from exc
        try:
            url = _data_url(data)
        except ValueError as exc:
            raise ValueError(f"{path!r} is {exc}") from None
    else:
        raise TypeError(
            f"image_part expects a URL, a file path or bytes, got {type(source).__name__}"
        )
    image_url: dict[str, Any] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def _data_url(data: bytes) -> str:
    mime = image_mime_type(data)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
