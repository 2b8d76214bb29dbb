"""asyncchat's own HTTP types: the request a transport sends and the response it returns.

The client and the streams speak only these. A transport turns them into real
traffic: `AiohttpTransport` (the default, the only module that imports aiohttp),
`asyncchat.testing.MockTransport` (in-process, no socket), or one of your own:

    class MyTransport:
        async def send(self, request: Request, timeout: Timeout) -> Response: ...
        async def close(self) -> None: ...

A transport raises only asyncchat errors (`APIConnectionError`, `APITimeoutError`,
`IncompleteStreamError`, ...), from `send` and from a response's `receive`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from asyncchat._headers import Headers
from asyncchat.errors import APIError

if TYPE_CHECKING:
    from asyncchat._config import Timeout
    from asyncchat._multipart import FileUpload

__all__ = ["Headers", "Request", "Response", "Transport"]


@dataclass(slots=True)  # not frozen: a frozen dataclass pays a call per field to build
class Request:
    """What the client sends: `url` without its query, which is `params`. Built once
    for all the attempts of a request; a transport reads it and leaves it alone."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # JSON bytes, or a form with a file (`files.create`) that a transport sends
    # piece by piece: `body.pieces()`, `body.length` bytes in all.
    body: bytes | FileUpload | None = None
    params: Mapping[str, str] | None = None

    def json(self) -> Any:
        """The body decoded (None when there is none, or it is a file upload)."""
        return orjson.loads(self.body) if isinstance(self.body, bytes) and self.body else None

    def __repr__(self) -> str:  # headers left out: they carry the key
        return f"Request({self.method} {self.url})"


class Response:
    """A response whose status and headers are in; the body follows.

    Read it whole with `read()`, or piece by piece with `receive()` (b"" at its
    end). Then `release()` gives the connection back for reuse (only when the
    body was read to its end), `close()` drops it; `finish()` does the right one
    after the last event of a stream. Subclasses implement `receive`, `release`
    and `close`.
    """

    status: int
    reason: str | None
    headers: Mapping[str, str]
    url: str

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        url: str = "",
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.url = url
        self.reason = reason

    async def receive(self) -> bytes:
        """The next bytes of the body; b"" once it ended."""
        raise NotImplementedError

    def receiver(self) -> tuple[Callable[[], Awaitable[bytes]], tuple[type[BaseException], ...]]:
        """`receive`, or a faster read function plus the exceptions it may raise
        (which `map_error` turns into asyncchat errors): the stream loop calls it
        once per chunk, and a transport can spare it a wrapper call there."""
        return self.receive, ()

    def map_error(self, error: BaseException) -> APIError:
        """The asyncchat error for an exception of `receiver()`'s list."""
        raise error

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, and the connection released; with `limit`, at most that
        many bytes are read and the connection is closed if more were coming."""
        body = bytearray()
        try:
            while limit is None or len(body) <= limit:
                received = await self.receive()
                if not received:
                    self.release()
                    return bytes(body)
                body += received
        except BaseException:
            self.close()
            raise
        self.close()  # the rest was not read: the connection cannot be reused
        return bytes(body[:limit])

    async def finish(self) -> None:
        """After a stream's last event: release if the body is complete, else close."""
        self.release()

    def release(self) -> None:
        """The body was read to its end: the connection may serve another request."""

    def close(self) -> None:
        """Drop the connection (a body not read to its end)."""


@runtime_checkable
class Transport(Protocol):
    """Sends requests: `Client(transport=...)` takes any object with these methods."""

    async def send(self, request: Request, timeout: Timeout) -> Response: ...

    async def close(self) -> None: ...
