"""Response objects: cheap, typed views over the decoded JSON.

An object wraps the dict that `orjson.loads` produced and builds nothing up
front: building a chunk costs one small allocation, not a validation pass.
Nested objects are wrapped on first access and cached, scalars are read from
the dict each time. Fields a provider adds beyond OpenAI's (GLM's `web_search`,
OpenRouter's `provider`, ...) are kept and readable as attributes too.

A view never parts from its JSON: nested fields (`choices`, `delta`, `usage`,
...) are read-only, and a scalar field written (`chunk.id = ...`) is written
into the JSON, so `to_dict()` shows it.
"""

from __future__ import annotations

import array
import base64
import operator
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import orjson

from asyncchat._headers import Headers
from asyncchat.errors import ToolArgumentsError
from asyncchat.quirks import message_reasoning, says_no_arguments
from asyncchat.ratelimits import RateLimits

__all__ = [
    "APIObject",
    "Annotation",
    "AnnotationURLCitation",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchList",
    "BatchRequestCounts",
    "ChatCompletion",
    "ChatCompletionAudio",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionTokenLogprob",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallCustom",
    "ChoiceDeltaToolCallFunction",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CreateEmbeddingResponse",
    "Custom",
    "Embedding",
    "EmbeddingUsage",
    "FileDeleted",
    "FileList",
    "FileObject",
    "Function",
    "Model",
    "ModelList",
    "Moderation",
    "ModerationResult",
    "ModerationResults",
    "ParsedChatCompletion",
    "ParsedChatCompletionMessage",
    "ParsedChoice",
    "ParsedFunction",
    "ParsedToolCall",
    "PromptTokensDetails",
    "ToolCall",
    "TopLogprob",
    "Usage",
]

T = TypeVar("T")
ObjT = TypeVar("ObjT", bound="APIObject")


class APIObject:
    """A read-only view of one JSON object returned by the API.

    The decoded dict *is* the object's `__dict__`: a field the server sent is
    read at plain attribute speed, a documented field it left out reads as the
    class default (None), and a field a provider added reads as its raw JSON
    value, as with the official SDK. Nested objects (`choices`, `delta`,
    `message`, `usage`, ...) are wrapped on first access and cached.
    `to_dict()` returns the JSON as received. (A provider field named like a
    method here, such as `to_dict`, would hide that method.)
    """

    __slots__ = ("__dict__", "_wrapped")
    __hash__ = None  # type: ignore[assignment]  # compared by value

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__ = data
        self._wrapped: dict[str, Any] | None = None

    @property
    def _data(self) -> dict[str, Any]:
        return self.__dict__

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as a new plain dict (a deep copy, safe to modify)."""
        copy: dict[str, Any] = orjson.loads(orjson.dumps(self.__dict__))
        return copy

    def to_json(self, *, indent: bool = False) -> str:
        """The JSON object as text."""
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.__dict__, option=option).decode()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, APIObject)
        return self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.__dict__)
        return f"{type(self).__name__}({fields})"

    # Pickled and copied as the JSON and the slots, spelled out here so that every
    # Python from 3.10 does the same: the slots hold the nested views built so far,
    # and with them what is not in the JSON (a parsed answer, the request id). Pickle
    # and `deepcopy` keep each nested view over its part of the new JSON.
    def __getstate__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        slots = {
            name: getattr(self, name)
            for cls in type(self).__mro__
            for name in cls.__dict__.get("__slots__", ())
            if name != "__dict__" and hasattr(self, name)
        }
        return self.__dict__, slots

    def __setstate__(self, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
        data, slots = state
        self.__dict__ = data
        for name, value in slots.items():
            setattr(self, name, value)

    def __copy__(self: ObjT) -> ObjT:
        """A shallow copy: its own top-level fields, the nested objects (headers too) shared."""
        data, slots = APIObject.__getstate__(self)  # not the pickling copy of the headers
        copied = object.__new__(type(self))
        copied.__setstate__((dict(data), slots))
        if copied._wrapped is not None:
            copied._wrapped = dict(copied._wrapped)
        return copied


_MISSING: Any = object()


class _Nested(Generic[T]):
    """A data descriptor: the raw JSON under the attribute's name, wrapped once and cached.

    Being a data descriptor, it takes precedence over the raw value in `__dict__`,
    and assignments raise. `shape` says how to wrap: "object" (always present, an
    empty one when absent), "optional" (None when absent or null), "list" (empty
    when absent), "optional list" (None when absent, as the official SDK), or
    "custom" for a `wrap` function. The four factories below give each shape its
    type. The wrapping is inlined here because it runs for every streamed chunk.
    """

    key: str

    def __init__(
        self, shape: str, cls: Any = None, wrap: Callable[[Any], Any] | None = None
    ) -> None:
        self.shape, self.cls, self.wrap = shape, cls, wrap

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Nested[T]: ...
    @overload
    def __get__(self, obj: APIObject, owner: type) -> T: ...
    def __get__(self, obj: APIObject | None, owner: type) -> _Nested[T] | T:
        if obj is None:
            return self
        key = self.key
        wrapped = obj._wrapped
        if wrapped is None:
            wrapped = obj._wrapped = {}
        else:
            value = wrapped.get(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
        raw = obj.__dict__.get(key)
        shape = self.shape
        cls = self.cls
        if shape == "list" or shape == "optional list":
            if type(raw) is list:
                value = [cls(item) for item in raw if isinstance(item, dict)]
            else:  # absent, null, or not a list at all
                value = None if raw is None and shape == "optional list" else []
        elif shape == "object":
            value = cls(raw if isinstance(raw, dict) else {})
        elif shape == "optional":
            value = cls(raw) if isinstance(raw, dict) else None
        else:
            assert self.wrap is not None
            value = self.wrap(raw)
        wrapped[key] = value
        return value  # type: ignore[no-any-return]

    def __set__(self, obj: APIObject, value: Any) -> None:
        raise AttributeError(f"{self.key!r} is read-only")


def _object(cls: type[ObjT]) -> _Nested[ObjT]:
    return _Nested("object", cls)


def _optional(cls: type[ObjT]) -> _Nested[ObjT | None]:
    return _Nested("optional", cls)


def _list(cls: type[ObjT]) -> _Nested[list[ObjT]]:
    return _Nested("list", cls)


def _optional_list(cls: type[ObjT]) -> _Nested[list[ObjT] | None]:
    return _Nested("optional list", cls)


def arguments_text(value: Any) -> str | None:
    """Tool arguments as JSON text, even when a server sent a JSON object."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class _Reasoning:
    """Reasoning text, under whichever key the server used (`quirks.REASONING_KEYS`), or
    the thinking parts of a content sent as parts (Mistral)."""

    @overload
    def __get__(self, obj: None, owner: type) -> _Reasoning: ...
    @overload
    def __get__(self, obj: APIObject, owner: type) -> str | None: ...
    def __get__(self, obj: APIObject | None, owner: type) -> _Reasoning | str | None:
        if obj is None:
            return self
        return message_reasoning(obj.__dict__)

    def __set__(self, obj: APIObject, value: Any) -> None:
        raise AttributeError("'reasoning_content' is read-only")


# --- usage -------------------------------------------------------------------


class PromptTokensDetails(APIObject):
    """What the prompt's tokens were: how many the provider's cache served, and so on."""

    audio_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    image_tokens: int | None = None
    text_tokens: int | None = None


class CompletionTokensDetails(APIObject):
    """What the answer's tokens were: how many went to reasoning, and so on."""

    accepted_prediction_tokens: int | None = None
    audio_tokens: int | None = None
    reasoning_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    text_tokens: int | None = None


class Usage(APIObject):
    """Token counts for a request."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details = _optional(PromptTokensDetails)
    completion_tokens_details = _optional(CompletionTokensDetails)


# --- log probabilities, annotations, audio --------------------------------------


class TopLogprob(APIObject):
    """One of the likeliest tokens at a position, with its log probability."""

    token: str | None = None
    bytes: list[int] | None = None  # the token's UTF-8 bytes (a token may split a character)
    logprob: float | None = None


class ChatCompletionTokenLogprob(TopLogprob):
    """A token of the answer, its log probability, and the likeliest tokens in its place."""

    top_logprobs = _list(TopLogprob)


class ChoiceLogprobs(APIObject):
    """The log probabilities of a choice's tokens (`logprobs=True`): of its text, or of
    its refusal. In a streamed chunk, those of the chunk's tokens."""

    content = _optional_list(ChatCompletionTokenLogprob)
    refusal = _optional_list(ChatCompletionTokenLogprob)


class AnnotationURLCitation(APIObject):
    """A web page the answer cites, and which characters of the text cite it."""

    end_index: int | None = None
    start_index: int | None = None
    title: str | None = None
    url: str | None = None


class Annotation(APIObject):
    """A note on the answer's text; `type` says which (`url_citation` from web search)."""

    type: str | None = None
    url_citation = _optional(AnnotationURLCitation)


class ChatCompletionAudio(APIObject):
    """A spoken answer (audio output): base64 audio, its transcript, the id to refer to
    it in a later turn until it expires. In a chunk, a piece of it."""

    id: str | None = None
    data: str | None = None
    expires_at: int | None = None
    transcript: str | None = None


# --- non-streamed completion ---------------------------------------------------


class Function(APIObject):
    """The function a tool call invokes, with its arguments as JSON text."""

    name: str | None = None
    arguments: _Nested[str | None] = _Nested("custom", wrap=arguments_text)

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments decoded as a JSON object.

        Empty arguments (a function without parameters) decode to `{}`. Raises
        `ToolArgumentsError`, holding the raw text, when they are not a JSON object.
        """
        return parse_tool_arguments(self.arguments, self.name)


def parse_tool_arguments(text: str | None, name: str | None) -> dict[str, Any]:
    """Decode tool-call arguments, or raise `ToolArgumentsError` naming the tool."""
    if text is None or says_no_arguments(text):
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ToolArgumentsError(
            f"the arguments of tool call {name!r} are not valid JSON ({exc}): {text[:200]!r}",
            arguments=text,
        ) from None
    if not isinstance(value, dict):
        raise ToolArgumentsError(
            f"the arguments of tool call {name!r} are JSON but not an object: {text[:200]!r}",
            arguments=text,
        )
    return value


class Custom(APIObject):
    """The custom tool a tool call invokes, with the model's free-form text as its input."""

    name: str | None = None
    input: str | None = None


# A tool call's keys with a fixed place; any other is its provider's own field
# (Gemini's thought signature in `extra_content`), which goes back with the call.
TOOL_CALL_FIELDS = frozenset({"index", "id", "type", "function", "custom"})


class ToolCall(APIObject):
    """A tool call in an assistant message: `type` "function" (`function`), or "custom"
    (`custom`, a free-form tool's call, when `function` is empty)."""

    id: str | None = None
    type: str | None = None
    function = _object(Function)
    custom = _optional(Custom)


class ChatCompletionMessage(APIObject):
    """The assistant's message in a non-streamed (or accumulated) completion."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content = _Reasoning()
    tool_calls = _optional_list(ToolCall)
    function_call = _optional(Function)
    annotations = _optional_list(Annotation)
    audio = _optional(ChatCompletionAudio)


class Choice(APIObject):
    """One of the `n` alternatives of a completion."""

    index: int | None = None
    finish_reason: str | None = None
    message = _object(ChatCompletionMessage)
    logprobs = _optional(ChoiceLogprobs)


# --- moderation ---------------------------------------------------------------


class ModerationResult(APIObject):
    """One moderation model's verdict on the input or on the answer: whether it is
    flagged, and by category (`categories["violence"]`), with scores."""

    categories: dict[str, bool] | None = None
    category_applied_input_types: dict[str, list[str]] | None = None  # "text", "image"
    category_scores: dict[str, float] | None = None
    flagged: bool | None = None
    model: str | None = None
    type: str | None = None  # "moderation_result"


class ModerationResults(APIObject):
    """Moderation of one side, the input or the answer: `type` "moderation_results"
    with its `results`, or "error" with the `code` and `message` saying why there are
    none."""

    type: str | None = None
    model: str | None = None
    results = _list(ModerationResult)
    code: str | None = None
    message: str | None = None


class Moderation(APIObject):
    """What moderated completions (`moderation={"model": ...}`) found in the request's
    input and in the answer."""

    input = _optional(ModerationResults)
    output = _optional(ModerationResults)


class _TopLevel(APIObject):
    """A whole response body; knows the request id from the headers as a fallback."""

    __slots__ = ("_header_request_id", "_headers")

    def __init__(
        self,
        data: dict[str, Any],
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.__dict__ = data
        self._wrapped = None
        self._header_request_id = request_id
        self._headers = headers

    @property
    def headers(self) -> Mapping[str, str]:
        """The HTTP response headers (case-insensitive keys), a stream's assembled
        completion's too; empty when built by hand and on stream chunks (the stream
        has them: `stream.headers`)."""
        # getattr: a chunk leaves the slot unset, sparing a store per chunk.
        headers = getattr(self, "_headers", None)
        return headers if headers is not None else {}

    @property
    def rate_limits(self) -> RateLimits | None:
        """The `x-ratelimit-*` headers as values; None when the server sent none."""
        return RateLimits.from_headers(self.headers)

    def __getstate__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        data, slots = super().__getstate__()
        if slots.get("_headers") is not None:  # the transport's own cannot be pickled
            slots["_headers"] = Headers(slots["_headers"])
        return data, slots

    @property
    def request_id(self) -> str | None:
        """The body's `request_id` (as GLM sends it), else the `x-request-id` header."""
        value = self.__dict__.get("request_id")
        return value if value and type(value) is str else self._header_request_id


class ChatCompletion(_TopLevel):
    """A chat completion, as returned by a non-streamed call or assembled from a stream."""

    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    choices = _list(Choice)
    usage = _optional(Usage)
    metadata: dict[str, str] | None = None
    moderation = _optional(Moderation)


# --- parsed completions (structured outputs) ------------------------------------
# What `completions.parse()` and `chat.stream(..., response_format=...)` return:
# the same views, with the parsed answer held beside the JSON, never in it. (The
# nested fields are narrowed to the Parsed classes: lists are invariant, hence
# the ignored overrides.)

_UNPARSED: Any = object()


class ParsedFunction(Function):
    """A tool call's function; the arguments of a pydantic tool come as its model."""

    __slots__ = ("_parsed",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._parsed: Any = _UNPARSED

    def parsed_arguments(self) -> Any:
        """The arguments as an instance of the tool's model, for a tool made with
        `pydantic_function_tool`; for any other tool, decoded as a dict."""
        if self._parsed is not _UNPARSED:
            return self._parsed
        return super().parsed_arguments()


class ParsedToolCall(ToolCall):
    """A tool call whose function may carry parsed arguments."""

    function = _object(ParsedFunction)


class ParsedChatCompletionMessage(ChatCompletionMessage, Generic[T]):
    """An assistant message with `parsed`: the answer as the model instance (or the
    decoded JSON for a schema dict); None on a refusal or without a format."""

    __slots__ = ("_parsed",)
    if TYPE_CHECKING:

        @property
        def tool_calls(self) -> list[ParsedToolCall] | None: ...  # type: ignore[override]

    else:
        tool_calls = _optional_list(ParsedToolCall)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._parsed: T | None = None

    @property
    def parsed(self) -> T | None:
        return self._parsed

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, parsed={self._parsed!r})"


class ParsedChoice(Choice, Generic[T]):
    """A choice whose message carries `parsed`."""

    if TYPE_CHECKING:

        @property
        def message(self) -> ParsedChatCompletionMessage[T]: ...  # type: ignore[override]

    else:
        message = _object(ParsedChatCompletionMessage)


class ParsedChatCompletion(ChatCompletion, Generic[T]):
    """A completion whose messages carry `parsed` (`choices[0].message.parsed`)."""

    if TYPE_CHECKING:

        @property
        def choices(self) -> list[ParsedChoice[T]]: ...  # type: ignore[override]

    else:
        choices = _list(ParsedChoice)


# --- models and embeddings ---------------------------------------------------


class Model(APIObject):
    """A model the server offers."""

    id: str | None = None
    object: str | None = None
    created: int | None = None
    owned_by: str | None = None


class ModelList(_TopLevel):
    """`client.models.list()`: `data` holds the models."""

    object: str | None = None
    data = _list(Model)


def embedding_floats(raw: Any) -> list[float]:
    """An embedding as floats: a JSON list as it is, a base64 string (what
    `encoding_format="base64"` returns: little-endian float32) decoded in C."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str):
        return []
    vector = array.array("f", base64.b64decode(raw))
    if sys.byteorder == "big":
        vector.byteswap()
    return vector.tolist()


class Embedding(APIObject):
    """One input's embedding; `embedding` is a list of floats however it was sent."""

    index: int | None = None
    object: str | None = None
    embedding: _Nested[list[float]] = _Nested("custom", wrap=embedding_floats)


class EmbeddingUsage(APIObject):
    prompt_tokens: int | None = None
    total_tokens: int | None = None


class CreateEmbeddingResponse(_TopLevel):
    """`client.embeddings.create()`: one `Embedding` per input, in `data`."""

    object: str | None = None
    model: str | None = None
    data = _list(Embedding)
    usage = _optional(EmbeddingUsage)


# --- files and batches (the provider's Batch API) ---------------------------


class FileObject(_TopLevel):
    """An uploaded file: `client.files.create()` / `retrieve()`; `id` names it."""

    id: str | None = None
    object: str | None = None
    bytes: int | None = None
    created_at: int | None = None
    expires_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None
    status_details: str | None = None


class FileList(_TopLevel):
    """`client.files.list()`: the files, in `data`."""

    object: str | None = None
    data = _list(FileObject)
    has_more: bool | None = None


class FileDeleted(_TopLevel):
    id: str | None = None
    object: str | None = None
    deleted: bool | None = None


class BatchRequestCounts(APIObject):
    """How many requests a batch holds, and how many finished or failed so far."""

    total: int | None = None
    completed: int | None = None
    failed: int | None = None


class BatchError(APIObject):
    """Why a batch (or one of its input lines, `line`) failed validation."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(APIObject):
    object: str | None = None
    data = _list(BatchError)


class Batch(_TopLevel):
    """A batch job at the provider: `client.batches.create()` / `retrieve()`.

    `status` goes validating -> in_progress -> finalizing -> completed, or ends
    failed (validation), expired (the completion window passed: what finished is
    in the output file), cancelling -> cancelled. `request_counts` says how far
    it got; `output_file_id` and `error_file_id` name the results.
    """

    TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

    id: str | None = None
    object: str | None = None
    endpoint: str | None = None
    errors = _optional(BatchErrors)
    input_file_id: str | None = None
    completion_window: str | None = None
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts = _optional(BatchRequestCounts)
    metadata: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        """True once the status is final: nothing about this batch changes any more."""
        return self.status in Batch.TERMINAL


class BatchList(_TopLevel):
    """`client.batches.list()`: one page, newest first; `after=page.last_id` for the next."""

    object: str | None = None
    data = _list(Batch)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool | None = None


# --- streamed chunks --------------------------------------------------------
# These classes are built for every streamed chunk. The fields nearly every
# reader goes through (`choices[0].delta`, `delta.tool_calls`) are built with
# the object and kept in private slots, read through `_read_only`: a property
# whose getter is an `attrgetter`, so a read is C calls only (no Python frame)
# and an assignment raises instead of silently parting from `to_dict()`. Being
# a data descriptor, it shadows the raw value of the same name in `__dict__`.
# Deeper levels are built on first access.


def _read_only(slot: str) -> Any:
    return property(operator.attrgetter(slot))


def _objects(cls: type[ObjT], raw: Any) -> list[ObjT]:
    """A JSON list of objects wrapped in `cls`; anything else in it is skipped."""
    if type(raw) is not list:
        return []
    return [cls(item) for item in raw if isinstance(item, dict)]


class ChoiceDeltaToolCallFunction(APIObject):
    """A fragment of a tool call's function: the name (usually once), a piece of arguments."""

    __slots__ = ("_arguments",)
    name: str | None = None
    if TYPE_CHECKING:

        @property
        def arguments(self) -> str | None: ...

    else:
        arguments = _read_only("_arguments")

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__ = data
        arguments = data.get("arguments")
        self._arguments = (
            arguments if arguments is None or type(arguments) is str else arguments_text(arguments)
        )


class ChoiceDeltaToolCallCustom(APIObject):
    """A fragment of a custom tool's call: the name (usually once), a piece of the input."""

    name: str | None = None
    input: str | None = None


class ChoiceDeltaToolCall(APIObject):
    """A fragment of a tool call, routed by `index` (absent on some servers); a custom
    tool's call (`type` "custom") carries `custom` instead of `function`."""

    __slots__ = ("_function",)
    index: int | None = None
    id: str | None = None
    type: str | None = None
    custom = _optional(ChoiceDeltaToolCallCustom)

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__ = data
        self._wrapped = None
        self._function: ChoiceDeltaToolCallFunction | None = None

    @property
    def function(self) -> ChoiceDeltaToolCallFunction:
        """Built on first access: many readers of a tool stream never look this deep."""
        function = self._function
        if function is None:
            raw = self.__dict__.get("function")
            function = self._function = ChoiceDeltaToolCallFunction(
                raw if isinstance(raw, dict) else {}
            )
        return function


class ChoiceDelta(APIObject):
    """What one chunk adds to a choice's message.

    `tool_calls` holds this chunk's tool-call fragments, None when it has none.
    """

    __slots__ = ("_tool_calls",)
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content = _Reasoning()
    function_call = _optional(ChoiceDeltaToolCallFunction)  # the legacy single call's fragment
    audio = _optional(ChatCompletionAudio)
    annotations = _optional_list(Annotation)  # web search's citations, usually in the last chunk
    if TYPE_CHECKING:

        @property
        def tool_calls(self) -> list[ChoiceDeltaToolCall] | None: ...

    else:
        tool_calls = _read_only("_tool_calls")

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__ = data
        self._wrapped = None
        calls = data.get("tool_calls")
        if calls is None:
            self._tool_calls = None
        elif type(calls) is list and len(calls) == 1 and type(calls[0]) is dict:
            self._tool_calls = [ChoiceDeltaToolCall(calls[0])]  # the usual single fragment
        else:
            self._tool_calls = _objects(ChoiceDeltaToolCall, calls)


class ChunkChoice(APIObject):
    """One choice's part of a streamed chunk."""

    __slots__ = ("_delta",)
    index: int | None = None
    finish_reason: str | None = None
    logprobs = _optional(ChoiceLogprobs)
    if TYPE_CHECKING:

        @property
        def delta(self) -> ChoiceDelta: ...

    else:
        delta = _read_only("_delta")

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__ = data
        self._wrapped = None
        delta = data.get("delta")
        self._delta = ChoiceDelta(delta if isinstance(delta, dict) else {})


class ChatCompletionChunk(_TopLevel):
    """One event of a streamed completion."""

    __slots__ = ("_choices",)
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    obfuscation: str | None = None  # OpenAI's padding against length side channels
    usage = _optional(Usage)
    moderation = _optional(Moderation)  # on the chunk that carries it
    if TYPE_CHECKING:

        @property
        def choices(self) -> list[ChunkChoice]: ...

    else:
        choices = _read_only("_choices")

    def __init__(self, data: dict[str, Any], request_id: str | None = None) -> None:
        self.__dict__ = data
        self._wrapped = None
        self._header_request_id = request_id
        choices = data.get("choices")
        if type(choices) is list and len(choices) == 1 and type(choices[0]) is dict:
            self._choices = [ChunkChoice(choices[0])]  # the usual single choice
        else:
            self._choices = _objects(ChunkChoice, choices)
