"""The GenAI conventions' attributes, shaped from request and answer bodies: no
OpenTelemetry needed (test_telemetry.py reads them back from the SDK)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncchat._genai import (
    error_type,
    input_messages,
    openai_request_attributes,
    openai_response_attributes,
    output_messages,
    provider_of,
    request_attributes,
    response_attributes,
    tool_definitions,
)
from asyncchat.errors import RateLimitError


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://myres.openai.azure.com/openai/deployments/x", "azure.ai.openai"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://open.bigmodel.cn/api/paas/v4", "openai"),  # OpenAI-compatible
        ("http://localhost:8000/v1", "openai"),
    ],
)
def test_provider_names(url: str, provider: str) -> None:
    assert provider_of(url) == provider


def test_a_body_without_named_parameters_gives_none() -> None:
    assert request_attributes({"model": "m", "messages": [], "stream": True}) == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_completion_tokens": 9}, {"gen_ai.request.max_tokens": 9}),
        ({"temperature": 0}, {"gen_ai.request.temperature": 0}),
        ({"seed": True}, {}),  # a bool is not the int the conventions want
        ({"top_p": "0.9"}, {}),  # a number sent as a word is not the conventions' double
        ({"reasoning_effort": "low"}, {"gen_ai.request.reasoning.level": "low"}),
        ({"reasoning_effort": 2}, {}),
        ({"encoding_format": "float"}, {"gen_ai.request.encoding_formats": ["float"]}),
        ({"dimensions": 256}, {"gen_ai.embeddings.dimension.count": 256}),
        ({"stop": "END"}, {"gen_ai.request.stop_sequences": ["END"]}),
        ({"stop": ["a", 1]}, {}),
        ({"n": 1}, {}),  # the default is not worth an attribute
        ({"n": 3}, {"gen_ai.request.choice.count": 3}),
        ({"response_format": {"type": "json_schema"}}, {"gen_ai.output.type": "json"}),
        ({"response_format": {"type": "text"}}, {}),
    ],
)
def test_request_parameters(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert request_attributes({"model": "m", "messages": [], **body}) == expected


def test_an_answer_gives_only_well_typed_values() -> None:
    """What a server sends is read as the conventions type it: a model that is not a
    string, a negative or boolean count, are left out, not recorded wrong."""
    attributes = response_attributes(
        {
            "id": "r1",
            "model": 5,
            "choices": [{"finish_reason": None}, "junk", {"finish_reason": "stop"}, {}],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": -1,
                "prompt_tokens_details": {"cached_tokens": 6},
                "completion_tokens_details": {"reasoning_tokens": True},
            },
        }
    )
    assert attributes == {
        "gen_ai.response.id": "r1",
        "gen_ai.response.finish_reasons": ["", "stop"],
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 6,
    }
    reasoning = response_attributes(
        {"usage": {"completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 7}}}
    )
    assert reasoning == {
        "gen_ai.usage.output_tokens": 9,
        "gen_ai.usage.reasoning.output_tokens": 7,
    }


def test_error_types() -> None:
    assert error_type(RateLimitError("slow down", status_code=429)) == "429"
    assert error_type(ValueError("x")) == "ValueError"
    # Named by the package a user imports it from, not the module defining it.
    assert error_type(json.JSONDecodeError("x", "", 0)) == "json.JSONDecodeError"


def test_input_messages_leave_inline_image_bytes_out() -> None:
    shaped = json.loads(
        input_messages(
            {"model": "m", "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": "https://example.com/cat.png"},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ]}
        )
    )  # fmt: skip
    assert shaped == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "what is this?"},
                {"type": "blob", "modality": "image"},
                # The address alone, as some servers take it.
                {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18C"}],
        },
    ]


def test_a_mistral_answer_s_thinking_parts_are_its_reasoning_part() -> None:
    """Mistral's reasoning models answer with content as parts, the thinking first."""
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm."}]}
    message = {"role": "assistant", "content": [thinking, {"type": "text", "text": "42"}]}
    shaped = json.loads(output_messages({"choices": [{"message": message}]}))
    assert shaped[0]["parts"] == [
        {"type": "reasoning", "content": "Hmm."},
        {"type": "text", "content": "42"},
    ]


def test_openai_attributes_are_the_tier_asked_for_and_what_the_answer_tells() -> None:
    assert openai_request_attributes({"service_tier": "priority"}) == {
        "openai.request.service_tier": "priority"
    }
    assert openai_request_attributes({"service_tier": "auto"}) == {}  # as the conventions say
    assert openai_request_attributes({"service_tier": None, "model": "m"}) == {}
    assert openai_response_attributes(
        {"service_tier": "default", "system_fingerprint": "fp_1", "model": "m"}
    ) == {"openai.response.service_tier": "default", "openai.response.system_fingerprint": "fp_1"}
    assert openai_response_attributes({"service_tier": 3, "system_fingerprint": None}) == {}


def test_tool_definitions_name_each_tool_offered_and_leave_its_schema_out() -> None:
    offered = [
        {"type": "function", "function": {"name": "get_weather", "description": "The weather.",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "web_search", "web_search": {"enable": True}},  # GLM's: no name of its own
        {"type": "function", "function": {"name": 7}},  # a name that is not one
        {"function": {"name": "untyped"}},  # no type: not a tool definition
        "get_time",
    ]  # fmt: skip
    assert json.loads(tool_definitions(offered) or "") == [
        {"type": "function", "name": "get_weather"},
        {"type": "web_search", "name": "web_search"},
        {"type": "function", "name": "function"},
    ]
    assert tool_definitions(None) is None
    assert tool_definitions([]) is None
    assert tool_definitions([{"tools": "none"}]) is None


# JSON as servers and callers send it (decoded by orjson: integers from -2**63 to
# 2**64 - 1, past what OTLP's signed 64 bits hold), biased to the names the shaping reads.
_NAMES = ["id", "model", "choices", "message", "finish_reason", "usage", "prompt_tokens",
          "completion_tokens", "prompt_tokens_details", "cached_tokens",
          "completion_tokens_details", "reasoning_tokens", "messages", "role", "content",
          "type", "text", "image_url", "url", "tool_calls", "function", "name", "arguments",
          "tool_call_id", "max_tokens", "temperature", "seed", "stop", "n",
          "response_format", "reasoning_effort", "encoding_format", "dimensions", "tools",
          "service_tier",
          "system_fingerprint"]  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.sampled_from(["user", "tool", "text", "image_url", "stop", "data:x", "http://x/y"])
    | st.text(max_size=5)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=3), inner, max_size=6)
    ),
    max_leaves=30,
)
_OBJECTS = st.dictionaries(st.sampled_from(_NAMES), _JSON, max_size=8)


def _is_attribute_value(value: Any) -> bool:
    """What OTLP carries: a string, bool, 64-bit int or double, or a list of one kind."""
    if isinstance(value, list):
        kinds = {type(item) for item in value}
        return len(kinds) <= 1 and all(_is_attribute_value(item) for item in value)
    if isinstance(value, (bool, str, float)):
        return True
    return isinstance(value, int) and -(2**63) <= value < 2**63


@settings(max_examples=300, deadline=None)
@given(_OBJECTS)
def test_no_shape_of_json_breaks_the_shaping(data: dict[str, Any]) -> None:
    """Telemetry must never fail a request: whatever a server answers or a caller
    sends, the attributes come out as values OTLP can carry, the messages as JSON."""
    for attributes in (
        request_attributes(data),
        response_attributes(data),
        openai_request_attributes(data),
        openai_response_attributes(data),
    ):
        assert all(_is_attribute_value(value) for value in attributes.values()), attributes
    assert isinstance(json.loads(output_messages(data)), list)
    assert isinstance(json.loads(input_messages(data)), list)
    assert isinstance(json.loads(tool_definitions(data.get("tools")) or "[]"), list)
