"""The tool runner's own cost per turn, against hand-written loops.

Each conversation is one tool call and one answer (two requests, two turns) with
the built-in mock server, which runs in another process so that only the
client's CPU is counted. Side by side, in one process and one run:
`client.chat.run_tools` (streamed turns, the loop, the schema from the
function), hand-written loops over asyncchat (streamed with `chat.stream()`,
the runner's own cost being the difference; and with `create()`), and
hand-written loops over the official SDK (with `create()`, and streamed with
its `.chat.completions.stream()` helper). CPU time, best of `--repeat`. With
`--otel`, the OpenTelemetry SDK records in memory, so asyncchat's clients trace
each request and run_tools each tool call too (the official SDK's are not traced).

    python -m benchmarks.agent [--conversations 200] [--concurrency 10] [--repeat 3] [--otel]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.mock import mock_server

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
ANSWER = "You said: What is the weather in Paris?"


async def get_weather(city: str) -> dict[str, Any]:
    """The current weather in a city.

    Args:
        city: The city's name.
    """
    return {"city": city, "celsius": 21}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}

Conversation = Callable[[Any], Awaitable[str]]


async def _send_results(
    messages: list[Any], calls: Any, arguments: Callable[[Any], dict[str, Any]]
) -> None:
    """What every hand-written loop does with a turn's calls: run each, append its result."""
    for call in calls:
        result = await get_weather(**arguments(call))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})


async def asyncchat_run_tools(client: Any) -> str:
    runner = client.chat.run_tools(model="m", messages=QUESTION, tools=[get_weather])
    final = await runner.final_completion()
    return str(final.choices[0].message.content)


async def asyncchat_hand_loop(client: Any) -> str:
    messages: list[dict[str, Any]] = list(QUESTION)
    while True:
        completion = await client.chat.completions.create(
            model="m", messages=messages, tools=[WEATHER_TOOL]
        )
        message = completion.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message.to_dict())
        await _send_results(messages, message.tool_calls, lambda c: c.function.parsed_arguments())


async def asyncchat_stream_loop(client: Any) -> str:
    messages: list[dict[str, Any]] = list(QUESTION)
    while True:
        async with client.chat.stream(model="m", messages=messages, tools=[WEATHER_TOOL]) as s:
            async for _ in s:
                pass
            completion = await s.final_completion()
        message = completion.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message.to_dict())
        await _send_results(messages, message.tool_calls, lambda c: c.function.parsed_arguments())


async def openai_hand_loop(client: Any) -> str:
    messages: list[Any] = list(QUESTION)
    while True:
        completion = await client.chat.completions.create(
            model="m", messages=messages, tools=[WEATHER_TOOL]
        )
        message = completion.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message.model_dump(exclude_none=True))
        await _send_results(
            messages, message.tool_calls, lambda c: json.loads(c.function.arguments)
        )


async def openai_stream_loop(client: Any) -> str:
    messages: list[Any] = list(QUESTION)
    while True:
        async with client.chat.completions.stream(
            model="m", messages=messages, tools=[WEATHER_TOOL]
        ) as stream:
            async for _ in stream:
                pass
            completion = await stream.get_final_completion()
        message = completion.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))
        await _send_results(
            messages, message.tool_calls, lambda c: json.loads(c.function.arguments)
        )


def _asyncchat_client(url: str, concurrency: int) -> Any:
    import asyncchat

    return asyncchat.Client(base_url=url, api_key="bench", max_connections=concurrency)


def _openai_client(url: str, concurrency: int) -> Any:
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return openai.AsyncOpenAI(
        base_url=url,
        api_key="bench",
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )


RUNNERS: dict[str, tuple[Conversation, Callable[[str, int], Any]]] = {
    "asyncchat run_tools (streamed)": (asyncchat_run_tools, _asyncchat_client),
    "asyncchat hand-written loop, stream()": (asyncchat_stream_loop, _asyncchat_client),
    "asyncchat hand-written loop": (asyncchat_hand_loop, _asyncchat_client),
    "openai hand-written loop": (openai_hand_loop, _openai_client),
    "openai hand-written loop, .stream()": (openai_stream_loop, _openai_client),
}


async def run(
    conversation: Conversation,
    make_client: Callable[[str, int], Any],
    url: str,
    total: int,
    concurrency: int,
) -> float:
    """CPU seconds for `total` conversations, `concurrency` at a time."""
    async with make_client(url, concurrency) as client:
        await conversation(client)  # a warm-up: connections, lazy imports
        limit = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with limit:
                return await conversation(client)

        started = time.process_time()
        answers = await asyncio.gather(*(one() for _ in range(total)))
        seconds = time.process_time() - started
    assert all(answer == ANSWER for answer in answers), answers[:1]
    return seconds


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--conversations", type=int, default=200)
    options.add_argument("--concurrency", type=int, default=10)
    options.add_argument("--repeat", type=int, default=3, help="runs of each (best kept)")
    options.add_argument(
        "--otel", action="store_true", help="telemetry on, into the SDK's in-memory exporter"
    )
    args = options.parse_args()
    spans = None
    if args.otel:
        from benchmarks.clients import set_up_otel_sdk

        spans, _ = set_up_otel_sdk()
    with mock_server() as url:
        turns = 2 * args.conversations
        telemetry = ", telemetry on" if args.otel else ""
        print(
            f"{args.conversations} conversations of 2 turns, {args.concurrency} at a time"
            + telemetry
        )
        print(f"{'runner':38}{'CPU µs/turn':>14}")
        for name, (conversation, make_client) in RUNNERS.items():
            try:
                best = min(
                    asyncio.run(
                        run(conversation, make_client, url, args.conversations, args.concurrency)
                    )
                    for _ in range(args.repeat)
                )
            except ImportError:
                print(f"{name:38}{'not installed':>14}")
                continue
            print(f"{name:38}{best / turns * 1e6:>14.0f}", flush=True)
    if spans is not None:
        names = [span.name for span in spans.get_finished_spans()]
        tools = sum(name.startswith("execute_tool") for name in names)
        print(f"{len(names)} spans recorded, {tools} of them tool calls")


if __name__ == "__main__":
    main()
