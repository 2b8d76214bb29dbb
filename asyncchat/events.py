"""Typed stream events, built from chunks without IO.

Each chunk becomes the events it carries, in order: text and reasoning
deltas, the tokens' log probabilities (when asked for), tool-call argument
deltas (with the arguments so far), the completed tool calls with their parsed
arguments just before their choice finishes, the finish itself, and usage. (A
proxy that marks chunks mid-answer `stop` gets a `ChoiceFinished` for each; a
call is done at the first of them after its arguments are whole.)
`StreamEventBuilder` does it on any chunks:

    builder = StreamEventBuilder()
    for chunk in chunks:                 # dicts (decoded JSON) or ChatCompletionChunks
        for event in builder.add(chunk):
            ...
    events_at_the_end = builder.end()    # tool calls a stream left unfinished
    builder.accumulator.completion()     # the whole completion

`client.chat.stream(...)` is this builder over a live stream.

`parsed` on a tool call's argument deltas (and, with `json_content=True`, on
the answer's text deltas, as `JSONContentDelta`) is the JSON value so far. It
is computed when read, by a `PartialJSONParser` that is fed only then: a reader
who never reads it pays nothing, one who reads it on every event pays for each
character once. It is a live value that later pieces extend (copy it to keep a
snapshot); read it in event order, as `async for` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from asyncchat.accumulate import ChatCompletionAccumulator, ToolCallBuffer, ToolCallFragment
from asyncchat.errors import ToolArgumentsError
from asyncchat.partial_json import PartialJSONError, PartialJSONParser
from asyncchat.quirks import (
    answer_json_start,
    content_parts,
    reasoning_text,
    usage_beside_finish,
)
from asyncchat.types import (
    APIObject,
    ChatCompletionTokenLogprob,
    ChoiceLogprobs,
    Usage,
    parse_tool_arguments,
)

__all__ = [
    "ChoiceFinished",
    "ContentDelta",
    "CustomToolCallDone",
    "CustomToolInputDelta",
    "JSONContentDelta",
    "LogprobsDelta",
    "ReasoningDelta",
    "RefusalDelta",
    "StreamEvent",
    "StreamEventBuilder",
    "ToolCallArgumentsDelta",
    "ToolCallDone",
    "ToolFinished",
    "ToolStarted",
    "UsageReported",
]


class _PartialJSON:
    """One text's JSON value so far, parsed lazily: text reaches the parser only
    when a value is asked for, and each character only once."""

    __slots__ = ("_error", "_fed", "_parser")

    def __init__(self) -> None:
        self._parser: PartialJSONParser | None = None
        self._fed = 0  # characters (of a text) or pieces (of a list) fed so far
        self._error: PartialJSONError | None = None

    def _feed(self, text: str) -> Any:
        if self._error is not None:
            raise self._error
        parser = self._parser
        if parser is None:
            parser = self._parser = PartialJSONParser()
        try:
            parser.feed(text)
        except PartialJSONError as exc:
            self._error = exc
            raise
        return parser.value

    def of_text(self, text: str) -> Any:
        """The value of `text`, which extends every text asked about before."""
        if len(text) <= self._fed:  # nothing new, or an older event read late
            return self._feed("")
        piece = text[self._fed :]
        self._fed = len(text)
        return self._feed(piece)

    def of_pieces(self, pieces: list[str], count: int) -> Any:
        """The value of the first `count` pieces of a list that only grows."""
        if count <= self._fed:
            return self._feed("")
        new = pieces[self._fed : count]
        self._fed = count
        return self._feed(new[0] if len(new) == 1 else "".join(new))


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """A piece of the answer's text."""

    text: str
    choice_index: int = 0

    @property
    def parsed(self) -> Any:
        """None: no JSON `response_format` was asked for (see `JSONContentDelta`)."""
        return None


class _AnswerJSON(_PartialJSON):
    """An answer's JSON value so far, past what a model may wrap the JSON in (a
    `<think>` block, a code fence: `quirks.answer_json_start`). The text is held back
    until it shows where the JSON starts; in a fence, the JSON's end ends the value."""

    __slots__ = ("_fenced", "_held", "_thinking")

    def __init__(self) -> None:
        super().__init__()
        self._held: list[str] | None = []  # the text, until the JSON's start is known
        self._fenced = False
        self._thinking = False  # the text so far is an open <think> block

    def of_pieces(self, pieces: list[str], count: int) -> Any:
        held = self._held
        if held is None:
            return super().of_pieces(pieces, count)
        new = pieces[self._fed : count]
        self._fed = max(self._fed, count)
        held += new
        # Only a `>` can close a <think> block: thinking thousands of pieces long is not
        # joined and searched again for each of them.
        if self._thinking and not any(">" in piece for piece in new):
            return None
        text = "".join(held)
        held[:] = [text]
        start = answer_json_start(text)
        if start is None:
            self._thinking = text.lstrip().startswith("<think>") and "</think>" not in text
            return None
        position, self._fenced = start
        self._held = None
        return self._feed(text[position:])

    def _feed(self, text: str) -> Any:
        if not self._past_fenced_json():
            try:
                return super()._feed(text)
            except PartialJSONError:
                if not self._past_fenced_json():
                    raise
                self._error = None
        # The JSON in a fence is complete: what follows is the fence's end, not JSON.
        parser = self._parser
        assert parser is not None
        return parser.value

    def _past_fenced_json(self) -> bool:
        parser = self._parser
        return self._fenced and parser is not None and parser.done


@dataclass(frozen=True, slots=True)
class JSONContentDelta(ContentDelta):
    """A piece of an answer asked for as JSON (`response_format`); `parsed` is the
    value so far: `{}`, then `{"city": ""}`, then `{"city": "Bos"}`, ..."""

    _partial: _PartialJSON = field(default_factory=_PartialJSON, repr=False, compare=False)
    _pieces: list[str] = field(default_factory=list, repr=False, compare=False)
    _count: int = field(default=0, repr=False, compare=False)

    @property
    def parsed(self) -> Any:
        """The answer's JSON value so far (None before it starts); raises
        `PartialJSONError` (a ValueError) once the text is not JSON."""
        return self._partial.of_pieces(self._pieces, self._count)


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
class LogprobsDelta:
    """The log probabilities of a chunk's tokens (asked for with `logprobs=True`): of
    the answer's text in `content`, of a refusal in `refusal` (empty when the chunk
    has none). The whole answer's are on the completion's `choices[i].logprobs`."""

    content: list[ChatCompletionTokenLogprob]
    refusal: list[ChatCompletionTokenLogprob]
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallArgumentsDelta:
    """A fragment of a tool call: `delta` is new, `arguments` is everything so far,
    `parsed` the arguments' JSON value so far. A custom tool's call streams as its
    subclass `CustomToolInputDelta`."""

    # A class attribute, not a field: each field costs every fragment's event a
    # frozen dataclass's `object.__setattr__`.
    type: ClassVar[str] = "function"
    index: int
    id: str | None
    name: str | None
    delta: str
    arguments: str
    choice_index: int = 0
    _partial: _PartialJSON = field(default_factory=_PartialJSON, repr=False, compare=False)

    @property
    def parsed(self) -> Any:
        """The arguments so far as JSON: `{}`, then `{"city": "Bos"}`, ... (None
        before they start); raises `PartialJSONError` once they are not JSON."""
        return self._partial.of_text(self.arguments)


@dataclass(frozen=True, slots=True)
class CustomToolInputDelta(ToolCallArgumentsDelta):
    """A fragment of a custom tool's call: `delta` is a new piece of its free-form
    input, `arguments` the input so far. `type` is "custom"."""

    type: ClassVar[str] = "custom"

    @property
    def parsed(self) -> Any:
        """None: a custom tool's input is text, not JSON."""
        return None


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    """A tool call is complete.

    `parsed_arguments` is the decoded JSON object, or None when the arguments are
    not valid JSON; `arguments_error` then says why and holds the raw text. A
    custom tool's call ends as its subclass `CustomToolCallDone`. When the
    `ChoiceFinished` that follows says the answer was cut ("length", or a reason in
    `quirks.cut_short_at`), the last call was cut short.
    """

    type: ClassVar[str] = "function"
    index: int
    id: str | None
    name: str | None
    arguments: str
    parsed_arguments: dict[str, Any] | None
    arguments_error: ToolArgumentsError | None = None
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class CustomToolCallDone(ToolCallDone):
    """A custom tool's call is complete: `arguments` is its free-form input, and
    there is no `parsed_arguments` or `arguments_error` (it is not JSON). `type` is
    "custom"."""

    type: ClassVar[str] = "custom"


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    """A choice ended; `finish_reason` is an open string (`stop`, `length`, `sensitive`, ...)."""

    finish_reason: str
    choice_index: int = 0


@dataclass(frozen=True, slots=True)
class UsageReported:
    """The server reported token usage (possibly again, cumulatively): in a chunk's
    `usage`, or with a choice's finish as Moonshot and Groq send it."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """`run_tools` is about to run a tool call (after `approve`, if any)."""

    id: str
    name: str
    arguments: dict[str, Any]  # converted to the function's parameter types
    turn: int


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool call of `run_tools` is done: `result` is the text sent back to the model.

    `error` is what went wrong, or None: arguments that did not fit
    (`ToolArgumentsError`, `arguments` then None), an unknown tool (`LookupError`),
    a veto (`PermissionError`), a timeout (`TimeoutError`), or the function's own
    exception. `value` is what the function returned.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    result: str
    error: BaseException | None
    seconds: float
    turn: int
    value: Any = None


StreamEvent = (
    ContentDelta
    | ReasoningDelta
    | RefusalDelta
    | LogprobsDelta
    | ToolCallArgumentsDelta
    | ToolCallDone
    | ChoiceFinished
    | UsageReported
)


def _tool_call_done(choice_index: int, call: ToolCallBuffer) -> ToolCallDone:
    arguments = call.arguments
    if call.type == "custom":
        return CustomToolCallDone(
            call.index, call.id, call.name, arguments, None, None, choice_index
        )
    try:
        parsed: dict[str, Any] | None = parse_tool_arguments(arguments, call.name)
        error = None
    except ToolArgumentsError as exc:
        parsed, error = None, exc
    return ToolCallDone(call.index, call.id, call.name, arguments, parsed, error, choice_index)


def _unwhole(done: ToolCallDone) -> bool:
    """Whether a function call's arguments are still empty or not whole JSON."""
    if done.type == "custom":
        return False
    return done.arguments_error is not None or not done.arguments.strip()


def _parts_text(content: Any, index: int, events: list[StreamEvent]) -> str:
    """The text of a content sent as parts, its thinking parts added to `events` as
    reasoning; "" for a content that is neither text nor parts."""
    if type(content) is not list:
        return ""
    text, thinking = content_parts(content)
    if thinking:
        events.append(ReasoningDelta("".join(thinking), index))
    return "".join(text)


def _add_logprobs_delta(logprobs: ChoiceLogprobs, index: int, events: list[StreamEvent]) -> None:
    content, refusal = logprobs.content or [], logprobs.refusal or []
    if content or refusal:
        events.append(LogprobsDelta(content, refusal, index))


class StreamEventBuilder:
    """Chunks in, typed events out; the accumulator assembles the completion alongside."""

    def __init__(
        self,
        accumulator: ChatCompletionAccumulator | None = None,
        *,
        json_content: bool = False,
        logprobs: bool = True,
    ) -> None:
        """`json_content`: the answer's text is JSON, so its deltas are
        `JSONContentDelta`s that carry `parsed`. `logprobs`: look for log
        probabilities in each chunk (`LogprobsDelta`); a stream whose request
        asked for none turns it off, and pays nothing for it."""
        self.accumulator = accumulator if accumulator is not None else ChatCompletionAccumulator()
        self.json_content = json_content
        self.logprobs = logprobs
        self._done_calls: set[tuple[int, int]] = set()
        self._partials: dict[Any, _PartialJSON] = {}  # by tool call, or by choice index

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
        partials = self._partials
        wants_logprobs = self.logprobs
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
            if content:
                if type(content) is not str:  # parts (Mistral), the usual text not slowed
                    content = _parts_text(content, index, events)
                if content:
                    if self.json_content:
                        events.append(self._json_content_delta(content, index))
                    else:
                        events.append(ContentDelta(content, index))
            refusal = delta.get("refusal")
            if refusal and type(refusal) is str:
                events.append(RefusalDelta(refusal, index))
            if wants_logprobs:
                logprobs = choice.get("logprobs")
                if logprobs and type(logprobs) is dict:
                    _add_logprobs_delta(ChoiceLogprobs(logprobs), index, events)
            for choice_index, call, piece in fragments:
                if choice_index == index:
                    partial = partials.get(call)
                    if partial is None or call.restated:  # restated: parse the new text
                        partial = partials[call] = _PartialJSON()
                        call.restated = False
                    kind = CustomToolInputDelta if call.type == "custom" else ToolCallArgumentsDelta
                    events.append(
                        kind(call.index, call.id, call.name, piece, call.arguments, index, partial)
                    )
            finish_reason = choice.get("finish_reason")
            if finish_reason and type(finish_reason) is str:
                self._finish_tool_calls(index, events, finish_reason)
                events.append(ChoiceFinished(finish_reason, index))
                if type(data.get("usage")) is not dict:
                    beside = usage_beside_finish(data, choice)
                    if beside:
                        events.append(UsageReported(Usage(beside)))
        usage = data.get("usage")
        if usage and type(usage) is dict:
            events.append(UsageReported(Usage(usage)))
        return events

    def _json_content_delta(self, content: str, index: int) -> JSONContentDelta:
        partial = self._partials.get(index)
        if partial is None:
            partial = self._partials[index] = _AnswerJSON()
        pieces = self.accumulator.content_pieces(index)
        return JSONContentDelta(content, index, partial, pieces, len(pieces))

    def _finish_tool_calls(
        self, choice_index: int, events: list[StreamEvent], reason: str | None = None
    ) -> None:
        """Report the choice's calls done; at a `stop` (`reason`), not a call whose
        arguments are still empty or not whole JSON. Proxies (OpenWebUI, gcli2api)
        mark chunks mid-answer `stop`: such a call's pieces are still to come, and
        its `ToolCallDone` comes at a later finish, or at the stream's end."""
        for call in self.accumulator.tool_calls(choice_index):
            key = (choice_index, call.index)
            if key not in self._done_calls:
                done = _tool_call_done(choice_index, call)
                if reason == "stop" and _unwhole(done):
                    continue
                self._done_calls.add(key)
                events.append(done)

    def end(self) -> list[StreamEvent]:
        """At the end of the stream: the tool calls no `finish_reason` reported done."""
        events: list[StreamEvent] = []
        for index in self.accumulator.choice_indexes():
            self._finish_tool_calls(index, events)
        return events
