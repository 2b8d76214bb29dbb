"""Typed stream events, built from chunks without IO.

Each chunk becomes the events it carries, in order: text and reasoning
deltas, tool-call argument deltas (with the arguments so far), the completed
tool calls with their parsed arguments just before their choice finishes,
the finish itself, and usage. `StreamEventBuilder` does it on any chunks:

    builder = StreamEventBuilder()
    for chunk in chunks:                 # dicts (decoded JSON) or ChatCompletionChunks
        for event in builder.add(chunk):
            ...
    events_at_the_end = builder.end()    # tool calls a stream left unfinished
    builder.accumulator.completion()     # the whole completion

`client.chat.stream(...)` is this builder over a live stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncchat.accumulate import ChatCompletionAccumulator, ToolCallBuffer, ToolCallFragment
from asyncchat.errors import ToolArgumentsError
from asyncchat.quirks import reasoning_text
from asyncchat.types import APIObject, Usage, parse_tool_arguments

__all__ = [
    "ChoiceFinished",
    "ContentDelta",
    "ReasoningDelta",
    "RefusalDelta",
    "StreamEvent",
    "StreamEventBuilder",
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


class StreamEventBuilder:
    """Chunks in, typed events out; the accumulator assembles the completion alongside."""

    def __init__(self, accumulator: ChatCompletionAccumulator | None = None) -> None:
        self.accumulator = accumulator if accumulator is not None else ChatCompletionAccumulator()
        self._done_calls: set[tuple[int, int]] = set()

    def add(self, chunk: dict[str, Any] | APIObject) -> list[StreamEvent]:
        """Add a chunk to the accumulator; the events it carries."""
        fragments = self.accumulator.add(chunk)
        data = chunk._data if isinstance(chunk, APIObject) else chunk
        return self.events(data, fragments)

    def events(self, data: dict[str, Any], fragments: list[ToolCallFragment]) -> list[StreamEvent]:
        """The events of a chunk the accumulator already took (`fragments` is what its
        `add` returned)."""
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
            reasoning = reasoning_text(delta)
            if reasoning:
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
        for call in self.accumulator.tool_calls(choice_index):
            key = (choice_index, call.index)
            if key not in self._done_calls:
                self._done_calls.add(key)
                events.append(_tool_call_done(choice_index, call))

    def end(self) -> list[StreamEvent]:
        """At the end of the stream: the tool calls no `finish_reason` reported done."""
        events: list[StreamEvent] = []
        for index in self.accumulator.choice_indexes():
            self._finish_tool_calls(index, events)
        return events
