"""Response objects: attribute access, to_dict, unknown fields, repr."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from asyncchat.types import ChatCompletion, ChatCompletionChunk

# The seed's GLM response with tool calls, as the server sent it.
GLM_TOOL_RESPONSE = {
    "id": "8741754470499318134",
    "choices": [
        {
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_8741754470499318134",
                        "function": {
                            "arguments": '{"location": "Boston", "unit": "celsius"}',
                            "name": "get_current_weather",
                        },
                        "type": "function",
                        "index": 0,
                    }
                ],
            },
        }
    ],
    "created": 1718423297,
    "model": "glm-4-air",
    "usage": {"completion_tokens": 18, "prompt_tokens": 206, "total_tokens": 224},
    "request_id": "8741754470499318134",
    "web_search": [{"title": "Boston weather"}],
}


def test_attribute_access_like_the_official_sdk() -> None:
    completion = ChatCompletion(copy.deepcopy(GLM_TOOL_RESPONSE))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "call_8741754470499318134"
    assert call.function.name == "get_current_weather"
    assert call.function.arguments == '{"location": "Boston", "unit": "celsius"}'
    assert call.function.parsed_arguments() == {"location": "Boston", "unit": "celsius"}
    assert completion.usage is not None
    assert completion.usage.total_tokens == 224
    assert completion.object is None
    assert completion.system_fingerprint is None


def test_unknown_provider_fields_kept_and_readable() -> None:
    completion = ChatCompletion(copy.deepcopy(GLM_TOOL_RESPONSE))
    assert completion.web_search[0]["title"] == "Boston weather"
    assert completion.choices[0].message.tool_calls[0].index == 0  # type: ignore[index]
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = completion.nonexistent


def test_to_dict_is_the_json_as_received_and_a_copy() -> None:
    completion = ChatCompletion(copy.deepcopy(GLM_TOOL_RESPONSE))
    as_dict = completion.to_dict()
    assert as_dict == GLM_TOOL_RESPONSE
    as_dict["choices"].clear()
    assert len(completion.choices) == 1
    assert completion.to_dict() == GLM_TOOL_RESPONSE


def test_request_id_from_body_then_header() -> None:
    assert ChatCompletion(copy.deepcopy(GLM_TOOL_RESPONSE), "header-id").request_id == (
        "8741754470499318134"
    )
    assert ChatCompletion({"id": "x"}, "header-id").request_id == "header-id"
    assert ChatCompletion({"id": "x"}).request_id is None


def test_repr_is_readable() -> None:
    completion = ChatCompletion(copy.deepcopy(GLM_TOOL_RESPONSE))
    text = repr(completion)
    assert text.startswith("ChatCompletion(id='8741754470499318134', choices=[Choice(")
    assert "ToolCall(id='call_8741754470499318134'" in text
    assert 'Function(arguments=\'{"location": "Boston", "unit": "celsius"}\'' in text
    assert "usage=Usage(completion_tokens=18" in text


def test_equality_by_value() -> None:
    assert ChatCompletion({"id": "a"}) == ChatCompletion({"id": "a"})
    assert ChatCompletion({"id": "a"}) != ChatCompletion({"id": "b"})


def test_chunk_delta_fields() -> None:
    chunk = ChatCompletionChunk(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "reasoning": "hmm",
                        "content": None,
                        "tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}],
                    },
                    "finish_reason": None,
                }
            ],
        }
    )
    choice = chunk.choices[0]
    assert choice.delta.reasoning_content == "hmm"
    assert choice.delta.content is None
    assert choice.delta.tool_calls is not None
    assert choice.delta.tool_calls[0].function.arguments == '{"a":1}'
    assert choice.delta.tool_calls[0].function.name is None
    assert chunk.usage is None


def test_missing_nested_objects_read_as_empty() -> None:
    chunk = ChatCompletionChunk({"choices": [{}]})
    assert chunk.choices[0].delta.content is None
    assert ChatCompletionChunk({}).choices == []


def test_nested_fields_are_read_only_and_scalar_writes_reach_to_dict() -> None:
    """A view never silently parts from the JSON it shows."""
    import pytest

    from asyncchat.types import ChatCompletion, ChatCompletionChunk

    data = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": "hi",
                    "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}],
                },
            }
        ],
        "usage": {"total_tokens": 3},
    }
    chunk = ChatCompletionChunk(data)
    choice = chunk.choices[0]
    for owner, name in (
        (chunk, "choices"),
        (chunk, "usage"),
        (choice, "delta"),
        (choice.delta, "tool_calls"),
        (choice.delta.tool_calls[0].function, "arguments"),  # type: ignore[index]
        (ChatCompletion({"choices": []}), "choices"),
    ):
        with pytest.raises(AttributeError):
            setattr(owner, name, [])
    chunk.id = "changed"  # a scalar field is the JSON's own value
    assert chunk.to_dict()["id"] == "changed"
    assert chunk.to_dict()["choices"] == data["choices"]


# A completion and a chunk with every field the official SDK declares on them (as
# of openai 3.63; all but `moderation` and custom tool calls), as OpenAI sends them.
TOKEN = {
    "token": "Hi",
    "bytes": [72, 105],
    "logprob": -0.01,
    "top_logprobs": [{"token": "Hi", "bytes": [72, 105], "logprob": -0.01}],
}
AUDIO = {"id": "audio_1", "data": "UklGRg==", "expires_at": 1730000000, "transcript": "Hi"}
CITATION = {"end_index": 2, "start_index": 0, "title": "Greetings", "url": "https://example.com"}
USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 1,
    "total_tokens": 10,
    "prompt_tokens_details": {
        "audio_tokens": 0,
        "cached_tokens": 8,
        "cache_write_tokens": 0,
        "image_tokens": 0,
        "text_tokens": 9,
    },
    "completion_tokens_details": {
        "accepted_prediction_tokens": 0,
        "audio_tokens": 0,
        "reasoning_tokens": 0,
        "rejected_prediction_tokens": 0,
        "text_tokens": 1,
    },
}
MODERATION_RESULT = {
    "type": "moderation_result",
    "model": "omni-moderation-latest",
    "flagged": True,
    "categories": {"violence": True, "hate": False},
    "category_scores": {"violence": 0.91, "hate": 0.01},
    "category_applied_input_types": {"violence": ["text", "image"], "hate": ["text"]},
}
MODERATION = {
    "input": {
        "type": "moderation_results",
        "model": "omni-moderation-latest",
        "results": [MODERATION_RESULT],
    },
    "output": {"type": "error", "code": "moderation_unavailable", "message": "try again"},
}
FULL_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "metadata": {"user": "a"},
    "moderation": MODERATION,
    "service_tier": "default",
    "system_fingerprint": "fp_1",
    "usage": USAGE,
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": {"content": [TOKEN], "refusal": [TOKEN]},
            "message": {
                "role": "assistant",
                "content": "Hi",
                "refusal": "no",
                "annotations": [{"type": "url_citation", "url_citation": CITATION}],
                "audio": AUDIO,
                "function_call": {"name": "f", "arguments": "{}"},
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
        }
    ],
}
FULL_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o",
    "obfuscation": "xyz",
    "moderation": MODERATION,
    "service_tier": "default",
    "system_fingerprint": "fp_1",
    "usage": USAGE,
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": {"content": [TOKEN], "refusal": [TOKEN]},
            "delta": {
                "role": "assistant",
                "content": "Hi",
                "refusal": "no",
                "audio": AUDIO,
                "function_call": {"name": "f", "arguments": "{}"},
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
        }
    ],
}


# Fields whose value is a plain JSON object (a map), not an object with fields.
MAPS = {"metadata", "categories", "category_scores", "category_applied_input_types"}


def _paths(value: Any, path: str) -> list[str]:
    """Every field path below a JSON object, a list's first item as `[0]`."""
    found = []
    for key, item in value.items():
        here = f"{path}.{key}" if path else key
        found.append(here)
        if isinstance(item, list) and item and isinstance(item[0], dict):
            found += _paths(item[0], f"{here}[0]")
        elif isinstance(item, dict) and key not in MAPS:
            found += _paths(item, here)
    return found


def _read(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name.removesuffix("[0]"))
        if name.endswith("[0]"):
            obj = obj[0]
    return obj


def _json_at(data: Any, path: str) -> Any:
    for name in path.split("."):
        data = data[name.removesuffix("[0]")]
        if name.endswith("[0]"):
            data = data[0]
    return data


def _without(data: dict[str, Any], path: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    owner = _json_at(data, ".".join(parents)) if parents else data
    del owner[last]
    return data


# What a typed field holds, where it is an object or a list of them, by the
# end of its path (`[0]` left out).
TYPED = {
    "usage": "Usage",
    "usage.prompt_tokens_details": "PromptTokensDetails",
    "usage.completion_tokens_details": "CompletionTokensDetails",
    "logprobs": "ChoiceLogprobs",
    "logprobs.content": "ChatCompletionTokenLogprob",
    "logprobs.refusal": "ChatCompletionTokenLogprob",
    "top_logprobs": "TopLogprob",
    "annotations": "Annotation",
    "url_citation": "AnnotationURLCitation",
    "audio": "ChatCompletionAudio",
    "moderation": "Moderation",
    "moderation.input": "ModerationResults",
    "moderation.output": "ModerationResults",
    "results": "ModerationResult",
}
# What a field reads as when the JSON leaves it out: None but for these.
ABSENT = {"choices": [], "top_logprobs": [], "results": []}
ABSENT_OBJECTS = {"choices.message", "choices.delta", "function"}  # an empty object


@pytest.mark.parametrize(
    ("cls", "data", "path"),
    [(ChatCompletion, FULL_COMPLETION, path) for path in _paths(FULL_COMPLETION, "")]
    + [(ChatCompletionChunk, FULL_CHUNK, path) for path in _paths(FULL_CHUNK, "")],
)
def test_every_field_the_official_sdk_has_reads_typed_and_defaults_when_absent(
    cls: type[Any], data: dict[str, Any], path: str
) -> None:
    """Code written against the official SDK reads the same fields, of the same
    shapes: a nested object as an object, a field the server left out as None."""
    import asyncchat.types

    value = _read(cls(copy.deepcopy(data)), path)
    raw = _json_at(data, path)
    last = path.rsplit(".", 1)[-1]
    fields = f".{path.replace('[0]', '')}"
    typed = next((name for end, name in TYPED.items() if fields.endswith(f".{end}")), None)
    item, raw_item = (value[0], raw[0]) if isinstance(raw, list) else (value, raw)
    if typed is not None:
        assert type(item) is getattr(asyncchat.types, typed)
        assert item.to_dict() == raw_item
    elif isinstance(raw_item, dict) and last not in MAPS:  # choices, message, tool calls, ...
        assert isinstance(item, asyncchat.types.APIObject) and item.to_dict() == raw_item
    else:
        assert value == raw
    if last.endswith("[0]"):
        return  # an item of a list: its absence is the list's
    absent = _read(cls(_without(data, path)), path)
    if any(fields.endswith(f".{end}") for end in ABSENT_OBJECTS):
        assert absent.to_dict() == {}
    else:
        assert absent == ABSENT.get(last)


def test_a_custom_tool_call_reads_typed_in_a_message_and_in_a_chunk() -> None:
    from asyncchat.types import ChoiceDeltaToolCallCustom, Custom

    call = {"id": "call_2", "type": "custom", "custom": {"name": "run", "input": "print(1)"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    completion = ChatCompletion({"choices": [{"index": 0, "message": message}]})
    [read] = completion.choices[0].message.tool_calls or []
    assert type(read.custom) is Custom
    assert (read.type, read.custom.name, read.custom.input) == ("custom", "run", "print(1)")
    assert read.function.to_dict() == {}  # as for any field left out: an empty function
    fragment = {"index": 0, "custom": {"input": "(2)"}}
    chunk = ChatCompletionChunk({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]})
    [piece] = chunk.choices[0].delta.tool_calls or []
    assert type(piece.custom) is ChoiceDeltaToolCallCustom
    assert (piece.custom.name, piece.custom.input, piece.type) == (None, "(2)", None)
    # A function's call has no custom part, and a custom part of the wrong type reads as None.
    function_call = dict(FULL_COMPLETION["choices"][0]["message"]["tool_calls"][0])  # type: ignore[index]
    assert (
        ChatCompletion({"choices": [{"message": {"tool_calls": [function_call]}}]})
        .choices[0]
        .message.tool_calls[0]
        .custom
        is None
    )  # type: ignore[index]
    odd = ChatCompletionChunk(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "custom": "text"}]}}]}
    )
    assert odd.choices[0].delta.tool_calls[0].custom is None  # type: ignore[index]
