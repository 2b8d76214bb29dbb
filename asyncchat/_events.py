"""`client.chat.stream(...)`: a stream of typed events instead of raw chunks.

Each chunk becomes the events it carries, in order: text and reasoning
deltas, tool-call argument deltas (with the arguments so far), the completed
tool calls with their parsed arguments just before their choice finishes,
the finish itself, and usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from asyncchat._stream import ChatCompletionStream
from asyncchat.accumulate import ToolCallBuffer
from asyncchat.errors import ToolArgumentsError
from asyncchat.types import ChatCompletion, Usage, parse_tool_arguments

__all__ = [
    "ChatStream",
    "ChatStreamManager",
    "ChoiceFinished",
    "ContentDelta",
    "ReasoningDelta",
    "RefusalDelta",
    "StreamEvent",
    "ToolCallArgumentsDelta",
    "ToolCallDone",
    "UsageReported",
]


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """A piece of the answer's text."""

    text: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of reasoning text (`reasoning_content` or `reasoning` on the wire)."""

    text: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A piece of a refusal message."""

    text: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallArgumentsDelta:
    """A fragment of a tool call: `delta` is new, `arguments` is everything so far."""

    index: int
    id: str | None
    name: str | None
    delta: str
    arguments: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    """A tool call is complete.

    `parsed_arguments` is the decoded JSON object, or None when the arguments are
    not valid JSON; `arguments_error` then says why and holds the raw text.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str
    parsed_arguments: dict[str, Any] | None
    arguments_error: ToolArgumentsError | None = None
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    """A choice ended; `finish_reason` is an open string (`stop`, `length`, `sensitive`, ...)."""

    finish_reason: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class UsageReported:
    """The server reported token usage (possibly again, cumulatively)."""

    usage: Usage


StreamEvent = (
    ContentDelta
    | ReasoningDelta
    | RefusalDelta
    | ToolCallArgumentsDelta
    | ToolCallDone
    | ChoiceFinished
    | UsageReported
)


def _tool_call_done(choice_index: int, call: ToolCallBuffer) -> ToolCallDone:
    arguments = call.arguments
    try:
        parsed: dict[str, Any] | None = parse_tool_arguments(arguments, call.name)
        error = None
    except ToolArgumentsError as exc:
        parsed, error = None, exc
    return ToolCallDone(call.index, call.id, call.name, arguments, parsed, error, choice_index)


class ChatStream:
    """Typed events of one streamed completion; iterate with `async for`."""

    def __init__(self, stream: ChatCompletionStream) -> None:
        self._stream = stream
        self._pending: list[StreamEvent] = []
        self._done_calls: set[tuple[int, int]] = set()
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
                data, fragments = await self._stream._next_chunk_data()
            except StopAsyncIteration:
                self._ended = True
                self._finish_open_tool_calls()
                continue
            self._pending = self._events_for(data, fragments)
            self._pending.reverse()
        return self._pending.pop()

    def _events_for(
        self, data: dict[str, Any], fragments: list[tuple[int, ToolCallBuffer, str]]
    ) -> list[StreamEvent]:
        # Values of the wrong JSON type are skipped, as the accumulator skips them.
        events: list[StreamEvent] = []
        choices = data.get("choices")
        for choice in choices if type(choices) is list else ():
            if type(choice) is not dict:
                continue
            index = choice.get("index")
            if type(index) is not int:
                index = 0
            delta = choice.get("delta")
            if type(delta) is not dict:
                delta = {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and type(reasoning) is str:
                events.append(ReasoningDelta(reasoning, index))
            content = delta.get("content")
            if content and type(content) is str:
                events.append(ContentDelta(content, index))
            refusal = delta.get("refusal")
            if refusal and type(refusal) is str:
                events.append(RefusalDelta(refusal, index))
            for choice_index, call, piece in fragments:
                if choice_index == index:
                    events.append(
                        ToolCallArgumentsDelta(
                            call.index, call.id, call.name, piece, call.arguments, index
                        )
                    )
            finish_reason = choice.get("finish_reason")
            if finish_reason and type(finish_reason) is str:
                self._finish_tool_calls(index, events)
                events.append(ChoiceFinished(finish_reason, index))
        usage = data.get("usage")
        if usage and type(usage) is dict:
            events.append(UsageReported(Usage(usage)))
        return events

    def _finish_tool_calls(self, choice_index: int, events: list[StreamEvent]) -> None:
        for call in self._stream._accumulator.tool_calls(choice_index):
            key = (choice_index, call.index)
            if key not in self._done_calls:
                self._done_calls.add(key)
                events.append(_tool_call_done(choice_index, call))

    def _finish_open_tool_calls(self) -> None:
        """A stream that ended without a finish_reason still reports its calls as done."""
        events: list[StreamEvent] = []
        for choice in self._stream.completion.choices:
            self._finish_tool_calls(choice.index or 0, events)
        events.reverse()
        self._pending = events

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
