"""The accumulator against every stream quirk in DESIGN.md, plus random fragmentation."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from asyncchat.accumulate import ChatCompletionAccumulator
from asyncchat.errors import ToolArgumentsError
from asyncchat.types import ChatCompletion, ChatCompletionChunk


def chunk(*choices: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": list(choices),
        **top,
    }


def delta(index: int = 0, finish_reason: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "finish_reason": finish_reason}


def accumulate(chunks: list[dict[str, Any]]) -> ChatCompletion:
    accumulator = ChatCompletionAccumulator()
    for item in chunks:
        accumulator.add(item)
    return accumulator.completion()


def test_content_stream_matches_non_streamed_shape() -> None:
    completion = accumulate(
        [
            chunk(delta(role="assistant", content="")),
            chunk(delta(content="Hello")),
            chunk(delta(content=" world")),
            chunk(delta(finish_reason="stop")),
            chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        ]
    )
    assert completion.to_dict() == {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    assert completion.choices[0].message.content == "Hello world"


def test_accepts_chunk_objects() -> None:
    accumulator = ChatCompletionAccumulator()
    accumulator.add(ChatCompletionChunk(chunk(delta(content="hi", finish_reason="stop"))))
    assert accumulator.completion().choices[0].message.content == "hi"


def test_rejects_non_dict() -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        ChatCompletionAccumulator().add("data: {}")  # type: ignore[arg-type]


def test_tool_calls_openai_style_interleaved_and_out_of_order() -> None:
    completion = accumulate(
        [
            chunk(delta(role="assistant", content=None)),
            chunk(
                delta(
                    tool_calls=[
                        {
                            "index": 1,
                            "id": "b",
                            "type": "function",
                            "function": {"name": "second", "arguments": ""},
                        }
                    ]
                )
            ),
            chunk(
                delta(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "a",
                            "type": "function",
                            "function": {"name": "first", "arguments": ""},
                        }
                    ]
                )
            ),
            chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"x"'}}])),
            chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": '{"y": 2}'}}])),
            chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}])),
            chunk(delta(finish_reason="tool_calls")),
        ]
    )
    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("a", "first", '{"x": 1}'),
        ("b", "second", '{"y": 2}'),
    ]
    assert message.tool_calls[0].function.parsed_arguments() == {"x": 1}
    assert completion.choices[0].finish_reason == "tool_calls"


def test_a_tool_calls_provider_fields_are_kept_with_it() -> None:
    """Gemini signs a call (`extra_content`), whole and without `index`; the signature
    must go back with the call, so the streamed call keeps it as the answer would."""
    signature = {"google": {"thought_signature": "CrICAdHt"}}
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        "extra_content": signature,
    }
    second = {
        "index": 1,
        "id": "c2",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
        "extra_content": None,
    }
    completion = accumulate(
        [
            chunk(delta(role="assistant", tool_calls=[call])),
            chunk(delta(tool_calls=[second])),
            chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": "{}"}}])),
            chunk(delta(finish_reason="tool_calls")),
        ]
    )
    calls = completion.to_dict()["choices"][0]["message"]["tool_calls"]
    assert calls == [
        call,
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]


def _call_arguments(pieces: list[dict[str, Any]]) -> str:
    """The arguments of one call whose fragments carry these `function` fields."""
    head = {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [chunk(delta(tool_calls=[head]))]
    chunks += [chunk(delta(tool_calls=[{"index": 0, "function": f}])) for f in pieces]
    chunks.append(chunk(delta(finish_reason="tool_calls")))
    [call] = accumulate(chunks).choices[0].message.tool_calls or []
    return call.function.arguments


def test_arguments_sent_again_are_not_doubled() -> None:
    """Some servers send a call's arguments again; appended, they would be `{...}{...}`."""
    text = '{"date": "2025-03-26", "amount": 300, "note": "tolls {east}"}'
    # Baidu Qianfan: every piece holds all the arguments so far.
    cumulative = [{"arguments": text[:end]} for end in range(5, len(text) + 5, 5)]
    assert _call_arguments(cumulative) == text
    # The whole arguments once more, as they were, after the pieces (proxies that
    # re-emit a finished call); xLAM's parser after a lone `{`.
    pieces = [{"arguments": text[start : start + 7]} for start in range(0, len(text), 7)]
    assert _call_arguments([*pieces, {"arguments": text}]) == text
    assert _call_arguments([{"arguments": "{"}, {"arguments": text}]) == text
    # vLLM's GLM parser: the pieces without their closing brace, then the arguments
    # re-serialized, with null id, type and name beside them (vllm-project/vllm#42167).
    compact = orjson.dumps(orjson.loads(text)).decode()
    held = [{"arguments": compact[start : start + 6]} for start in range(0, len(compact) - 1, 6)]
    held[-1]["arguments"] = held[-1]["arguments"].removesuffix("}")
    assert not "".join(p["arguments"] for p in held).endswith("}")
    again = {"name": None, "arguments": text}
    assert _call_arguments([*held, again]) == text
    # After the whole arguments, re-serialized (OpenCode's GLM-5 report).
    assert _call_arguments([{"arguments": compact}, {"arguments": text}]) == text


def test_nested_objects_are_still_appended() -> None:
    """A piece that opens an object is usually a nested one, even with the outer's
    first key or inside a string; it is appended as any piece is."""
    cases = [
        ['{"filter": ', '{"name": "a"}', "}"],
        ['{"items": [', '{"x": 1}', ", ", '{"x": 2}', "]}"],
        ['{"a": {"b": 1}, "c": ', '{"b": 2}', "}"],
        ['{"code": "', "{ return 1; }", '"}'],
        ['{"code": "x = ', '{\\"code\\": 1}', '"}'],
        ['{"a": 1, "b": [', '{"a": 1}', "]}"],
    ]
    for pieces in cases:
        text = "".join(pieces)
        orjson.loads(text)  # each case is valid JSON
        assert _call_arguments([{"arguments": piece} for piece in pieces]) == text


def test_name_and_id_repeated_in_every_fragment_are_assigned_not_appended() -> None:
    fragments = ['{"path"', ': "a.txt"', "}"]
    completion = accumulate(
        [
            chunk(
                delta(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": piece},
                        }
                    ]
                )
            )
            for piece in fragments
        ]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "read_file"
    assert call.id == "call_1"
    assert call.function.parsed_arguments() == {"path": "a.txt"}


def test_whole_call_in_one_chunk() -> None:
    completion = accumulate(
        [
            chunk(
                delta(
                    role="assistant",
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        },
                        {
                            "index": 1,
                            "id": "d",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ],
                ),
            ),
            chunk(delta(finish_reason="tool_calls")),
        ]
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.parsed_arguments()) for c in calls] == [
        ("f", {"a": 1}),
        ("g", {}),
    ]


def test_a_whole_answer_sent_as_one_event_keeps_its_message() -> None:
    """A `message` where a `delta` belongs: a non-streamed answer framed as a stream."""
    message = {
        "role": "assistant",
        "content": "done",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
    }
    whole = chunk({"index": 0, "message": message, "finish_reason": "tool_calls"})
    completion = accumulate([whole])
    assert completion.choices[0].message.content == "done"
    assert completion.choices[0].finish_reason == "tool_calls"
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [("c", "f", "{}")]
    # A chunk with both reads its delta only.
    both = chunk({"index": 0, "delta": {"content": "a"}, "message": {"content": "b"}})
    assert accumulate([both]).choices[0].message.content == "a"


def test_arguments_sent_as_json_object_are_serialized() -> None:
    completion = accumulate(
        [
            chunk(
                delta(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "c",
                            "function": {"name": "f", "arguments": {"city": "Zürich", "days": 3}},
                        }
                    ]
                )
            ),
        ]
    )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert orjson.loads(call.function.arguments) == {"city": "Zürich", "days": 3}
    assert call.type == "function"


def custom_fragment(**fields: Any) -> dict[str, Any]:
    """A streamed custom tool call's fragment: `custom` holds a name or a piece of input."""
    return {
        "custom": {key: fields.pop(key) for key in ("name", "input") if key in fields},
        **fields,
    }


def test_a_custom_tool_call_streams_its_input_and_keeps_its_type() -> None:
    completion = accumulate(
        [
            chunk(delta(role="assistant", content=None)),
            chunk(
                delta(
                    tool_calls=[
                        custom_fragment(index=0, id="call_1", type="custom", name="sql", input="")
                    ]
                )
            ),
            *[
                chunk(delta(tool_calls=[custom_fragment(index=0, input=piece)]))
                for piece in ["SELECT", " 1", "\nFROM t"]
            ],
            chunk(delta(finish_reason="tool_calls")),
        ]
    )
    message = completion.choices[0].message
    assert message.to_dict()["tool_calls"] == [
        {"id": "call_1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1\nFROM t"}}
    ]
    call = (message.tool_calls or [])[0]
    assert call.type == "custom"
    assert call.custom is not None and (call.custom.name, call.custom.input) == (
        "sql",
        "SELECT 1\nFROM t",
    )
    assert call.function.name is None  # as the official SDK has no function on it


def test_custom_and_function_calls_in_one_answer_each_keep_their_shape() -> None:
    completion = accumulate(
        [
            chunk(
                delta(
                    tool_calls=[
                        custom_fragment(index=0, id="a", type="custom", name="run", input="x ="),
                        {"index": 1, "id": "b", "type": "function", "function": {"name": "f"}},
                    ]
                )
            ),
            chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": '{"k": 1}'}}])),
            chunk(delta(tool_calls=[custom_fragment(index=0, input=" 1")])),
        ]
    )
    assert completion.choices[0].message.to_dict()["tool_calls"] == [
        {"id": "a", "type": "custom", "custom": {"name": "run", "input": "x = 1"}},
        {"id": "b", "type": "function", "function": {"name": "f", "arguments": '{"k": 1}'}},
    ]


def test_a_custom_call_without_type_or_index_is_known_by_its_custom_part() -> None:
    completion = accumulate(
        [
            chunk(delta(tool_calls=[custom_fragment(id="a", name="run", input="print(")])),
            chunk(delta(tool_calls=[custom_fragment(input="1)")])),
            chunk(delta(tool_calls=[custom_fragment(id="b", name="run", input="2")])),
        ]
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.type, c.custom and c.custom.input) for c in calls] == [
        ("a", "custom", "print(1)"),
        ("b", "custom", "2"),
    ]


def test_an_empty_custom_part_echoed_beside_a_function_fragment_is_ignored() -> None:
    """Some gateways send `custom: {}` on every function fragment; the arguments win."""
    completion = accumulate(
        [
            chunk(
                delta(
                    tool_calls=[
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}},
                    ]
                )
            ),
            chunk(delta(tool_calls=[{"index": 0, "custom": {}, "function": {"arguments": "}"}}])),
            chunk(delta(tool_calls=[{"index": 0, "custom": {}}])),
        ]
    )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert call.to_dict() == {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }


def test_a_custom_part_of_the_wrong_type_is_skipped() -> None:
    completion = accumulate(
        [
            chunk(
                delta(tool_calls=[custom_fragment(index=0, type="custom", name="run", input="a")])
            ),
            chunk(delta(tool_calls=[{"index": 0, "custom": "b"}])),
            chunk(delta(tool_calls=[{"index": 0, "custom": {"input": 5, "name": ["x"]}}])),
            chunk(delta(tool_calls=[custom_fragment(index=0, input="c")])),
        ]
    )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert call.custom is not None and (call.custom.name, call.custom.input) == ("run", "ac")


def test_no_index_routes_by_id_then_name_then_latest() -> None:
    completion = accumulate(
        [
            chunk(delta(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": '{"k":'}}])),
            chunk(delta(tool_calls=[{"function": {"arguments": " 1}"}}])),
            chunk(delta(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{"}}])),
            chunk(delta(tool_calls=[{"id": "a", "function": {"arguments": ""}}])),
            chunk(delta(tool_calls=[{"id": "b", "function": {"arguments": "}"}}])),
            chunk(delta(tool_calls=[{"function": {"name": "h", "arguments": "{}"}}])),
        ]
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("a", "f", '{"k": 1}'),
        ("b", "g", "{}"),
        (None, "h", "{}"),
    ]


def test_no_index_with_name_repeated_continues_the_call() -> None:
    completion = accumulate(
        [
            chunk(delta(tool_calls=[{"function": {"name": "f", "arguments": '{"a"'}}])),
            chunk(delta(tool_calls=[{"function": {"name": "f", "arguments": ": 1}"}}])),
        ]
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [("f", '{"a": 1}')]


def test_several_choices_first_chunk_names_only_choice_one() -> None:
    completion = accumulate(
        [
            chunk(delta(1, role="assistant", content="B")),
            chunk(delta(0, role="assistant", content="A")),
            chunk(
                delta(1, content="b", finish_reason="stop"),
                delta(0, content="a", finish_reason="length"),
            ),
        ]
    )
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "Aa", "length"),
        (1, "Bb", "stop"),
    ]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_kept_under_the_name_the_server_sent(key: str) -> None:
    """DeepSeek and GLM send `reasoning_content`, vLLM and OpenRouter `reasoning`:
    the completion names it as a non-streamed answer would, and reads it by either."""
    completion = accumulate(
        [
            chunk(delta(role="assistant", **{key: "think "})),
            chunk(delta(**{key: "more"})),
            chunk(delta(content="answer", finish_reason="stop")),
        ]
    )
    message = completion.choices[0].message
    assert message.reasoning_content == "think more"
    assert message.content == "answer"
    assert message.to_dict() == {"role": "assistant", "content": "answer", key: "think more"}


def test_reasoning_mirrored_under_both_names_is_kept_once() -> None:
    """StepFun sends every reasoning piece as both `reasoning` and `reasoning_content`;
    joining both would double the text (and the tokens, when it is sent back)."""
    pieces = ["The", " user", " greets"]
    completion = accumulate(
        [chunk(delta(reasoning=piece, reasoning_content=piece)) for piece in pieces]
        + [chunk(delta(content="Hi", finish_reason="stop"))]
    )
    message = completion.choices[0].message.to_dict()
    assert message == {"role": "assistant", "content": "Hi", "reasoning": "The user greets"}


def test_openrouter_reasoning_details_are_joined_by_index() -> None:
    """OpenRouter streams each thought as pieces of `reasoning_details` sharing an
    `index`, its signature in the last; it must go back whole and unmodified."""

    def piece(index: int, **fields: Any) -> dict[str, Any]:
        return {"type": "reasoning.text", "format": "anthropic-claude-v1", "index": index, **fields}

    chunks = [
        chunk(
            delta(reasoning="Check ", reasoning_details=[piece(0, text="Check ", signature=None)])
        ),
        chunk(delta(reasoning="the city.", reasoning_details=[piece(0, text="the city.")])),
        chunk(delta(reasoning_details=[piece(0, signature="sig-1")])),
        chunk(
            delta(
                reasoning_details=[
                    {"type": "reasoning.encrypted", "data": "ZW5j", "index": 1, "format": "x"}
                ]
            )
        ),
        chunk(delta(content="Paris.", finish_reason="stop")),
    ]
    acc = ChatCompletionAccumulator()
    for item in chunks[:2]:
        acc.add(item)
    early = acc.completion()
    for item in chunks[2:]:
        acc.add(item)
    message = acc.completion().choices[0].message.to_dict()
    assert message["reasoning"] == "Check the city."
    assert message["reasoning_details"] == [
        {
            "type": "reasoning.text",
            "format": "anthropic-claude-v1",
            "index": 0,
            "text": "Check the city.",
            "signature": "sig-1",
        },
        {"type": "reasoning.encrypted", "data": "ZW5j", "index": 1, "format": "x"},
    ]
    # A completion taken mid-stream keeps what it saw.
    assert early.choices[0].message.to_dict()["reasoning_details"] == [
        piece(0, text="Check the city.", signature=None)
    ]


def test_mistral_content_parts_join_into_text_and_thinking() -> None:
    """Mistral streams content as parts: a reasoning model's thinking, then text (as
    parts or plain); the completion holds one part of each, as its answer would."""

    def thought(text: str) -> list[dict[str, Any]]:
        return [{"type": "thinking", "thinking": [{"type": "text", "text": text}]}]

    completion = accumulate(
        [
            chunk(delta(role="assistant", content=thought("Greet "))),
            chunk(delta(content=thought("back."))),
            chunk(delta(content="Hello")),
            chunk(delta(content=[{"type": "text", "text": ", world!"}, {"type": "ref"}])),
            chunk(delta(finish_reason="stop")),
        ]
    )
    message = completion.choices[0].message
    assert message.content == [*thought("Greet back."), {"type": "text", "text": "Hello, world!"}]
    assert message.reasoning_content == "Greet back."
    plain = accumulate(
        [
            chunk(delta(role="assistant", content=[{"type": "text", "text": ""}])),
            chunk(delta(content=[{"type": "text", "text": "Hello"}])),
            chunk(delta(content=[{"type": "text", "text": ", world!"}], finish_reason="stop")),
        ]
    )
    assert plain.choices[0].message.content == "Hello, world!"  # no thinking: a string


def test_usage_last_non_null_wins_never_summed() -> None:
    completion = accumulate(
        [
            chunk(delta(content="a"), usage={"total_tokens": 1}),
            chunk(delta(content="b"), usage={"total_tokens": 2}),
            chunk(delta(finish_reason="stop"), usage={"total_tokens": 3}),
            chunk(usage=None),
        ]
    )
    assert completion.usage is not None
    assert completion.usage.total_tokens == 3


def test_usage_on_second_to_last_chunk() -> None:
    completion = accumulate(
        [
            chunk(delta(content="a"), usage={"total_tokens": 7}),
            chunk(delta(finish_reason="stop")),
        ]
    )
    assert completion.usage is not None and completion.usage.total_tokens == 7


def test_usage_inside_a_choice_moonshot_style() -> None:
    completion = accumulate(
        [
            chunk({"index": 0, "delta": {}, "finish_reason": "stop", "usage": {"total_tokens": 9}}),
        ]
    )
    assert completion.usage is not None and completion.usage.total_tokens == 9


def call_fragment(call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    """A tool-call fragment at index 0, as Ollama numbers every parallel call."""
    fragment: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
    if name is not None:
        fragment["function"]["name"] = name
    return chunk(delta(tool_calls=[fragment]))


def calls_of(completion: ChatCompletion) -> list[tuple[str | None, str | None, str]]:
    calls = completion.choices[0].message.tool_calls or []
    return [(c.id, c.function.name, c.function.arguments) for c in calls]


def test_parallel_calls_all_at_index_0_are_calls_of_their_own() -> None:
    ollama = accumulate(  # each call whole, every one at index 0
        [
            call_fragment("call_a", "write", '{"path": "a.py"}'),
            call_fragment("call_b", "write", '{"path": "b.py"}'),
            call_fragment("call_c", "read", "{}"),
        ]
    )
    assert calls_of(ollama) == [
        ("call_a", "write", '{"path": "a.py"}'),
        ("call_b", "write", '{"path": "b.py"}'),
        ("call_c", "read", "{}"),
    ]
    in_pieces = accumulate(  # a proxy from another API: the pieces at index 0 too
        [
            call_fragment("call_a", "write", ""),
            call_fragment(None, None, '{"path":'),
            call_fragment(None, None, ' "a.py"}'),
            call_fragment("call_b", "read", ""),
            call_fragment(None, None, '{"path": "b.py"}'),
            chunk(delta(tool_calls=[{"index": 1, "id": "call_c", "function": {"name": "ls"}}])),
            chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": "{}"}}])),
            call_fragment("call_a", None, ""),  # an id sent again goes to its call
        ]
    )
    assert calls_of(in_pieces) == [
        ("call_a", "write", '{"path": "a.py"}'),
        ("call_b", "read", '{"path": "b.py"}'),
        ("call_c", "ls", "{}"),
    ]


def test_a_name_sent_in_pieces_or_again_is_the_name_once() -> None:
    def named(*names: str) -> list[dict[str, Any]]:
        return [call_fragment("c1", name, "") for name in names] + [call_fragment(None, None, "{}")]

    assert calls_of(accumulate(named("get_wea", "ther"))) == [("c1", "get_weather", "{}")]
    assert calls_of(accumulate(named("get_weather", "get_weather"))) == [
        ("c1", "get_weather", "{}")
    ]  # MiniMax behind NIM: whole in every fragment
    assert calls_of(accumulate(named("get_", "get_wea", "get_weather"))) == [
        ("c1", "get_weather", "{}")
    ]  # all of it so far


def test_a_later_fragment_named_null_keeps_the_name() -> None:
    """Some LiteLLM versions send every later fragment of a call with the name
    `"null"`, an empty id and `type` in capitals (BerriAI/litellm#12513)."""

    def litellm(call_id: str, name: str, arguments: str) -> dict[str, Any]:
        fragment = {"index": 0, "id": call_id, "type": "FUNCTION",
                    "function": {"name": name, "arguments": arguments}}  # fmt: skip
        return chunk(delta(tool_calls=[fragment]))

    completion = accumulate(
        [
            litellm("chatcmpl-tool-1", "list_directory", '{"path": "'),
            litellm("", "null", '."'),
            litellm("", "null", "}"),
        ]
    )
    assert calls_of(completion) == [("chatcmpl-tool-1", "list_directory", '{"path": "."}')]
    # A name that is "null" from its first piece is a name.
    assert calls_of(accumulate([call_fragment("c1", "null", "{}")])) == [("c1", "null", "{}")]


GLOB_FIRST = [call_fragment("toolu_1", "glob", ""), call_fragment(None, "", '{"pattern": "*"}')]


@pytest.mark.parametrize(
    ("later", "second"),
    [
        # dyedd/lens#49: the second call whole, with no id and an empty name
        ([call_fragment(None, "", '{"path": "wiki"}')], ("glob", '{"path": "wiki"}')),
        # the same first key as the first call's, not a restatement of it
        ([call_fragment(None, "", '{"pattern": "**"}')], ("glob", '{"pattern": "**"}')),
        # its arguments in pieces
        ([call_fragment(None, None, '{"path":'), call_fragment(None, None, ' "wiki"}')],
         ("glob", '{"path": "wiki"}')),
        # another function named, without an id
        ([call_fragment(None, "read", ""), call_fragment(None, None, '{"path": "a"}')],
         ("read", '{"path": "a"}')),
    ],
)  # fmt: skip
def test_a_call_after_whole_arguments_at_their_index_is_a_call_of_its_own(
    later: list[dict[str, Any]], second: tuple[str, str]
) -> None:
    """A proxy of Gemini 3 sends a second call at the first's index with no id: after
    whole arguments, an object that neither restates nor continues them, or another
    name, starts a call of its own (of the same function unless it names one)."""
    completion = accumulate([*GLOB_FIRST, *later])
    assert calls_of(completion) == [("toolu_1", "glob", '{"pattern": "*"}'), (None, *second)]


@pytest.mark.parametrize(
    ("later", "arguments"),
    [
        # restated, re-serialized (vLLM): the restatement is kept
        ([call_fragment(None, None, '{"pattern":"*"}')], '{"pattern":"*"}'),
        ([call_fragment(None, "glob", '{"pattern": "*"}')], '{"pattern": "*"}'),
        # all so far again (Baidu Qianfan), and LiteLLM's "null" name
        ([call_fragment(None, None, '{"pattern": "*"}')], '{"pattern": "*"}'),
        ([call_fragment(None, "null", "")], '{"pattern": "*"}'),
    ],
)
def test_whole_arguments_sent_again_stay_one_call(
    later: list[dict[str, Any]], arguments: str
) -> None:
    assert calls_of(accumulate([*GLOB_FIRST, *later])) == [("toolu_1", "glob", arguments)]


def test_an_unsteady_id_at_one_index_stays_one_call() -> None:
    """Poolside sends a second id with every piece after the first; other gateways a new
    one with each piece, the name too. Before the arguments are whole, or without a
    name, another id is the same call."""
    poolside = accumulate(
        [
            call_fragment("call_a", "write", ""),
            call_fragment("call_b", None, '{"path":'),
            call_fragment("call_b", None, ' "a.py"}'),
        ]
    )
    named_each_time = accumulate(
        [
            call_fragment("id_1", "write", '{"path":'),
            call_fragment("id_2", "write", ' "a.py"}'),
        ]
    )
    assert calls_of(poolside) == [("call_b", "write", '{"path": "a.py"}')]
    assert calls_of(named_each_time) == [("id_2", "write", '{"path": "a.py"}')]


def test_usage_in_x_groq_of_the_finishing_chunk() -> None:
    groq_usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "total_time": 0.1}
    completion = accumulate(
        [
            chunk(delta(role="assistant", content=""), x_groq={"id": "req_1"}),
            chunk(delta(content="ok")),
            chunk(delta(finish_reason="stop"), x_groq={"id": "req_1", "usage": groq_usage}),
        ]
    )
    assert completion.usage is not None and completion.usage.total_tokens == 9
    assert completion.choices[0].message.content == "ok"


def test_usage_in_a_chunk_wins_over_x_groq() -> None:
    """Asked with `stream_options`, Groq sends a usage chunk after the finishing one;
    a chunk's own `usage` wins over its `x_groq` too, and an odd one is skipped."""
    said, groq = {"total_tokens": 9}, {"usage": {"total_tokens": 1}}
    later = accumulate([chunk(delta(finish_reason="stop"), x_groq=groq), chunk(usage=said)])
    same = accumulate([chunk(delta(finish_reason="stop"), x_groq=groq, usage=said)])
    odd = accumulate([chunk(delta(finish_reason="stop"), x_groq={"usage": [9]})])
    assert later.usage is not None and later.usage.total_tokens == 9
    assert same.usage is not None and same.usage.total_tokens == 9
    assert odd.usage is None


def test_azure_empty_first_chunk_and_empty_object_field() -> None:
    completion = accumulate(
        [
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [{"prompt_index": 0}],
            },
            chunk(delta(content="ok", finish_reason="stop")),
        ]
    )
    assert completion.choices[0].message.content == "ok"
    assert completion.id == "c1"
    assert completion.model == "m"
    assert completion.prompt_filter_results[0]["prompt_index"] == 0


def test_azure_annotations_after_the_answer_keep_its_id_and_model() -> None:
    """Azure's asynchronous content filter sends its annotations between and after the
    answer's chunks, with an empty id and model and `created` 0: they name nothing."""
    offsets = {"check_offset": 44, "start_offset": 44, "end_offset": 198}
    annotation = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
                "content_filter_offsets": offsets,
            }
        ],
        "usage": None,
    }
    completion = accumulate(
        [
            chunk(delta(role="assistant"), usage=None),
            chunk(delta(content="Color"), usage=None),
            annotation,
            chunk(delta(content=" is", finish_reason="stop"), usage=None),
            annotation,
        ]
    )
    assert (completion.id, completion.model, completion.created) == ("c1", "m", 1)
    assert completion.choices[0].message.content == "Color is"
    assert completion.choices[0].finish_reason == "stop"


def test_provider_extras_kept_glm_request_id() -> None:
    completion = accumulate(
        [
            chunk(delta(content="x", finish_reason="sensitive"), request_id="glm-123"),
        ]
    )
    assert completion.request_id == "glm-123"
    assert completion.to_dict()["request_id"] == "glm-123"
    assert completion.choices[0].finish_reason == "sensitive"


def test_top_level_fields_arriving_after_the_first_chunk() -> None:
    completion = accumulate(
        [
            chunk(delta(role="assistant", content="")),
            chunk(delta(content="a"), provider="Groq"),  # a field added mid-stream
            chunk(delta(content="b"), provider="Groq"),
            # The last chunk swaps a field for another (same number of fields).
            chunk(delta(content="c", finish_reason="stop"), system_fingerprint="fp_1"),
        ]
    )
    assert completion.choices[0].message.content == "abc"
    assert completion.provider == "Groq"
    assert completion.system_fingerprint == "fp_1"
    assert (completion.id, completion.created, completion.model) == ("c1", 1, "m")


@pytest.mark.parametrize(
    "chunks",
    [
        [chunk(delta(content="a")), chunk(delta(content="b", finish_reason="stop"))],
        # Settled, then the last chunk names a dated snapshot (same number of fields).
        [
            chunk(delta(content="a")),
            chunk(delta(content="b")),
            chunk(delta(finish_reason="stop"), model="m-2026-01-01"),
        ],
        # ... or names none: the model named before stays.
        [chunk(delta(content="a")), chunk(delta(content="b")), chunk(delta(), model=None)],
        # OpenAI's fingerprint and tier: in every chunk, or a tier only in the last.
        [
            chunk(delta(content="a"), system_fingerprint="fp_1"),
            chunk(delta(finish_reason="stop"), system_fingerprint="fp_1", service_tier="flex"),
        ],
        # Not settled (no id): every chunk is read whole.
        [
            chunk(delta(content="a"), id=""),
            chunk(delta(index=1, content="b", finish_reason="length"), id="", model="m2"),
            chunk(delta(finish_reason="stop"), id="", usage={"prompt_tokens": 1}),
        ],
        [],
    ],
)
def test_response_fields_agree_with_the_whole_completion(chunks: list[dict[str, Any]]) -> None:
    accumulator = ChatCompletionAccumulator()
    for item in chunks:
        accumulator.add(item)
    fields = accumulator.response_fields()
    whole = accumulator.completion_dict()
    assert fields == {
        "id": whole.get("id"),
        "model": whole.get("model"),
        "system_fingerprint": whole.get("system_fingerprint"),
        "service_tier": whole.get("service_tier"),
        "choices": [{"finish_reason": c["finish_reason"]} for c in whole["choices"]],
        **({"usage": whole["usage"]} if "usage" in whole else {}),
    }


def test_moderation_is_kept_from_its_own_chunk_and_merged_when_it_comes_in_parts() -> None:
    verdict = {"type": "moderation_results", "model": "omni", "results": [{"flagged": False}]}
    failed = {"type": "error", "code": "unavailable", "message": "try again"}
    whole = accumulate(
        [
            chunk(delta(content="Hi")),
            chunk(delta(finish_reason="stop")),
            chunk(moderation={"input": verdict, "output": verdict}),
            chunk(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        ]
    )
    assert whole.moderation is not None and whole.moderation.to_dict() == {
        "input": verdict,
        "output": verdict,
    }
    parts = accumulate(
        [
            chunk(delta(content="Hi"), moderation={"input": verdict}),
            chunk(delta(content="!")),
            chunk(delta(finish_reason="stop"), moderation={"output": failed}),
        ]
    )
    assert parts.moderation is not None
    assert parts.moderation.to_dict() == {"input": verdict, "output": failed}
    assert parts.moderation.output is not None and parts.moderation.output.code == "unavailable"


def test_refusal_and_logprobs_accumulate() -> None:
    completion = accumulate(
        [
            chunk(
                {
                    "index": 0,
                    "delta": {"refusal": "I can't"},
                    "logprobs": {"content": None, "refusal": [{"token": "I"}]},
                }
            ),
            chunk(
                {
                    "index": 0,
                    "delta": {"refusal": " help"},
                    "logprobs": {"content": None, "refusal": [{"token": " help"}]},
                }
            ),
        ]
    )
    choice = completion.choices[0]
    assert choice.message.refusal == "I can't help"
    assert choice.to_dict()["logprobs"] == {"refusal": [{"token": "I"}, {"token": " help"}]}


def test_logprobs_read_typed_and_a_completion_taken_mid_stream_keeps_its_own() -> None:
    accumulator = ChatCompletionAccumulator()
    for text, logprob in (("Hi", -0.1), (" there", -0.2)):
        token = {
            "token": text,
            "logprob": logprob,
            "bytes": list(text.encode()),
            "top_logprobs": [],
        }
        accumulator.add(
            chunk({"index": 0, "delta": {"content": text}, "logprobs": {"content": [token]}})
        )
        if text == "Hi":
            early = accumulator.completion()
    logprobs = accumulator.completion().choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(token.token, token.logprob) for token in logprobs.content] == [
        ("Hi", -0.1),
        (" there", -0.2),
    ]
    assert logprobs.content[1].bytes == [32, 116, 104, 101, 114, 101]
    assert logprobs.refusal is None
    early_logprobs = early.choices[0].logprobs
    assert early_logprobs is not None and early_logprobs.content is not None
    assert [token.token for token in early_logprobs.content] == ["Hi"]


CITATIONS = [
    {
        "type": "url_citation",
        "url_citation": {"start_index": 0, "end_index": 5, "url": "https://a"},
    },
    {
        "type": "url_citation",
        "url_citation": {"start_index": 6, "end_index": 9, "url": "https://b"},
    },
]


@pytest.mark.parametrize(
    "pieces",
    [
        [[], [CITATIONS[0]], [CITATIONS[1]]],  # each with the text it cites
        [[], [], CITATIONS],  # all in the last chunk, as OpenAI's search models send them
        [[CITATIONS[0]], CITATIONS, CITATIONS],  # the list so far, again and again
    ],
    ids=["each-with-its-text", "all-at-the-end", "repeated"],
)
def test_annotations_are_kept_once_each_however_they_come(pieces: list[list[Any]]) -> None:
    accumulator = ChatCompletionAccumulator()
    snapshots = []
    for text, piece in zip(("Hello", " you", ""), pieces, strict=True):
        fields: dict[str, Any] = {"content": text}
        if piece:
            fields["annotations"] = piece
        accumulator.add(chunk(delta(**fields)))
        snapshots.append(accumulator.completion())
    message = accumulator.completion().choices[0].message
    assert message.content == "Hello you"
    assert [annotation.to_dict() for annotation in message.annotations or ()] == CITATIONS
    assert message.annotations is not None and message.annotations[1].url_citation is not None
    assert message.annotations[1].url_citation.url == "https://b"
    # A completion taken mid-stream keeps what it had.
    first = snapshots[0].choices[0].message.annotations
    assert [a.to_dict() for a in first or ()] == pieces[0]


def test_a_spoken_answer_is_joined_from_its_pieces() -> None:
    completion = accumulate(
        [
            chunk(delta(role="assistant", audio={"id": "audio_1", "transcript": "Hel"})),
            chunk(delta(audio={"transcript": "lo", "data": "UklG"})),
            chunk(delta(audio={"data": "Rg==", "transcript": None})),
            chunk(delta(audio={"id": "audio_1", "expires_at": 1730000000}, finish_reason="stop")),
        ]
    )
    audio = completion.choices[0].message.audio
    assert audio is not None
    assert (audio.id, audio.transcript, audio.data, audio.expires_at) == (
        "audio_1",
        "Hello",
        "UklGRg==",
        1730000000,
    )


def test_legacy_function_call() -> None:
    completion = accumulate(
        [
            chunk(delta(function_call={"name": "f", "arguments": '{"a"'})),
            chunk(delta(function_call={"arguments": ": 1}"})),
        ]
    )
    function_call = completion.choices[0].message.function_call
    assert function_call is not None
    assert function_call.parsed_arguments() == {"a": 1}


def test_completion_during_accumulation_is_a_snapshot() -> None:
    accumulator = ChatCompletionAccumulator()
    accumulator.add(chunk(delta(content="a")))
    first = accumulator.completion()
    accumulator.add(chunk(delta(content="b")))
    assert first.choices[0].message.content == "a"
    assert accumulator.completion().choices[0].message.content == "ab"
    assert not accumulator.finished


def test_arguments_read_between_fragments_are_each_prefix() -> None:
    accumulator = ChatCompletionAccumulator()
    pieces = ['{"q"', ': "', "x" * 50, '"}']
    seen = []
    for number, piece in enumerate(pieces):
        fragment: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
        if number == 0:
            fragment.update(id="call_1", type="function")
            fragment["function"]["name"] = "lookup"
        accumulator.add(chunk(delta(tool_calls=[fragment])))
        seen.append(accumulator.tool_calls()[0].arguments)
    assert seen == ["".join(pieces[: n + 1]) for n in range(len(pieces))]
    call = accumulator.completion().choices[0].message.tool_calls[0]
    assert call.function.parsed_arguments() == {"q": "x" * 50}


def test_invalid_arguments_raise_with_raw_text() -> None:
    completion = accumulate(
        [
            chunk(
                delta(
                    tool_calls=[
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": '}}
                    ]
                )
            ),
        ]
    )
    function = (completion.choices[0].message.tool_calls or [])[0].function
    with pytest.raises(ToolArgumentsError) as info:
        function.parsed_arguments()
    assert info.value.arguments == '{"a": '
    assert "'f'" in str(info.value)


def random_fragments(rng: random.Random, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls cut into OpenAI-style fragments, randomly sized, randomly interleaved."""
    queues = []
    for index, call in enumerate(calls):
        text = call["arguments"]
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(8, len(text) - 1))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        queues.append([head] + [{"index": index, "function": {"arguments": p}} for p in pieces])
    chunks = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        # Sometimes two fragments ride in one chunk.
        fragments = [queue.pop(0)]
        if queue and rng.random() < 0.3:
            fragments.append(queue.pop(0))
        chunks.append(chunk(delta(tool_calls=fragments)))
    return chunks


@pytest.mark.parametrize("seed", range(40))
def test_random_fragmentation_of_parallel_calls(seed: int) -> None:
    rng = random.Random(seed)
    calls = [
        {
            "id": f"call_{i}",
            "name": f"tool_{i}",
            "arguments": orjson.dumps(
                {
                    "city": "Z" * rng.randint(1, 30),
                    "n": i,
                    "nested": {"list": list(range(rng.randint(0, 5)))},
                }
            ).decode(),
        }
        for i in range(rng.randint(1, 4))
    ]
    completion = accumulate(random_fragments(rng, calls))
    assembled = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in assembled] == [
        (call["id"], call["name"], call["arguments"]) for call in calls
    ]
