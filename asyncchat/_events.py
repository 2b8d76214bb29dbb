"""`client.chat.stream(...)`: a stream of typed events instead of raw chunks.

The events are built by `asyncchat.events.StreamEventBuilder`, without IO; this
module only reads the stream through its public API and hands them out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType

from asyncchat._stream import ChatCompletionStream
from asyncchat.events import StreamEvent, StreamEventBuilder
from asyncchat.types import ChatCompletion

__all__ = ["ChatStream", "ChatStreamManager"]


class ChatStream:
    """Typed events of one streamed completion; iterate with `async for`."""

    def __init__(self, stream: ChatCompletionStream) -> None:
        self._stream = stream
        self._chunks = stream.json_chunks()
        self._builder = StreamEventBuilder(stream.accumulator)
        self._pending: list[StreamEvent] = []
        self._ended = False

    @property
    def completion(self) -> ChatCompletion:
        """What arrived so far, assembled."""
        return self._stream.completion

    @property
    def request_id(self) -> str | None:
        return self._stream.request_id

    def __aiter__(self) -> ChatStream:
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

    async def final_completion(self) -> ChatCompletion:
        """Read whatever is left of the stream; the whole completion."""
        async for _ in self:
            pass
        return self._stream.completion

    async def close(self) -> None:
        await self._stream.close()


class ChatStreamManager:
    """`async with client.chat.stream(...) as stream:` opens the request, and always closes it."""

    def __init__(self, open_stream: Callable[[], Awaitable[ChatCompletionStream]]) -> None:
        self._open_stream = open_stream
        self._stream: ChatStream | None = None

    async def __aenter__(self) -> ChatStream:
        self._stream = ChatStream(await self._open_stream())
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.close()
