"""The endpoints beside chat: `client.models` and `client.embeddings`.

Each sends through `Client._request`, the one pipeline that owns retries,
errors, logging and redaction, so a new endpoint is a few lines here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asyncchat._config import Timeout
from asyncchat.types import CreateEmbeddingResponse, ModelList

if TYPE_CHECKING:
    from asyncchat.client import Client

__all__ = ["Embeddings", "Models"]


class Models:
    """`client.models`: what the server offers."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list(
        self,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> ModelList:
        """`GET /models`: `.data[i].id` are the model names to pass as `model=`."""
        return await self._client._json(
            ModelList, "GET", "/models", None, timeout, extra_headers, extra_query
        )


class Embeddings:
    """`client.embeddings`: vectors for texts."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        input: str | list[str] | list[int] | list[list[int]],
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> CreateEmbeddingResponse:
        """`POST /embeddings`, with the official SDK's arguments (`encoding_format`,
        `dimensions`, `user`, ...). `.data[i].embedding` is a list of floats, also
        when `encoding_format="base64"` made the answer smaller on the wire."""
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty string, got {model!r}")
        if not input:
            raise ValueError("input must not be empty")
        body: dict[str, Any] = {"model": model, "input": input, **params}
        if extra_body:
            body.update(extra_body)
        return await self._client._json(
            CreateEmbeddingResponse,
            "POST",
            "/embeddings",
            body,
            timeout,
            extra_headers,
            extra_query,
        )
