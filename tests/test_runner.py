"""client.chat.run_tools: the loop, the calls, the errors told to the model, the hooks,
and the scripted model, over the loopback MockServer."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from typing import Any, get_args

import pytest

import asyncchat
from asyncchat.testing import MockServer, StreamStyle, ToolCallStyle, Turn

from .conftest import API_KEY, tool_call_stream

USER = [{"role": "user", "content": "What is the weather in Paris?"}]


async def get_weather(city: str) -> dict[str, Any]:
    """The current weather in a city.

    Args:
        city: The city's name.
    """
    await asyncio.sleep(0)
    return {"city": city, "celsius": 21}


async def get_time(zone: str) -> str:
    """The local time in a time zone."""
    if zone.startswith("Mars"):
        raise ValueError(f"unknown time zone {zone!r}")
    return "14:00"


def to_fahrenheit(celsius: float) -> float:
    """Celsius to Fahrenheit."""
    return round(celsius * 9 / 5 + 32, 1)


TOOLS = [get_weather, get_time, to_fahrenheit]


def scripted(*turns: Turn) -> MockServer:
    return MockServer(api_key=API_KEY, turns=list(turns))


def connect(server: MockServer) -> asyncchat.Client:
    return asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_retries=0)


async def test_the_default_mock_loop_ends_with_an_answer(client: asyncchat.Client) -> None:
    messages = copy.deepcopy(USER)
    runner = client.chat.run_tools(model="m", messages=messages, tools=[get_weather])
    final = await runner.final_completion()
    assert messages == USER  # the caller's list is not modified
    assert final.choices[0].message.content == "You said: What is the weather in Paris?"
    assert [m["role"] for m in runner.messages] == ["user", "assistant", "tool", "assistant"]
    call = runner.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert runner.messages[2] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": '{"city":"Paris","celsius":21}',
    }
    assert len(runner.completions) == 2
    assert await runner.final_completion() is final  # done: no further request


async def test_an_agent_recovers_from_a_tool_error_with_events_in_order() -> None:
    server = scripted(
        Turn(tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"zone": "Mars/X"})]),
        Turn(
            tool_calls=[("get_time", {"zone": "Europe/Paris"}), ("to_fahrenheit", {"celsius": 21})],
            expect_results=['"celsius":21', "Error: ValueError: unknown time zone 'Mars/X'"],
        ),
        Turn(content="21 °C (69.8 °F) at 14:00.", expect_results=["14:00", "69.8"]),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=TOOLS)
        events = [event async for event in runner]
        final = await runner.final_completion()
    assert server.turns is not None and server.turns.errors == [] and server.turns.done
    assert final.choices[0].message.content == "21 °C (69.8 °F) at 14:00."
    finished = [e for e in events if isinstance(e, asyncchat.ToolFinished)]
    assert [(e.turn, e.name) for e in finished if e.error is None] == [
        (1, "get_weather"),
        (2, "get_time"),
        (2, "to_fahrenheit"),
    ]
    [failed] = [e for e in finished if e.error is not None]
    assert isinstance(failed.error, ValueError) and failed.arguments == {"zone": "Mars/X"}
    assert failed.result == "Error: ValueError: unknown time zone 'Mars/X'"
    assert all(e.seconds >= 0 for e in finished)
    started = [e for e in events if isinstance(e, asyncchat.ToolStarted)]
    assert len(started) == 4 and started[2].arguments == {"zone": "Europe/Paris"}
    converted = next(e for e in finished if e.name == "to_fahrenheit")
    assert converted.arguments == {"celsius": 21.0} and converted.value == 69.8
    text = "".join(e.text for e in events if isinstance(e, asyncchat.ContentDelta))
    assert text == "21 °C (69.8 °F) at 14:00."
    # Each call's finish comes after its start, and a turn's calls before the next turn.
    order = [
        (type(e).__name__, e.id)
        for e in events
        if isinstance(e, (asyncchat.ToolStarted, asyncchat.ToolFinished))
    ]
    for kind, call_id in order:
        if kind == "ToolFinished" and ("ToolStarted", call_id) in order:
            assert order.index(("ToolStarted", call_id)) < order.index((kind, call_id))


async def test_calls_of_a_turn_run_concurrently_bounded_and_answer_in_call_order() -> None:
    running, peak, release = 0, 0, asyncio.Event()

    async def slow(tag: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            release.set()
        await asyncio.wait_for(release.wait(), 5)  # needs a second call running alongside
        await asyncio.sleep(0.01 if tag == "first" else 0)
        running -= 1
        return tag

    calls = [("slow", {"tag": tag}) for tag in ("first", "second", "third")]
    server = scripted(
        Turn(tool_calls=calls),
        Turn(content="done", expect_results=["first", "second", "third"]),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[slow], max_concurrency=2)
        await runner.final_completion()
    assert server.turns is not None and server.turns.errors == []
    assert peak == 2


async def test_a_sync_tool_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def where() -> str:
        threads.append(threading.get_ident())
        return "ok"

    server = scripted(Turn(tool_calls=[("where", {})]), Turn(content="fine"))
    async with server, connect(server) as client:
        await client.chat.run_tools(model="m", messages=USER, tools=[where]).final_completion()
    assert threads and threads[0] != threading.get_ident()


def calls_stream(*calls: tuple[str, str]) -> list[dict[str, Any] | str]:
    """A streamed answer that makes these calls, (name, arguments text) each."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks: list[dict[str, Any] | str] = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": f"call_{index}",
                                "type": "function",
                                "function": {"name": name, "arguments": arguments},
                            }
                        ]
                    },
                }
            ],
        }
        for index, (name, arguments) in enumerate(calls)
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return chunks


async def test_each_kind_of_failure_is_told_to_the_model(
    client: asyncchat.Client, server: MockServer
) -> None:
    @asyncchat.tool(timeout=0.05)
    async def sleepy() -> str:
        await asyncio.sleep(10)
        return "never"

    def boom(n: int) -> str:
        raise RuntimeError(f"disk full\nat block {n}")

    server.enqueue(
        sse=calls_stream(
            ("get_weather", '{"town": "Paris"}'),
            ("get_weather", '{"city": "Par'),
            ("nope", "{}"),
            ("sleepy", ""),
            ("boom", '{"n": 7}'),
        )
    )
    runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather, sleepy, boom])
    events = [event async for event in runner]
    results = [m["content"] for m in runner.messages if m["role"] == "tool"]
    assert results == [
        "Error: the arguments do not match get_weather's parameters: there is no parameter "
        "'town'; 'city' is missing",
        results[1],  # orjson's words, checked below
        "Error: LookupError: there is no tool named 'nope'; the tools are: boom, get_weather, "
        "sleepy",
        "Error: TimeoutError: the tool did not finish within 0.05 s",
        "Error: RuntimeError: disk full at block 7",
    ]
    assert results[1].startswith("Error: the arguments are not valid JSON (")
    assert results[1].endswith(""": '{"city": "Par'""")
    errors = [type(e.error).__name__ for e in events if isinstance(e, asyncchat.ToolFinished)]
    assert sorted(errors) == sorted(
        ["ToolArgumentsError", "ToolArgumentsError", "LookupError", "TimeoutError", "RuntimeError"]
    )
    started = {e.name for e in events if isinstance(e, asyncchat.ToolStarted)}
    assert started == {"sleepy", "boom"}  # the others never started
    assert runner.messages[-1]["content"].startswith("You said:")  # the model answered after


async def test_on_error_raise_ends_the_run_with_the_cause(
    client: asyncchat.Client, server: MockServer
) -> None:
    cancelled = asyncio.Event()

    async def waits() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    server.enqueue(sse=calls_stream(("waits", ""), ("get_time", '{"zone": "Mars/X"}')))
    runner = client.chat.run_tools(
        model="m", messages=USER, tools=[waits, get_time], on_error="raise"
    )
    with pytest.raises(asyncchat.ToolCallError) as caught:
        await runner.final_completion()
    assert isinstance(caught.value.__cause__, ValueError)
    assert caught.value.name == "get_time"
    assert "tool call 'get_time' failed: ValueError: unknown time zone 'Mars/X'" in str(
        caught.value
    )
    assert caught.value.messages[-1]["role"] == "assistant"
    assert cancelled.is_set()  # the other call was cancelled, not left running


async def test_approve_vetoes_and_on_result_rewrites(
    client: asyncchat.Client, server: MockServer
) -> None:
    seen: list[asyncchat.ToolStarted] = []

    async def approve(call: asyncchat.ToolStarted) -> bool | str:
        seen.append(call)
        if call.name == "get_time":
            return "The user declined: no clocks today."
        return call.arguments.get("celsius", 0) < 100 if call.name == "to_fahrenheit" else True

    def on_result(finished: asyncchat.ToolFinished) -> str | None:
        return f"[checked] {finished.result}" if finished.name == "get_weather" else None

    server.enqueue(
        sse=calls_stream(
            ("get_weather", '{"city": "Oslo"}'),
            ("get_time", '{"zone": "CET"}'),
            ("to_fahrenheit", '{"celsius": 500}'),
        )
    )
    runner = client.chat.run_tools(
        model="m", messages=USER, tools=TOOLS, approve=approve, on_result=on_result
    )
    events = [event async for event in runner]
    results = [m["content"] for m in runner.messages if m["role"] == "tool"]
    assert results == [
        '[checked] {"city":"Oslo","celsius":21}',
        "Error: PermissionError: The user declined: no clocks today.",
        "Error: PermissionError: the call was not allowed",
    ]
    assert [call.name for call in seen] == ["get_weather", "get_time", "to_fahrenheit"]
    assert seen[2].arguments == {"celsius": 500.0}
    vetoed = [e for e in events if isinstance(e, asyncchat.ToolFinished) and e.error]
    assert {type(e.error) for e in vetoed} == {PermissionError}
    started = [e.name for e in events if isinstance(e, asyncchat.ToolStarted)]
    assert started == ["get_weather"]


async def test_stop_ends_after_the_current_turn(
    client: asyncchat.Client, server: MockServer
) -> None:
    runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
    async for event in runner:
        if isinstance(event, asyncchat.ToolStarted):
            runner.stop()
    final = await runner.final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [m["role"] for m in runner.messages] == ["user", "assistant", "tool"]
    assert len(server.requests) == 1


async def test_max_turns_raises_with_messages_to_go_on_from() -> None:
    server = scripted(
        Turn(tool_calls=[("get_weather", {"city": "A"})]),
        Turn(tool_calls=[("get_weather", {"city": "B"})]),
        Turn(content="finally"),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=TOOLS, max_turns=2)
        with pytest.raises(asyncchat.MaxTurnsError, match="max_turns=2") as caught:
            await runner.final_completion()
        assert caught.value.messages is runner.messages
        assert runner.messages[-1]["role"] == "tool"  # the last calls have their results
        again = client.chat.run_tools(model="m", messages=caught.value.messages, tools=TOOLS)
        final = await again.final_completion()
    assert final.choices[0].message.content == "finally"
    assert server.turns is not None and server.turns.errors == []


@pytest.mark.parametrize(
    ("forced", "relaxed"),
    [
        ("required", "auto"),
        ({"type": "function", "function": {"name": "get_weather"}}, "auto"),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
        ),
    ],
)
async def test_a_forcing_tool_choice_holds_for_the_first_turn_only(
    client: asyncchat.Client, server: MockServer, forced: Any, relaxed: Any
) -> None:
    """The mock, like a real model, calls a tool whenever tool_choice forces one: kept
    for every turn, the run could never end with an answer."""
    given = copy.deepcopy(forced)
    runner = client.chat.run_tools(
        model="m", messages=USER, tools=[get_weather, get_time], tool_choice=given
    )
    final = await runner.final_completion()
    assert final.choices[0].message.content == "You said: What is the weather in Paris?"
    assert [request.body["tool_choice"] for request in server.requests] == [forced, relaxed]
    assert given == forced  # the caller's value is not modified


async def test_reset_tool_choice_false_forces_a_call_every_turn(
    client: asyncchat.Client, server: MockServer
) -> None:
    runner = client.chat.run_tools(
        model="m",
        messages=USER,
        tools=[get_weather],
        tool_choice="required",
        reset_tool_choice=False,
        max_turns=3,
    )
    with pytest.raises(asyncchat.MaxTurnsError, match="max_turns=3"):
        await runner.final_completion()
    assert [request.body["tool_choice"] for request in server.requests] == ["required"] * 3
    assert "reset_tool_choice" not in server.requests[0].body  # the runner's, not sent


@pytest.mark.parametrize(
    ("thinking", "style"),
    [("deepseek", "openai"), ("gemini", "openai"), ("gemini", "whole"), ("gemini", "no_index")],
)
async def test_a_thinking_model_gets_its_thought_back_with_its_calls(
    thinking: Any, style: Any
) -> None:
    """DeepSeek's thinking mode refuses the next request without the reasoning of a
    turn that called tools, Gemini 3 without its calls' thought signatures."""
    asked = [{"role": "user", "content": "get_weather and get_time in Paris"}]
    server = MockServer(api_key=API_KEY, thinking=thinking, style=StreamStyle(tool_calls=style))
    async with server, connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=asked, tools=[get_weather, get_time])
        final = await runner.final_completion()
    assert final.choices[0].message.content == "You said: get_weather and get_time in Paris"
    assert [m["role"] for m in runner.messages] == [
        "user", "assistant", "tool", "tool", "assistant"
    ]  # fmt: skip
    sent = server.requests[1].body["messages"][1]
    assert sent == runner.messages[1]
    first, second = sent["tool_calls"]
    if thinking == "deepseek":
        assert sent["reasoning_content"] == "Let me think."
        assert runner.messages[-1]["reasoning_content"] == "Let me think."
        assert "extra_content" not in first
    else:
        signed = runner.completions[0].choices[0].message.tool_calls[0].to_dict()
        assert first["extra_content"] == signed["extra_content"]
        assert "reasoning_content" not in sent
    assert "extra_content" not in second


@pytest.mark.parametrize("style", get_args(ToolCallStyle))
async def test_a_call_runs_once_with_its_arguments_in_every_server_style(
    server: MockServer, style: Any
) -> None:
    """However a server cuts a call (Baidu Qianfan sends all the arguments so far in each
    piece, vLLM's GLM parser the whole arguments again at the end, Gemini the name in
    pieces), the tool runs once with its arguments, not with `{...}{...}`."""
    server.style = StreamStyle(tool_calls=style, argument_fragment_size=3)
    async with connect(server) as client:
        runner = client.chat.run_tools(
            model="m",
            messages=[{"role": "user", "content": "Weather in Paris"}],
            tools=[get_weather],
        )
        final = await runner.final_completion()
    assert final.choices[0].finish_reason == "stop"
    [result] = [m for m in runner.messages if m["role"] == "tool"]
    assert json.loads(result["content"]) == {"city": "Paris", "celsius": 21}
    [call] = runner.messages[1]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


async def test_parallel_calls_all_at_index_0_each_run(server: MockServer) -> None:
    """Ollama numbers every parallel call 0: each is a call of its own, run with its
    own arguments and answered under its own id, not one call with `{...}{...}`."""
    server.style = StreamStyle(tool_calls="index_zero", argument_fragment_size=3)
    asked = [{"role": "user", "content": "get_weather and get_time in Paris"}]
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=asked, tools=[get_weather, get_time])
        final = await runner.final_completion()
    assert final.choices[0].message.content == "You said: get_weather and get_time in Paris"
    calls = runner.messages[1]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "Paris"}),
    ]
    results = [(m["tool_call_id"], m["content"]) for m in runner.messages if m["role"] == "tool"]
    assert results == [
        (calls[0]["id"], '{"city":"Paris","celsius":21}'),
        (calls[1]["id"], "14:00"),
    ]
    assert calls[0]["id"] != calls[1]["id"]


async def test_a_second_call_sent_at_the_firsts_index_without_an_id_runs(
    server: MockServer,
) -> None:
    """A proxy of Gemini 3 sends a second call at the first's index, whole, with no id
    and an empty name (dyedd/lens#49): both run, each answered under its own id."""
    first = {"name": "get_weather", "arguments": ""}
    fragments = [
        {"index": 0, "id": "toolu_1", "type": "function", "function": first},
        {"index": 0, "function": {"name": "", "arguments": '{"city": "Paris"}'}},
        {"index": 0, "function": {"name": "", "arguments": '{"city": "Oslo"}'}},
    ]
    server.enqueue_stream(tool_call_stream(fragments))
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
        await runner.final_completion()
    calls = runner.messages[1]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert calls[0]["id"] == "toolu_1" and calls[1]["id"] not in (None, "toolu_1")
    results = [(m["tool_call_id"], json.loads(m["content"])) for m in runner.messages[2:4]]
    assert results == [
        (calls[0]["id"], {"city": "Paris", "celsius": 21}),
        (calls[1]["id"], {"city": "Oslo", "celsius": 21}),
    ]
    assert server.requests[1].body["messages"][1]["tool_calls"] == calls


async def test_parallel_calls_sent_under_one_id_are_answered_each_under_its_own(
    server: MockServer,
) -> None:
    """Azure OpenAI at times gives parallel calls one id: results under one id cannot
    tell which call each answers, so a call whose id an earlier one has gets another
    (made up as for a call with none, and never one the server gave)."""
    same = {"id": "call_1_1", "type": "function"}
    whole = [
        {**same, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {**same, "function": {"name": "get_time", "arguments": '{"zone": "Paris"}'}},
        {**same, "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    ]
    server.enqueue_stream(tool_call_stream([{"index": i, **c} for i, c in enumerate(whole)]))
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather, get_time])
        await runner.final_completion()
    ids = [call["id"] for call in runner.messages[1]["tool_calls"]]
    assert ids == ["call_1_1", "call_1_1_1", "call_1_2"]
    results = [(m["tool_call_id"], m["content"]) for m in runner.messages[2:5]]
    assert results == [
        ("call_1_1", '{"city":"Paris","celsius":21}'),
        ("call_1_1_1", "14:00"),
        ("call_1_2", '{"city":"Oslo","celsius":21}'),
    ]
    sent = server.requests[1].body["messages"]
    assert [call["id"] for call in sent[1]["tool_calls"]] == ids
    assert [m["tool_call_id"] for m in sent[2:5]] == ids


async def test_a_call_without_arguments_as_groq_sends_it_runs(server: MockServer) -> None:
    """Groq sends `"null"` as the arguments of a call to a function without
    parameters: the tool runs, rather than the model being told its arguments are
    not an object; they go back as they came."""

    def ping() -> str:
        """Whether the service is up."""
        return "pong"

    call = {"index": 0, "id": "call_g", "type": "function",
            "function": {"name": "ping", "arguments": "null"}}  # fmt: skip
    server.enqueue_stream(tool_call_stream([call]))
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[ping])
        await runner.final_completion()
    assert runner.messages[1]["tool_calls"][0]["function"]["arguments"] == "null"
    assert runner.messages[2] == {"role": "tool", "tool_call_id": "call_g", "content": "pong"}


async def test_reasoning_goes_back_under_the_name_it_came_by(server: MockServer) -> None:
    """Groq refuses `reasoning_content` on a message: a runner sends back only the
    reasoning the server sent, under its name, and adds none where it sent none."""
    server.style = StreamStyle(reasoning="reasoning")
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
        await runner.final_completion()
        server.style = StreamStyle()
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
        await runner.final_completion()
    thought, plain = server.requests[1].body["messages"][1], server.requests[3].body["messages"][1]
    assert thought["reasoning"] == "Let me think." and "reasoning_content" not in thought
    assert plain.keys() == {"role", "content", "tool_calls"}


async def test_mistral_thinking_goes_back_as_content_parts(server: MockServer) -> None:
    """Mistral takes its thinking back as it sent it, content parts, and refuses a
    field it does not know (such as `reasoning_content`)."""
    server.style = StreamStyle(reasoning="thinking")
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
        final = await runner.final_completion()
    sent = server.requests[1].body["messages"][1]
    assert sent["content"] == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]}
    ]
    assert sent.keys() == {"role", "content", "tool_calls"}
    assert final.choices[0].message.reasoning_content == "Let me think."


async def test_openrouter_reasoning_details_go_back_whole(
    client: asyncchat.Client, server: MockServer
) -> None:
    """OpenRouter (Claude, Gemini, GPT-5 behind it) wants a tool turn's signed
    `reasoning_details` back unmodified; they stream in pieces joined by `index`."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def thought(**delta: Any) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta}]}

    def piece(**fields: Any) -> list[dict[str, Any]]:
        return [{"type": "reasoning.text", "index": 0, "format": "anthropic-claude-v1", **fields}]

    server.enqueue(
        sse=[
            thought(reasoning="I need ", reasoning_details=piece(text="I need ")),
            thought(reasoning="the weather.", reasoning_details=piece(text="the weather.")),
            thought(reasoning_details=piece(signature="c2ln")),
            *calls_stream(("get_weather", '{"city": "Paris"}')),
        ]
    )
    runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
    await runner.final_completion()
    sent = server.requests[1].body["messages"][1]
    assert sent["reasoning"] == "I need the weather."
    assert sent["reasoning_details"] == [
        {
            "type": "reasoning.text",
            "index": 0,
            "format": "anthropic-claude-v1",
            "text": "I need the weather.",
            "signature": "c2ln",
        }
    ]


async def test_a_call_s_empty_content_goes_back_as_the_server_sent_it(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Servers disagree on a tool-calling turn's empty text: Ollama sends `""` and
    refuses null ("invalid message content type: <nil>"), OpenAI sends null and
    Bedrock refuses `""`. Each gets back what it sent."""
    text_first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    text_first["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    server.enqueue(sse=[text_first, *calls_stream(("get_weather", '{"city": "Paris"}'))])
    for _ in range(2):  # Ollama's turn, then the mock's own, whose content is null
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
        await runner.final_completion()
    ollama, openai = server.requests[1].body["messages"][1], server.requests[3].body["messages"][1]
    assert ollama["content"] == "" and ollama["tool_calls"]
    assert openai["content"] is None and openai["tool_calls"]


async def test_a_tool_given_as_a_dict_ends_the_run_for_you(
    client: asyncchat.Client, server: MockServer
) -> None:
    answer = {
        "type": "function",
        "function": {"name": "final_answer", "parameters": {"type": "object"}},
    }
    server.enqueue(sse=calls_stream(("final_answer", '{"text": "42"}')))
    runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather, answer])
    final = await runner.final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.parsed_arguments() == {"text": "42"}
    assert [m["role"] for m in runner.messages] == ["user", "assistant"]
    sent = server.requests[-1].body["tools"]
    assert [t["function"]["name"] for t in sent] == ["get_weather", "final_answer"]


@asyncchat.custom_tool
def run_python(code: str) -> str:
    """Runs Python code and returns what it prints."""
    if "import" in code:
        raise PermissionError("imports are not allowed here")
    return f"ran {len(code.splitlines())} line(s)"


async def test_a_custom_tool_gets_the_model_s_text_and_its_call_goes_back_as_custom() -> None:
    code = 'x = {"a": 1}\nprint(x)'  # free text: JSON-looking parts stay as they are
    server = scripted(
        Turn(tool_calls=[("run_python", code), ("get_weather", {"city": "Oslo"})]),
        Turn(tool_calls=[("run_python", "import os")], expect_results=["ran 2 line(s)", "Oslo"]),
        Turn(content="Done.", expect_results=["Error: PermissionError: imports are not allowed"]),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(
            model="m", messages=USER, tools=[run_python, get_weather], max_concurrency=1
        )
        events = [event async for event in runner]
        final = await runner.final_completion()
    assert server.turns is not None and server.turns.errors == [] and server.turns.done
    assert final.choices[0].message.content == "Done."
    sent = server.requests[0].body["tools"]
    assert sent[0] == {
        "type": "custom",
        "custom": {
            "name": "run_python",
            "description": "Runs Python code and returns what it prints.",
        },
    }
    assert runner.messages[1]["tool_calls"] == [
        {"id": "call_1_0", "type": "custom", "custom": {"name": "run_python", "input": code}},
        {
            "id": "call_1_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        },
    ]
    started = [e for e in events if isinstance(e, asyncchat.ToolStarted)]
    assert [(e.name, e.arguments) for e in started] == [
        ("run_python", {"code": code}),
        ("get_weather", {"city": "Oslo"}),
        ("run_python", {"code": "import os"}),
    ]
    [failed] = [e for e in events if isinstance(e, asyncchat.ToolFinished) and e.error]
    assert isinstance(failed.error, PermissionError) and failed.arguments == {"code": "import os"}
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    assert "".join(d.delta for d in deltas if d.type == "custom" and d.id == "call_1_0") == code


async def test_the_default_mock_calls_a_custom_tool_with_the_user_s_text(
    client: asyncchat.Client, server: MockServer
) -> None:
    ask = [{"role": "user", "content": "run_python: print(6 * 7)"}]
    runner = client.chat.run_tools(model="m", messages=ask, tools=[get_weather, run_python])
    final = await runner.final_completion()
    assert [m["role"] for m in runner.messages] == ["user", "assistant", "tool", "assistant"]
    call = runner.messages[1]["tool_calls"][0]
    assert call["custom"] == {"name": "run_python", "input": "run_python: print(6 * 7)"}
    assert runner.messages[2]["content"] == "ran 1 line(s)"
    assert final.choices[0].finish_reason == "stop"
    # The request that carried the result sent the call back as it came.
    assert server.requests[-1].body["messages"][1]["tool_calls"][0] == call


async def test_a_custom_tool_given_as_a_dict_ends_the_run_for_you(
    client: asyncchat.Client, server: MockServer
) -> None:
    patch = {"type": "custom", "custom": {"name": "apply_patch"}}
    ask = [{"role": "user", "content": "apply_patch the fix"}]
    runner = client.chat.run_tools(model="m", messages=ask, tools=[get_weather, patch])
    final = await runner.final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.custom is not None and call.custom.input == "apply_patch the fix"
    assert [m["role"] for m in runner.messages] == ["user", "assistant"]


async def test_the_script_tells_a_custom_call_from_a_function_call() -> None:
    server = scripted(Turn(tool_calls=[("run_python", "print(1)")]))
    async with server, connect(server) as client:
        as_function = _offered("run_python")
        with pytest.raises(
            asyncchat.BadRequestError,
            match=r"calls the custom tool 'run_python', which the request does not offer "
            r"\(tools: run_python \(function\)\)",
        ):
            await client.chat.completions.create(model="m", messages=USER, tools=[as_function])


async def test_a_call_cut_off_at_the_token_limit_is_never_run() -> None:
    """With finish_reason "length", the call being written when the limit came is
    incomplete: half a program is not run; the model hears why, and the calls before
    it, which were complete, run as usual."""
    ran: list[str] = []

    @asyncchat.custom_tool
    def run_shell(command: str) -> str:
        """Runs a shell command."""
        ran.append(command)
        return "ok"

    server = scripted(
        Turn(tool_calls=[("get_weather", {"city": "Oslo"}), ("run_shell", "rm -rf build/tmp")]),
        Turn(content="Done.", expect_results=["Oslo", "cut off at the token limit"]),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(
            model="m", messages=USER, tools=[get_weather, run_shell], max_tokens=15
        )
        events = [event async for event in runner]
    assert server.turns is not None and server.turns.errors == [] and server.turns.done
    assert ran == []
    sent = runner.messages[1]["tool_calls"][1]["custom"]
    assert sent == {"name": "run_shell", "input": "rm -rf b"}  # as it came: half the command
    [refused] = [e for e in events if isinstance(e, asyncchat.ToolFinished) and e.error]
    assert isinstance(refused.error, asyncchat.ToolArgumentsError)
    assert (refused.name, refused.arguments) == ("run_shell", None)
    assert refused.result.startswith("Error: the call was cut off at the token limit")
    assert not any(isinstance(e, asyncchat.ToolStarted) and e.name == "run_shell" for e in events)

    server = scripted(Turn(tool_calls=[("run_shell", "make clean")]))
    async with server, connect(server) as client:
        runner = client.chat.run_tools(
            model="m", messages=USER, tools=[run_shell], max_tokens=5, on_error="raise"
        )
        with pytest.raises(asyncchat.ToolCallError, match="'run_shell' failed: the call was cut"):
            await runner.final_completion()
    assert ran == []


@pytest.mark.parametrize(
    ("finish_reason", "said"),
    [
        ("abort", "cut off when the server stopped it (finish_reason 'abort')"),  # vLLM
        ("insufficient_system_resource", "cut off when the server stopped it"),  # DeepSeek
        ("network_error", "cut off when the server stopped it"),  # GLM
        ("model_context_window_exceeded", "filled the model's context window"),  # z.ai
    ],
)
async def test_a_call_cut_off_when_the_server_stopped_the_answer_is_never_run(
    server: MockServer, finish_reason: str, said: str
) -> None:
    """A server that gives up mid-answer says so in a 200 stream's last finish_reason
    (vLLM when its engine shuts down, DeepSeek under load, GLM on an inference error):
    the call being written then is as incomplete as at the token limit, and not run."""
    ran: list[str] = []

    @asyncchat.custom_tool
    def run_shell(command: str) -> str:
        """Runs a shell command."""
        ran.append(command)
        return "ok"

    weather_call = {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    fragments = [
        {"index": 0, "id": "c1", "type": "function", "function": weather_call},
        {"index": 1, "id": "c2", "type": "custom", "custom": {"name": "run_shell", "input": ""}},
        {"index": 1, "custom": {"input": "rm -rf b"}},
    ]
    server.enqueue_stream(tool_call_stream(fragments, finish_reason))
    async with connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather, run_shell])
        events = [event async for event in runner]
    assert ran == []
    weather, refused = runner.messages[2:4]
    assert (weather["tool_call_id"], json.loads(weather["content"])["city"]) == ("c1", "Oslo")
    assert refused["tool_call_id"] == "c2"
    assert said in refused["content"] and "so it was not run: make it again" in refused["content"]
    assert not any(isinstance(e, asyncchat.ToolStarted) and e.name == "run_shell" for e in events)
    sent = server.requests[1].body["messages"]
    assert sent[1]["tool_calls"][1]["custom"] == {"name": "run_shell", "input": "rm -rf b"}


async def test_cancelling_the_runner_cancels_tools_and_releases_the_stream(
    client: asyncchat.Client, server: MockServer
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    server.enqueue(sse=calls_stream(("forever", "")))
    runner = client.chat.run_tools(model="m", messages=USER, tools=[forever])
    task = asyncio.ensure_future(runner.final_completion())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()

    # Mid-stream: the connection goes back to the pool, no request left open.
    server.style = StreamStyle(chunk_delay=0.05)
    runner = client.chat.run_tools(model="m", messages=USER, tools=[get_weather])
    async for event in runner:
        if isinstance(event, asyncchat.ToolCallArgumentsDelta):
            break
    await runner.close()
    assert client.transport.connections()[1] == 0  # type: ignore[attr-defined]


async def test_misuse_is_refused_before_any_request(
    client: asyncchat.Client, server: MockServer
) -> None:
    def twin() -> None:
        pass

    with pytest.raises(ValueError, match="at least 1"):
        client.chat.run_tools(model="m", messages=USER, tools=[], max_turns=0)
    with pytest.raises(ValueError, match="on_error"):
        client.chat.run_tools(model="m", messages=USER, tools=[], on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="leave out n"):
        client.chat.run_tools(model="m", messages=USER, tools=[], n=2)
    with pytest.raises(ValueError, match="two tools are named 'twin'"):
        client.chat.run_tools(model="m", messages=USER, tools=[twin, asyncchat.tool(twin)])
    with pytest.raises(TypeError, match="a list"):
        client.chat.run_tools(model="m", messages=USER, tools=get_weather)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a function or a tool dict"):
        client.chat.run_tools(model="m", messages=USER, tools=[42])
    assert server.requests == []


async def test_the_script_reports_a_client_that_sends_the_wrong_thing() -> None:
    server = scripted(
        Turn(tool_calls=[("get_weather", {"city": "A"})]),
        Turn(content="ok", expect_results=["Reykjavik"]),
    )
    async with server, connect(server) as client:
        runner = client.chat.run_tools(model="m", messages=USER, tools=TOOLS)
        with pytest.raises(asyncchat.BadRequestError, match="should contain 'Reykjavik'"):
            await runner.final_completion()
        assert server.turns is not None and len(server.turns.errors) == 1
        # A hand-written loop that forgets the tool results is told so.
        with pytest.raises(asyncchat.BadRequestError, match="should end with 1 tool message"):
            await client.chat.completions.create(model="m", messages=USER)
        unoffered = scripted(Turn(tool_calls=[("missing", {})]))
        async with unoffered, connect(unoffered) as other:
            with pytest.raises(asyncchat.BadRequestError, match="does not offer"):
                await other.chat.completions.create(model="m", messages=USER, tools=[_offered("x")])
            over = scripted()
            async with over, connect(over) as third:
                with pytest.raises(asyncchat.BadRequestError, match="no turn left"):
                    await third.chat.completions.create(model="m", messages=USER)


async def test_expect_checks_the_request() -> None:
    def wants_temperature(body: dict[str, Any]) -> None:
        assert body.get("temperature") == 0, "temperature must be 0"

    server = scripted(Turn(content="ok", expect=wants_temperature))
    async with server, connect(server) as client:
        with pytest.raises(asyncchat.BadRequestError, match="temperature must be 0"):
            await client.chat.completions.create(model="m", messages=USER)
        done = await client.chat.completions.create(model="m", messages=USER, temperature=0)
    assert done.choices[0].message.content == "ok"


def _offered(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def test_results_are_sent_as_text() -> None:
    from asyncchat._runner import tool_result_text

    from .test_tools import Address, Point

    assert tool_result_text("as is") == "as is"
    assert tool_result_text(None) == "null"
    assert tool_result_text({"a": [1, 2.5]}) == '{"a":[1,2.5]}'
    assert tool_result_text(Address(street="s", city="c")) == '{"street":"s","city":"c"}'
    assert tool_result_text([Address(street="s", city="c")]) == '[{"street":"s","city":"c"}]'
    assert tool_result_text(Point(1, 2)) == '{"x":1,"y":2}'
    assert tool_result_text({1, 2}) in ("[1,2]", "[2,1]")
    with pytest.raises(TypeError, match="no JSON form"):
        tool_result_text(object())
    # The part that has none is named, deep inside as at the top.
    with pytest.raises(TypeError, match=r"a dict, .* \(type is not JSON serializable: bytes\)"):
        tool_result_text({"ok": [1], "raw": b"\xff"})
    with pytest.raises(TypeError, match=r"\(dict key must be str\)"):
        tool_result_text({1: "one"})
