"""`client.chat.stream(...)`: a stream of typed events instead of raw chunks.

The events are built by `asyncchat.events.StreamEventBuilder`, without IO; this
module only reads the stream through its public API and hands them out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

from asyncchat._stream import ChatCompletionStream
from asyncchat.events import StreamEvent, StreamEventBuilder
from asyncchat.structured import StructuredRequest
from asyncchat.types import ChatCompletion, ParsedChatCompletion

__all__ = ["ChatStream", "ChatStreamManager"]

T = TypeVar("T")


class ChatStream(Generic[T]):
    """Typed events of one streamed completion; iterate with `async for`."""

    def __init__(
        self,
        stream: ChatCompletionStream,
        structured: StructuredRequest | None = None,
        *,
        logprobs: bool = True,
    ) -> None:
        self._stream = stream
        self._structured = structured or StructuredRequest(None)
        self._chunks = stream.json_chunks()
        self._builder = StreamEventBuilder(
            stream.accumulator, json_content=self._structured.json_content, logprobs=logprobs
        )
        self._pending: list[StreamEvent] = []
        self._ended = False
        self._final: ParsedChatCompletion[T] | None = None

    @property
    def completion(self) -> ChatCompletion:
        """What arrived so far, assembled."""
        return self._stream.completion

    @property
    def request_id(self) -> str | None:
        return self._stream.request_id

    def __aiter__(self) -> ChatStream[T]:
        return self

    async def __anext__(self) -> StreamEvent:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            try:
                data = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._ended = True
                self._pending = self._builder.end()
            else:
                self._pending = self._builder.events(data, self._stream.accumulator.last_fragments)
            self._pending.reverse()
        return self._pending.pop()

    async def final_completion(self) -> ParsedChatCompletion[T]:
        """Read whatever is left of the stream; the whole completion.

        With a `response_format`, `choices[i].message.parsed` is the answer as
        the model (or decoded JSON), and an answer cut by the token limit or a
        content filter raises `LengthFinishReasonError` or
        `ContentFilterFinishReasonError`, as `completions.parse()` does.
        """
        if self._final is None:
            async for _ in self:
                pass
            self._final = self._structured.parse(self._stream.completion)
        return self._final

    async def close(self) -> None:
        await self._stream.close()


class ChatStreamManager(Generic[T]):
    """`async with client.chat.stream(...) as stream:` opens the request, and always closes it."""

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[ChatCompletionStream]],
        structured: StructuredRequest | None = None,
        *,
        logprobs: bool = True,
    ) -> None:
        """`logprobs`: whether the request asked for log probabilities (their events)."""
        self._open_stream = open_stream
        self._structured = structured
        self._logprobs = logprobs
        self._stream: ChatStream[T] | None = None

    async def __aenter__(self) -> ChatStream[T]:
        stream = await self._open_stream()
        self._stream = ChatStream(stream, self._structured, logprobs=self._logprobs)
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.close()
