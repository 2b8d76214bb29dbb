"""The GenAI semantic conventions' attributes of a chat or embeddings request and of
its answer, read from their JSON bodies.

Shaping only: no OpenTelemetry here (`_telemetry` hands the results to it). A value
a server sends of another type than the conventions give is left out, not recorded
wrong, and no shape of JSON makes these raise: telemetry must never fail a request.
The API key is never read (headers are not), and messages are shaped only when
asked for.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson

from asyncchat.errors import APIStatusError
from asyncchat.quirks import message_reasoning

__all__ = [
    "error_type",
    "input_messages",
    "openai_request_attributes",
    "openai_response_attributes",
    "output_messages",
    "provider_of",
    "request_attributes",
    "response_attributes",
    "tool_definitions",
]

# Hosts with a name of their own in the conventions; any other server speaks
# OpenAI's protocol, and is `openai` to them.
_PROVIDERS = {
    "api.openai.com": "openai",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "generativelanguage.googleapis.com": "gcp.gemini",
}
# Request fields the conventions name, and their attributes.
_REQUEST_ATTRIBUTES = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "reasoning_effort": "gen_ai.request.reasoning.level",
    "encoding_format": "gen_ai.request.encoding_formats",
    "dimensions": "gen_ai.embeddings.dimension.count",
}
# The table's fields whose values are words; the others are numbers.
_TEXT_FIELDS = frozenset({"reasoning_effort", "encoding_format"})
# Every body field that can give the span an attribute: the table's, and those
# shaped by hand below.
_ATTRIBUTE_FIELDS = frozenset(_REQUEST_ATTRIBUTES) | {"stop", "n", "response_format"}
# Attribute integers are 64-bit in OTLP: its exporter cannot encode a larger one
# (it logs a traceback and drops the attribute).
_INT64 = 2**63


def _is_int64(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


def provider_of(base_url: str) -> str:
    """`gen_ai.provider.name` for a base URL."""
    host = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    return _PROVIDERS.get(host, "openai")


def error_type(error: BaseException) -> str:
    """`error.type`: the HTTP status of a status error, else the exception's class."""
    if isinstance(error, APIStatusError):
        return str(error.status_code)
    cls = type(error)
    module = cls.__module__.split(".")[0]
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes of the request parameters the conventions name."""
    attributes: dict[str, Any] = {}
    if _ATTRIBUTE_FIELDS.isdisjoint(body):  # most bodies: model and messages only
        return attributes
    for field, value in body.items():  # a body has fewer fields than the table
        name = _REQUEST_ATTRIBUTES.get(field)
        if name is None or isinstance(value, bool):
            continue
        if field in _TEXT_FIELDS:
            if isinstance(value, str):
                attributes[name] = [value] if name.endswith("formats") else value
        elif isinstance(value, float) or _is_int64(value):
            attributes[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop
    n = body.get("n")
    if _is_int64(n) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        attributes["gen_ai.output.type"] = "json"
    return attributes


def response_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes of an answer: its id, model, finish reasons, token counts."""
    attributes: dict[str, Any] = {}
    response_id = data.get("id")
    if isinstance(response_id, str):
        attributes["gen_ai.response.id"] = response_id
    model = data.get("model")
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    choices = data.get("choices")
    if isinstance(choices, list):
        reasons = []
        for choice in choices:
            if isinstance(choice, dict) and "finish_reason" in choice:
                reason = choice["finish_reason"]
                reasons.append(reason if isinstance(reason, str) else "")
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
    usage = data.get("usage")
    if isinstance(usage, dict):
        _add_count(attributes, "gen_ai.usage.input_tokens", usage, "prompt_tokens")
        _add_count(attributes, "gen_ai.usage.output_tokens", usage, "completion_tokens")
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            _add_count(attributes, "gen_ai.usage.cache_read.input_tokens", details, "cached_tokens")
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict):
            _add_count(
                attributes, "gen_ai.usage.reasoning.output_tokens", details, "reasoning_tokens"
            )
    return attributes


def openai_request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the conventions add to the span of a chat request to a server that is
    `openai` to them, from its body: the service tier asked for, unless `auto`."""
    attributes: dict[str, Any] = {}
    tier = body.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        attributes["openai.request.service_tier"] = tier
    return attributes


def openai_response_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the conventions add for an `openai` server's answer (to its span, and to
    its duration and token metrics): the service tier that answered and the system
    fingerprint, when the answer tells them."""
    attributes: dict[str, Any] = {}
    tier = data.get("service_tier")
    if isinstance(tier, str):
        attributes["openai.response.service_tier"] = tier
    fingerprint = data.get("system_fingerprint")
    if isinstance(fingerprint, str):
        attributes["openai.response.system_fingerprint"] = fingerprint
    return attributes


def _add_count(attributes: dict[str, Any], name: str, counts: dict[str, Any], key: str) -> None:
    """`counts[key]` as attribute `name`, when it is a token count (an int, not negative)."""
    count = counts.get(key)
    if _is_int64(count) and count >= 0:
        attributes[name] = count


def _parts(message: Any) -> list[dict[str, Any]]:
    """A message's content as the conventions' parts (none for what is not a message):
    its reasoning (under either key, or Mistral's thinking parts), text, images and
    tool calls; a tool message's result."""
    if not isinstance(message, dict):
        return []
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                 "response": message.get("content")}]  # fmt: skip
    parts: list[dict[str, Any]] = []
    reasoning = message_reasoning(message)  # before the answer, as the model thought it
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text")})
            elif isinstance(part, dict) and part.get("type") == "image_url":
                parts.append(_image_part(part.get("image_url")))
    tool_calls = message.get("tool_calls")
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return parts


def _image_part(image: Any) -> dict[str, Any]:
    """An image given as `{"url": ...}` (or, as some servers take it, the address
    alone): its address, or for inline bytes only that there was one."""
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url and not url.startswith("data:"):
        return {"type": "uri", "modality": "image", "uri": url}
    return {"type": "blob", "modality": "image"}


def input_messages(sent: Any) -> str:
    """`gen_ai.input.messages`: the messages of a request body as it was sent (its
    JSON decoded), as the conventions' JSON. What was sent, not the caller's objects:
    a message taken from an earlier answer (an agent's loop) is there as the server
    saw it."""
    messages = sent.get("messages") if isinstance(sent, dict) else None
    shaped = [
        {"role": message.get("role"), "parts": _parts(message)}
        for message in _list(messages)
        if isinstance(message, dict)
    ]
    return orjson.dumps(shaped).decode()


def output_messages(data: Mapping[str, Any]) -> str:
    """`gen_ai.output.messages`: an answer's choices as the conventions' JSON."""
    shaped = [
        {
            "role": "assistant",
            "parts": _parts(choice.get("message")),
            "finish_reason": choice.get("finish_reason"),
        }
        for choice in _list(data.get("choices"))
        if isinstance(choice, dict)
    ]
    return orjson.dumps(shaped).decode()


def tool_definitions(tools: Any) -> str | None:
    """`gen_ai.tool.definitions`: the tools a request offered, as the conventions'
    JSON, each by its type and name (a tool with no name of its own, such as GLM's
    `web_search`, by its type); None when it offered none. Their descriptions and
    parameters are left out, as the conventions advise by default: they can be large,
    and they are the application's code, not the conversation."""
    shaped = []
    for tool in _list(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            continue
        spec = tool.get(kind)  # {"type": "function", "function": {"name": ...}}
        name = spec.get("name") if isinstance(spec, dict) else None
        shaped.append({"type": kind, "name": name if isinstance(name, str) else kind})
    return orjson.dumps(shaped).decode() if shaped else None


def _list(value: Any) -> list[Any]:
    """`value` when it is a list, else nothing to iterate."""
    return value if isinstance(value, list) else []
