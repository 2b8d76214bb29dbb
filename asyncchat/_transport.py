"""The aiohttp transport: one session and connection pool per client (one event
loop's at a time), timeouts, redirects, and error mapping.

The only module that imports aiohttp (a test checks): everything above it sees
asyncchat's `Request`, `Response` and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from yarl import URL

from asyncchat._config import Timeout
from asyncchat._http import Request, Response
from asyncchat._multipart import FileUpload
from asyncchat._redact import redact
from asyncchat.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ClientClosedError,
    ConnectError,
    ConnectTimeoutError,
    IncompleteStreamError,
    TLSError,
)

__all__ = ["AiohttpTransport"]

# How long to wait, after `[DONE]`, for the end of the HTTP response so the
# connection can go back to the pool instead of being closed.
_DRAIN_SECONDS = 1.0
_DRAIN_MAX_BYTES = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
# Header names that carry credentials: never sent on to another origin.
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "signature", "credential", "cookie")
_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# asyncio's plain-socket transport reads up to 256 KiB at a time into a new bytes
# object. That is above glibc malloc's 128 KiB mmap threshold, so whenever the heap
# has no free hole that large (any allocation the application keeps, a telemetry
# span for one, can take it) every read maps fresh pages from the kernel, faults
# them in, and unmaps them: three syscalls and a page fault per page, per read.
# Reads of at most 64 KiB always come from the heap; a stream's reads are a few KiB.
_MAX_READ = 64 * 1024
# asyncio may run a timer up to its clock's resolution early: four looks a quarter
# of the timeout apart must still add up to the timeout.
_CLOCK_SLACK = 1e-6


def _is_credential(header: str) -> bool:
    name = header.lower()
    return any(word in name for word in _CREDENTIAL_WORDS)


@functools.lru_cache(maxsize=64)  # one per distinct Timeout, not one per request
def _client_timeout(timeout: Timeout) -> aiohttp.ClientTimeout:
    # `sock_connect`, not `connect`: waiting for a free pooled connection is not
    # connecting, and a fan-out with a full pool must not time out for it.
    return aiohttp.ClientTimeout(
        total=timeout.total, sock_connect=timeout.connect, sock_read=timeout.read
    )


def map_transport_error(exc: BaseException, timeout: Timeout, method: str, url: str) -> APIError:
    """The asyncchat error for an aiohttp or socket failure, credentials redacted."""
    error = _transport_error(exc, timeout, method, url)
    error.message = redact(error.message)  # the URL, and aiohttp's own text quoting one
    error.args = (error.message,)
    return error


def _transport_error(exc: BaseException, timeout: Timeout, method: str, url: str) -> APIError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError(
            f"connecting to {url} took longer than the connect timeout ({timeout.connect}s)"
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return APITimeoutError(
            f"the server sent nothing for {timeout.read}s (the read timeout) on {method} {url}"
        )
    if isinstance(exc, asyncio.TimeoutError):
        return APITimeoutError(
            f"{method} {url} took longer than the total timeout ({timeout.total}s)"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TLSError(_certificate_failure(exc.certificate_error, url))
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return TLSError(_handshake_failure(exc.os_error, url))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"could not connect to {url}: {exc.os_error}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return APIConnectionError(
            f"the server closed the connection before answering {method} {url}"
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return IncompleteStreamError(f"the response to {method} {url} was cut off: {exc}")
    return APIConnectionError(f"{method} {url} failed: {type(exc).__name__}: {exc}")


# OpenSSL's verify codes for a certificate issued to another name.
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


def _certificate_failure(error: Exception, url: str) -> str:
    """What went wrong with the server's certificate, and what the user can do."""
    code = getattr(error, "verify_code", None)
    reason = getattr(error, "verify_message", None) or str(error)
    if code in _NAME_MISMATCH:
        advice = "address the server by a name its certificate names"
    elif code == _EXPIRED:
        advice = "the server must renew it"
    else:
        advice = (
            "if a private CA signed it, trust that CA: verify='/path/to/ca.pem' (--cacert) "
            "or SSL_CERT_FILE; verify=False (--insecure) skips the check, for a "
            "development server only"
        )
    return f"the certificate of {url} failed verification: {reason}; {advice}"


def _handshake_failure(error: OSError, url: str) -> str:
    reason = getattr(error, "reason", None) or str(error)
    if reason == "WRONG_VERSION_NUMBER":  # the answer to the hello was not TLS
        return f"{url} did not answer in TLS: if the server speaks plain HTTP, use http://"
    return f"the TLS handshake with {url} failed: {reason}"


class AiohttpResponse(Response):
    """An aiohttp response as an asyncchat `Response`."""

    def __init__(self, raw: aiohttp.ClientResponse, request_url: str, timeout: Timeout) -> None:
        super().__init__(raw.status, raw.headers, url=request_url, reason=raw.reason)
        self._raw = raw
        self._content = raw.content
        self._timeout = timeout
        self._read_timeout: _BodyReadTimeout | None = None  # a stream's, once it reads

    async def receive(self) -> bytes:
        try:
            return await self._content.readany()
        except _ERRORS as exc:
            self._raw.close()
            raise self.map_error(exc) from exc

    def receiver(self) -> tuple[Callable[[], Awaitable[bytes]], tuple[type[BaseException], ...]]:
        # aiohttp's own read, without the wrapper frame of `receive`: the stream
        # loop calls it once per chunk and maps the errors itself.
        if self._read_timeout is None:
            self._read_timeout = _BodyReadTimeout.take_over(self._raw, self._timeout.read)
        return self._content.readany, _ERRORS

    def map_error(self, error: BaseException) -> APIError:
        return map_transport_error(error, self._timeout, self._raw.method, self.url)

    async def finish(self) -> None:
        """Read to the end of the HTTP body, then pool the connection.

        A connection whose body was not read to the end cannot be reused, so a few
        trailing bytes (the chunked-encoding terminator) are worth a short wait; a
        server that keeps talking after `[DONE]` gets its connection closed, and so
        does a cancellation of this wait.
        """
        self._stop_read_timeout()
        content = self._content
        try:
            if not content.at_eof():
                with contextlib.suppress(*_ERRORS):
                    await asyncio.wait_for(_drain(content), _DRAIN_SECONDS)
        except BaseException:
            self._raw.close()
            raise
        if content.at_eof():
            self._raw.release()
        else:
            self._raw.close()

    def release(self) -> None:
        self._stop_read_timeout()
        self._raw.release()

    def close(self) -> None:
        self._stop_read_timeout()
        self._raw.close()

    def _stop_read_timeout(self) -> None:
        if self._read_timeout is not None:
            self._read_timeout.stop()
            self._read_timeout = None


class _BodyReadTimeout:
    """A streamed body's read timeout, looked at a few times per period rather than
    re-armed on every read.

    aiohttp's `sock_read` cancels its timer and schedules a new one on every socket
    read; asyncio's timer heap is Python, so on a token-by-token stream that cost
    about 20k instructions a chunk, a fifth of the chunk's whole cost. Here one timer
    fires every quarter of the timeout: the body times out once its reader has been
    waiting, with no byte arriving, since a look at least `read` seconds ago. So a
    stall ends the stream between `read` and 1.25x `read` into the wait, and silence
    while the reader is busy elsewhere (the bytes wait in the buffer) does not count.
    """

    __slots__ = ("_content", "_handle", "_loop", "_period", "_read", "_seen", "_waiting_since")

    def __init__(self, content: aiohttp.StreamReader, read: float) -> None:
        self._content = content
        self._read = read
        self._period = read / 4
        self._loop = asyncio.get_running_loop()
        self._seen = content.total_bytes
        self._waiting_since: float | None = None  # when a look first saw this wait
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._period, self._look)

    @classmethod
    def take_over(cls, raw: aiohttp.ClientResponse, read: float | None) -> _BodyReadTimeout | None:
        """Turn off aiohttp's per-read timer for the rest of `raw`'s body and time it
        here; None when there is nothing to time (no read timeout, the body is all in)."""
        connection = raw.connection
        protocol = connection.protocol if connection is not None else None
        if read is None or protocol is None or raw.content.is_eof():
            return None
        # The protocol serves one response at a time; the next request on this
        # connection sets its read timeout again.
        protocol.read_timeout = None
        protocol.start_timeout()  # with no timeout: cancels the timer the headers armed
        return cls(raw.content, read)

    def _look(self) -> None:
        content = self._content
        if content.is_eof() or content.exception() is not None:
            self._handle = None  # the body is over
            return
        now = self._loop.time()
        total = content.total_bytes
        # aiohttp's reader holds a waiter only while a read waits on an empty buffer.
        if content._waiter is None:
            self._waiting_since = None
        elif total != self._seen or self._waiting_since is None:
            self._waiting_since = now  # a new wait: it began within the last period
        elif now - self._waiting_since >= self._read - _CLOCK_SLACK:
            self._handle = None
            content.set_exception(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
            return
        self._seen = total
        self._handle = self._loop.call_later(self._period, self._look)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _cap_reads(raw: aiohttp.ClientResponse) -> None:
    """Read the rest of this connection's responses in pieces of at most `_MAX_READ`
    bytes: asyncio's plain-socket transport. uvloop reads into one reused buffer,
    and TLS connections measured clean without a cap (the README's Performance)."""
    connection = raw.connection
    transport = connection.transport if connection is not None else None
    if getattr(transport, "max_size", 0) > _MAX_READ:
        transport.max_size = _MAX_READ  # type: ignore[union-attr]


async def _drain(content: aiohttp.StreamReader) -> None:
    received = 0
    while received <= _DRAIN_MAX_BYTES:
        data = await content.readany()
        if not data:
            return
        received += len(data)


async def _upload_pieces(upload: FileUpload) -> AsyncIterator[bytes]:
    # Read in the loop's thread: a megabyte from a local file takes well under a
    # millisecond, less than handing it to a worker thread would.
    for piece in upload.pieces():
        yield piece


async def _close_at_loop_shutdown(connector: aiohttp.BaseConnector) -> AsyncGenerator[None, None]:
    """Closes the pool when its event loop finalizes its async generators.

    `asyncio.run` (as `asyncio.Runner` and `uvloop.run`) does that before it closes
    the loop: the last moment the pool's sockets can be closed in their own loop, and
    the one hook (PEP 525's `shutdown_asyncgens`) a library gets there. So a client
    still open when `asyncio.run` returns leaves no socket behind, and serves the
    next loop with a new pool.
    """
    try:
        yield
    finally:
        connector._close()  # synchronous, so the transport can end it outside the loop


def _run_to_end(step: Coroutine[Any, Any, None]) -> None:
    """Run a step of `_close_at_loop_shutdown` here and now: it never awaits anything."""
    try:
        step.send(None)
    except StopIteration:
        return
    raise AssertionError("a step of the pool's closer awaited")


class AiohttpTransport:
    """The default transport: an aiohttp session and connection pool, created
    lazily inside the running loop and used from that loop only; once that loop
    is over (closed, or its async generators finalized), the next loop gets a new
    pool."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        proxy: str | None = None,
        ssl: ssl.SSLContext | bool = True,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self.proxy = proxy
        self.ssl = ssl  # True: aiohttp's default context; False: no verification
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._closed = False

    def connections(self) -> tuple[int, int]:
        """(idle, in use): the connections the pool holds now."""
        connector = self._session.connector if self._session is not None else None
        if not isinstance(connector, aiohttp.TCPConnector):
            return 0, 0
        idle = sum(len(pooled) for pooled in connector._conns.values())
        return idle, len(connector._acquired)

    @property
    def closed(self) -> bool:
        """True once the pool is closed (every socket with it)."""
        return self._closed and (self._session is None or self._session.closed)

    def _session_for_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and loop is self._loop and not session.closed:
            return session
        if self._closed:
            raise ClientClosedError("this asyncchat.Client is closed; create a new one")
        if session is not None and not session.closed and self._loop is not loop:
            assert self._loop is not None
            if not self._loop.is_closed():
                raise ClientClosedError(
                    "this asyncchat.Client is in use in another event loop, which is still "
                    "open; create one client per event loop"
                )
        # First use, or the loop the pool served is over (asyncio.run returned): a new pool.
        self._drop_pool()
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, ttl_dns_cache=300, ssl=self.ssl
        )
        self._session = aiohttp.ClientSession(connector=connector)
        self._loop = loop
        self._closer = _close_at_loop_shutdown(connector)
        _run_to_end(self._closer.asend(None))  # its first step registers it with the loop
        return self._session

    async def send(self, request: Request, timeout: Timeout) -> AiohttpResponse:
        """Send the request and return once the response headers are in.

        Redirects are followed here rather than by aiohttp, which drops only
        `Authorization` when one leads to another origin: a key sent as `api-key`
        (Azure), `x-api-key` or `x-goog-api-key` would reach the other host.
        """
        session = self._session_for_this_loop()
        client_timeout = _client_timeout(timeout)
        method, query, headers = request.method, request.params, request.headers
        target: str | URL = request.url
        data: Any = request.body
        upload = data if isinstance(data, FileUpload) else None
        if upload is not None:
            headers = {**headers, "Content-Length": str(upload.length)}
        origin: URL | None = None  # parsed only when a redirect comes
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                if upload is not None and data is not None:  # again from its start
                    data = _upload_pieces(upload)
                raw = await session.request(
                    method,
                    target,
                    data=data,
                    headers=headers,
                    params=query,
                    timeout=client_timeout,
                    proxy=self.proxy,
                    allow_redirects=False,
                )
                location = raw.headers.get("Location")
                if raw.status not in _REDIRECT_STATUSES or not location:
                    _cap_reads(raw)
                    return AiohttpResponse(raw, request.url, timeout)
                raw.release()
                target, query = raw.url.join(URL(location)), None
                if raw.status == 303 or (raw.status in (301, 302) and method == "POST"):
                    method, data = "GET", None  # as browsers and curl do
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                if origin is None:
                    origin = URL(request.url).origin()
                if target.origin() != origin:
                    headers = {k: v for k, v in headers.items() if not _is_credential(k)}
        except _ERRORS as exc:
            raise map_transport_error(exc, timeout, request.method, request.url) from exc
        raise APIError(  # not a connection failure: retrying would loop again
            redact(
                f"{request.method} {request.url} was redirected more than {_MAX_REDIRECTS} times"
            )
        )

    def close_abandoned(self) -> bool:
        """Close the pool without a loop (the client is being collected); True if it was open."""
        self._closed = True
        return self._drop_pool()

    def _drop_pool(self) -> bool:
        """Close the pool now, without awaiting; True if it was open."""
        session, self._session = self._session, None
        closer, self._closer = self._closer, None
        was_open = session is not None and not session.closed
        if closer is not None:
            _run_to_end(closer.aclose())  # closes every pooled socket now
        return was_open

    async def close(self) -> None:
        self._closed = True
        session, closer = self._session, self._closer
        self._session = self._closer = None
        if session is not None:
            await session.close()
        if closer is not None:
            _run_to_end(closer.aclose())  # the pool is closed: it has nothing left to do
