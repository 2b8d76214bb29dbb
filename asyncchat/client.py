"""`asyncchat.Client`: the connection pool, request building, and the retry loop
every endpoint sends through (`client.chat` is in `_chat.py`, the others in
`_endpoints.py`)."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import sys
import time
import urllib.parse
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, TypeVar

import orjson

from asyncchat._chat import Chat
from asyncchat._config import (
    DEFAULT_TIMEOUT,
    Secret,
    Timeout,
    is_loopback,
    proxy_from_environment,
    resolve_api_key,
    resolve_base_url,
)
from asyncchat._decode import decode_object
from asyncchat._endpoints import Batches, Embeddings, Files, Models
from asyncchat._fanout import Pacer
from asyncchat._http import Request, Response, Transport
from asyncchat._logging import configure_from_environment, logger
from asyncchat._multipart import FileUpload
from asyncchat._observe import LoggingObserver, RequestObserver, stream_line
from asyncchat._redact import redact
from asyncchat._retry import requested_pause, retry_delay, slows_the_pace
from asyncchat._stream import ChatCompletionStream
from asyncchat._timing import StreamTiming
from asyncchat._tls import CertTypes, VerifyTypes, tls_context
from asyncchat._transport import AiohttpTransport
from asyncchat._version import __version__
from asyncchat.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ConfigurationError,
    ResponseTooLargeError,
    TLSError,
    status_error,
)
from asyncchat.sse import DEFAULT_MAX_EVENT_SIZE
from asyncchat.types import APIObject

if TYPE_CHECKING:  # imported only when telemetry is on: it needs opentelemetry
    from asyncchat._telemetry import Operation, Telemetry

__all__ = ["Client"]

T = TypeVar("T")

_MAX_ERROR_BODY = 1 << 20  # bytes of an error response read for its message
# The largest answer read whole, beyond any a provider sends: the largest, OpenAI's
# embeddings of 2,048 inputs of 3,072 dimensions as JSON floats, is about 140 MB. A
# body without end (a misconfigured proxy) stops here, not at the machine's memory.
DEFAULT_MAX_RESPONSE_SIZE = 256 << 20


def _json_default(value: Any) -> Any:
    """Let response objects (a message from a previous turn) go back into a request."""
    if isinstance(value, APIObject):
        return value._data
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode_body(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, default=_json_default)
    except TypeError as exc:
        raise TypeError(f"the request cannot be encoded as JSON: {exc}") from None


_warned_unencrypted: set[str] = set()


def _warn_if_unencrypted(base_url: str) -> None:
    """Plain http:// to anything but this machine sends the key in the clear: say so once."""
    if (
        urllib.parse.urlsplit(base_url).scheme != "http"
        or is_loopback(base_url)
        or base_url in _warned_unencrypted
    ):
        return
    _warned_unencrypted.add(base_url)
    warnings.warn(
        f"asyncchat: base_url {base_url} is plain http:// to another machine: the API key "
        "and every message travel unencrypted; use https:// unless this network is trusted",
        UserWarning,
        stacklevel=3,
    )


class _Unchanged(enum.Enum):
    """The default of a `with_options` argument that None cannot stand for."""

    UNCHANGED = enum.auto()


_UNCHANGED = _Unchanged.UNCHANGED


def _at_least(least: int, name: str, value: int) -> int:
    if value < least:
        wanted = "positive" if least == 1 else f"{least} or more"
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return value


class Client:
    """An OpenAI-compatible chat-completions client with one connection pool.

    Use it as `async with asyncchat.Client(...) as client:`, or call
    `await client.close()`. The pool is created on the first request, inside
    the running event loop, and shared by every request of this client.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        max_connections: int = 100,
        default_headers: Mapping[str, str] | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observers: Iterable[RequestObserver] = (),
        telemetry: bool | None = None,
        verify: VerifyTypes = True,
        cert: CertTypes | None = None,
    ) -> None:
        configure_from_environment()
        self.base_url, self.default_query = resolve_base_url(base_url)
        self._api_key = resolve_api_key(api_key, self.base_url)
        self.timeout = Timeout.coerce(timeout)
        self.max_retries = _at_least(0, "max_retries", max_retries)
        self.max_event_size = _at_least(1, "max_event_size", max_event_size)
        self.max_response_size = _at_least(1, "max_response_size", max_response_size)
        self.max_connections = max_connections
        if transport is not None and (verify is not True or cert is not None):
            raise ConfigurationError(
                "verify= and cert= set up the default transport; give your transport= "
                "its TLS settings instead"
            )
        # HTTP(S)_PROXY and NO_PROXY are honoured, as corporate networks need.
        self._transport: Transport = transport or AiohttpTransport(
            max_connections=max_connections,
            proxy=proxy_from_environment(self.base_url),
            ssl=tls_context(verify, cert),
        )
        self._owns_transport = True  # False for a `with_options` client
        self._headers: dict[str, str] = {
            "Content-Type": "application/json",
            "User-Agent": f"asyncchat/{__version__}",
            **(default_headers or {}),
        }
        if self._api_key is not None:  # None only for a server on this machine
            self._headers["Authorization"] = Secret(f"Bearer {self._api_key}")
        # Every wait (retry backoff, rate-limit pacing) goes through these: a test
        # passes a fake clock and sleep to run them without waiting.
        self._sleep = sleep
        self._clock = clock
        self._observers: list[RequestObserver] = [LoggingObserver(), *observers]
        # None until the application imports opentelemetry (to set up its providers):
        # asyncchat does not import it first, nor pay for it on every request.
        self._telemetry_enabled = telemetry
        self._telemetry = _load_telemetry(telemetry) if telemetry else None
        self._rng = random.Random()
        self._open_streams: weakref.WeakSet[ChatCompletionStream] = weakref.WeakSet()
        self._bind_endpoints()
        _warn_if_unencrypted(self.base_url)

    def _bind_endpoints(self) -> None:
        self.chat = Chat(self)
        self.models = Models(self)
        self.embeddings = Embeddings(self)
        self.files = Files(self)
        self.batches = Batches(self)

    def with_options(
        self,
        *,
        api_key: str | None = None,
        timeout: float | Timeout | _Unchanged | None = _UNCHANGED,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_event_size: int | None = None,
        max_response_size: int | None = None,
    ) -> Client:
        """This client with the options given changed, as the official SDK's
        `with_options`: `client.with_options(max_retries=0).chat.completions.create(...)`.

        The new client sends to the same server over the same connection pool;
        `default_headers` are added to this client's. It owns neither: closing it,
        or letting it go, leaves the pool open, and closing this client closes it
        under both. (Another server, another client: `base_url` is not an option.)
        """
        derived = object.__new__(type(self))
        derived.__dict__.update(self.__dict__)  # the pool, telemetry, observers, open streams
        derived._owns_transport = False
        derived._headers = {**self._headers, **(default_headers or {})}
        if api_key is not None:
            derived._api_key = resolve_api_key(api_key, self.base_url)
            derived._headers["Authorization"] = Secret(f"Bearer {derived._api_key}")
        if not isinstance(timeout, _Unchanged):
            derived.timeout = Timeout.coerce(timeout)
        if max_retries is not None:
            derived.max_retries = _at_least(0, "max_retries", max_retries)
        if max_event_size is not None:
            derived.max_event_size = _at_least(1, "max_event_size", max_event_size)
        if max_response_size is not None:
            derived.max_response_size = _at_least(1, "max_response_size", max_response_size)
        derived._bind_endpoints()
        return derived

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "an asyncchat.Client cannot be pickled or copied: its connections belong to this "
            "process; create a Client in each process that needs one (and with_options() "
            "for a variant of this one)"
        )

    @property
    def transport(self) -> Transport:
        """What sends the requests: an `AiohttpTransport` unless `transport=` chose another."""
        return self._transport

    def __repr__(self) -> str:
        return (
            f"asyncchat.Client(base_url={self.base_url!r}, max_retries={self.max_retries}, "
            f"max_connections={self.max_connections}, timeout={self.timeout!r})"
        )

    async def close(self) -> None:
        """Close every pooled connection; the client cannot be used afterwards.

        Streams still open end with `ClientClosedError` (keeping what they received).
        A `with_options` client has no pool of its own to close: this does nothing.
        """
        if not self._owns_transport:
            return
        for stream in list(self._open_streams):
            stream._end_because_client_closed()
        await self._transport.close()

    def __del__(self) -> None:
        if not getattr(self, "_owns_transport", False):
            return  # a with_options client, or one whose __init__ failed before its pool
        close_abandoned = getattr(self._transport, "close_abandoned", None)
        if close_abandoned is not None and close_abandoned():
            warnings.warn(
                f"unclosed {self!r}: use 'async with asyncchat.Client(...)' or "
                "'await client.close()'; its connections were closed now",
                ResourceWarning,
                stacklevel=2,
            )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | FileUpload | None,
        *,
        stream: bool,
        timeout: float | Timeout | None,
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, Any] | None,
        pacer: Pacer | None = None,
        tokens: int = 0,
        max_retries: int | None = None,
    ) -> _Sent:
        """Send with retries; the response and, unless streaming, its body.

        The one pipeline every endpoint goes through. Options are resolved once;
        observers (logging, and whatever `observers=` added) see every attempt.
        Retries cover connection errors, timeouts and retryable statuses, and end
        when a response is handed over: a stream is never retried once its body
        has started, so no token is ever delivered twice. In a fan-out, `pacer`
        holds every attempt to the shared rate limit (`tokens` is the estimate),
        and a 429 that names a pause (`Retry-After`, or one in its body: Gemini's,
        OpenRouter's) pauses the whole fan-out, not this request only.
        """
        request = self._prepare(method, path, body, stream, extra_headers, extra_query)
        retries = self.max_retries if max_retries is None else max_retries
        effective_timeout = self.timeout if timeout is None else Timeout.coerce(timeout)
        shown = redact(request.url)  # what messages quote
        telemetry = self._active_telemetry()
        operation = (
            None
            if telemetry is None or isinstance(body, FileUpload)
            else telemetry.start(request, body)
        )
        issued = time.perf_counter()
        observers = self._observers
        if operation is not None:
            # Its span is current while it is sent: an HTTP span begun under it (by
            # aiohttp's instrumentation, say) is then its child, one per attempt.
            operation.attach()
        try:  # a failure, or a cancellation, ends the request's span
            attempt = 0
            while True:
                if pacer is not None:
                    await pacer.wait_turn(tokens)
                for observer in observers:
                    observer.request_started(request, attempt)
                started = time.monotonic()
                error: APIError
                try:
                    response = await self._transport.send(request, effective_timeout)
                    if pacer is not None:
                        pacer.observe(response.headers)
                    if 200 <= response.status < 300:
                        cap = self.max_response_size
                        # One byte past the cap read tells a body over it from one at it.
                        content = None if stream else await response.read(limit=cap + 1)
                        if content is None or len(content) <= cap:
                            seconds = time.monotonic() - started
                            for observer in observers:
                                observer.request_succeeded(request, response, seconds)
                            request_id = response.headers.get("x-request-id")
                            return _Sent(
                                response,
                                content,
                                effective_timeout,
                                shown,
                                request_id,
                                request,
                                operation,
                                issued,
                            )
                        error = ResponseTooLargeError(
                            f"{method} {shown} answered with a body over max_response_size "
                            f"({cap:,} bytes); the rest was not read",
                            request_id=response.headers.get("x-request-id"),
                        )
                    else:
                        error = await self._status_error(response, method, shown)
                    status: int | None = response.status
                    retry_headers: Mapping[str, str] = response.headers
                except APIConnectionError as exc:
                    error, status, retry_headers = exc, None, {}
                now = time.time()
                # A certificate that failed fails again: no retry.
                delay = (
                    None
                    if isinstance(error, TLSError)
                    else retry_delay(
                        attempt=attempt,
                        max_retries=retries,
                        status=status,
                        headers=retry_headers,
                        now=now,
                        rng=self._rng,
                        body=error.body,
                    )
                )
                if pacer is not None and slows_the_pace(status, error.body):
                    pacer.refused()  # the limit is above what the server allows: slow down
                    asked = requested_pause(status, retry_headers, error.body, now)
                    if delay is not None and asked is not None:
                        pacer.pause_for(delay)  # the server named a pause: it holds every worker
                seconds = time.monotonic() - started
                for observer in observers:
                    observer.request_failed(request, attempt, error, seconds, delay)
                if delay is None:
                    raise error
                if operation is not None:
                    operation.retried(attempt, error, delay)
                attempt += 1
                await self._sleep(delay)
        except BaseException as exc:
            if operation is not None:
                operation.failed(exc)
            raise
        finally:
            if operation is not None:
                operation.detach()

    def _active_telemetry(self) -> Telemetry | None:
        """The telemetry requests and tool calls record to; None when it is off, or
        until the application imports opentelemetry (then it is loaded once)."""
        telemetry = self._telemetry
        if telemetry is None and self._telemetry_enabled is None and _OTEL in sys.modules:
            telemetry = self._telemetry = _load_telemetry(None)
            if telemetry is None:  # imported, but not installed whole: do not try again
                self._telemetry_enabled = False
        return telemetry

    def _prepare(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | FileUpload | None,
        stream: bool,
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, Any] | None,
    ) -> Request:
        """The request, built once for all its attempts."""
        headers = dict(self._headers)
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        if extra_headers:
            headers.update(extra_headers)
        payload: bytes | FileUpload | None
        if body is None:
            headers.pop("Content-Type", None)
            payload = None
        elif isinstance(body, FileUpload):
            headers["Content-Type"] = body.content_type
            payload = body
        else:
            payload = _encode_body(body)
        query = {**self.default_query, **(extra_query or {})} or None
        return Request(method, self.base_url + path, headers, payload, query)

    async def _json(
        self,
        cls: Callable[[dict[str, Any], str | None, Mapping[str, str]], T],
        method: str,
        path: str,
        body: dict[str, Any] | FileUpload | None,
        timeout: float | Timeout | None,
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, Any] | None,
        max_retries: int | None = None,
    ) -> T:
        """A request whose answer is one JSON object, wrapped in `cls`."""
        sent = await self._request(
            method,
            path,
            body,
            stream=False,
            timeout=timeout,
            extra_headers=extra_headers,
            extra_query=extra_query,
            max_retries=max_retries,
        )
        assert sent.content is not None
        try:
            data = decode_object(sent.content, sent.response.status, sent.url, method)
        except BaseException as exc:
            sent.failed(exc)
            raise
        if sent.operation is not None:
            sent.operation.succeeded(data)
        return cls(data, sent.request_id, sent.response.headers)

    async def _status_error(self, response: Response, method: str, url: str) -> APIStatusError:
        # An error message needs little: a server answering an error with a huge body
        # (a runaway HTML page) costs no more than this.
        raw = await response.read(limit=_MAX_ERROR_BODY)
        body: Any
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        return status_error(
            response.status,
            body,
            reason=response.reason,
            url=url,
            method=method,
            request_id=response.headers.get("x-request-id"),
            headers=response.headers,
        )


_OTEL = "opentelemetry.trace"  # imported by any application that sets up a provider


def _load_telemetry(enabled: bool | None) -> Telemetry | None:
    """The shared telemetry when opentelemetry-api is installed; None otherwise
    (asked for with `telemetry=True` and missing: an error)."""
    try:
        from asyncchat._telemetry import shared_telemetry
    except ImportError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        if enabled:
            raise ConfigurationError(
                "telemetry=True needs opentelemetry-api: pip install 'asyncchat[otel]'"
            ) from None
        return None
    return shared_telemetry()


@dataclass(slots=True)
class _Sent:
    """A request's answer, with what was resolved for it once."""

    response: Response
    content: bytes | None  # the body, unless streaming
    timeout: Timeout
    url: str  # redacted, for messages
    request_id: str | None
    request: Request
    operation: Operation | None  # its telemetry span, when telemetry is on
    issued: float  # time.perf_counter() when the first attempt began

    def failed(self, error: BaseException) -> None:
        """Reading the answer failed: the request's span ends as a failure."""
        if self.operation is not None:
            self.operation.failed(error)

    def stream_timing(self) -> StreamTiming | None:
        """What times the stream, for telemetry and the log line; None when neither
        is on, so that the stream runs untimed."""
        operation = self.operation
        logged = logger.isEnabledFor(logging.INFO)
        if operation is None and not logged:
            return None
        timing = operation.timing() if operation is not None else StreamTiming(self.issued, [])
        if logged:
            line = stream_line(self.request, self.response)
            timing.listen(line if operation is None else operation.in_context(line))
        return timing
