"""`asyncchat mock-server` and `asyncchat demo`: the test server on a port, and the
seed's calls made against it in-process."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from typing import Any, Literal, TextIO, get_args

from asyncchat._cli_args import key_value, non_negative_float, positive_float, positive_int
from asyncchat.client import Client
from asyncchat.events import ContentDelta, ToolCallDone, ToolFinished, ToolStarted
from asyncchat.testing import BatchSettings, MockServer, StreamStyle, ToolCallStyle, UsageStyle


def add_mock_server(commands: Any) -> None:
    mock = commands.add_parser(
        "mock-server",
        help="run the built-in mock server",
        description="An OpenAI-compatible server that answers 'You said: <your text>', "
        "with the stream styles and faults of asyncchat.testing.MockServer.",
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--api-key", help="require this key (401 otherwise)")
    mock.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    mock.add_argument(
        "--rpm",
        type=float,
        help="a provider's requests-per-minute limit: requests over it get a 429 with Retry-After",
    )
    mock.add_argument("--reply", help="answer with this text instead of the echo")
    mock.add_argument(
        "--loading",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="answer 503 'Loading model' for this long after starting, as llama.cpp's"
        " server does while it loads (a batch job waits for it)",
    )
    mock.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="a model listed by GET /v1/models (repeatable; default: mock-model)",
    )
    mock.add_argument(
        "--resolve-model",
        action="append",
        type=key_value,
        default=[],
        metavar="ASKED=ANSWERED",
        help="answer requests for model ASKED as model ANSWERED, as a provider names a "
        "dated snapshot (repeatable)",
    )
    mock.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    mock.add_argument("--tokens", type=positive_int, help="content chunks per stream")
    mock.add_argument("--line-ending", choices=("lf", "crlf", "cr"), default="lf")
    mock.add_argument("--keepalive", action="store_true", help="a comment before each chunk")
    mock.add_argument("--no-done", action="store_true", help="end streams without [DONE]")
    mock.add_argument(
        "--stream-always",
        action="store_true",
        help="stream every answer, asked to or not (as unsloth's server does)",
    )
    mock.add_argument(
        "--tool-calls",
        choices=get_args(ToolCallStyle),
        default="openai",
        help="how streamed tool calls are cut (as OpenAI, GLM/vLLM, Gemini, Qianfan, ...)",
    )
    mock.add_argument(
        "--reasoning",
        choices=("reasoning_content", "reasoning", "thinking"),
        help="stream reasoning text first, under this field (thinking: as content parts, "
        "as Mistral does)",
    )
    mock.add_argument(
        "--json-wrapper",
        choices=("fence", "think"),
        help="wrap JSON answers as models that ignore the format do: in a code fence, "
        "or after a <think> block",
    )
    mock.add_argument(
        "--usage",
        choices=get_args(UsageStyle),
        default="openai",
        help="where streams report usage: a last chunk when asked (OpenAI), inside the "
        "finishing choice (Moonshot), or in the finishing chunk's x_groq (Groq)",
    )
    mock.add_argument(
        "--finish-every-chunk",
        action="store_true",
        help='finish_reason "stop" on every chunk before the real finish, as some proxies '
        "send it (gcli2api, OpenWebUI)",
    )
    mock.add_argument(
        "--filter-annotations",
        action="store_true",
        help="Azure's content-filter annotations: the prompt's results first, the "
        "answer's after the finish, with an empty id and model",
    )
    mock.add_argument(
        "--thinking",
        choices=("deepseek", "gemini"),
        help="a thinking model that refuses a conversation without its thought: "
        "DeepSeek's reasoning, or Gemini's thought signatures on tool calls",
    )
    mock.add_argument("--error-after", type=int, metavar="N", help="an error event after N chunks")
    mock.add_argument("--drop-after", type=int, metavar="N", help="cut the connection after N")
    mock.add_argument(
        "--batch-pace",
        type=positive_float,
        default=500.0,
        metavar="N",
        help="Batch API: requests a batch answers a second (default: 500)",
    )
    mock.add_argument(
        "--batch-expire-after",
        type=positive_float,
        metavar="SECONDS",
        help="Batch API: batches expire this long after creation, keeping what finished",
    )


async def mock_server(args: argparse.Namespace) -> int:
    line_ending = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}[args.line_ending]
    style = StreamStyle(
        tokens=args.tokens,
        chunk_delay=args.chunk_delay,
        line_ending=line_ending,
        keepalive=args.keepalive,
        send_done=not args.no_done,
        stream_always=args.stream_always,
        tool_calls=args.tool_calls,
        reasoning=args.reasoning,
        json_wrapper=args.json_wrapper,
        usage=args.usage,
        finish_every_chunk=args.finish_every_chunk,
        filter_annotations=args.filter_annotations,
        error_after=args.error_after,
        drop_after=args.drop_after,
    )
    server = MockServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        delay=args.delay,
        reply=args.reply,
        style=style,
        models=args.models or ("mock-model",),
        resolved_models=dict(args.resolve_model),
        requests_per_minute=args.rpm,
        loading=args.loading,
        thinking=args.thinking,
        batch=BatchSettings(pace=args.batch_pace, expire_after=args.batch_expire_after),
    )
    async with server:
        print(f"mock server listening on {server.base_url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()
    return 0


async def demo(out: TextIO) -> int:
    """The seed's calls, made with asyncchat against an in-process mock server."""
    async with (
        MockServer() as server,
        Client(base_url=server.base_url, api_key="demo-key") as client,
    ):
        out.write(f"mock server at {server.base_url}\n\n1. A completion:\n")
        completion = await client.chat.completions.create(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Say this is a test"}],
        )
        out.write(f"   {completion.choices[0].message.content}\n")
        out.write(
            f"   usage: {completion.usage.total_tokens if completion.usage else None} tokens,"
            f" request id {completion.request_id}\n\n"
        )

        out.write("2. Streaming, token by token:\n   ")
        server.style = StreamStyle(chunk_delay=0.05)  # slow enough to watch
        async for text in client.chat.stream_text(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Stream these words one at a time please"}],
        ):
            out.write(text)
            out.flush()
        out.write("\n\n3. A streamed tool call, assembled:\n")
        server.style = StreamStyle()
        async with client.chat.stream(
            model="glm-4-air",
            messages=[{"role": "user", "content": "What's the weather like in Boston?"}],
            tools=[SEED_TOOL],
        ) as events:
            async for event in events:
                if isinstance(event, ToolCallDone):
                    arguments = json.dumps(event.parsed_arguments, ensure_ascii=False)
                    out.write(f"   {event.name} {arguments}\n")
            final = await events.final_completion()
        out.write(f"   finish_reason: {final.choices[0].finish_reason}\n")

        out.write("\n4. A JSON answer, parsed as it streams:\n")
        async with client.chat.stream(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Describe Boston"}],
            response_format=CITY_FORMAT,
        ) as events:
            shown = None
            async for event in events:
                if isinstance(event, ContentDelta) and event.parsed != shown:
                    shown = copy.deepcopy(event.parsed)
                    out.write(f"   {json.dumps(shown)}\n")
            final = await events.final_completion()
        out.write(f"   parsed: {final.choices[0].message.parsed}\n")

        out.write("\n5. A Python function as a tool, in the tool-calling loop:\n")
        runner = client.chat.run_tools(
            model="glm-4-air",
            messages=[{"role": "user", "content": "What's the weather like in Boston?"}],
            tools=[get_current_weather],
        )
        async for step in runner:
            if isinstance(step, ToolStarted):
                out.write(f"   -> {step.name}({json.dumps(step.arguments)})\n")
            elif isinstance(step, ToolFinished):
                out.write(f"   <- {step.result}\n")
        answer = await runner.final_completion()
        out.write(f"   answer: {answer.choices[0].message.content}\n")
    return 0


# What the demo asks for: the seed's tool, a JSON answer's format, a Python function.
SEED_TOOL = {
    "type": "function",
    "function": {
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
    },
}


CITY_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        },
    },
}


def get_current_weather(location: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather in a given location.

    Args:
        location: The city and state, such as "San Francisco, CA".
    """
    return f"21 degrees {unit} and sunny in {location}"
