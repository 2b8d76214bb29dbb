"""The endpoints beside chat: `client.models`, `client.embeddings`, and the
provider Batch API's `client.files` and `client.batches`.

Each sends through `Client._request`, the one pipeline that owns retries,
errors, logging and redaction, so a new endpoint is a few lines here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from asyncchat._config import Timeout
from asyncchat._http import Response
from asyncchat._multipart import FileSource, FileUpload
from asyncchat.errors import APIError
from asyncchat.types import (
    Batch,
    BatchList,
    CreateEmbeddingResponse,
    FileDeleted,
    FileList,
    FileObject,
    ModelList,
)

if TYPE_CHECKING:
    from asyncchat.client import Client

__all__ = ["Batches", "Embeddings", "FileContent", "Files", "Models"]


def _segment(name: str, value: str) -> str:
    """An id as one URL path segment: an id with `/` or `..` cannot reach another path."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    if value in (".", ".."):  # URLs drop these segments, however they are quoted
        raise ValueError(f"{name} {value!r} is not an id")
    return urllib.parse.quote(value, safe="")


def _query(extra_query: Mapping[str, Any] | None, **params: Any) -> dict[str, Any] | None:
    query = {key: str(value) for key, value in params.items() if value is not None}
    query.update(extra_query or {})
    return query or None


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


class Files:
    """`client.files`: upload batch input files, download their results."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def create(
        self,
        *,
        file: FileSource,
        purpose: str,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, str] | None = None,
    ) -> FileObject:
        """`POST /files` (multipart): `file` is a path, bytes, an open binary file, or
        a `(filename, any of those)` pair; a file on disk is streamed, not read into
        memory. `purpose="batch"` for a Batch API input."""
        if not isinstance(purpose, str) or not purpose:
            raise TypeError(f"purpose must be a non-empty string, got {purpose!r}")
        upload = FileUpload(file, {"purpose": purpose, **(extra_body or {})})
        return await self._client._json(
            FileObject, "POST", "/files", upload, timeout, extra_headers, extra_query
        )

    async def retrieve(
        self,
        file_id: str,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> FileObject:
        path = f"/files/{_segment('file_id', file_id)}"
        return await self._client._json(
            FileObject, "GET", path, None, timeout, extra_headers, extra_query
        )

    async def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> FileList:
        query = _query(extra_query, purpose=purpose, limit=limit, after=after)
        return await self._client._json(
            FileList, "GET", "/files", None, timeout, extra_headers, query
        )

    async def delete(
        self,
        file_id: str,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> FileDeleted:
        path = f"/files/{_segment('file_id', file_id)}"
        return await self._client._json(
            FileDeleted, "DELETE", path, None, timeout, extra_headers, extra_query
        )

    async def content(
        self,
        file_id: str,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> FileContent:
        """`GET /files/{id}/content`, returned once the headers are in: the body is
        read by `write_to_file(path)` (streamed to disk), `iter_bytes()` or `read()`.
        Use it as `async with await client.files.content(id) as content:`, or
        call one of those, which release the connection when they end."""
        path = f"/files/{_segment('file_id', file_id)}/content"
        headers = {"Accept": "*/*", **(extra_headers or {})}
        sent = await self._client._request(
            "GET",
            path,
            None,
            stream=True,
            timeout=timeout,
            extra_headers=headers,
            extra_query=extra_query,
        )
        return FileContent(sent.response, sent.request_id)


class FileContent:
    """A file's bytes, still on the wire: read them once, one of three ways."""

    def __init__(self, response: Response, request_id: str | None) -> None:
        self.response = response
        self.request_id = request_id
        self.headers = response.headers
        self._open = True

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body piece by piece, as it arrives; the connection is released at its end."""
        if not self._open:
            raise APIError("this file's content was already read, or closed: ask for it again")
        try:
            while piece := await self.response.receive():
                yield piece
            self._open = False
            self.response.release()
        finally:
            self.close()

    async def read(self) -> bytes:
        """The whole body in memory (for small files)."""
        return b"".join([piece async for piece in self.iter_bytes()])

    async def write_to_file(self, path: str | os.PathLike[str]) -> int:
        """Stream the body into `path`; the number of bytes written.

        The bytes go to a temporary file beside `path` that replaces it only once
        the whole body is in: a download cut short never leaves half a file there.
        """
        target = Path(path)
        # Opened as `open` makes any file (the umask's permissions, not mkstemp's 0600),
        # under a name no one else has.
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        written = 0
        try:
            with open(temporary, "xb") as file:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))  # as it was
                async for piece in self.iter_bytes():
                    file.write(piece)
                    written += len(piece)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return written

    def close(self) -> None:
        """Drop the connection if the body was not read to its end."""
        if self._open:
            self._open = False
            self.response.close()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self.close()

    async def __aenter__(self) -> FileContent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Batches:
    """`client.batches`: jobs the provider runs from an uploaded file, at its batch price.

    `asyncchat batch --via batch-api` (and `asyncchat.batchapi.run_batch_api`) do
    the whole round trip; these are the calls it is made of.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    async def create(
        self,
        *,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        completion_window: str | None = "24h",
        metadata: Mapping[str, str] | None = None,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_retries: int | None = None,
    ) -> Batch:
        """`POST /batches`. GLM takes `endpoint="/v4/chat/completions"` and no
        completion window (pass None).

        A create is not idempotent: a retry after a connection lost mid-answer can
        start a second, paid, batch. `max_retries=0` leaves that to the caller,
        who can look for a batch of the same `input_file_id` first."""
        body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint}
        if completion_window is not None:
            body["completion_window"] = completion_window
        if metadata:
            body["metadata"] = dict(metadata)
        body.update(extra_body or {})
        return await self._client._json(
            Batch, "POST", "/batches", body, timeout, extra_headers, extra_query, max_retries
        )

    async def retrieve(
        self,
        batch_id: str,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> Batch:
        path = f"/batches/{_segment('batch_id', batch_id)}"
        return await self._client._json(
            Batch, "GET", path, None, timeout, extra_headers, extra_query
        )

    async def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> BatchList:
        """One page of batches, newest first; pass `after=page.last_id` for the next."""
        query = _query(extra_query, after=after, limit=limit)
        return await self._client._json(
            BatchList, "GET", "/batches", None, timeout, extra_headers, query
        )

    async def cancel(
        self,
        batch_id: str,
        *,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> Batch:
        """`POST /batches/{id}/cancel`: the batch goes cancelling, then cancelled; what
        finished before stays in its output file."""
        path = f"/batches/{_segment('batch_id', batch_id)}/cancel"
        return await self._client._json(
            Batch, "POST", path, None, timeout, extra_headers, extra_query
        )
