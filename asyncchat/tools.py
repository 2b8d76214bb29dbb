"""Python functions as tools: a JSON schema from type hints and the docstring, and
the model's arguments checked and converted back into those types.

Sans-IO: making a tool and checking arguments need no event loop; the tool
runner (`client.chat.run_tools`) calls the functions.

    @asyncchat.tool
    async def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
        '''The current weather in a city.

        Args:
            city: The city's name, such as "Paris".
        '''

    get_weather.parameters   # {"type": "object", "properties": {"city": {...}, ...}, ...}
    get_weather.to_dict()    # the tool as the API takes it
    await get_weather("Oslo")  # still the function

`@asyncchat.custom_tool` makes a function of one `str` parameter a custom tool:
the model calls it with free-form text (optionally held to a grammar), not JSON.

Types: str, int, float, bool, None, list/tuple/set[...], dict[str, ...],
Literal, Enum, Optional and unions, Annotated[T, "description"], TypedDict,
dataclasses, and pydantic models (imported only if you use them). Docstrings:
Google (`Args:`), reST (`:param x:`) and NumPy (`Parameters` / `----------`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, overload

import orjson

from asyncchat.errors import ToolArgumentsError, one_line
from asyncchat.quirks import says_no_arguments
from asyncchat.structured import is_pydantic_model, to_strict_json_schema

__all__ = ["CustomTool", "Tool", "custom_tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class Tool:
    """A Python function and the tool the model sees: its name, description and the
    JSON schema of its parameters. Calling the tool calls the function."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"a tool needs a function, not {function!r}")
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", ""))
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must be 1 to 64 letters, digits, '_' or '-'")
        summary, documented = _read_docstring(inspect.getdoc(function) or "")
        self.description = description if description is not None else summary
        self.strict = strict
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004  (an object with `async def __call__`)
        )
        self._parameters = _parameters_of(function)
        schema = _parameters_schema(self._parameters, documented)
        self.parameters = to_strict_json_schema(schema) if strict else schema
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def to_dict(self) -> dict[str, Any]:
        """The tool as `tools=[...]` sends it."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def arguments(self, text: str | None) -> dict[str, Any]:
        """The model's arguments (JSON text) as keyword arguments for the function,
        each converted to its parameter's type. `ToolArgumentsError` says, in words
        the model can act on, everything that is wrong."""
        try:
            given = {} if text is None or says_no_arguments(text) else orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"the arguments are not valid JSON ({exc}): {(text or '')[:200]!r}",
                arguments=text or "",
            ) from None
        if not isinstance(given, dict):
            raise ToolArgumentsError(
                f"the arguments must be a JSON object, not {(text or '')[:200]!r}",
                arguments=text or "",
            )
        problems: list[str] = []
        converted: dict[str, Any] = {}
        parameters = self._parameters
        for key, value in given.items():
            parameter = parameters.get(key)
            if parameter is None:
                if not _takes_extra(self.function):
                    problems.append(f"there is no parameter {key!r}")
                else:
                    converted[key] = value
                continue
            try:
                converted[key] = _convert(parameter.annotation, value)
            except _Mismatch as exc:
                problems.append(f"{key!r} {exc}")
        for key, parameter in parameters.items():
            if key not in given and parameter.required:
                problems.append(f"{key!r} is missing")
        if problems:
            raise ToolArgumentsError(
                f"the arguments do not match {self.name}'s parameters: {'; '.join(problems)}",
                arguments=text or "",
            )
        return converted


@overload
def tool(function: F, /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
) -> Callable[[F], Tool]: ...
def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
) -> Tool | Callable[[F], Tool]:
    """Make a function a tool: `@asyncchat.tool`, or `@asyncchat.tool(name=...,
    description=..., strict=True, timeout=30)`. A plain function in `tools=` works
    too; the decorator is for these options. `timeout` (seconds) applies when the
    tool runner calls it."""

    def make(function: F) -> Tool:
        return Tool(function, name=name, description=description, strict=strict, timeout=timeout)

    return make(function) if function is not None else make


class CustomTool(Tool):
    """A Python function that takes the model's free-form text: a custom tool.

    The model writes the input as text, not JSON arguments (code, a query, a
    patch), optionally held to a grammar: `grammar=` is its definition, in Lark
    (`syntax="lark"`) or as a regular expression (`syntax="regex"`). The function
    has one parameter, which gets the text.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        grammar: str | None = None,
        syntax: Literal["lark", "regex"] = "lark",
        timeout: float | None = None,
    ) -> None:
        if syntax not in ("lark", "regex"):
            raise ValueError(f"a grammar's syntax is 'lark' or 'regex', not {syntax!r}")
        if grammar is not None and (not isinstance(grammar, str) or not grammar.strip()):
            raise ValueError(f"a custom tool's grammar is a non-empty text, not {grammar!r}")
        if callable(function):  # else Tool's own error
            parameters = _parameters_of(function)
            if len(parameters) != 1 or not _takes_text(next(iter(parameters.values())).annotation):
                shown = getattr(function, "__name__", "the function")
                signature = inspect.signature(function, eval_str=True)
                raise TypeError(
                    "a custom tool takes one str parameter, the model's text, "
                    f"not {shown}{signature}"
                )
        super().__init__(function, name=name, description=description, timeout=timeout)
        self.input_name = next(iter(self._parameters))
        self.grammar = grammar
        self.syntax = syntax

    def __repr__(self) -> str:
        return f"CustomTool({self.name!r})"

    def to_dict(self) -> dict[str, Any]:
        """The tool as `tools=[...]` sends it."""
        custom: dict[str, Any] = {"name": self.name}
        if self.description:
            custom["description"] = self.description
        if self.grammar is not None:
            custom["format"] = {
                "type": "grammar",
                "grammar": {"definition": self.grammar, "syntax": self.syntax},
            }
        return {"type": "custom", "custom": custom}

    def arguments(self, text: str | None) -> dict[str, Any]:
        """The model's text as the keyword argument for the function."""
        return {self.input_name: text or ""}


def _takes_text(annotation: Any) -> bool:
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation in (str, Any, inspect.Parameter.empty)


@overload
def custom_tool(function: F, /) -> CustomTool: ...
@overload
def custom_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    grammar: str | None = None,
    syntax: Literal["lark", "regex"] = "lark",
    timeout: float | None = None,
) -> Callable[[F], CustomTool]: ...
def custom_tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    grammar: str | None = None,
    syntax: Literal["lark", "regex"] = "lark",
    timeout: float | None = None,
) -> CustomTool | Callable[[F], CustomTool]:
    """Make a function of one `str` parameter a custom tool, which the model calls
    with free-form text: `@asyncchat.custom_tool`, or `@asyncchat.custom_tool(
    grammar=..., syntax="lark" or "regex", name=..., description=..., timeout=30)`."""

    def make(function: F) -> CustomTool:
        return CustomTool(
            function,
            name=name,
            description=description,
            grammar=grammar,
            syntax=syntax,
            timeout=timeout,
        )

    return make(function) if function is not None else make


@functools.lru_cache(maxsize=1024)
def tool_of(function: Callable[..., Any]) -> Tool:
    """The tool for a plain function, made once."""
    return Tool(function)


def as_tool(item: Any) -> Tool | dict[str, Any]:
    """An item of `tools=[...]`: a tool dict as it is, a `Tool` (a plain function made
    one, once)."""
    if isinstance(item, (dict, Tool)):
        return item
    if not callable(item):
        raise TypeError(f"a tool must be a function or a tool dict, not {item!r}")
    return tool_of(item)


def wire_tools(tools: Any) -> Any:
    """`tools=[...]` as the request sends it: each function or `Tool` as its dict.
    One tool not in a list is refused; anything else but a list or tuple (None) is
    sent as it is."""
    if not isinstance(tools, (list, tuple)):
        if callable(tools) or isinstance(tools, dict):
            raise TypeError("tools must be a list of functions, tools or tool dicts")
        return tools
    return [_tool_dict(as_tool(item)) for item in tools]


def _tool_dict(item: Tool | dict[str, Any]) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.to_dict()


# --- parameters and their schema -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Parameter:
    annotation: Any
    required: bool
    default: Any


def _parameters_of(function: Callable[..., Any]) -> dict[str, _Parameter]:
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation that names something undefined
        raise TypeError(f"cannot read the type hints of {function!r}: {exc}") from None
    parameters: dict[str, _Parameter] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"a tool takes its arguments by name: {function!r} has {parameter}")
        empty = parameter.default is inspect.Parameter.empty
        parameters[name] = _Parameter(
            hints.get(name, Any), empty, None if empty else parameter.default
        )
    return parameters


def _takes_extra(function: Callable[..., Any]) -> bool:
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(function).parameters.values()
    )


def _parameters_schema(
    parameters: dict[str, _Parameter], descriptions: dict[str, str]
) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, parameter in parameters.items():
        schema = _schema(parameter.annotation, defs)
        if name in descriptions and "description" not in schema:
            schema = {**schema, "description": descriptions[name]}
        default = _as_json(parameter.default) if not parameter.required else _NO_JSON
        if default is not _NO_JSON:
            schema = {**schema, "default": default}
        properties[name] = schema
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [name for name, parameter in parameters.items() if parameter.required],
    }
    if defs:
        result["$defs"] = defs
    return result


_NO_JSON: Any = object()


def _as_json(value: Any) -> Any:
    """A default as JSON (an Enum as its value, a dataclass as an object); `_NO_JSON`
    when it has no JSON form."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return _NO_JSON


_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    None: {"type": "null"},
}
_ARRAYS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_OBJECTS = (dict, collections.abc.Mapping)


def _schema(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a type; models' definitions go into `defs`."""
    schema: dict[str, Any]
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        schema = _schema(args[0], defs)
        notes = [note for note in args[1:] if isinstance(note, str)]
        return {**schema, "description": " ".join(notes)} if notes else schema
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [_schema(arg, defs) for arg in args]}
    if origin is Literal:
        return _enum_schema(list(args))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([member.value for member in annotation])
    if annotation in _ARRAYS or origin in _ARRAYS:
        schema = {"type": "array"}
        if args and not (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            items = [_schema(arg, defs) for arg in args]
            schema["items"] = items[0] if len(items) == 1 else {"anyOf": items}
        elif args:
            schema["items"] = _schema(args[0], defs)
        return schema
    if annotation in _OBJECTS or origin in _OBJECTS:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _schema(args[1], defs)
        return schema
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        required = annotation.__required_keys__
        return _object_schema(
            {name: _schema(hint, defs) for name, hint in hints.items()},
            [name for name in hints if name in required],
        )
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation, include_extras=True)
        fields = dataclasses.fields(annotation)
        return _object_schema(
            {field.name: _schema(hints.get(field.name, Any), defs) for field in fields},
            [field.name for field in fields if _field_required(field)],
        )
    if is_pydantic_model(annotation):
        schema = annotation.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        return schema
    raise TypeError(
        f"cannot describe {annotation!r} in JSON schema: use str, int, float, bool, "
        "list, dict, Literal, an Enum, a TypedDict, a dataclass or a pydantic model"
    )


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {type(value) for value in values}
    if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
        schema = {**_SCALARS[next(iter(kinds))], **schema}
    return schema


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def _field_required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


# --- the model's arguments, converted back -----------------------------------------------------


class _Mismatch(Exception):
    """A value does not fit its type; the message says how, for the model to read."""


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(annotation: Any, value: Any) -> Any:
    """A JSON value as `annotation` asks: checked, and made the Python type
    (an Enum member, a dataclass, a tuple, a pydantic model...); `_Mismatch` if not."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _convert(args[0], value)
    if annotation is str:
        if type(value) is not str:
            raise _Mismatch(f"must be a string, not {_short(value)}")
        return value
    if annotation is bool:
        if type(value) is not bool:
            raise _Mismatch(f"must be true or false, not {_short(value)}")
        return value
    if annotation is int:
        if type(value) is float and value.is_integer():
            return int(value)
        if type(value) is not int:
            raise _Mismatch(f"must be an integer, not {_short(value)}")
        return value
    if annotation is float:
        if type(value) not in (int, float):
            raise _Mismatch(f"must be a number, not {_short(value)}")
        return float(value)
    if annotation is None or annotation is type(None):
        if value is not None:
            raise _Mismatch(f"must be null, not {_short(value)}")
        return None
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        reasons = []
        for arg in [arg for arg in args if arg is not type(None)]:
            try:
                return _convert(arg, value)
            except _Mismatch as exc:
                reasons.append(str(exc))
        raise _Mismatch(" or ".join(dict.fromkeys(reasons)))
    if origin is Literal:
        for choice in args:
            if type(choice) is type(value) and choice == value:
                return choice
        raise _Mismatch(f"must be one of {', '.join(map(_short, args))}, not {_short(value)}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if type(member.value) is type(value) and member.value == value:
                return member
        choices = ", ".join(_short(member.value) for member in annotation)
        raise _Mismatch(f"must be one of {choices}, not {_short(value)}")
    if annotation in _ARRAYS or origin in _ARRAYS:
        return _convert_array(annotation, origin, args, value)
    if annotation in _OBJECTS or origin in _OBJECTS:
        if type(value) is not dict:
            raise _Mismatch(f"must be an object, not {_short(value)}")
        if len(args) == 2:
            return {key: _convert(args[1], item) for key, item in value.items()}
        return value
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        required = annotation.__required_keys__
        return _convert_fields(hints, set(required), value)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation, include_extras=True)
        fields = dataclasses.fields(annotation)
        required = {field.name for field in fields if _field_required(field)}
        values = _convert_fields({f.name: hints.get(f.name, Any) for f in fields}, required, value)
        return annotation(**values)
    if is_pydantic_model(annotation):
        try:
            return annotation.model_validate(value)
        except ValueError as exc:  # pydantic's ValidationError
            raise _Mismatch(f"is not a valid {annotation.__name__}: {one_line(exc)}") from None
    return value


def _convert_array(annotation: Any, origin: Any, args: tuple[Any, ...], value: Any) -> Any:
    if type(value) is not list:
        raise _Mismatch(f"must be an array, not {_short(value)}")
    kind = origin or annotation
    if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Mismatch(f"must be an array of {len(args)} items, not {len(value)}")
        return tuple(_convert(arg, item) for arg, item in zip(args, value, strict=True))
    items = [_convert(args[0], item) for item in value] if args else list(value)
    if kind in (tuple,):
        return tuple(items)
    if kind in (set, frozenset, collections.abc.Set):
        return set(items) if kind is not frozenset else frozenset(items)
    return items


def _convert_fields(hints: dict[str, Any], required: set[str], value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Mismatch(f"must be an object, not {_short(value)}")
    problems, converted = [], {}
    for key, item in value.items():
        if key not in hints:
            problems.append(f"has no field {key!r}")
            continue
        try:
            converted[key] = _convert(hints[key], item)
        except _Mismatch as exc:
            problems.append(f"field {key!r} {exc}")
    problems += [f"misses field {key!r}" for key in sorted(required - value.keys())]
    if problems:
        raise _Mismatch(", ".join(problems))
    return converted


# --- docstrings ------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Returns?|Yields?|Raises|Examples?|"
    r"Notes?|See Also|Attributes)\s*:?\s*$"
)
_PARAMETER_SECTIONS = ("Args", "Arguments", "Parameters", "Params", "Keyword Args")
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_REST_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^(\w+)\s*(?::.*)?$")


def _read_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """A docstring's description (the text before its first section or field) and
    each parameter's description, in Google, reST or NumPy style. `doc` is
    dedented (`inspect.getdoc`)."""
    lines = doc.splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None  # None: still the description
    current: str | None = None  # the parameter whose description continues
    item_indent = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        index += 1
        rest = _REST_PARAM.match(stripped)
        heading = _SECTION.match(stripped) if indent == 0 else None
        if rest:
            section, current = "rest", rest.group(1)
            params[current] = rest.group(2)
        elif stripped.startswith(":") or heading:
            current, section = None, "other"
            if heading and heading.group(1) in _PARAMETER_SECTIONS:
                section = "google"
                underline = lines[index].strip() if index < len(lines) else ""
                if underline and set(underline) == {"-"}:
                    section, index = "numpy", index + 1
        elif section is None:
            description.append(stripped)
        elif not stripped:
            continue
        elif (
            section == "google"
            and (item := _GOOGLE_ITEM.match(stripped))
            and (current is None or indent <= item_indent)
        ):
            current, item_indent = item.group(1), indent
            params[current] = item.group(2)
        elif section == "numpy" and indent == 0 and (item := _NUMPY_ITEM.match(stripped)):
            current = item.group(1)
            params[current] = ""
        elif current is not None and section != "other":
            params[current] = f"{params[current]} {stripped}".strip()
    return " ".join(" ".join(description).split()), params
