"""The `asyncchat` command: `chat`, `batch`, `mock-server` and `demo`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from asyncchat._batchfile import run_batch_file
from asyncchat._events import ContentDelta, ReasoningDelta, ToolCallDone
from asyncchat.client import Client
from asyncchat.content import image_part, text_part
from asyncchat.errors import APIError
from asyncchat.testing import MockServer, StreamStyle

__all__ = ["main"]

DEFAULT_MODEL = "gpt-4o-mini"
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncchat", description="OpenAI-compatible chat completions from the terminal."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", help="send one prompt and stream the answer")
    chat.add_argument("prompt", help="the user message, or - to read it from stdin")
    chat.add_argument("--model", default=DEFAULT_MODEL)
    chat.add_argument("--system", help="a system message")
    chat.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="attach an image file (repeatable)",
    )
    chat.add_argument("--tools", metavar="FILE.json", help="a JSON list of tools to offer")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    chat.add_argument("--json", action="store_true", help="print raw chunks as JSON lines")
    chat.add_argument("--base-url", help="default: ASYNCCHAT_BASE_URL / OPENAI_BASE_URL")
    chat.add_argument("--api-key", help="default: ASYNCCHAT_API_KEY / OPENAI_API_KEY")

    batch = commands.add_parser(
        "batch", help="run an OpenAI Batch file (JSONL), resumably, writing results as they finish"
    )
    batch.add_argument("input", type=Path, help="requests, one JSON object a line")
    batch.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="results file; rerunning with it resumes where the last run stopped",
    )
    batch.add_argument("--concurrency", type=int, default=64)
    batch.add_argument("--rpm", type=float, help="requests-per-minute ceiling")
    batch.add_argument("--tpm", type=float, help="tokens-per-minute ceiling (estimated)")
    batch.add_argument("--model", help="use this model for every request")
    batch.add_argument(
        "--shard",
        type=_shard,
        default=(1, 1),
        metavar="K/N",
        help="run only shard K of N (K from 1): a stable split by custom_id",
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the requests that failed in an earlier run",
    )
    batch.add_argument("--base-url", help="default: ASYNCCHAT_BASE_URL / OPENAI_BASE_URL")
    batch.add_argument("--api-key", help="default: ASYNCCHAT_API_KEY / OPENAI_API_KEY")

    mock = commands.add_parser("mock-server", help="run the built-in mock server")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)

    commands.add_parser("demo", help="show asyncchat against the built-in mock server")
    return parser


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/4, got {text!r}") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"K must be from 1 to N in K/N, got {text!r}")
    return shard


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "chat":
            return asyncio.run(_chat(args, sys.stdout))
        if args.command == "batch":
            return asyncio.run(_batch(args))
        if args.command == "mock-server":
            return asyncio.run(_mock_server(args.host, args.port))
        return asyncio.run(demo(sys.stdout))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except APIError as exc:
        print(f"asyncchat: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"asyncchat: error: {exc}", file=sys.stderr)
        return 2


def _messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    if args.image:
        content = [text_part(prompt), *(image_part(path) for path in args.image)]
        messages.append({"role": "user", "content": content})
    else:
        messages.append({"role": "user", "content": prompt})
    return messages


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"model": args.model, "messages": _messages(args)}
    if args.tools:
        with open(args.tools, "rb") as file:
            tools = orjson.loads(file.read())
        if not isinstance(tools, list):
            raise ValueError(f"{args.tools} must hold a JSON list of tools")
        params["tools"] = tools
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    return params


async def _chat(args: argparse.Namespace, out: TextIO) -> int:
    params = _params(args)
    async with Client(api_key=args.api_key, base_url=args.base_url) as client:
        if args.no_stream:
            completion = await client.chat.completions.create(**params)
            if args.json:
                out.write(completion.to_json() + "\n")
            else:
                _print_message(completion.choices[0].message, out)
            return 0
        if args.json:
            stream = await client.chat.completions.create(stream=True, **params)
            async with stream:
                async for chunk in stream:
                    out.write(chunk.to_json() + "\n")
            return 0
        async with client.chat.stream(**params) as events:
            async for event in events:
                if isinstance(event, (ContentDelta, ReasoningDelta)):
                    out.write(event.text)
                    out.flush()
                elif isinstance(event, ToolCallDone):
                    arguments = event.parsed_arguments
                    shown = arguments if arguments is not None else event.arguments
                    out.write(f"\n[tool call] {event.name}({shown})")
        out.write("\n")
    return 0


def _print_message(message: Any, out: TextIO) -> None:
    if message.content:
        out.write(message.content + "\n")
    for call in message.tool_calls or ():
        out.write(f"[tool call] {call.function.name}({call.function.parsed_arguments()})\n")


async def _batch(args: argparse.Namespace) -> int:
    async with Client(api_key=args.api_key, base_url=args.base_url) as client:
        summary = await run_batch_file(
            client,
            args.input,
            args.output,
            concurrency=args.concurrency,
            model=args.model,
            shard=args.shard,
            retry_failed=args.retry_failed,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
        )
    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard[1] > 1 else ""
    print(
        f"batch{shard}: {summary.total} requests, {summary.succeeded} succeeded, "
        f"{summary.failed} failed, {summary.skipped} already done before this run; "
        f"{summary.tokens} tokens in {summary.seconds:.1f}s; results in {args.output}",
        file=sys.stderr,
    )
    if summary.failed:
        print("rerun with --retry-failed to try the failed requests again", file=sys.stderr)
    return 0 if summary.ok else 1


async def _mock_server(host: str, port: int) -> int:
    async with MockServer(host=host, port=port) as server:
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
                    out.write(f"   {event.name}({event.parsed_arguments})\n")
            final = await events.final_completion()
        out.write(f"   finish_reason: {final.choices[0].finish_reason}\n")
    return 0
