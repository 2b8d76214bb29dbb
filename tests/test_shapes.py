"""Chunks that decode but have the wrong shape: any JSON value at any position.

Each one is either tolerated by the documented rule (a value of the wrong JSON
type is skipped, as if absent) or becomes an asyncchat error; never a bare
`TypeError` or `AttributeError`, whether the chunks go through the sans-IO
accumulator, the chunk objects, or a real stream read every way there is.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncchat
from asyncchat.accumulate import ChatCompletionAccumulator
from asyncchat.testing import MockServer
from asyncchat.types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChoiceDelta,
    ChoiceLogprobs,
    Moderation,
)

from .conftest import API_KEY

BASE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
CHUNKS: list[dict[str, Any]] = [
    {**BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {**BASE, "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
    {**BASE, "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
    {
        **BASE,
        "choices": [
            {
                "index": 0,
                "delta": {"content": "lo"},
                "logprobs": {
                    "content": [
                        {
                            "token": "lo",
                            "logprob": -0.5,
                            "bytes": [108, 111],
                            "top_logprobs": [{"token": "lo", "logprob": -0.5, "bytes": [108, 111]}],
                        }
                    ]
                },
            }
        ],
    },
    {
        **BASE,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "annotations": [
                        {"type": "url_citation", "url_citation": {"url": "u", "start_index": 0}}
                    ],
                    "audio": {"id": "a", "transcript": "Hello", "data": "UklG"},
                    "function_call": {"name": "g", "arguments": "{}"},
                },
            }
        ],
    },
    {
        **BASE,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    {
        **BASE,
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}
        ],
    },
    {
        **BASE,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_2",
                            "type": "custom",
                            "custom": {"name": "run", "input": "print("},
                        }
                    ]
                },
            }
        ],
    },
    {
        **BASE,
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 1, "custom": {"input": "1)"}}]}}
        ],
    },
    {**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {
        **BASE,
        "choices": [],
        "moderation": {
            "input": {
                "type": "moderation_results",
                "model": "omni",
                "results": [{"flagged": False, "categories": {"hate": False}}],
            },
            "output": {"type": "error", "code": "unavailable", "message": "later"},
        },
    },
    {
        **BASE,
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.sampled_from([10**9, -1, 0, 2**63, 1e308])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

# The hand-picked shapes the issue names, always tried.
NAMED = [
    (["choices"], 5),
    (["choices"], "text"),
    (["choices", 0, "delta"], "text"),
    (["usage"], "n/a"),
    (["choices", 0, "delta", "tool_calls"], {"index": 0}),
    (["choices", 0, "delta", "tool_calls", 0, "index"], "0"),
    (["choices", 0, "delta", "tool_calls", 0, "index"], -1),
    (["choices", 0, "delta", "tool_calls", 0, "index"], 10**9),
    (["choices", 0, "index"], 10**9),
    (["choices", 0, "index"], -5),
    (["usage", "total_tokens"], "3"),
    (["choices", 0, "finish_reason"], {"why": 1}),
    (["choices", 0, "delta", "content"], ["a"]),
    (["choices", 0, "delta", "role"], 7),
    (["choices", 0, "delta", "tool_calls", 0, "function"], "f"),
    (["choices", 0, "delta", "tool_calls", 0, "function", "name"], ["f"]),
    (["choices", 0, "delta", "tool_calls", 0, "custom"], "print(1)"),
    (["choices", 0, "delta", "tool_calls", 0, "custom", "input"], {"a": 1}),
    (["choices", 0, "delta", "tool_calls", 0, "custom", "name"], ["run"]),
    (["choices", 0, "delta", "reasoning_content"], {"a": 1}),
    (["choices", 0, "logprobs"], "x"),
    (["choices", 0], None),
    (["id"], {"x": 1}),
    (["request_id"], 5),
]


def positions(value: Any, path: list[Any]) -> list[list[Any]]:
    """Every path into a JSON value (the value itself included)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += positions(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += positions(item, [*path, index])
    return found


def replaced(chunk: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """`chunk` with `value` at `path`, missing objects on the way created; unchanged
    where the path does not fit the chunk (a list index past its end)."""
    chunk = copy.deepcopy(chunk)
    target: Any = chunk
    for step, following in itertools.pairwise(path):
        if isinstance(target, dict) and step not in target:
            target[step] = [{}] if following == 0 else {}
        if isinstance(target, list) and not (isinstance(step, int) and step < len(target)):
            return chunk
        target = target[step]
    last = path[-1]
    if (isinstance(target, dict) and isinstance(last, str)) or (
        isinstance(target, list) and isinstance(last, int) and last < len(target)
    ):
        target[last] = value
    return chunk


def touch_completion(completion: ChatCompletion) -> list[Any]:
    """Read everything a user reads from a completion; returns what was read."""
    seen: list[Any] = [repr(completion), completion.to_dict(), completion.request_id]
    seen += [completion.id, completion.model, completion.usage]
    seen += touch_moderation(completion.moderation)
    if completion.usage is not None:
        usage = completion.usage
        seen += [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens]
        if usage.prompt_tokens_details is not None:
            seen.append(usage.prompt_tokens_details.cached_tokens)
        if usage.completion_tokens_details is not None:
            seen.append(usage.completion_tokens_details.reasoning_tokens)
    for choice in completion.choices:
        message = choice.message
        seen += [choice.index, choice.finish_reason, message.role]
        seen += [message.content, message.reasoning_content, message.refusal]
        seen += touch_logprobs(choice.logprobs) + touch_annotations_and_audio(message)
        if message.function_call is not None:
            seen += [message.function_call.name, message.function_call.arguments]
        for call in message.tool_calls or ():
            seen += [call.id, call.type, call.function.name, call.function.arguments]
            if call.custom is not None:
                seen += [call.custom.name, call.custom.input]
            with contextlib.suppress(asyncchat.ToolArgumentsError):
                seen.append(call.function.parsed_arguments())
    assert completion.request_id is None or isinstance(completion.request_id, str)
    return seen


def touch_moderation(moderation: Moderation | None) -> list[Any]:
    if moderation is None:
        return [moderation]
    seen: list[Any] = [repr(moderation)]
    for side in (moderation.input, moderation.output):
        if side is not None:
            seen += [side.type, side.model, side.code, side.message]
            for result in side.results:
                seen += [result.flagged, result.categories, result.category_scores]
    return seen


def touch_logprobs(logprobs: ChoiceLogprobs | None) -> list[Any]:
    if logprobs is None:
        return [logprobs]
    seen: list[Any] = [repr(logprobs)]
    for token in [*(logprobs.content or ()), *(logprobs.refusal or ())]:
        seen += [token.token, token.logprob, token.bytes]
        seen += [(top.token, top.logprob, top.bytes) for top in token.top_logprobs]
    return seen


def touch_annotations_and_audio(message: ChatCompletionMessage | ChoiceDelta) -> list[Any]:
    seen: list[Any] = []
    for annotation in message.annotations or ():
        seen.append(annotation.type)
        citation = annotation.url_citation
        if citation is not None:
            seen += [citation.url, citation.title, citation.start_index, citation.end_index]
    if message.audio is not None:
        audio = message.audio
        seen += [audio.id, audio.data, audio.transcript, audio.expires_at]
    return seen


def touch_chunk(chunk: ChatCompletionChunk) -> list[Any]:
    seen: list[Any] = [repr(chunk), chunk.to_dict(), chunk.id, chunk.request_id, chunk.usage]
    seen += touch_moderation(chunk.moderation)
    for choice in chunk.choices:
        delta = choice.delta
        seen += [choice.index, choice.finish_reason, *touch_logprobs(choice.logprobs)]
        seen += [delta.role, delta.content, delta.reasoning_content, delta.refusal]
        seen += touch_annotations_and_audio(delta)
        if delta.function_call is not None:
            seen += [delta.function_call.name, delta.function_call.arguments]
        for call in delta.tool_calls or ():
            seen += [call.index, call.id, call.type, call.function.name, call.function.arguments]
            if call.custom is not None:
                seen += [call.custom.name, call.custom.input]
    return seen


def accumulate(chunks: list[dict[str, Any]]) -> None:
    accumulator = ChatCompletionAccumulator()
    for data in chunks:
        touch_chunk(ChatCompletionChunk(data))
        accumulator.add(data)
        accumulator.completion()
    completion = accumulator.completion()
    touch_completion(completion)
    # What the accumulator assembles has the documented types, whatever came in.
    for choice in completion.choices:
        assert isinstance(choice.index, int)
        assert choice.finish_reason is None or isinstance(choice.finish_reason, str)
        message = choice.message
        assert isinstance(message.role, str)
        for text in (message.content, message.reasoning_content, message.refusal):
            assert text is None or isinstance(text, str)
        for call in message.tool_calls or ():
            if call.type == "custom":
                assert call.custom is not None and isinstance(call.custom.input, str)
            else:
                assert isinstance(call.function.arguments, str)
        for annotation in message.annotations or ():
            assert isinstance(annotation.to_dict(), dict)
        if message.audio is not None:
            for text in (message.audio.transcript, message.audio.data):
                assert text is None or isinstance(text, str)
    assert completion.usage is None or isinstance(completion.usage.to_dict(), dict)


def with_shape(position: int, path: list[Any], value: Any) -> list[dict[str, Any]]:
    chunks = [copy.deepcopy(chunk) for chunk in CHUNKS]
    chunks[position] = replaced(chunks[position], path, value)
    return chunks


@pytest.mark.parametrize(("path", "value"), NAMED)
@pytest.mark.parametrize("position", range(len(CHUNKS)))
def test_named_shapes_are_tolerated(position: int, path: list[Any], value: Any) -> None:
    accumulate(with_shape(position, path, value))


@st.composite
def mutated(draw: st.DrawFn) -> list[dict[str, Any]]:
    position = draw(st.integers(0, len(CHUNKS) - 1))
    path = draw(st.sampled_from(positions(CHUNKS[position], [])[1:]))
    return with_shape(position, path, draw(json_values))


SHAPES = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@SHAPES
@given(mutated())
def test_any_value_anywhere_never_escapes_as_a_python_error(chunks: list[dict[str, Any]]) -> None:
    accumulate(chunks)


def non_streamed(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The same shapes in a non-streamed body: the chunk's fields under `message`."""
    body = {**chunks[2], "object": "chat.completion"}
    choices = body.get("choices")
    if isinstance(choices, list):
        body["choices"] = [
            {**c, "message": c.get("delta")} if isinstance(c, dict) else c for c in choices
        ]
    return body


@SHAPES
@given(mutated())
def test_odd_non_streamed_bodies_never_escape(chunks: list[dict[str, Any]]) -> None:
    touch_completion(ChatCompletion(non_streamed(chunks)))


@pytest.mark.parametrize(("path", "value"), NAMED)
async def test_odd_shapes_through_a_real_stream(
    server: MockServer, path: list[Any], value: Any
) -> None:
    """Every way of reading a stream, over loopback, with one odd field in every chunk."""
    chunks = [replaced(chunk, path, value) for chunk in CHUNKS]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        server.enqueue_stream(body)
        stream = await client.chat.completions.create(model="m", messages=[{}], stream=True)
        async with stream:
            async for chunk in stream:
                touch_chunk(chunk)
        touch_completion(stream.completion)
        server.enqueue_stream(body)
        async for text in client.chat.stream_text(model="m", messages=[{}]):
            assert isinstance(text, str)
        server.enqueue_stream(body)
        async with client.chat.stream(model="m", messages=[{}]) as events:
            async for event in events:
                repr(event)
                for field in ("text", "arguments", "arguments_so_far", "finish_reason"):
                    if hasattr(event, field) and getattr(event, field) is not None:
                        assert isinstance(getattr(event, field), str), event
            touch_completion(await events.final_completion())
        server.enqueue(200, non_streamed(chunks))
        touch_completion(await client.chat.completions.create(model="m", messages=[{}]))
