"""Structured outputs: a pydantic model or a JSON schema in, the parsed answer out.

Sans-IO: this module shapes a request and parses its completion; the client
sends it. pydantic is never imported here: a model class is known by its
methods (`model_json_schema`, `model_validate_json`), so asyncchat works, and
this module loads, without pydantic installed.

Three ways to ask for the format (`strategy`), for servers that differ:

- `"json_schema"` (the default): `response_format` carries the schema and the
  server constrains its output to it (OpenAI, Azure, vLLM, llama.cpp, Ollama,
  Mistral, Gemini, Groq, most of OpenRouter).
- `"json_object"`: JSON mode, with the schema written into the system message,
  for servers that refuse `json_schema` but take `json_object` (DeepSeek, GLM).
- `"tool"`: a forced call to one tool whose parameters are the schema; the
  answer is its arguments. For servers with tools but no JSON mode at all.

The two fallbacks do not constrain decoding, so the answer is validated here:
a pydantic model validates it; a schema dict only checks that it is JSON.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from asyncchat.errors import (
    ContentFilterFinishReasonError,
    LengthFinishReasonError,
    StructuredOutputError,
    ToolArgumentsError,
    one_line,
)
from asyncchat.quirks import (
    CONTENT_FILTER_REASONS,
    LIMIT_REASONS,
    SERVER_STOP_REASONS,
    answer_json_text,
    content_text,
    says_no_arguments,
)
from asyncchat.types import ChatCompletion, ParsedChatCompletion

__all__ = [
    "STRATEGIES",
    "OutputFormat",
    "PydanticFunctionTool",
    "Strategy",
    "StructuredRequest",
    "is_pydantic_model",
    "json_schema_refused",
    "pydantic_function_tool",
    "to_strict_json_schema",
]

Strategy = Literal["json_schema", "json_object", "tool"]
STRATEGIES: tuple[Strategy, ...] = ("json_schema", "json_object", "tool")

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def is_pydantic_model(value: Any) -> bool:
    """Whether `value` is a pydantic (v2) model class, without importing pydantic."""
    return (
        isinstance(value, type)
        and callable(getattr(value, "model_json_schema", None))
        and callable(getattr(value, "model_validate_json", None))
    )


def _wire_name(name: str) -> str:
    """A name as OpenAI takes it for a schema or a function: [a-zA-Z0-9_-], 64 at most."""
    return _NAME_UNSAFE.sub("_", name)[:64] or "output"


# --- strict schemas ------------------------------------------------------------------


def to_strict_json_schema(schema: Mapping[str, Any] | type) -> dict[str, Any]:
    """A JSON schema made fit for OpenAI's strict mode; the input is left untouched.

    Takes a schema dict or a pydantic model class. Every object gets
    `additionalProperties: false` (unless it says otherwise) and all its
    properties `required`; `oneOf` becomes `anyOf` (strict mode has no `oneOf`,
    and the branches of a discriminated union match the same values either
    way); a one-branch `allOf` is merged into its parent; `default: null` is
    dropped; a `$ref` with sibling keywords (which strict mode refuses) is
    replaced by what it points to, merged under the siblings.
    """
    if is_pydantic_model(schema):
        schema = schema.model_json_schema()  # type: ignore[union-attr]
    if not isinstance(schema, Mapping):
        raise TypeError(f"expected a JSON schema dict or a pydantic model, not {schema!r}")
    copy: dict[str, Any] = orjson.loads(orjson.dumps(schema))  # deep, and JSON-only
    _make_strict(copy, copy, ())
    return copy


def _make_strict(node: dict[str, Any], root: dict[str, Any], inlining: tuple[str, ...]) -> None:
    """Make one schema node strict, in place (on our own copy), and all below it."""
    for key in ("$defs", "definitions"):
        definitions = node.get(key)
        if isinstance(definitions, dict):
            for definition in definitions.values():
                if isinstance(definition, dict):
                    _make_strict(definition, root, inlining)
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
        node.pop("discriminator", None)
    properties = node.get("properties")
    if node.get("type") == "object" or isinstance(properties, dict):
        node.setdefault("additionalProperties", False)
    if isinstance(properties, dict):
        node["required"] = list(properties)
        for value in properties.values():
            if isinstance(value, dict):
                _make_strict(value, root, inlining)
    for key in ("items", "additionalProperties", "not"):
        child = node.get(key)
        if isinstance(child, dict):
            _make_strict(child, root, inlining)
    for key in ("anyOf", "allOf", "prefixItems"):
        branches = node.get(key)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, dict):
                    _make_strict(branch, root, inlining)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        del node["allOf"]
        for key, value in all_of[0].items():
            node.setdefault(key, value)
    if "default" in node and node["default"] is None:
        del node["default"]
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        if ref in inlining:  # a recursive model: keep the reference, drop its siblings
            node.clear()
            node["$ref"] = ref
            return
        target = _resolve(root, ref)
        del node["$ref"]
        for key, value in orjson.loads(orjson.dumps(target)).items():
            node.setdefault(key, value)
        _make_strict(node, root, (*inlining, ref))


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    """What a local `$ref` ("#/$defs/Name") points to."""
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs (#/...) can be made strict, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise ValueError(f"the schema's $ref {ref!r} points to nothing")
    return node


# --- the format asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """What `response_format` asks for: a named schema (or any JSON object), and the
    pydantic model that validates it, if any."""

    name: str
    schema: dict[str, Any] | None  # None: any JSON object (`json_object`)
    strict: bool = False
    model: type | None = None
    wire: dict[str, Any] = field(default_factory=dict)  # `response_format` as sent

    @classmethod
    def of(cls, response_format: Any) -> OutputFormat:
        """The format of a `response_format` argument: a pydantic model class, or a
        `json_schema` / `json_object` response-format dict."""
        if is_pydantic_model(response_format):
            return _model_format(response_format)
        if not isinstance(response_format, Mapping):
            raise TypeError(
                "response_format must be a pydantic model class or a response-format dict "
                f"({{'type': 'json_schema', ...}}), not {response_format!r}"
            )
        kind = response_format.get("type")
        if kind == "json_object":
            return cls("json_object", None, wire=dict(response_format))
        if kind != "json_schema":
            raise ValueError(
                "parsing needs a response_format of type 'json_schema' or 'json_object' "
                f"(or a pydantic model), not {kind!r}"
            )
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ValueError(
                "a json_schema response_format needs "
                "{'json_schema': {'name': ..., 'schema': {...}}}"
            )
        given_name = spec.get("name")
        if not isinstance(given_name, str) or not given_name:
            raise ValueError("a json_schema response_format needs a 'name'")
        strict = spec.get("strict") is True
        # Strict mode refuses a schema that is not strict: make it so, in a copy.
        schema = to_strict_json_schema(spec["schema"]) if strict else dict(spec["schema"])
        wire = {**response_format, "json_schema": {**spec, "schema": schema}}
        return cls(given_name, schema, strict, None, wire)

    def parse(self, text: str) -> Any:
        """The answer's text as the model instance, or decoded JSON; `ValueError` if not."""
        if self.model is not None:
            return self.model.model_validate_json(text)  # type: ignore[attr-defined]
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None

    def instruction(self) -> str:
        """The system-message text that asks for this format in JSON mode."""
        schema = orjson.dumps(self.schema).decode()
        return (
            "Answer with one JSON object and nothing else: no prose, no code fence. "
            f"It must match this JSON schema:\n{schema}"
        )


@functools.lru_cache(maxsize=256)
def _model_format(model: type) -> OutputFormat:
    """A model's format, built once: pydantic's schema generation costs a fraction
    of a millisecond, every request of a batch would pay it."""
    name = _wire_name(model.__name__)
    schema = to_strict_json_schema(model)
    wire = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    return OutputFormat(name, schema, True, model, wire)


# --- tools from pydantic models ------------------------------------------------------------


class PydanticFunctionTool(dict[str, Any]):
    """A strict function tool made from a pydantic model: the tool dict to send, and
    `model`, which `parse()` and `stream()` validate the call's arguments into."""

    model: type

    def __init__(self, tool: dict[str, Any], model: type) -> None:
        super().__init__(tool)
        self.model = model


def pydantic_function_tool(
    model: type, *, name: str | None = None, description: str | None = None
) -> PydanticFunctionTool:
    """A strict function tool whose parameters are the model's fields.

    Pass it in `tools=[...]`; a call's arguments then arrive as an instance of
    `model`: `tool_call.function.parsed_arguments()` in `parse()` and `stream()`.
    `description` defaults to the model's docstring.
    """
    if not is_pydantic_model(model):
        raise TypeError(f"pydantic_function_tool takes a pydantic model class, not {model!r}")
    function: dict[str, Any] = {
        "name": _wire_name(name or model.__name__),
        "parameters": to_strict_json_schema(model),
        "strict": True,
    }
    doc = description if description is not None else model.__doc__
    if doc:
        function["description"] = " ".join(doc.split())
    return PydanticFunctionTool({"type": "function", "function": function}, model)


def _tool_models(tools: Iterable[Any] | None) -> dict[str, type]:
    models: dict[str, type] = {}
    for tool in tools or ():
        if isinstance(tool, PydanticFunctionTool):
            models[tool["function"]["name"]] = tool.model
    return models


# --- a request, shaped and parsed ----------------------------------------------------------------


def _with_instruction(messages: list[Any], instruction: str) -> list[Any]:
    """The messages with `instruction` in the system message: appended to a leading
    system (or developer) message with text content, else in a new first one.
    The caller's messages are not modified."""
    first = messages[0] if messages else None
    if (
        isinstance(first, Mapping)
        and first.get("role") in ("system", "developer")
        and isinstance(first.get("content"), str)
    ):
        merged = {**first, "content": f"{first['content']}\n\n{instruction}"}
        return [merged, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


@dataclass(frozen=True)
class StructuredRequest:
    """One call's structured-output plan: how the request asks for the format, and
    how its completion is parsed."""

    output: OutputFormat | None
    strategy: Strategy = "json_schema"
    tool_models: dict[str, type] = field(default_factory=dict)

    @classmethod
    def of(
        cls, response_format: Any, strategy: Strategy, tools: Iterable[Any] | None
    ) -> StructuredRequest:
        """The plan for a call's `response_format` (None: only pydantic tools, if
        any, are parsed), `strategy` and `tools`; a clear error for a bad one."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        output = None if response_format is None else OutputFormat.of(response_format)
        if strategy != "json_schema" and output is not None and output.schema is None:
            strategy = "json_schema"  # a bare json_object format is sent as it is
        if strategy == "tool" and output is not None:
            assert output.schema is not None
            if output.schema.get("type") != "object":
                raise ValueError("strategy='tool' needs a schema whose top level is an object")
        return cls(output, strategy, _tool_models(tools))

    @property
    def parses(self) -> bool:
        """Whether there is anything to parse (a format, or pydantic tools)."""
        return self.output is not None or bool(self.tool_models)

    @property
    def json_content(self) -> bool:
        """Whether the answer's text is the JSON (not a tool call's arguments)."""
        return self.output is not None and self.strategy != "tool"

    def shape(self, messages: list[Any], params: dict[str, Any]) -> list[Any]:
        """Put the format into a request: `params` (our own dict) gains
        `response_format`, or `tools` and `tool_choice`; returns the messages to send."""
        output = self.output
        if output is None:
            return messages
        if self.strategy == "json_schema":
            params["response_format"] = output.wire
            return messages
        if self.strategy == "json_object":
            params["response_format"] = {"type": "json_object"}
            return _with_instruction(messages, output.instruction())
        if params.get("tools") or params.get("tool_choice"):
            raise ValueError(
                "strategy='tool' forces a call to a tool of its own: "
                "leave out tools and tool_choice, or use another strategy"
            )
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": output.name,
                    "description": "Give your answer as this function's arguments.",
                    "parameters": output.schema,
                },
            }
        ]
        params["tool_choice"] = {"type": "function", "function": {"name": output.name}}
        return messages

    def parse(self, completion: ChatCompletion) -> ParsedChatCompletion[Any]:
        """The completion with `message.parsed` (and pydantic tools' arguments) filled in.

        Raises `LengthFinishReasonError` or `ContentFilterFinishReasonError` when a
        choice reached a limit or was filtered, `StructuredOutputError` when the
        server stopped a choice (`quirks.SERVER_STOP_REASONS`) or an answer is not
        in the format, `ToolArgumentsError` when a pydantic tool's arguments are
        not valid for its model.
        """
        # Not `ParsedChatCompletion[Any](...)`: calling a subscripted generic stores
        # `__orig_class__` on the instance, whose `__dict__` is the JSON itself.
        parsed: ParsedChatCompletion[Any] = ParsedChatCompletion(
            completion._data, completion._header_request_id, completion._headers
        )
        if not self.parses:
            return parsed
        for choice in parsed.choices:
            reason = choice.finish_reason if type(choice.finish_reason) is str else None
            if reason in LIMIT_REASONS:
                raise LengthFinishReasonError(completion=completion, finish_reason=reason)
            if reason in CONTENT_FILTER_REASONS:
                raise ContentFilterFinishReasonError(completion=completion, finish_reason=reason)
            if reason in SERVER_STOP_REASONS:
                raise StructuredOutputError(
                    f"the server stopped the answer before it was complete (finish_reason "
                    f"{reason!r}), so it cannot be parsed: send the request again",
                    completion=completion,
                )
            message = choice.message
            for call in message.tool_calls or ():
                model = self.tool_models.get(call.function.name or "")
                if model is not None:
                    call.function._parsed = self._tool_arguments(model, call.function)
            if self.output is not None and not message.refusal:
                message._parsed = self._answer(message, completion)
        return parsed

    def _answer(self, message: Any, completion: ChatCompletion) -> Any:
        output = self.output
        assert output is not None
        text = content_text(message.content)  # a list of parts from Mistral: its text
        if self.strategy == "tool":
            for call in message.tool_calls or ():
                if call.function.name == output.name:
                    text = call.function.arguments
                    break
        if text is None or not text.strip():
            raise StructuredOutputError(
                f"the answer holds no {output.name} "
                + ("call" if self.strategy == "tool" else "text")
                + " to parse",
                completion=completion,
            )
        try:
            # A tool call's arguments are JSON as they come; an answer may be wrapped.
            return output.parse(text if self.strategy == "tool" else answer_json_text(text))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise StructuredOutputError(
                f"the answer is not a valid {output.name}: {one_line(exc)}: {text[:200]!r}",
                completion=completion,
            ) from exc

    @staticmethod
    def _tool_arguments(model: type, function: Any) -> Any:
        arguments = "{}" if says_no_arguments(function.arguments) else function.arguments
        try:
            return model.model_validate_json(arguments)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ToolArgumentsError(
                f"the arguments of tool call {function.name!r} are not a valid "
                f"{model.__name__}: {one_line(exc)}: {arguments[:200]!r}",
                arguments=arguments,
            ) from exc


def json_schema_refused(status_code: int, message: str) -> bool:
    """Whether a 400 says the server does not take a `json_schema` response format
    (DeepSeek: "This response_format type is unavailable now"), rather than that the
    schema itself is wrong (OpenAI: "Invalid schema for response_format ...")."""
    lowered = message.lower()
    return (
        status_code == 400
        and ("response_format" in lowered or "json_schema" in lowered)
        and any(word in lowered for word in _REFUSALS)
    )


_REFUSALS = ("unavailable", "not supported", "unsupported", "not support", "unknown variant")
