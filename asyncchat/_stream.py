"""`ChatCompletionStream`: the chunks of one streamed response, as an async iterator.

Bytes go from the transport's read (aiohttp's `readany()`, without a wrapper
call) straight into the SSE decoder; each event is decoded with one
`orjson.loads`, added to the accumulator and handed out as a chunk.

The HTTP response is released however iteration ends: read to the end and
pooled after `[DONE]`, closed on `break`, error or cancellation, and closed
by `__del__` if the stream is dropped unclosed.
"""

from __future__ import annotations

import enum
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, NoReturn, SupportsIndex, cast

import orjson

from asyncchat._config import Timeout
from asyncchat._http import Response
from asyncchat._timing import StreamTiming
from asyncchat.accumulate import ChatCompletionAccumulator
from asyncchat.errors import (
    APIError,
    APITimeoutError,
    ClientClosedError,
    EventTooLargeError,
    IncompleteStreamError,
    MalformedStreamError,
    status_error,
    stream_error_status,
)
from asyncchat.quirks import is_error_body
from asyncchat.ratelimits import RateLimits
from asyncchat.sse import ServerSentEvent, SSEDecoder
from asyncchat.types import ChatCompletion, ChatCompletionChunk

__all__ = ["ChatCompletionStream"]


_NOT_JSON: Any = object()  # what a payload orjson could not parse decodes to


def _as_dict(data: dict[str, Any], request_id: str | None) -> Any:
    return data


def _preview(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def looks_like_sse(data: bytes) -> bool:
    """Whether a body's first bytes are an event stream's (a field or a comment)."""
    start = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")[:7]
    return start.startswith((b"data:", b"event:", b"id:", b"retry:", b":"))


async def completion_from_event_stream(
    response: Response,
    body: bytes,
    *,
    url: str,
    timeout: Timeout,
    max_event_size: int,
    request_id: str | None,
) -> dict[str, Any]:
    """The completion an event stream carries, as a non-streamed answer's JSON.

    For a request without `stream` that a server answered as a stream all the same
    (unsloth's server, mini-sglang, servers whose `stream` defaults to true): the
    body, read already, goes through the stream's own checks, so an error event or
    a stream cut short raises as it would when streaming.
    """
    stream = ChatCompletionStream(
        _ReadAlready(response, body),
        url=url,
        timeout=timeout,
        max_event_size=max_event_size,
        request_id=request_id,
    )
    async for _ in stream.json_chunks():
        pass
    return stream.accumulator.completion_dict()


class _ReadAlready(Response):
    """A response whose body is in hand (the connection went back already), served
    again as one piece."""

    def __init__(self, response: Response, body: bytes) -> None:
        super().__init__(response.status, response.headers, url=response.url)
        self._body = body

    async def receive(self) -> bytes:
        body, self._body = self._body, b""
        return body


def completion_as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole completion reshaped as the single chunk that would have carried it."""
    choices = [
        {
            "index": choice.get("index", 0),
            "delta": choice.get("message") or {},
            "finish_reason": choice.get("finish_reason"),
            "logprobs": choice.get("logprobs"),
        }
        for choice in completion.get("choices") or ()
        if isinstance(choice, dict)
    ]
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


class _Phase(enum.Enum):
    """Where a stream is in its life (h11's style: one state, not five flags)."""

    JSON_FIRST = "the answer may be one JSON completion: its first bytes decide"
    READING = "reading events"
    INPUT_ENDED = "the body ended: what is left is handed out, then the end is judged"
    DONE = "ended normally: [DONE], or every choice finished"
    STOPPED = "closed before its end, or failed: nothing more is handed out"
    CLIENT_CLOSED = "Client.close() ended it mid-stream"


# Module globals: the stream loop compares against them once per read.
_JSON_FIRST, _READING, _INPUT_ENDED = _Phase.JSON_FIRST, _Phase.READING, _Phase.INPUT_ENDED
_DONE, _STOPPED, _CLIENT_CLOSED = _Phase.DONE, _Phase.STOPPED, _Phase.CLIENT_CLOSED


class ChatCompletionStream:
    """The chunks of a streamed chat completion.

    Use it as `async with stream: async for chunk in stream: ...`. Once the
    stream has ended, `completion` is the whole response assembled, shaped like
    a non-streamed `ChatCompletion`; during iteration it is what arrived so far.
    """

    def __init__(
        self,
        response: Response,
        *,
        url: str,
        timeout: Timeout,
        max_event_size: int,
        request_id: str | None,
        json_body: bool = False,
        timing: StreamTiming | None = None,
    ) -> None:
        self._response = response
        # A server that ignored stream=True answers with one JSON completion.
        self._phase = _JSON_FIRST if json_body else _READING
        self._released = False  # the connection went back to the pool, or was closed
        # The transport's read function and the exceptions it may raise: called
        # directly, once per chunk (see Response.receiver).
        self._receive, self._read_errors = response.receiver()
        self._url = url
        self._timeout = timeout
        self._decoder = SSEDecoder(max_event_size=max_event_size)
        # Decoded events not yet handed out: the data of plain "message" events
        # (bytes from the decoder's fast path, else text), the whole event for
        # named ones (`event: error`).
        self._pending: Iterator[bytes | str | ServerSentEvent] = iter(())
        self._accumulator = ChatCompletionAccumulator(
            request_id=request_id, headers=response.headers
        )
        # What a chunk is handed out as; the helpers that read the JSON themselves
        # (`stream_text`, typed events) take the dict and skip building objects.
        self._hand_out: Callable[[dict[str, Any], str | None], ChatCompletionChunk] = (
            ChatCompletionChunk
        )
        self._idle_count, self._idle_since = -1, 0.0  # see _no_chunk_yet
        self.request_id = request_id
        # Telemetry and the log line time the stream; without them, no read is wrapped.
        self._timing = timing
        if timing is not None:
            # Weakly: the timed read is an attribute of the stream, so holding the
            # stream strongly would make a cycle, and a stream dropped unclosed would
            # wait for the garbage collector to close its connection and end its span.
            unwrap = weakref.WeakMethod(self._unwrap)
            self._receive = timing.wrap(self._receive, self._accumulator, unwrap)

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "a ChatCompletionStream cannot be pickled or copied: it reads a live connection; "
            "pickle its chunks or stream.completion instead"
        )

    @property
    def headers(self) -> Any:
        """The response headers (a case-insensitive mapping)."""
        return self._response.headers

    @property
    def rate_limits(self) -> RateLimits | None:
        """The `x-ratelimit-*` headers as values; None when the server sent none."""
        return RateLimits.from_headers(self._response.headers)

    @property
    def completion(self) -> ChatCompletion:
        """The completion assembled from every chunk received so far."""
        return self._accumulator.completion()

    @property
    def finished(self) -> bool:
        """True once the stream ended normally."""
        return self._phase is _DONE

    def __aiter__(self) -> ChatCompletionStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        # One coroutine from the user's `async for` down to aiohttp's `readany()`:
        # in a token-by-token stream this loop reads once per chunk.
        while True:
            for item in self._pending:
                if type(item) is not bytes:  # text or a named event, from the full decoder
                    data = self._decode_event(item)
                elif item == b"[DONE]":
                    data = None
                    self._phase = _DONE
                else:  # a payload of the decoder's fast path, nearly always a plain chunk
                    try:
                        data = orjson.loads(item)
                    except orjson.JSONDecodeError:
                        data = _NOT_JSON
                    if type(data) is not dict or "choices" not in data or "error" in data:
                        data = self._checked(item, "message", data)  # the full checks
                if data is not None:
                    self._accumulator._ingest(data)
                    return self._hand_out(data, self.request_id)
                if self._phase is _DONE:
                    self._pending = iter(())  # anything after [DONE] is ignored
                    break
            phase = self._phase
            if phase is not _READING:
                if phase is _JSON_FIRST:
                    data = await self._json_response_as_chunk()
                    if data is None:
                        continue  # an event stream after all: its first bytes are pending
                    self._accumulator._ingest(data)
                    return self._hand_out(data, self.request_id)
                if phase is _DONE:
                    if not self._accumulator.chunk_count:  # a proxy's answer to a failure
                        raise self._fail(
                            MalformedStreamError(
                                f"POST {self._url} answered with an event stream that "
                                "carried no completion: [DONE] before any chunk"
                            )
                        )
                    await self.close()
                elif phase is _INPUT_ENDED:
                    await self._end_without_done()
                elif phase is _CLIENT_CLOSED:
                    raise self._client_closed_error()
                raise StopAsyncIteration
            try:
                received = await self._receive()
            except BaseException as exc:
                if not isinstance(exc, (APIError, *self._read_errors)):
                    self._abort(exc)  # a cancellation: the connection is abandoned mid-body
                    raise
                if self._phase is _CLIENT_CLOSED:
                    raise self._client_closed_error() from exc
                if isinstance(exc, APIError):  # from a transport that maps its own errors
                    raise self._fail(exc) from None
                raise self._fail(self._response.map_error(exc)) from exc
            if not received:
                if self._phase is _CLIENT_CLOSED:
                    raise self._client_closed_error()
                self._phase = _INPUT_ENDED
                self._pending = self._decoded(self._decoder.close)
                continue
            payloads = self._decoder.take_data_events(received)
            if payloads is None:
                self._pending = self._decoded(self._decoder.feed, received)
            else:
                self._pending = iter(payloads)

    @property
    def accumulator(self) -> ChatCompletionAccumulator:
        """What assembles `completion`; its `last_fragments` are the latest chunk's
        tool-call fragments, routed to their calls."""
        return self._accumulator

    def json_chunks(self) -> AsyncIterator[dict[str, Any]]:
        """The chunks as their decoded JSON dicts, no objects built: for code that reads
        the JSON itself (`stream_text`, the typed events). Accumulated all the same.
        Use it instead of iterating the stream, not alongside."""
        self._hand_out = _as_dict
        # The stream itself, now handing out dicts: no wrapper call per chunk.
        return cast(AsyncIterator[dict[str, Any]], self)

    def _decoded(
        self, decode: Callable[..., list[ServerSentEvent]], *received: bytes
    ) -> Iterator[str | ServerSentEvent]:
        """What the decoder makes of the bytes, to hand out; its size cap ends the stream."""
        try:
            events = decode(*received)
        except APIError as exc:
            raise self._fail(exc) from None
        if not events:
            self._no_chunk_yet()
        return iter([e if e.event != "message" else e.data for e in events])

    def _no_chunk_yet(self) -> None:
        """A read that brought no chunk (a comment, a part of a line): past the idle
        timeout since the first such read, the stream is given up.

        Only reads without a chunk pay for this check: the usual read takes the
        decoder's fast path and never gets here.
        """
        idle = self._timeout.idle
        if idle is None:
            return
        count, now = self._accumulator.chunk_count, time.monotonic()
        if count != self._idle_count:
            self._idle_count, self._idle_since = count, now
        elif now - self._idle_since > idle:
            raise self._fail(
                APITimeoutError(
                    f"the server sent no chunk for {idle}s, only keep-alive comments or "
                    f"pieces of a line (the idle timeout), on POST {self._url}"
                )
            )

    async def _json_response_as_chunk(self) -> dict[str, Any] | None:
        """Serve a plain JSON completion as a one-chunk stream.

        A body labelled JSON that starts like an event stream (hand-written servers
        often send SSE as `application/json`) is decoded as one: its first bytes
        are left pending and None is returned. The JSON body is held to the event
        size cap, as any one event is.
        """
        self._phase = _READING
        first = await self._read()
        if looks_like_sse(first):
            self._pending = self._decoded(self._decoder.feed, first)
            return None
        body, cap = bytearray(first), self._decoder.max_event_size
        while True:
            if len(body) > cap:
                raise self._fail(
                    EventTooLargeError(
                        f"the JSON answer to a streamed POST {self._url} is larger than "
                        f"max_event_size ({cap} bytes)"
                    )
                )
            received = await self._read()
            if not received:
                break
            body += received
        self._phase, self._released = _DONE, True
        self._response.release()
        if not body.strip():  # a gateway's empty 200: no answer, not an empty one
            raise self._fail(
                IncompleteStreamError(
                    f"the server answered a streamed POST {self._url} with an empty body"
                )
            )
        data = self._decode(bytes(body), "message")  # an error object raises: _fail ends the timing
        self._ended(None)
        if data is None:
            raise StopAsyncIteration
        return completion_as_chunk(data)

    async def _read(self) -> bytes:
        """The next bytes of the body (b"" at its end); a failure or a cancellation
        closes the connection. (The main loop inlines the same.)"""
        try:
            return await self._receive()
        except BaseException as exc:
            if isinstance(exc, self._read_errors):
                raise self._fail(self._response.map_error(exc)) from exc
            if isinstance(exc, APIError):
                raise self._fail(exc) from None
            self._abort(exc)
            raise

    def _decode_event(self, item: bytes | str | ServerSentEvent) -> dict[str, Any] | None:
        """`_decode` for a pending item: a plain event's data, or a named event."""
        if isinstance(item, ServerSentEvent):
            return self._decode(item.data, item.event)
        return self._decode(item, "message")

    def _decode(self, payload: str | bytes, event: str) -> dict[str, Any] | None:
        """An event's chunk, or None for `[DONE]` and events that carry nothing.

        `payload` is the event's data: text from the decoder, or the raw bytes of
        its single-event fast path (orjson reads both).
        """
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = _NOT_JSON
        return self._checked(payload, event, data)

    def _checked(self, payload: str | bytes, event: str, data: Any) -> dict[str, Any] | None:
        """`_decode` once the payload is parsed (`_NOT_JSON` when it could not be)."""
        if data is _NOT_JSON and type(payload) is bytes:
            # Bytes from the fast path: decode them as the full decoder would (invalid
            # UTF-8 replaced), so one read or two give the same outcome.
            return self._decode(payload.decode("utf-8", "replace"), event)
        if data is _NOT_JSON:
            self._decode_unusual(payload, event, "not JSON")
            return None
        if type(data) is not dict:
            self._decode_unusual(payload, event, "not a JSON object")
            return None
        if event != "message":
            if event == "error":
                raise self._fail(self._error_from_event(data))
            self._no_chunk_yet()
            return None  # another named event (a ping): not a chunk
        if is_error_body(data):
            raise self._fail(self._error_from_event(data))
        return data

    def _decode_unusual(self, payload: str | bytes, event: str, problem: str) -> None:
        """An event that is not a JSON object: `[DONE]`, a blank keep-alive, error text,
        garbage. Ends the stream normally at `[DONE]`, raises for errors and garbage."""
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        if text.startswith("[DONE]"):
            self._phase = _DONE
            return
        if not text or text.isspace():
            self._no_chunk_yet()
            return  # an empty data line some servers use as a keep-alive
        if event == "error":
            raise self._fail(self._error_from_event({"error": {"message": text}}))
        raise self._fail(
            MalformedStreamError(f"the server sent an event that is {problem}: {_preview(text)}")
        )

    def _error_from_event(self, data: dict[str, Any]) -> APIError:
        return status_error(
            stream_error_status(data),
            data,
            context=f"the server reported an error in the stream of POST {self._url}",
            request_id=self.request_id,
            headers=self._response.headers,
        )

    async def _end_without_done(self) -> None:
        """End of input with no `[DONE]`: fine if every choice finished, a broken stream if not."""
        if self._accumulator.finished:
            self._phase, self._released = _DONE, True
            self._response.release()
            self._ended(None)
            return
        raise self._fail(
            IncompleteStreamError(
                "the server closed the stream before it finished "
                f"(no [DONE] and no finish_reason after {self._accumulator.chunk_count} chunks)"
            )
        )

    def _fail(self, error: APIError) -> APIError:
        self._with_partial(error)
        self._abort(error)
        return error

    def _with_partial(self, error: APIError) -> APIError:
        if error.request_id is None:
            error.request_id = self.request_id
        if self._accumulator.chunk_count:
            error.partial = self._accumulator.completion()
        return error

    def _end_because_client_closed(self) -> None:
        if not self._released:
            self._abort(ClientClosedError("the client was closed"))
            self._phase = _CLIENT_CLOSED

    def _client_closed_error(self) -> APIError:
        return self._with_partial(
            ClientClosedError("the asyncchat.Client was closed while this stream was open")
        )

    def _abort(self, error: BaseException) -> None:
        """Stop here and close the connection: a response not read to its end cannot be
        pooled. `error` is what stopped it (a cancellation, a broken stream)."""
        self._phase, self._released = _STOPPED, True
        self._pending = iter(())  # nothing after an error is handed out
        self._response.close()
        self._ended(error)

    def _unwrap(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        """The timing is done with the reads: back to the plain read function."""
        self._receive = receive

    def _ended(self, error: BaseException | None) -> None:
        """The stream is over: its timing (if any) learns how, once."""
        timing = self._timing
        if timing is not None:
            self._timing = None
            timing.ended(self._accumulator, error)

    async def close(self) -> None:
        """Stop the stream: after `[DONE]` the connection is pooled, before it, closed."""
        if self._released:
            return
        self._released = True
        if self._phase is not _DONE:
            self._phase = _STOPPED
            self._response.close()
            if self._timing is not None:
                self._timing.closed_early = True  # by its reader: not an error
            self._ended(None)
            return
        self._ended(None)
        await self._response.finish()  # closes the connection if cancelled while draining

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        # Dropped without close (a `break` outside `async with`): don't leak the socket.
        if not getattr(self, "_released", True):
            self._response.close()
            self._ended(None)

    def __repr__(self) -> str:
        return (
            f"<ChatCompletionStream {self._phase.name.lower()}, "
            f"{self._accumulator.chunk_count} chunks, "
            f"request_id={self.request_id!r}>"
        )
