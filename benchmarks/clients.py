"""One benchmark client run, in its own process: N concurrent streams, measured.

`python -m benchmarks.clients RUNNER URL N SCENARIO` prints one JSON object:
CPU seconds (user + sys) spent during the run only (imports and interpreter
start excluded), wall time, chunks, time to first token per stream, peak RSS,
and whether every stream's content and tool arguments came back exactly.

Each runner is written the way its users would write it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.load_server import raise_file_limit
from benchmarks.scenarios import TOOL_NAME, Stream, build

MESSAGES = [{"role": "user", "content": "Benchmark me"}]
# The `tools` scenario's tool, strict: the official SDK's `.stream()` parses the
# partial arguments of strict tools only.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "parameters": {"type": "object", "properties": {}},
            "strict": True,
        },
    }
]


@dataclass
class Result:
    """What one stream delivered."""

    content: str
    arguments: str | None
    chunks: int
    first_token_at: float  # perf_counter time of the first content or tool fragment


Runner = Callable[[str, int, str, Stream], Awaitable[list[Result | BaseException]]]


async def _gather(n: int, one: Callable[[], Awaitable[Result]]) -> list[Result | BaseException]:
    return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


# --- asyncchat ---------------------------------------------------------------------


def _asyncchat_client(url: str, n: int, telemetry: bool | None = None) -> Any:
    import asyncchat

    return asyncchat.Client(
        base_url=url, api_key="bench", max_connections=n, max_retries=0, telemetry=telemetry
    )


async def run_asyncchat(
    url: str, n: int, scenario: str, expected: Stream, telemetry: bool | None = None
) -> list[Result | BaseException]:
    async with _asyncchat_client(url, n, telemetry) as client:

        async def one() -> Result:
            stream = await client.chat.completions.create(
                model=scenario, messages=MESSAGES, stream=True
            )
            return await _read_stream(stream)

        return await _gather(n, one)


async def _read_stream(stream: Any) -> Result:
    """An asyncchat stream read as its users read it: the text from each delta, the
    tool call's arguments from the assembled completion."""
    parts: list[str] = []
    first = 0.0
    chunks = 0
    async with stream:
        async for chunk in stream:
            chunks += 1
            if chunk.choices:
                delta = chunk.choices[0].delta
                if delta.content:
                    parts.append(delta.content)
                    first = first or time.perf_counter()
                elif delta.tool_calls:
                    first = first or time.perf_counter()
    arguments = None
    tool_calls = stream.completion.choices[0].message.tool_calls
    if tool_calls:
        arguments = tool_calls[0].function.arguments
    return Result("".join(parts), arguments, chunks, first)


def _use_uvloop() -> None:
    """Run the application on uvloop, whose loop and socket reads are written in C:
    what a stream's every read costs besides the chunk's own work."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def set_up_otel_sdk() -> tuple[Any, Any]:
    """The OpenTelemetry SDK recording every span and measure in memory, as a test
    (or an exporter's batch) would; returns the span exporter and the metric reader."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


def _start_otel_each_application() -> tuple[Any, Any]:
    """`_start_otel_application`, timing every chunk (set before the first request
    reads the setting)."""
    os.environ["ASYNCCHAT_OTEL_TIME_PER_CHUNK"] = "each"
    return _start_otel_application()


def _start_otel_application() -> tuple[Any, Any]:
    """The SDK set up, and asyncchat's telemetry module imported, as the first
    request of an application with telemetry on imports it, once a process."""
    sinks = set_up_otel_sdk()
    import asyncchat._telemetry  # noqa: F401

    return sinks


async def run_asyncchat_otel(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """`run_asyncchat` with telemetry on, into the SDK's in-memory exporter and reader."""
    return await run_asyncchat(url, n, scenario, expected)


async def run_asyncchat_otel_each(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """`run_asyncchat_otel` with ASYNCCHAT_OTEL_TIME_PER_CHUNK=each: a time-per-chunk
    record for every chunk after the first, instead of one mean a stream."""
    return await run_asyncchat(url, n, scenario, expected)


async def run_asyncchat_otel_off(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """The same application with `telemetry=False`: what the SDK costs by being there
    (its objects lengthen every garbage collection), apart from what asyncchat records."""
    return await run_asyncchat(url, n, scenario, expected, telemetry=False)


async def run_asyncchat_otel_hand(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """`telemetry=False`, and the application making by hand the OpenTelemetry calls
    asyncchat makes for a stream: one span with the same attributes, current while the
    request is sent, its trace context in the request's headers, and the duration,
    time to first chunk and time per chunk histograms, recorded in the span's context.
    The SDK's own cost, which any instrumentation pays, next to what asyncchat's adds
    to it."""
    from urllib.parse import urlsplit

    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("bench")
    meter = metrics.get_meter("bench")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    to_first = meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", unit="s")
    per_chunk = meter.create_histogram("gen_ai.client.operation.time_per_output_chunk", unit="s")
    server = urlsplit(url)
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": scenario,
        "server.address": server.hostname,
        "server.port": server.port,
    }
    async with _asyncchat_client(url, n, telemetry=False) as client:

        async def one() -> Result:
            started = time.perf_counter()
            span = tracer.start_span(
                f"chat {scenario}",
                kind=SpanKind.CLIENT,
                attributes={
                    **common,
                    "openai.api.type": "chat_completions",
                    "gen_ai.request.stream": True,
                },
            )
            headers: dict[str, str] = {}
            context = trace.set_span_in_context(span)  # the measures are made in it too
            propagate.inject(headers, context=context)
            token = otel_context.attach(context)  # the span current while it is sent
            try:
                stream = await client.chat.completions.create(
                    model=scenario, messages=MESSAGES, stream=True, extra_headers=headers
                )
            finally:
                otel_context.detach(token)
            result = await _read_stream(stream)
            ended = time.perf_counter()
            # The first fragment's time stands for the first chunk's: the values
            # recorded do not change what recording them costs.
            first = result.first_token_at - started
            completion = stream.completion
            answered = {
                "gen_ai.response.model": completion.model,
                "openai.response.system_fingerprint": completion.system_fingerprint,
            }
            span.set_attributes(
                {
                    **answered,
                    "gen_ai.response.id": completion.id,
                    "gen_ai.response.finish_reasons": [
                        choice.finish_reason or "" for choice in completion.choices
                    ],
                    "gen_ai.response.time_to_first_chunk": first,
                }
            )
            span.end()
            duration.record(ended - started, {**common, **answered}, context)
            to_first.record(first, common, context)
            mean = (ended - result.first_token_at) / max(result.chunks - 1, 1)
            per_chunk.record(mean, common, context)
            return result

        return await _gather(n, one)


async def run_asyncchat_text(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    async with _asyncchat_client(url, n) as client:

        async def one() -> Result:
            parts: list[str] = []
            first = 0.0
            async for text in client.chat.stream_text(model=scenario, messages=MESSAGES):
                parts.append(text)
                first = first or time.perf_counter()
            # stream_text hands out text only; chunks are counted by the server's contract.
            return Result("".join(parts), expected.arguments, expected.chunk_count, first)

        return await _gather(n, one)


async def _run_asyncchat_events(
    url: str, n: int, scenario: str, expected: Stream, read_parsed: bool
) -> list[Result | BaseException]:
    import asyncchat

    async with _asyncchat_client(url, n) as client:

        async def one() -> Result:
            parts: list[str] = []
            first = 0.0
            parsed: Any = None
            async with client.chat.stream(model=scenario, messages=MESSAGES, tools=TOOLS) as s:
                async for event in s:
                    if isinstance(event, asyncchat.ContentDelta):
                        parts.append(event.text)
                        first = first or time.perf_counter()
                    elif isinstance(event, asyncchat.ToolCallArgumentsDelta):
                        first = first or time.perf_counter()
                        if read_parsed:
                            parsed = event.parsed  # what a UI renders after every fragment
                final = await s.final_completion()
            arguments = None
            tool_calls = final.choices[0].message.tool_calls
            if tool_calls:
                arguments = tool_calls[0].function.arguments
                if read_parsed and parsed != orjson.loads(arguments or "null"):
                    raise AssertionError("the last partial value is not the arguments")
            # Events are not chunks: chunks are counted by the server's contract.
            return Result("".join(parts), arguments, expected.chunk_count, first)

        return await _gather(n, one)


async def run_asyncchat_events(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    return await _run_asyncchat_events(url, n, scenario, expected, read_parsed=False)


async def run_asyncchat_partial(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    return await _run_asyncchat_events(url, n, scenario, expected, read_parsed=True)


# --- the official SDK -----------------------------------------------------------------


async def _run_openai(
    url: str, n: int, scenario: str, http_client: object
) -> list[Result | BaseException]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="bench",
        max_retries=0,
        http_client=http_client,  # type: ignore[arg-type]
    )
    async with client:

        async def one() -> Result:
            parts: list[str] = []
            arguments: list[str] = []
            first = 0.0
            chunks = 0
            stream = await client.chat.completions.create(
                model=scenario,
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            )
            async with stream:
                async for chunk in stream:
                    chunks += 1
                    if chunk.choices:
                        delta = chunk.choices[0].delta
                        if delta.content:
                            parts.append(delta.content)
                            first = first or time.perf_counter()
                        if delta.tool_calls:
                            first = first or time.perf_counter()
                            for call in delta.tool_calls:
                                if call.function and call.function.arguments:
                                    arguments.append(call.function.arguments)
            return Result("".join(parts), "".join(arguments) or None, chunks, first)

        return await _gather(n, one)


def _limits(module: object, n: int) -> object:
    return module.Limits(max_connections=n, max_keepalive_connections=n)  # type: ignore[attr-defined]


async def run_openai(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    import httpx2
    import openai

    http_client = openai.DefaultAsyncHttpxClient(limits=_limits(httpx2, n))
    return await _run_openai(url, n, scenario, http_client)


async def run_openai_aiohttp(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    import httpx2
    import openai

    http_client = openai.DefaultAioHttpClient(limits=_limits(httpx2, n))
    return await _run_openai(url, n, scenario, http_client)


async def run_openai_stream(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """The official SDK's `.chat.completions.stream()` helper: typed events, and the
    partial arguments of the (strict) tool re-parsed with jiter after every fragment."""
    import httpx2
    import openai

    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="bench",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(limits=_limits(httpx2, n)),  # type: ignore[arg-type]
    )
    async with client:

        async def one() -> Result:
            parts: list[str] = []
            first = 0.0
            chunks = 0
            parsed: Any = None
            async with client.chat.completions.stream(
                model=scenario,
                messages=MESSAGES,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
            ) as stream:
                async for event in stream:
                    if event.type == "chunk":
                        chunks += 1
                    elif event.type == "content.delta":
                        parts.append(event.delta)
                        first = first or time.perf_counter()
                    elif event.type == "tool_calls.function.arguments.delta":
                        first = first or time.perf_counter()
                        parsed = event.parsed_arguments
                final = await stream.get_final_completion()
            arguments = None
            tool_calls = final.choices[0].message.tool_calls
            if tool_calls:
                arguments = tool_calls[0].function.arguments
                if parsed != orjson.loads(arguments or "null"):
                    raise AssertionError("the last partial value is not the arguments")
            return Result("".join(parts), arguments, chunks, first)

        return await _gather(n, one)


# --- other stacks ------------------------------------------------------------------


def _touch(data: dict[str, object], parts: list[str], arguments: list[str]) -> bool:
    """Take the text and tool-argument pieces out of a decoded chunk; True if it had any."""
    choices = data.get("choices")
    if not choices:
        return False
    delta = choices[0]["delta"]  # type: ignore[index]
    content = delta.get("content")
    if content:
        parts.append(content)
        return True
    tool_calls = delta.get("tool_calls")
    if tool_calls:
        piece = tool_calls[0]["function"].get("arguments")
        if piece:
            arguments.append(piece)
        return True
    return False


async def run_httpx_sse(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    import httpx
    from httpx_sse import aconnect_sse

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def one() -> Result:
            parts: list[str] = []
            arguments: list[str] = []
            first = 0.0
            chunks = 0
            body = {"model": scenario, "messages": MESSAGES, "stream": True}
            async with aconnect_sse(client, "POST", url + "/chat/completions", json=body) as source:
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        break
                    chunks += 1
                    if _touch(orjson.loads(event.data), parts, arguments):
                        first = first or time.perf_counter()
            return Result("".join(parts), "".join(arguments) or None, chunks, first)

        return await _gather(n, one)


async def _aiohttp_runner(
    url: str, n: int, scenario: str, read: Callable[[object], Awaitable[Result]]
) -> list[Result | BaseException]:
    import aiohttp

    body = orjson.dumps({"model": scenario, "messages": MESSAGES, "stream": True})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> Result:
            async with session.post(
                url + "/chat/completions", data=body, headers=headers
            ) as response:
                return await read(response)

        return await _gather(n, one)


async def run_aiohttp_readline(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    async def read(response: object) -> Result:
        parts: list[str] = []
        arguments: list[str] = []
        first = 0.0
        chunks = 0
        async for line in response.content:  # type: ignore[attr-defined]
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            chunks += 1
            if _touch(orjson.loads(payload), parts, arguments):
                first = first or time.perf_counter()
        return Result("".join(parts), "".join(arguments) or None, chunks, first)

    return await _aiohttp_runner(url, n, scenario, read)


async def run_floor_raw(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """The transport floor: aiohttp's bytes, not even split into events."""

    async def read(response: object) -> Result:
        size = 0
        first = 0.0
        async for piece in response.content.iter_any():  # type: ignore[attr-defined]
            size += len(piece)
            first = first or time.perf_counter()
        if size != expected.body_size:
            raise ValueError(f"received {size} bytes, expected {expected.body_size}")
        return Result(expected.content, expected.arguments, expected.chunk_count, first)

    return await _aiohttp_runner(url, n, scenario, read)


async def run_floor_parse(
    url: str, n: int, scenario: str, expected: Stream
) -> list[Result | BaseException]:
    """The floor plus the minimum parse: split on blank lines, orjson.loads, touch the delta."""

    async def read(response: object) -> Result:
        parts: list[str] = []
        arguments: list[str] = []
        first = 0.0
        chunks = 0
        buffer = b""
        async for piece in response.content.iter_any():  # type: ignore[attr-defined]
            events = (buffer + piece).split(b"\n\n")
            buffer = events.pop()
            for event in events:
                if event == b"data: [DONE]":
                    continue
                chunks += 1
                if _touch(orjson.loads(event[6:]), parts, arguments):
                    first = first or time.perf_counter()
        return Result("".join(parts), "".join(arguments) or None, chunks, first)

    return await _aiohttp_runner(url, n, scenario, read)


RUNNERS: dict[str, Runner] = {
    "asyncchat": run_asyncchat,
    "asyncchat-text": run_asyncchat_text,
    "asyncchat-uvloop": run_asyncchat,
    "asyncchat-otel": run_asyncchat_otel,
    "asyncchat-otel-each": run_asyncchat_otel_each,
    "asyncchat-otel-off": run_asyncchat_otel_off,
    "asyncchat-otel-hand": run_asyncchat_otel_hand,
    "asyncchat-events": run_asyncchat_events,
    "asyncchat-partial": run_asyncchat_partial,
    "openai": run_openai,
    "openai-aiohttp": run_openai_aiohttp,
    "openai-stream": run_openai_stream,
    "httpx-sse": run_httpx_sse,
    "aiohttp-readline": run_aiohttp_readline,
    "floor-raw": run_floor_raw,
    "floor-parse": run_floor_parse,
}

# The SDK, and the propagators (loaded on first import): telemetry's requests carry
# their trace context.
_OTEL = ("opentelemetry.sdk.trace", "opentelemetry.sdk.metrics", "opentelemetry.propagate")
# What each runner needs installed beyond asyncchat's own dependencies.
REQUIREMENTS = {
    "openai": ("openai", "httpx2"),
    "openai-aiohttp": ("openai", "httpx2"),
    "openai-stream": ("openai", "httpx2"),
    "asyncchat-otel": _OTEL,
    "asyncchat-otel-each": _OTEL,
    "asyncchat-otel-off": ("opentelemetry.sdk.trace", "opentelemetry.sdk.metrics"),
    "asyncchat-otel-hand": _OTEL,
    "httpx-sse": ("httpx", "httpx_sse"),
    "asyncchat-uvloop": ("uvloop",),
}


# What an application does once, at its start, before the measured run.
STARTUP: dict[str, Callable[[], object]] = {
    "asyncchat-uvloop": _use_uvloop,
    "asyncchat-otel": _start_otel_application,
    "asyncchat-otel-each": _start_otel_each_application,
    "asyncchat-otel-off": set_up_otel_sdk,
    "asyncchat-otel-hand": set_up_otel_sdk,
}


def measure(runner: str, url: str, n: int, scenario: str) -> dict[str, object]:
    expected = build(scenario)
    run = RUNNERS[runner]
    # Startup is not per-chunk cost: imports (compiled from source where bytecode is
    # not written) and provider set-up happen before measuring, once a process.
    for module in REQUIREMENTS.get(runner, ()):
        __import__(module)
    __import__("asyncchat")
    if runner in STARTUP:
        STARTUP[runner]()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall_start = time.perf_counter()
    loop = ""

    async def main() -> list[Result | BaseException]:
        nonlocal loop
        loop = type(asyncio.get_running_loop()).__module__  # asyncio's, or uvloop's
        return await run(url, n, scenario, expected)

    results = asyncio.run(main())
    wall = time.perf_counter() - wall_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    failures = [r for r in results if isinstance(r, BaseException)]
    good = [r for r in results if isinstance(r, Result)]
    wrong = [
        r
        for r in good
        if r.content != expected.content
        or r.arguments != expected.arguments
        or r.chunks != expected.chunk_count
    ]
    first_tokens = sorted(r.first_token_at - wall_start for r in good if r.first_token_at)
    chunks = sum(r.chunks for r in good)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "runner": runner,
        "scenario": scenario,
        "n": n,
        "loop": loop,
        "ok": not failures and not wrong and len(good) == n,
        "failures": len(failures),
        "wrong": len(wrong),
        "error": repr(failures[0])[:300] if failures else None,
        "chunks": chunks,
        "cpu_seconds": cpu,
        "cpu_us_per_chunk": cpu / chunks * 1e6 if chunks else None,
        "wall_seconds": wall,
        "chunks_per_second": chunks / wall if wall else None,
        "ttft_median_ms": statistics.median(first_tokens) * 1e3 if first_tokens else None,
        "ttft_p99_ms": first_tokens[int(0.99 * (len(first_tokens) - 1))] * 1e3
        if first_tokens
        else None,
        "peak_rss_kib": after.ru_maxrss,
    }


def main() -> None:
    runner, url, n, scenario = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    raise_file_limit()
    print(json.dumps(measure(runner, url, n, scenario)), flush=True)


if __name__ == "__main__":
    main()
