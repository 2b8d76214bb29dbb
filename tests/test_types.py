"""Response objects: attribute access, to_dict, unknown fields, repr."""

from __future__ import annotations

import copy

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
