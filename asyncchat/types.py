"""Response objects: cheap, typed, read-only views over the decoded JSON.

An object wraps the dict that `orjson.loads` produced and builds nothing up
front: building a chunk costs one small allocation, not a validation pass.
Nested objects are wrapped on first access and cached, scalars are read from
the dict each time. Fields a provider adds beyond OpenAI's (GLM's `web_search`,
OpenRouter's `provider`, ...) are kept and readable as attributes too.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar, overload

import orjson

from asyncchat.errors import ToolArgumentsError

__all__ = [
    "APIObject",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "Function",
    "ToolCall",
    "Usage",
]

T = TypeVar("T")
ObjT = TypeVar("ObjT", bound="APIObject")


class APIObject:
    """A read-only view of one JSON object returned by the API.

    Attribute access follows the official SDK (`chunk.choices[0].delta.content`);
    a documented field missing from the JSON reads as None, an undocumented
    field the provider sent reads as its value, anything else is an
    AttributeError. `to_dict()` returns the JSON as received.
    """

    _data: dict[str, Any]
    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are neither declared fields nor methods.
        if name.startswith("__") or name == "_data":
            raise AttributeError(name)
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None
        return _wrap(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as a new plain dict (a deep copy, safe to modify)."""
        copy: dict[str, Any] = orjson.loads(orjson.dumps(self._data))
        return copy

    def to_json(self, *, indent: bool = False) -> str:
        """The JSON object as text."""
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self._data, option=option).decode()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, APIObject)
        return self._data == other._data

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={self._field_for_repr(key)!r}" for key in self._data)
        return f"{type(self).__name__}({fields})"

    def _field_for_repr(self, key: str) -> Any:
        if isinstance(getattr(type(self), key, None), _Field):
            return getattr(self, key)
        return _wrap(self._data[key])


def _wrap(value: Any) -> Any:
    """Give undeclared nested JSON objects attribute access too."""
    if isinstance(value, dict):
        return APIObject(value)
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return [_wrap(item) for item in value]
    return value


class _Field(Generic[T]):
    """Base of the field descriptors; `key` is the JSON key, the attribute's name."""

    key: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Field[T]: ...
    @overload
    def __get__(self, obj: APIObject, owner: type) -> T: ...
    def __get__(self, obj: APIObject | None, owner: type) -> _Field[T] | T:
        if obj is None:
            return self
        value = self.extract(obj._data)
        if self.cache:
            # A non-data descriptor: the instance dict wins from now on.
            obj.__dict__[self.key] = value
        return value

    cache: ClassVar[bool] = False

    def extract(self, data: dict[str, Any]) -> T:
        """The field's value, taken from the wrapped dict."""
        return self.read(data.get(self.key))

    def read(self, value: Any) -> T:
        raise NotImplementedError


class _Value(_Field[T]):
    """A JSON scalar, read as is (None when absent)."""

    def read(self, value: Any) -> T:
        return value  # type: ignore[no-any-return]


class _Object(_Field[ObjT]):
    """A nested object, always present (an empty one when absent)."""

    cache = True

    def __init__(self, cls: type[ObjT]) -> None:
        self.cls = cls

    def read(self, value: Any) -> ObjT:
        return self.cls(value if isinstance(value, dict) else {})


class _OptionalObject(_Field["ObjT | None"]):
    """A nested object, None when absent or null."""

    cache = True

    def __init__(self, cls: type[ObjT]) -> None:
        self.cls = cls

    def read(self, value: Any) -> ObjT | None:
        return self.cls(value) if isinstance(value, dict) else None


class _ObjectList(_Field["list[ObjT]"]):
    """A list of nested objects, empty when absent or null."""

    cache = True

    def __init__(self, cls: type[ObjT]) -> None:
        self.cls = cls

    def read(self, value: Any) -> list[ObjT]:
        if not value:
            return []
        cls = self.cls
        return [cls(item) for item in value if isinstance(item, dict)]


class _OptionalObjectList(_Field["list[ObjT] | None"]):
    """A list of nested objects, None when absent or null (as the official SDK)."""

    cache = True

    def __init__(self, cls: type[ObjT]) -> None:
        self.cls = cls

    def read(self, value: Any) -> list[ObjT] | None:
        if value is None:
            return None
        cls = self.cls
        return [cls(item) for item in value if isinstance(item, dict)]


def _arguments_text(value: Any) -> str | None:
    """Tool arguments as JSON text, even when a server sent a JSON object."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class _Arguments(_Field["str | None"]):
    def read(self, value: Any) -> str | None:
        return _arguments_text(value)


class _Reasoning(_Field["str | None"]):
    """Reasoning text, sent as `reasoning_content` (DeepSeek, GLM) or `reasoning` (vLLM, ...)."""

    def extract(self, data: dict[str, Any]) -> str | None:
        value = data.get("reasoning_content")
        return data.get("reasoning") if value is None else value


# --- usage -------------------------------------------------------------------


class Usage(APIObject):
    """Token counts for a request."""

    prompt_tokens = _Value["int | None"]()
    completion_tokens = _Value["int | None"]()
    total_tokens = _Value["int | None"]()
    prompt_tokens_details = _OptionalObject(APIObject)
    completion_tokens_details = _OptionalObject(APIObject)


# --- non-streamed completion ---------------------------------------------------


class Function(APIObject):
    """The function a tool call invokes, with its arguments as JSON text."""

    name = _Value["str | None"]()
    arguments = _Arguments()

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments decoded as a JSON object.

        Empty arguments (a function without parameters) decode to `{}`. Raises
        `ToolArgumentsError`, holding the raw text, when they are not a JSON object.
        """
        return parse_tool_arguments(self.arguments, self.name)


def parse_tool_arguments(text: str | None, name: str | None) -> dict[str, Any]:
    """Decode tool-call arguments, or raise `ToolArgumentsError` naming the tool."""
    if text is None or not text.strip():
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


class ToolCall(APIObject):
    """A tool call in an assistant message."""

    id = _Value["str | None"]()
    type = _Value["str | None"]()
    function = _Object(Function)


class ChatCompletionMessage(APIObject):
    """The assistant's message in a non-streamed (or accumulated) completion."""

    role = _Value["str | None"]()
    content = _Value["str | None"]()
    refusal = _Value["str | None"]()
    reasoning_content = _Reasoning()
    tool_calls = _OptionalObjectList(ToolCall)
    function_call = _OptionalObject(Function)


class Choice(APIObject):
    """One of the `n` alternatives of a completion."""

    index = _Value["int | None"]()
    finish_reason = _Value["str | None"]()
    message = _Object(ChatCompletionMessage)
    logprobs = _OptionalObject(APIObject)


class _TopLevel(APIObject):
    """A whole response body; knows the request id from the headers as a fallback."""

    def __init__(self, data: dict[str, Any], request_id: str | None = None) -> None:
        self._data = data
        self._header_request_id = request_id

    @property
    def request_id(self) -> str | None:
        """The body's `request_id` (as GLM sends it), else the `x-request-id` header."""
        value = self._data.get("request_id")
        return value if value else self._header_request_id


class ChatCompletion(_TopLevel):
    """A chat completion, as returned by a non-streamed call or assembled from a stream."""

    id = _Value["str | None"]()
    object = _Value["str | None"]()
    created = _Value["int | None"]()
    model = _Value["str | None"]()
    system_fingerprint = _Value["str | None"]()
    service_tier = _Value["str | None"]()
    choices = _ObjectList(Choice)
    usage = _OptionalObject(Usage)


# --- streamed chunks --------------------------------------------------------


class ChoiceDeltaToolCallFunction(APIObject):
    """A fragment of a tool call's function: the name (usually once), a piece of arguments."""

    name = _Value["str | None"]()
    arguments = _Arguments()


class ChoiceDeltaToolCall(APIObject):
    """A fragment of a tool call, routed by `index` (absent on some servers)."""

    index = _Value["int | None"]()
    id = _Value["str | None"]()
    type = _Value["str | None"]()
    function = _Object(ChoiceDeltaToolCallFunction)


class ChoiceDelta(APIObject):
    """What one chunk adds to a choice's message."""

    role = _Value["str | None"]()
    content = _Value["str | None"]()
    refusal = _Value["str | None"]()
    reasoning_content = _Reasoning()
    tool_calls = _OptionalObjectList(ChoiceDeltaToolCall)


class ChunkChoice(APIObject):
    """One choice's part of a streamed chunk."""

    index = _Value["int | None"]()
    finish_reason = _Value["str | None"]()
    delta = _Object(ChoiceDelta)
    logprobs = _OptionalObject(APIObject)


class ChatCompletionChunk(_TopLevel):
    """One event of a streamed completion."""

    id = _Value["str | None"]()
    object = _Value["str | None"]()
    created = _Value["int | None"]()
    model = _Value["str | None"]()
    system_fingerprint = _Value["str | None"]()
    service_tier = _Value["str | None"]()
    choices = _ObjectList(ChunkChoice)
    usage = _OptionalObject(Usage)
