"""The client over the real loopback MockServer: requests sent, responses, errors, retries."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses

import asyncchat
from asyncchat._config import proxy_from_environment
from asyncchat.testing import MockServer, StreamStyle

from .conftest import (
    API_KEY,
    completion_json,
    free_port,
    port_that_accepts_nothing,
    served_in_a_thread,
)

USER = [{"role": "user", "content": "one two three four five"}]

GET_WEATHER = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            },
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}


async def test_seed_plain_call_sends_exact_body_and_headers(
    client: asyncchat.Client, server: MockServer
) -> None:
    completion = await client.chat.completions.create(
        messages=[{"role": "user", "content": "Say this is a test"}],
        model="glm-4-air",
    )
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert orjson.loads(request.raw_body) == {
        "model": "glm-4-air",
        "messages": [{"role": "user", "content": "Say this is a test"}],
    }
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"asyncchat/{asyncchat.__version__}"
    assert completion.choices[0].message.content == "You said: Say this is a test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.request_id == "mock-req-1"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens  # type: ignore[operator]
    )
    as_dict = completion.to_dict()
    assert as_dict["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: Say this is a test",
    }
    assert as_dict["model"] == "glm-4-air"


async def test_seed_tool_call(client: asyncchat.Client, server: MockServer) -> None:
    tools = [{"type": "function", "function": GET_WEATHER}]
    messages = [{"role": "user", "content": "What's the weather like in Boston?"}]
    completion = await client.chat.completions.create(
        messages=messages, model="glm-4-air", tools=tools
    )
    assert orjson.loads(server.requests[0].raw_body) == {
        "model": "glm-4-air",
        "messages": messages,
        "tools": tools,
    }
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_current_weather"
    assert call.function.parsed_arguments() == {"location": "Boston", "unit": "celsius"}


async def test_log_probabilities_as_typed_values_streamed_or_not(
    client: asyncchat.Client, server: MockServer
) -> None:
    """`logprobs=True, top_logprobs=2` over loopback: each token's log probability
    and its alternatives read as objects, per chunk and on the assembled completion."""
    messages = [{"role": "user", "content": "is it blue"}]
    completion = await client.chat.completions.create(
        model="m", messages=messages, logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None and logprobs.refusal is None
    assert "".join(token.token or "" for token in logprobs.content) == "You said: is it blue"
    first = logprobs.content[0]
    assert (first.token, first.logprob, first.bytes) == ("You", -0.05, list(b"You"))
    assert [(top.token, top.logprob) for top in first.top_logprobs] == [
        ("You", -0.05),
        ("<alt1>", -1.05),
    ]

    stream = await client.chat.completions.create(
        model="m", messages=messages, logprobs=True, stream=True
    )
    streamed = []
    async with stream:
        async for chunk in stream:
            chunk_logprobs = chunk.choices[0].logprobs if chunk.choices else None
            if chunk_logprobs is not None and chunk_logprobs.content:
                [token] = chunk_logprobs.content
                assert token.token == chunk.choices[0].delta.content and token.top_logprobs == []
                streamed.append((token.token, token.logprob))
    assert streamed == [(token.token, token.logprob) for token in logprobs.content]
    assembled = stream.completion.choices[0].logprobs
    assert assembled is not None and assembled.content is not None
    assert [(token.token, token.logprob) for token in assembled.content] == streamed


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"top_logprobs": 2}, "top_logprobs needs logprobs set to true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be an integer from 0 to 20"),
    ],
)
async def test_mock_server_refuses_top_logprobs_as_openai_does(
    client: asyncchat.Client, options: dict[str, Any], why: str
) -> None:
    with pytest.raises(asyncchat.BadRequestError, match=why):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], **options
        )


async def test_moderation_reads_typed_streamed_or_not(client: asyncchat.Client) -> None:
    """Moderated completions over loopback: the verdicts on the input and the answer,
    as objects, on a completion and on a stream's own moderation chunk."""
    messages = [{"role": "user", "content": "a story about violence"}]
    moderated = {"moderation": {"model": "omni-moderation-latest"}}
    completion = await client.chat.completions.create(model="m", messages=messages, **moderated)
    moderation = completion.moderation
    assert moderation is not None and moderation.input is not None
    assert moderation.input.type == "moderation_results" and moderation.input.code is None
    [verdict] = moderation.input.results
    assert (verdict.flagged, verdict.model) == (True, "omni-moderation-latest")
    assert verdict.categories is not None and verdict.categories["violence"] is True
    assert verdict.category_scores is not None and verdict.category_scores["hate"] == 0.01
    # The answer ("You said: a story about violence") names it too.
    assert moderation.output is not None and moderation.output.results[0].flagged is True

    stream = await client.chat.completions.create(
        model="m",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **moderated,
    )
    async with stream:
        carried = [chunk.moderation async for chunk in stream if chunk.moderation is not None]
    assert [m.to_dict() for m in carried] == [moderation.to_dict()]
    assembled = stream.completion.moderation
    assert assembled is not None and assembled.to_dict() == moderation.to_dict()
    assert stream.completion.usage is not None  # the usage chunk came after it
    plain = await client.chat.completions.create(model="m", messages=messages)
    assert plain.moderation is None


async def test_mock_server_refuses_moderation_without_a_model(client: asyncchat.Client) -> None:
    with pytest.raises(asyncchat.BadRequestError, match=r"moderation\.model must be a string"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], moderation={"policy": {}}
        )


WEATHER_AND_TIME = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "get_time")
]


def _allowed(mode: str, *names: str) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": name}} for name in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


@pytest.mark.parametrize(
    ("tool_choice", "after_a_tool", "called"),
    [
        ("auto", False, ["get_weather"]),  # the tool the user names
        ("auto", True, []),  # a model left to choose answers the results
        ("required", True, ["get_weather"]),
        ({"type": "function", "function": {"name": "get_time"}}, True, ["get_time"]),
        (_allowed("auto", "get_time"), False, ["get_time"]),  # named, but not allowed
        (_allowed("auto", "get_time"), True, []),
        (_allowed("required", "get_time"), True, ["get_time"]),
        ("none", False, []),
    ],
)
async def test_mock_server_follows_tool_choice(
    client: asyncchat.Client, tool_choice: Any, after_a_tool: bool, called: list[str]
) -> None:
    """A model made to call a tool calls one whatever the last message; one left to
    choose calls tools only in answer to the user, and only the allowed ones."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "get_weather in Paris"}]
    if after_a_tool:
        call = {"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": "c1", "content": "done"})
    completion = await client.chat.completions.create(
        model="m", messages=messages, tools=WEATHER_AND_TIME, tool_choice=tool_choice
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == called
    assert completion.choices[0].finish_reason == ("tool_calls" if called else "stop")


@pytest.mark.parametrize(("parallel", "called"), [(None, 2), (True, 2), (False, 1)])
async def test_mock_server_calls_one_tool_a_turn_without_parallel_tool_calls(
    client: asyncchat.Client, parallel: bool | None, called: int
) -> None:
    options = {} if parallel is None else {"parallel_tool_calls": parallel}
    completion = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "get_weather and get_time in Paris"}],
        tools=WEATHER_AND_TIME,
        **options,
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather", "get_time"][:called]


@pytest.mark.parametrize(
    ("tools", "tool_choice", "why"),
    [
        (None, "required", "tool_choice is only allowed when tools are given"),
        (
            WEATHER_AND_TIME,
            {"type": "function", "function": {"name": "get_news"}},
            "names the function tool 'get_news', which is not in tools",
        ),
        (
            WEATHER_AND_TIME,
            {"type": "custom", "custom": {"name": "get_time"}},
            "names the custom tool 'get_time', which is not in tools",
        ),
        (
            WEATHER_AND_TIME,
            _allowed("auto", "get_time", "get_news"),
            "names the function tool 'get_news', which is not in tools",
        ),
        (WEATHER_AND_TIME, _allowed("always", "get_time"), r"needs a mode \('auto' or"),
        (WEATHER_AND_TIME, "get_time", "must be 'none', 'auto', 'required', a tool to call"),
    ],
)
async def test_mock_server_refuses_a_tool_choice_it_cannot_follow(
    client: asyncchat.Client, tools: Any, tool_choice: Any, why: str
) -> None:
    options = {"tool_choice": tool_choice} | ({"tools": tools} if tools else {})
    with pytest.raises(asyncchat.BadRequestError, match=why) as caught:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], **options
        )
    assert caught.value.param == "tool_choice"


async def test_mock_server_stops_at_the_token_limit_streamed_or_not(
    client: asyncchat.Client,
) -> None:
    """A word a token: the answer stops at max_tokens with finish_reason "length", and
    max_completion_tokens, the newer name, wins over it."""
    messages = [{"role": "user", "content": "one two three four"}]
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3, "max_tokens": 50}):
        completion = await client.chat.completions.create(model="m", messages=messages, **limit)
        assert completion.choices[0].message.content == "You said: one"
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        stream = await client.chat.completions.create(
            model="m",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **limit,
        )
        async with stream:
            async for _ in stream:
                pass
        assert stream.completion.to_dict() | {"id": None} == completion.to_dict() | {"id": None}
    whole = await client.chat.completions.create(model="m", messages=messages, max_tokens=6)
    assert whole.choices[0].finish_reason == "stop"


async def test_mock_server_cuts_the_tool_call_it_was_writing_at_the_token_limit(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Ten tokens a call: with room for one and a half, the second call comes with
    half its arguments, streamed in pieces or not."""
    messages = [{"role": "user", "content": "get_weather and get_time in Paris"}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
            },
        }
        for name in ("get_weather", "get_time")
    ]
    full = await client.chat.completions.create(model="m", messages=messages, tools=tools)
    assert [call.function.arguments for call in full.choices[0].message.tool_calls or []] == [
        '{"place":"Paris"}',
        '{"place":"Paris"}',
    ]
    cut = await client.chat.completions.create(
        model="m", messages=messages, tools=tools, max_tokens=15
    )
    calls = cut.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == ['{"place":"Paris"}', '{"place"']
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 15
    server.style = StreamStyle(argument_fragment_size=3)
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=tools, max_tokens=15, stream=True
    )
    async with stream:
        async for _ in stream:
            pass
    streamed = stream.completion.choices[0]
    assert [call.function.to_dict() for call in streamed.message.tool_calls or []] == [
        call.function.to_dict() for call in calls
    ]
    assert streamed.finish_reason == "length"


@pytest.mark.parametrize("limit", [{"max_tokens": 0}, {"max_completion_tokens": "9"}])
async def test_mock_server_refuses_a_token_limit_that_is_not_a_positive_integer(
    client: asyncchat.Client, limit: dict[str, Any]
) -> None:
    [name] = limit
    with pytest.raises(asyncchat.BadRequestError, match=f"{name} must be an integer of at least 1"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], **limit
        )


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True])
async def test_mock_deepseek_thinks_and_wants_the_reasoning_of_a_call_back(
    stream: bool,
) -> None:
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    async with (
        MockServer(thinking="deepseek") as server,
        asyncchat.Client(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        if stream:
            async with await client.chat.completions.create(
                model="m", messages=asked, tools=[WEATHER_TOOL], stream=True
            ) as chunks:
                reasoning = [c.choices[0].delta.reasoning_content async for c in chunks]
            assert "".join(filter(None, reasoning)) == "Let me think."
            answer = chunks.completion
        else:
            answer = await client.chat.completions.create(
                model="m", messages=asked, tools=[WEATHER_TOOL]
            )
        message = answer.choices[0].message.to_dict()
        assert message["reasoning_content"] == "Let me think."
        result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "21"}
        await client.chat.completions.create(
            model="m", messages=[*asked, message, result], tools=[WEATHER_TOOL]
        )
        del message["reasoning_content"]
        with pytest.raises(asyncchat.BadRequestError) as info:
            await client.chat.completions.create(
                model="m", messages=[*asked, message, result], tools=[WEATHER_TOOL]
            )
    assert info.value.message.endswith(
        ": Missing `reasoning_content` field in the assistant message at message index 1. "
        "For more information, please refer to "
        "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
    )


@pytest.mark.parametrize("style", ["openai", "whole", "no_index", "repeat_name"])
@pytest.mark.parametrize("stream", [False, True])
async def test_mock_gemini_signs_a_turn_s_first_call_and_wants_the_signature_back(
    stream: bool, style: Any
) -> None:
    asked = [{"role": "user", "content": "get_weather and get_time in Paris?"}]
    tools = [WEATHER_TOOL, {**WEATHER_TOOL, "function": {"name": "get_time"}}]
    async with (
        MockServer(thinking="gemini", style=StreamStyle(tool_calls=style)) as server,
        asyncchat.Client(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        answer = await client.chat.completions.create(
            model="m", messages=asked, tools=tools, stream=stream
        )
        if stream:
            async with answer as chunks:
                async for _ in chunks:
                    pass
            answer = chunks.completion
        message = answer.choices[0].message.to_dict()
        first, second = message["tool_calls"]
        signature = first["extra_content"]["google"]["thought_signature"]
        assert isinstance(signature, str) and signature
        assert "extra_content" not in second  # parallel calls: the first is signed
        results = [
            {"role": "tool", "tool_call_id": call["id"], "content": "ok"}
            for call in (first, second)
        ]
        await client.chat.completions.create(
            model="m", messages=[*asked, message, *results], tools=tools
        )
        # A turn before the last user message is not checked, as Gemini checks it.
        later = [*asked, {**message, "tool_calls": [second]}, *results[1:], *asked]
        await client.chat.completions.create(model="m", messages=later, tools=tools)
        refused = []
        for changed in ("x" + signature, None):
            call = {**first, "extra_content": {"google": {"thought_signature": changed}}}
            if changed is None:
                del call["extra_content"]
            sent = [*asked, {**message, "tool_calls": [call, second]}, *results]
            with pytest.raises(asyncchat.BadRequestError) as info:
                await client.chat.completions.create(model="m", messages=sent, tools=tools)
            refused.append(info.value.message.split(": ", 1)[1])
    assert refused[0] == "Corrupted thought signature."
    assert refused[1].startswith(
        "Function call is missing a thought_signature in functionCall parts."
    )
    assert "`default_api:get_weather` , position 2." in refused[1]


async def test_functions_and_tool_objects_go_in_tools_as_their_dicts(
    client: asyncchat.Client, server: MockServer
) -> None:
    def get_time(zone: str) -> str:
        """The local time in a time zone."""
        return "14:00"

    @asyncchat.tool(strict=True)
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    @asyncchat.custom_tool
    def run_sql(query: str) -> str:
        """Runs a query."""
        return "1"

    given = [get_time, get_weather, run_sql, {"type": "function", "function": {"name": "raw"}}]
    sent = [asyncchat.Tool(get_time).to_dict(), get_weather.to_dict(), run_sql.to_dict(), given[3]]
    ask = [{"role": "user", "content": "get_weather in Oslo"}]
    completion = await client.chat.completions.create(model="m", messages=ask, tools=given)
    assert server.requests[-1].body["tools"] == sent
    [call] = completion.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments() == {"city": "Oslo"}
    async with client.chat.stream(model="m", messages=ask, tools=given) as stream:
        await stream.final_completion()
    assert server.requests[-1].body["tools"] == sent
    assert given[:3] == [get_time, get_weather, run_sql]  # the caller's list is not changed
    with pytest.raises(TypeError, match="tools must be a list"):
        await client.chat.completions.create(model="m", messages=ask, tools=get_weather)
    with pytest.raises(TypeError, match="a tool must be a function or a tool dict, not 5"):
        await client.chat.completions.create(model="m", messages=ask, tools=[5])


async def test_params_extra_body_headers_query(
    client: asyncchat.Client, server: MockServer
) -> None:
    await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.7,
        max_tokens=2048,
        response_format={"type": "json_object"},
        extra_body={"do_sample": False, "temperature": 0.1},
        extra_headers={"X-Trace": "abc"},
        extra_query={"api-version": "2024-06-01"},
    )
    [request] = server.requests
    assert request.body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.1,
        "max_tokens": 2048,
        "response_format": {"type": "json_object"},
        "do_sample": False,
    }
    assert request.headers["X-Trace"] == "abc"
    assert request.query == {"api-version": "2024-06-01"}


async def test_default_headers_and_previous_message_object(
    server: MockServer,
) -> None:
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, default_headers={"X-Team": "core"}
    ) as client:
        first = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "one"}]
        )
        # A message object from a response goes straight back into the next request.
        await client.chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": "one"},
                first.choices[0].message,
                {"role": "user", "content": "two"},
            ],
        )
    assert server.requests[1].headers["X-Team"] == "core"
    assert server.requests[1].body["messages"][1] == {
        "role": "assistant",
        "content": "You said: one",
    }


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, asyncchat.BadRequestError),
        (401, asyncchat.AuthenticationError),
        (403, asyncchat.PermissionDeniedError),
        (404, asyncchat.NotFoundError),
        (409, asyncchat.ConflictError),
        (422, asyncchat.UnprocessableEntityError),
        (429, asyncchat.RateLimitError),
        (500, asyncchat.InternalServerError),
        (503, asyncchat.InternalServerError),
    ],
)
async def test_status_codes_map_to_error_classes(
    client: asyncchat.Client, server: MockServer, status: int, error_class: type
) -> None:
    client.max_retries = 0
    server.enqueue(
        status,
        {
            "error": {
                "message": f"provider says {status}",
                "type": "some_type",
                "param": "messages",
                "code": "E1",
            }
        },
        headers={"x-request-id": "req-abc"},
    )
    with pytest.raises(error_class) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    error = info.value
    assert isinstance(error, asyncchat.APIStatusError)
    assert isinstance(error, asyncchat.APIError)
    assert error.status_code == status
    assert error.message.endswith(f"provider says {status}")
    assert f"HTTP {status}" in str(error)
    assert error.request_id == "req-abc"
    assert "req-abc" in str(error)
    assert (error.code, error.type, error.param) == ("E1", "some_type", "messages")
    assert error.body["error"]["code"] == "E1"


async def test_glm_vllm_gemini_and_mistral_error_shapes(
    client: asyncchat.Client, server: MockServer
) -> None:
    client.max_retries = 0
    server.enqueue(400, {"error": {"code": "1261", "message": "Prompt 超长"}})
    with pytest.raises(asyncchat.BadRequestError, match="Prompt 超长") as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "1261"
    server.enqueue(
        400,
        {
            "object": "error",
            "message": "max_tokens too large",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )
    with pytest.raises(asyncchat.BadRequestError, match="max_tokens too large"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    server.enqueue(422, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]})
    with pytest.raises(asyncchat.UnprocessableEntityError) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith(": model: field required")
    # Mistral's 422 for a field it does not take: FastAPI's validation errors, as a line.
    forbidden = {"type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
    mistral = [
        {**forbidden, "loc": ["body", "stream_options", "include_usage"], "input": True},
        {**forbidden, "loc": ["body", "messages", 1, "assistant", "tool_calls", 0, "name"]},
    ]
    message = {"detail": mistral}
    server.enqueue(422, {"object": "error", "message": message, "type": "invalid_request_error"})
    with pytest.raises(asyncchat.UnprocessableEntityError) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith(
        ": stream_options.include_usage: Extra inputs are not permitted; "
        "messages[1].assistant.tool_calls[0].name: Extra inputs are not permitted"
    )
    assert info.value.type == "invalid_request_error"
    # Gemini's OpenAI-compatible endpoint wraps its error in a list.
    gemini = "Function call is missing a thought_signature in functionCall parts."
    server.enqueue(400, [{"error": {"code": 400, "message": gemini, "status": "INVALID_ARGUMENT"}}])
    with pytest.raises(asyncchat.BadRequestError) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith(f": {gemini}")
    assert info.value.code == "400"


async def test_html_error_page_gives_a_readable_error(
    client: asyncchat.Client, server: MockServer
) -> None:
    client.max_retries = 0
    server.enqueue(
        502,
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(asyncchat.InternalServerError) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    message = str(info.value)
    assert "HTTP 502 Bad Gateway" in message
    assert "<title>502 Bad Gateway</title>" in message
    assert info.value.body.startswith("<html>")


async def test_error_reported_with_status_200(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(200, {"error": {"message": "quota exceeded", "type": "rate_limit_error"}})
    with pytest.raises(asyncchat.RateLimitError, match="quota exceeded"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_non_json_success_body(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(200, "<html>login</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(asyncchat.APIError, match="not JSON"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_wrong_key_is_401_and_not_retried(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key="wrong-key") as client:
        with pytest.raises(asyncchat.AuthenticationError, match="Incorrect API key") as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert len(server.requests) == 1
    assert "wrong-key" not in str(info.value)


async def test_no_retry_on_400(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(400, {"error": {"message": "bad"}})
    with pytest.raises(asyncchat.BadRequestError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(server.requests) == 1
    assert client.sleeps == []  # type: ignore[attr-defined]


async def test_retry_after_headers_honoured(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "2"})
    server.enqueue(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "150"})
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "You said: x"
    assert len(server.requests) == 3
    assert client.sleeps == [2.0, 0.15]  # type: ignore[attr-defined]


async def test_groq_s_flex_tier_at_capacity_is_retried(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Groq answers 498 when its flex tier has no capacity, and says to retry."""
    error = {"message": "Flex tier capacity exceeded. Try again later.", "type": "capacity"}
    server.enqueue(498, {"error": {**error, "code": "capacity_exceeded"}})
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], service_tier="flex"
    )
    assert completion.choices[0].message.content == "You said: x"
    assert len(server.requests) == 2 and len(client.sleeps) == 1  # type: ignore[attr-defined]


async def test_a_pause_named_in_a_429_s_body_is_honoured(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Gemini sends no Retry-After: its 429 (a list of one error on the OpenAI-compatible
    endpoint) names the pause in a google.rpc.RetryInfo detail. Backoff at 0.5 and 1 s
    would spend both retries inside the quota's minute."""
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}
    pause = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}
    error = {"code": 429, "message": "You exceeded your current quota.", "details": [quota, pause]}
    server.enqueue(429, [{"error": {**error, "status": "RESOURCE_EXHAUSTED"}}])
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "You said: x"
    assert client.sleeps == [26.0]  # type: ignore[attr-defined]

    pause["retryDelay"] = "3600s"  # a daily quota: past the 60 s cap, raised at once
    server.enqueue(429, [{"error": {**error, "status": "RESOURCE_EXHAUSTED"}}])
    with pytest.raises(asyncchat.RateLimitError, match="You exceeded your current quota"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(server.requests) == 3 and client.sleeps == [26.0]  # type: ignore[attr-defined]


async def test_a_pause_named_in_a_429_s_message_is_honoured(
    client: asyncchat.Client, server: MockServer
) -> None:
    """OpenAI's 429 for a spent per-minute budget sends no Retry-After: the pause is in
    its message's words. Backoff at 0.5 and 1 s would spend both retries inside it."""
    error = {"message": "Rate limit reached for gpt-4.1 in organization org-x on tokens per "
             "min (TPM): Limit 30000, Used 22999, Requested 12528. Please try again in "
             "11.054s. Visit https://platform.openai.com/account/rate-limits to learn more.",
             "type": "tokens", "param": None, "code": "rate_limit_exceeded"}  # fmt: skip
    server.enqueue(429, {"error": error})
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "You said: x"
    assert client.sleeps == [11.054]  # type: ignore[attr-defined]


async def test_a_429_for_a_request_too_large_for_the_budget_is_raised_at_once(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Groq's words, and its Retry-After: a request of more tokens than the minute's
    whole budget never fits, however long it waits."""
    error = {"message": "Rate limit reached for model `mixtral-8x7b-32768` in organization "
             "`org_x` on tokens per minute (TPM): Limit 18000, Used 0, Requested ~36313. "
             "Please try again in 1m1.043333333s.", "type": "tokens",
             "code": "rate_limit_exceeded"}  # fmt: skip
    server.enqueue(429, {"error": error}, headers={"retry-after": "2"})
    with pytest.raises(asyncchat.RateLimitError, match="Requested ~36313"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(server.requests) == 1 and client.sleeps == []  # type: ignore[attr-defined]


async def test_retries_exhausted_raise_the_last_error(
    client: asyncchat.Client, server: MockServer
) -> None:
    for _ in range(3):
        server.enqueue(500, {"error": {"message": "boom"}})
    with pytest.raises(asyncchat.InternalServerError, match="boom"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(server.requests) == 3
    assert len(client.sleeps) == 2  # type: ignore[attr-defined]


async def test_x_should_retry_false(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(503, {"error": {"message": "no"}}, headers={"x-should-retry": "false"})
    with pytest.raises(asyncchat.InternalServerError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(server.requests) == 1


async def test_real_sleep_between_retries_is_short(server: MockServer) -> None:
    server.enqueue(429, {"error": {"message": "wait"}}, headers={"retry-after-ms": "20"})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert completion.choices[0].message.content == "You said: x"
    assert len(server.requests) == 2


async def test_read_timeout_raises_api_timeout_error(server: MockServer) -> None:
    server.enqueue(delay=1.0)  # the server answers after a second
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=0.1
    ) as client:
        with pytest.raises(asyncchat.APITimeoutError, match="read timeout"):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )


async def test_total_and_per_call_timeout(server: MockServer) -> None:
    server.enqueue(delay=1.0)
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(asyncchat.APITimeoutError, match="total timeout"):
            await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "x"}],
                timeout=asyncchat.Timeout(connect=1, read=10, total=0.1),
            )


async def test_timeouts_are_retried(server: MockServer) -> None:
    server.enqueue(delay=1.0)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_retries=1, timeout=0.2
    ) as client:
        client._sleep = _no_sleep  # type: ignore[assignment]
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert completion.choices[0].message.content == "You said: x"
    assert len(server.requests) == 2


async def _no_sleep(seconds: float) -> None:
    return None


async def test_refused_connection_raises_api_connection_error() -> None:
    port = free_port()
    async with asyncchat.Client(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=1
    ) as client:
        client._sleep = _no_sleep  # type: ignore[assignment]
        with pytest.raises(asyncchat.APIConnectionError, match="could not connect") as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert isinstance(info.value, asyncchat.ConnectError)  # never sent
    assert not isinstance(info.value, asyncchat.APITimeoutError)
    assert API_KEY not in str(info.value)


async def test_a_connect_timeout_is_both_a_timeout_and_a_connect_error() -> None:
    with port_that_accepts_nothing() as port:
        async with asyncchat.Client(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0,
            timeout=asyncchat.Timeout(connect=0.2, read=5),
        ) as client:  # fmt: skip
            with pytest.raises(asyncchat.ConnectTimeoutError, match="connect timeout"):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
    assert issubclass(asyncchat.ConnectTimeoutError, asyncchat.APITimeoutError)
    assert issubclass(asyncchat.TLSError, asyncchat.ConnectError)


async def test_a_connection_dropped_after_sending_is_not_a_connect_error() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request reached the server
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        asyncchat.Client(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0
        ) as client,
    ):
        with pytest.raises(asyncchat.APIConnectionError) as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert not isinstance(info.value, asyncchat.ConnectError)


async def test_pool_reused_across_100_sequential_requests(
    client: asyncchat.Client, server: MockServer
) -> None:
    for i in range(100):
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"n{i}"}]
        )
        assert completion.choices[0].message.content == f"You said: n{i}"
    assert len(server.requests) == 100
    assert server.connection_count == 1


async def test_reads_are_capped_and_a_large_answer_still_arrives_whole(
    client: asyncchat.Client, server: MockServer
) -> None:
    # asyncio reads up to 256 KiB at a time, a buffer glibc maps afresh from the
    # kernel whenever its heap lacks a hole that large; the transport caps reads at
    # 64 KiB. An answer of many reads, plain and streamed, still arrives whole.
    content = "".join(f"{i:07d}," for i in range(40_000))  # 320 KB
    messages = [{"role": "user", "content": "big"}]
    server.enqueue(json=completion_json(content))
    completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == content
    server.enqueue(sse=[{"choices": [{"index": 0, "delta": {"content": content}}]}])
    stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
    async with stream:
        streamed = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(filter(None, streamed)) == content
    session = client.transport._session  # type: ignore[attr-defined]
    [[(protocol, _)]] = session.connector._conns.values()  # the one pooled connection
    if hasattr(type(protocol.transport), "max_size"):  # asyncio's own, not uvloop's
        assert protocol.transport.max_size == 64 * 1024


async def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCCHAT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(asyncchat.ConfigurationError, match="ASYNCCHAT_API_KEY"):
        asyncchat.Client()
    with pytest.raises(asyncchat.ConfigurationError, match="no API key"):
        asyncchat.Client(base_url="http://192.0.2.1:8000/v1")  # another machine: a key is needed


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "[::]"])
async def test_a_server_on_this_machine_needs_no_key(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """llama.cpp, Ollama and vLLM on localhost usually run without a key; a server's
    own `listening on 0.0.0.0` address, pasted, is this machine too (and no warning)."""
    monkeypatch.delenv("ASYNCCHAT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with MockServer(host="::1" if host.startswith("[") else "127.0.0.1") as server:
        base_url = f"http://{host}:{server.port}/v1"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            client = asyncchat.Client(base_url=base_url)
        async with client:
            completion = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert completion.choices[0].message.content == "You said: x"
    assert "Authorization" not in server.requests[0].headers


async def test_configuration_from_environment(
    monkeypatch: pytest.MonkeyPatch, server: MockServer
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "other-key")
    monkeypatch.setenv("ASYNCCHAT_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("ASYNCCHAT_BASE_URL", server.base_url + "/")
    async with asyncchat.Client() as client:
        assert client.base_url == server.base_url
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    monkeypatch.delenv("ASYNCCHAT_BASE_URL")
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert asyncchat.Client().base_url == "https://api.openai.com/v1"


async def test_client_after_close_raises(server: MockServer) -> None:
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    await client.close()
    with pytest.raises(asyncchat.ClientClosedError, match="closed"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    await client.close()  # closing twice is harmless


async def test_bad_input_rejected_before_sending(
    client: asyncchat.Client, server: MockServer
) -> None:
    with pytest.raises(TypeError, match="model"):
        await client.chat.completions.create(model="", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(TypeError, match="list of message dicts"):
        await client.chat.completions.create(model="m", messages="hello")
    with pytest.raises(ValueError, match="must not be empty"):
        await client.chat.completions.create(model="m", messages=[])
    with pytest.raises(TypeError, match="cannot be encoded as JSON"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": object()}]
        )
    assert server.requests == []


def test_bad_configuration() -> None:
    with pytest.raises(asyncchat.ConfigurationError, match="base_url"):
        asyncchat.Client(api_key="k", base_url="api.example.com")
    with pytest.raises(asyncchat.ConfigurationError, match="timeout"):
        asyncchat.Client(api_key="k", timeout="10")  # type: ignore[arg-type]
    with pytest.raises(asyncchat.ConfigurationError, match="positive"):
        asyncchat.Timeout(read=0)
    with pytest.raises(ValueError, match="max_retries"):
        asyncchat.Client(api_key="k", max_retries=-1)
    with pytest.raises(ValueError, match="max_connections"):
        asyncchat.Client(api_key="k", max_connections=0)


def test_key_not_in_repr() -> None:
    client = asyncchat.Client(api_key=API_KEY, base_url="https://open.bigmodel.cn/api/paas/v4")
    assert API_KEY not in repr(client)
    assert "open.bigmodel.cn" in repr(client)


async def test_debug_log_has_request_details_but_never_the_key(
    client: asyncchat.Client, server: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "1"})
    with caplog.at_level(logging.DEBUG, logger="asyncchat"):
        await client.chat.completions.create(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Say this is a test"}],
            extra_headers={"Authorization": f"Bearer {API_KEY}"},
        )
    text = caplog.text
    assert "POST " + server.base_url + "/chat/completions" in text
    assert "Say this is a test" in text
    assert "retry 1 in" in text
    assert re.search(r"-> 200 request_id=mock-req-2 duration=\d+\.\d{3}s$", text, re.MULTILINE)
    assert API_KEY not in text
    assert "Authorization" not in text


HELLO = [{"role": "user", "content": "hello there"}]


async def test_one_log_line_per_stream_with_its_time_to_first_chunk(
    client: asyncchat.Client, server: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="asyncchat"):
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        async with stream:
            async for _ in stream:
                pass
        broken = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        async with broken:
            async for _ in broken:
                break
    lines = [r.getMessage() for r in caplog.records if "request_id=" in r.getMessage()]
    assert len(lines) == 2  # one a request, written when its stream ended
    done = re.fullmatch(
        r"POST \S+/chat/completions -> 200 request_id=mock-req-1 duration=\d+\.\d{3}s "
        r"ttfc=(\d+\.\d{3})s chunks=(\d+) ended=done",
        lines[0],
    )
    assert done is not None and int(done.group(2)) == stream.accumulator.chunk_count
    assert float(done.group(1)) > 0
    assert re.search(r"request_id=mock-req-2 .* chunks=1 ended=closed$", lines[1])


def test_log_level_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("asyncchat")
    level = logger.level
    try:
        monkeypatch.setenv("OPENAI_LOG", "debug")
        asyncchat.Client(api_key="k")
        assert logger.level == logging.DEBUG
        monkeypatch.setenv("ASYNCCHAT_LOG", "info")
        asyncchat.Client(api_key="k")
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(level)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.x builds responses without the `stream_writer` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); supply a stand-in that reports nothing was uploaded."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


async def test_with_aioresponses() -> None:
    """The client works with aiohttp mocked out, for users who test that way."""
    body = completion_json("mocked")
    with aioresponses() as mocked:
        mocked.post(
            "https://api.example.com/v1/chat/completions",
            payload=body,
            headers={"x-request-id": "r-1"},
            response_class=_CompatResponse,
        )
        async with asyncchat.Client(api_key="k", base_url="https://api.example.com/v1") as client:
            completion = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert completion.choices[0].message.content == "mocked"
    assert completion.request_id == "r-1"


async def test_client_from_another_event_loop_is_refused(server: MockServer) -> None:
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    def use_in_other_loop() -> BaseException | None:
        async def call() -> None:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )

        try:
            asyncio.run(call())
        except BaseException as exc:
            return exc
        return None

    error = await asyncio.to_thread(use_in_other_loop)
    assert isinstance(error, asyncchat.ClientClosedError)
    assert "another event loop" in str(error)
    await client.close()


async def test_with_options_changes_only_what_it_is_given(server: MockServer) -> None:
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, default_headers={"X-App": "a"}
    ) as client:
        once = client.with_options(max_retries=0, timeout=7, default_headers={"X-Run": "r"})
        assert (once.max_retries, once.timeout) == (0, asyncchat.Timeout.coerce(7))
        assert (client.max_retries, client.timeout) == (2, asyncchat.Timeout())
        assert once.max_event_size == client.max_event_size
        assert once.base_url == client.base_url
        server.enqueue(500, {"error": {"message": "try again"}})
        with pytest.raises(asyncchat.InternalServerError, match="try again"):
            await once.chat.completions.create(model="m", messages=USER)
        assert len(server.requests) == 1  # not retried
        server.enqueue(500, {"error": {"message": "try again"}})
        await client.chat.completions.create(model="m", messages=USER)  # retried, answered
        sent = [request.headers for request in server.requests]
        assert [(h.get("X-App"), h.get("X-Run")) for h in sent] == [
            ("a", "r"),
            ("a", None),
            ("a", None),
        ]
        assert {h["Authorization"] for h in sent} == {f"Bearer {API_KEY}"}
    assert server.connection_count == 1  # one pool under both


async def test_with_options_sends_another_key() -> None:
    async with (
        MockServer() as server,
        asyncchat.Client(base_url=server.base_url, api_key="first") as client,
    ):
        await client.with_options(api_key="second").chat.completions.create(
            model="m", messages=USER
        )
        await client.chat.completions.create(model="m", messages=USER)
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer second",
        "Bearer first",
    ]
    assert "second" not in repr(client.with_options(api_key="second"))


async def test_with_options_times_out_on_its_own_timeout(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        server.enqueue(delay=1.0)
        with pytest.raises(asyncchat.APITimeoutError):
            await client.with_options(timeout=0.1, max_retries=0).chat.completions.create(
                model="m", messages=USER
            )
        server.enqueue(delay=0.3)
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "You said: one two three four five"


async def test_a_with_options_client_owns_no_pool(server: MockServer) -> None:
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY)
    derived = client.with_options(max_retries=0)
    await derived.chat.completions.create(model="m", messages=USER)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not an "unclosed client" warning
        async with derived:
            pass
        del derived
        gc.collect()
    # Closing it, or letting it go, left the pool open: the client still answers on it.
    await client.chat.completions.create(model="m", messages=USER)
    assert server.connection_count == 1
    derived = client.with_options(timeout=30)
    stream = await derived.chat.completions.create(model="m", messages=USER, stream=True)
    await client.close()  # the pool under both, and the streams they opened
    with pytest.raises(asyncchat.ClientClosedError):
        async for _ in stream:
            pass
    with pytest.raises(asyncchat.ClientClosedError, match="closed"):
        await derived.chat.completions.create(model="m", messages=USER)


def test_with_options_checks_what_it_is_given() -> None:
    client = asyncchat.Client(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="max_retries must be 0 or more, got -1"):
        client.with_options(max_retries=-1)
    with pytest.raises(ValueError, match="max_response_size must be positive, got 0"):
        client.with_options(max_response_size=0)
    with pytest.raises(asyncchat.ConfigurationError, match="timeout must be"):
        client.with_options(timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="base_url"):
        client.with_options(base_url="http://127.0.0.1:2/v1")  # type: ignore[call-arg]


# A program that keeps one client for its life and runs one event loop after another
# (a script calling asyncio.run per step, a sync web view per request). It prints
# each answer and how many sockets the process holds once that loop is over.
_LOOP_AFTER_LOOP = """
import asyncio, gc, os, sys
import asyncchat

def sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # the listing's own descriptor, gone by now
    return count

client = asyncchat.Client(base_url=sys.argv[1], api_key="k")

async def ask(text):
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}]
    )
    return completion.choices[0].message.content

print(asyncio.run(ask("one")), sockets())
if sys.argv[2] == "uvloop":
    import uvloop
    print(uvloop.run(ask("two")), sockets())
elif sys.argv[2] == "unfinalized":  # closed without shutdown_asyncgens(): no hook ran
    loop = asyncio.new_event_loop()
    print(loop.run_until_complete(ask("two")))
    loop.close()
else:
    print(asyncio.run(ask("two")), sockets())
answer = asyncio.run(ask("three"))
if sys.argv[2] == "unfinalized":
    gc.collect()  # the connection the client let go is closed as it is collected
print(answer, sockets())
asyncio.run(client.close())
try:
    asyncio.run(ask("four"))
except asyncchat.ClientClosedError as error:
    print(error)
"""


@pytest.mark.parametrize("second", ["asyncio", "uvloop"])
def test_a_client_serves_one_event_loop_after_another(second: str) -> None:
    with served_in_a_thread(MockServer()) as server:
        done = subprocess.run(
            [sys.executable, "-W", "always", "-c", _LOOP_AFTER_LOOP, server.base_url, second],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.stderr == ""  # not a ResourceWarning, not a traceback
    assert done.returncode == 0
    # Each loop's connection was closed as asyncio.run (uvloop.run) ended it.
    assert done.stdout.splitlines() == [
        "You said: one 0",
        "You said: two 0",
        "You said: three 0",
        "this asyncchat.Client is closed; create a new one",
    ]
    assert server.connection_count == 3


def test_a_client_outlives_a_loop_closed_without_finalizing() -> None:
    # No hook ran before that loop closed, so its connection can only be let go: it is
    # closed when collected (with asyncio's ResourceWarning, shown only under -W).
    # Nothing else is printed, and the client serves the next loop.
    with served_in_a_thread(MockServer()) as server:
        done = subprocess.run(
            [sys.executable, "-c", _LOOP_AFTER_LOOP, server.base_url, "unfinalized"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "You said: one 0",
        "You said: two",
        "You said: three 0",
        "this asyncchat.Client is closed; create a new one",
    ]


def test_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    assert proxy_from_environment("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert proxy_from_environment("https://api.openai.com/v1") == "http://proxy.corp:3128"
    assert proxy_from_environment("http://api.openai.com/v1") is None
    monkeypatch.setenv("NO_PROXY", "localhost,.openai.com")
    assert proxy_from_environment("https://api.openai.com/v1") is None
    assert proxy_from_environment("https://open.bigmodel.cn/api/paas/v4") == (
        "http://proxy.corp:3128"
    )


async def test_requests_go_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, server: MockServer
) -> None:
    # The mock server plays the proxy: the request for an unreachable host reaches it.
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    with pytest.warns(UserWarning, match="unencrypted"):
        client = asyncchat.Client(base_url="http://llm.example.invalid/v1", api_key=API_KEY)
    async with client:
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "via proxy"}]
        )
    assert completion.choices[0].message.content == "You said: via proxy"
    assert server.requests[0].headers["Host"] == "llm.example.invalid"
