"""OpenTelemetry spans and metrics, read back with the SDK's in-memory exporter and
metric reader, over the loopback MockServer."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.version import __version__ as otel_version

import asyncchat
from asyncchat import _telemetry
from asyncchat.testing import MockResponse, MockServer, MockTransport, StreamStyle, Turn

from .conftest import API_KEY, run_python
from .otel_sdk import EXPORTER, READER, install


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    """The SDK as an application would set it up (already, when every suite records)."""
    install()


@pytest.fixture(autouse=True)
def fresh_spans() -> Iterator[None]:
    EXPORTER.clear()
    yield


def spans() -> list[ReadableSpan]:
    return list(EXPORTER.get_finished_spans())


def points(name: str, model: str, data: Any = None) -> list[Any]:
    """The data points of a metric for one request model (each test uses its own),
    collected now or in `data` (a collection resets what exemplars were kept)."""
    found = []
    data = data or READER.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [
                        point
                        for point in metric.data.data_points
                        if point.attributes.get("gen_ai.request.model") == model
                    ]
    return found


def user(text: str = "hello there") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_completion_is_one_client_span_with_the_conventions_attributes(
    client: asyncchat.Client, server: MockServer
) -> None:
    await client.chat.completions.create(
        model="m-plain",
        messages=user("Secret plans"),
        temperature=0.5,
        max_tokens=50,
        top_p=0.9,
        seed=7,
        stop=["END"],
        n=2,
    )
    [span] = spans()
    assert span.name == "chat m-plain" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m-plain",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.choice.count": 2,
        "gen_ai.response.id": "chatcmpl-mock-req-1",
        "gen_ai.response.model": "m-plain",
        "gen_ai.response.finish_reasons": ("stop", "stop"),
        "gen_ai.usage.input_tokens": attributes["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": 8,  # 4 words, n=2
        "openai.api.type": "chat_completions",  # any OpenAI-compatible server is `openai`
    }  # no `gen_ai.request.stream`: "if and only if the request is streaming"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    text = json.dumps(attributes)
    assert "Secret plans" not in text and API_KEY not in text  # no content unless opted in
    [duration] = points("gen_ai.client.operation.duration", "m-plain")
    assert duration.count == 1 and 0 < duration.sum < 5
    assert duration.attributes["gen_ai.response.model"] == "m-plain"
    usage = points("gen_ai.client.token.usage", "m-plain")
    assert {p.attributes["gen_ai.token.type"]: p.sum for p in usage}["output"] == 8
    assert points("gen_ai.client.operation.time_to_first_chunk", "m-plain") == []


async def test_a_stream_span_ends_with_the_stream_and_times_its_chunks(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(chunk_delay=0.01)
    stream = await client.chat.completions.create(
        model="m-stream", messages=user(), stream=True, stream_options={"include_usage": True}
    )
    assert spans() == []  # open until the stream ends
    async with stream:
        async for _ in stream:
            pass
    [span] = spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.output_tokens"] == 4
    ttfc = attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < ttfc < (span.end_time - span.start_time) / 1e9  # type: ignore[operator]
    [ttfc_point] = points("gen_ai.client.operation.time_to_first_chunk", "m-stream")
    assert ttfc_point.count == 1 and ttfc_point.sum == pytest.approx(ttfc)
    [per_chunk] = points("gen_ai.client.operation.time_per_output_chunk", "m-stream")
    assert per_chunk.count == 1  # once a stream: the mean of the chunks after the first
    assert 0.005 < per_chunk.sum < 0.5  # the server waits 10 ms between chunks


async def test_a_groq_streams_usage_reaches_its_span_unasked(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Groq reports a stream's usage in its finishing chunk's `x_groq` even when
    `stream_options` does not ask: the span and the token metric count it."""
    server.style = StreamStyle(usage="x_groq")
    stream = await client.chat.completions.create(model="m-groq", messages=user(), stream=True)
    async with stream:
        async for _ in stream:
            pass
    [span] = spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == 4
    assert attributes["gen_ai.usage.input_tokens"] > 0
    usage = points("gen_ai.client.token.usage", "m-groq")
    assert {p.attributes["gen_ai.token.type"]: p.sum for p in usage}["output"] == 4


async def test_an_azure_streams_annotations_leave_its_span_the_answers_model(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Azure's filter annotations after the finish have an empty id and model: the
    span names the answer's, and the duration metric its model."""
    server.style = StreamStyle(filter_annotations=True)
    stream = await client.chat.completions.create(model="m-azure", messages=user(), stream=True)
    async with stream:
        async for _ in stream:
            pass
    [span] = spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.model"] == "m-azure"
    assert str(attributes["gen_ai.response.id"]).startswith("chatcmpl-")
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    [duration] = points("gen_ai.client.operation.duration", "m-azure")
    assert duration.attributes["gen_ai.response.model"] == "m-azure"


def tiered(model: str, **fields: Any) -> dict[str, Any]:
    """An OpenAI answer telling its system fingerprint and service tier."""
    return {"id": "chatcmpl-t", "object": "chat.completion", "model": model,
            "system_fingerprint": "fp_44709d6fcb", "service_tier": "flex", **fields}  # fmt: skip


async def test_an_openai_answers_tier_and_fingerprint_go_on_its_span_and_metrics(
    client: asyncchat.Client, server: MockServer
) -> None:
    """The conventions' `openai.*` attributes, streamed or not: the service tier asked
    for (unless `auto`), and the tier and the system fingerprint the answer tells,
    which its duration and token counts carry too."""
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    message = {"role": "assistant", "content": "Hi."}
    server.enqueue(
        json=tiered(
            "m-tier",
            usage=usage,
            choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
        )
    )
    server.enqueue(sse=[
        tiered("m-tier-stream", choices=[{"index": 0, "delta": message}]),
        tiered("m-tier-stream", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        tiered("m-tier-stream", choices=[], usage=usage),
    ])  # fmt: skip
    await client.chat.completions.create(model="m-tier", messages=user(), service_tier="flex")
    stream = await client.chat.completions.create(
        model="m-tier-stream", messages=user(), stream=True, service_tier="auto"
    )
    async with stream:
        async for _ in stream:
            pass
    told = {
        "openai.response.service_tier": "flex",
        "openai.response.system_fingerprint": "fp_44709d6fcb",
    }
    plain, streamed = [dict(span.attributes or {}) for span in spans()]
    assert plain["openai.request.service_tier"] == "flex"
    assert "openai.request.service_tier" not in streamed  # `auto` is not recorded
    for attributes in (plain, streamed):
        assert attributes["openai.api.type"] == "chat_completions"
        assert told.items() <= attributes.items()
    for model in ("m-tier", "m-tier-stream"):
        [duration] = points("gen_ai.client.operation.duration", model)
        assert told.items() <= duration.attributes.items()
        usage_points = points("gen_ai.client.token.usage", model)
        assert len(usage_points) == 2
        assert all(told.items() <= point.attributes.items() for point in usage_points)
    [first_chunk] = points("gen_ai.client.operation.time_to_first_chunk", "m-tier-stream")
    assert "openai.response.system_fingerprint" not in first_chunk.attributes  # not its own


async def test_a_named_providers_requests_have_no_openai_attributes() -> None:
    """DeepSeek has a name of its own in the conventions: `openai.*` are not for it."""
    answer = tiered("m-deepseek", choices=[])
    transport = MockTransport(lambda request: MockResponse(json=answer))
    async with asyncchat.Client(
        api_key=API_KEY, base_url="https://api.deepseek.com/v1", transport=transport
    ) as client:
        await client.chat.completions.create(
            model="m-deepseek", messages=user(), service_tier="flex"
        )
    [span] = spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.provider.name"] == "deepseek"
    assert not [name for name in attributes if name.startswith("openai.")]
    [duration] = points("gen_ai.client.operation.duration", "m-deepseek")
    assert not [name for name in duration.attributes if name.startswith("openai.")]


async def read_all(client: asyncchat.Client, model: str, leave_after: int | None = None) -> int:
    """Stream an answer from `model`, reading `leave_after` chunks or all; how many."""
    stream = await client.chat.completions.create(model=model, messages=user(), stream=True)
    read = 0
    async with stream:
        async for _ in stream:
            read += 1
            if read == leave_after:
                break
    return read


async def test_time_per_chunk_each_records_every_chunk_after_the_first(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCCHAT_OTEL_TIME_PER_CHUNK", "each")
    # Two chunks a write, 0.1 s apart: the second of a write arrives with the first.
    server.style = StreamStyle(tokens=6, chunk_delay=0.1, events_per_write=2)
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        chunks = await read_all(client, "m-each")
        writes = (chunks + 1) // 2
        [per_chunk] = points("gen_ai.client.operation.time_per_output_chunk", "m-each")
        assert per_chunk.count == chunks - 1 >= 5  # one record a chunk after the first
        # The first bucket (up to 1 ms, or the SDK's default 0) holds the gaps of
        # zero: the chunks that came in a write after another.
        assert per_chunk.bucket_counts[0] == chunks - writes
        assert per_chunk.min == 0.0 and 0.09 < per_chunk.max < 5
        # The gaps add up to the time from the first chunk's write to the last one's.
        assert 0.09 * (writes - 1) < per_chunk.sum < 5
        [span] = spans()
        assert span.attributes is not None
        [ttfc] = points("gen_ai.client.operation.time_to_first_chunk", "m-each")
        assert ttfc.sum == span.attributes["gen_ai.response.time_to_first_chunk"]

        # A reader that leaves early: a record for each chunk it read after the first.
        assert await read_all(client, "m-each-left", leave_after=3) == 3
        [per_chunk] = points("gen_ai.client.operation.time_per_output_chunk", "m-each-left")
        assert per_chunk.count == 2 and per_chunk.bucket_counts[0] == 1
        assert 0.09 < per_chunk.sum < 5

        # A stream broken after three chunks, each a write of its own: two records.
        server.style = StreamStyle(tokens=6, chunk_delay=0.1, error_after=3)
        with pytest.raises(asyncchat.APIStatusError):
            await read_all(client, "m-each-broken")
        [per_chunk] = points("gen_ai.client.operation.time_per_output_chunk", "m-each-broken")
        assert per_chunk.count == 2 and 0.18 < per_chunk.sum < 5


async def test_time_per_chunk_takes_mean_or_each_and_warns_of_anything_else(
    server: MockServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server.style = StreamStyle(tokens=6)
    for setting, model in [("mean", "m-mean"), (" Each ", "m-each-spaced"), ("all", "m-all")]:
        monkeypatch.setenv("ASYNCCHAT_OTEL_TIME_PER_CHUNK", setting)
        async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
            chunks = await read_all(client, model)
        [per_chunk] = points("gen_ai.client.operation.time_per_output_chunk", model)
        assert per_chunk.count == (chunks - 1 if setting == " Each " else 1), setting
    [warning] = [r for r in caplog.records if "ASYNCCHAT_OTEL_TIME_PER_CHUNK" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "ASYNCCHAT_OTEL_TIME_PER_CHUNK='all'" in warning.getMessage()


async def test_a_broken_stream_ends_its_span_as_an_error(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(error_after=2)
    stream = await client.chat.completions.create(model="m-broken", messages=user(), stream=True)
    with pytest.raises(asyncchat.APIStatusError):
        async with stream:
            async for _ in stream:
                pass
    [span] = spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "mock server error mid-stream" in (span.status.description or "")
    assert span.attributes is not None and span.attributes["error.type"] == "500"
    assert [event.name for event in span.events if event.name == "exception"] == ["exception"]
    [duration] = points("gen_ai.client.operation.duration", "m-broken")
    assert duration.attributes["error.type"] == "500"


async def test_a_cancelled_or_abandoned_stream_still_ends_its_span(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(chunk_delay=0.2)
    first_chunk = asyncio.Event()

    async def read() -> None:
        stream = await client.chat.completions.create(
            model="m-cancel", messages=user(), stream=True
        )
        async with stream:
            async for _ in stream:
                first_chunk.set()

    task = asyncio.ensure_future(read())
    await asyncio.wait_for(first_chunk.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [span] = spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "asyncio.CancelledError"

    EXPORTER.clear()
    server.style = StreamStyle()
    stream = await client.chat.completions.create(model="m-early", messages=user(), stream=True)
    async with stream:
        async for _ in stream:
            break  # the reader leaves early: not an error
    [span] = spans()
    assert span.status.status_code is StatusCode.UNSET
    assert "asyncchat.stream_closed_early" in [event.name for event in span.events]


@pytest.mark.parametrize("each", [False, True], ids=["mean", "each"])
async def test_a_stream_dropped_unclosed_ends_its_span_at_once(
    server: MockServer, monkeypatch: pytest.MonkeyPatch, each: bool
) -> None:
    """A stream dropped without close() after its first chunk (a `break` outside
    `async with`) ends its span, and lets its connection go, when it is dropped, not
    at the garbage collector's next pass: its timing holds no cycle through it."""
    if each:
        monkeypatch.setenv("ASYNCCHAT_OTEL_TIME_PER_CHUNK", "each")
    server.style = StreamStyle(tokens=5)
    async with asyncchat.Client(api_key=API_KEY, base_url=server.base_url) as client:
        gc.disable()
        try:
            stream = await client.chat.completions.create(
                model="m-dropped", messages=user(), stream=True
            )
            await stream.__anext__()
            del stream
            [span] = spans()
        finally:
            gc.enable()
    assert span.name == "chat m-dropped" and span.end_time is not None


# From opentelemetry 1.28, a measurement takes the context it is made in and the SDK
# samples exemplars from that context's span (by default, when the span is sampled).
EXEMPLARS = tuple(int(part) for part in otel_version.split(".")[:2]) >= (1, 28)


async def test_a_requests_measurements_lead_to_its_span(
    client: asyncchat.Client, server: MockServer
) -> None:
    """A histogram's exemplar is the request's `chat` span, not the span around it."""
    server.style = StreamStyle(tokens=3)
    with trace.get_tracer("app").start_as_current_span("answer a question") as outer:
        stream = await client.chat.completions.create(
            model="m-exemplar", messages=user(), stream=True, stream_options={"include_usage": True}
        )
        async with stream:
            async for _ in stream:
                pass
    [chat] = [span for span in spans() if span.name == "chat m-exemplar"]
    assert chat.context is not None and chat.parent is not None
    assert chat.parent.span_id == outer.get_span_context().span_id
    collected = READER.get_metrics_data()
    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
        "gen_ai.client.token.usage",
    ):
        found = points(name, "m-exemplar", collected)
        assert found, name
        for point in found:
            if EXEMPLARS:
                assert [e.span_id for e in point.exemplars] == [chat.context.span_id], name
            else:  # nothing to link: the measurements are made all the same
                assert point.count == 1, name


async def test_the_server_is_told_the_span_its_work_belongs_to(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Each request carries its span's W3C trace context, so a server that traces
    (vLLM does) continues the trace; the span is a child of the application's."""
    own = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    with trace.get_tracer("app").start_as_current_span("handle") as parent:
        await client.chat.completions.create(model="m-traced", messages=user())
        stream = await client.chat.completions.create(
            model="m-traced", messages=user(), stream=True
        )
        async with stream:
            async for _ in stream:
                pass
        await client.chat.completions.create(
            model="m-traced", messages=user(), extra_headers={"Traceparent": own}
        )
    traced = [span for span in spans() if span.name == "chat m-traced"]
    sent = [request.headers for request in server.requests[-3:]]
    assert len(traced) == 3
    for span in traced:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
    for span, headers in zip(traced[:2], sent[:2], strict=True):
        context = span.get_span_context()
        assert headers["traceparent"] == (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
        assert context.trace_flags.sampled
    # A trace context the caller set is sent as it was given, and only once.
    assert [v for k, v in sent[2].items() if k.lower() == "traceparent"] == [own]


async def test_a_span_begun_while_a_request_is_sent_is_a_child_of_its_span() -> None:
    """While it is sent, the request's span is the current one (what an HTTP
    instrumentation reads), on every attempt, and for the observers; after it, the
    caller's is again."""
    tracer = trace.get_tracer("transport")
    seen: list[Any] = []  # the span current when the transport was asked
    observed: list[Any] = []  # and when the observers were told

    class Observer:
        def request_started(self, request: Any, attempt: int) -> None:
            observed.append(trace.get_current_span())

        def request_succeeded(self, request: Any, response: Any, seconds: float) -> None:
            observed.append(trace.get_current_span())

        def request_failed(self, *args: Any) -> None:
            observed.append(trace.get_current_span())

    def answer(request: Any) -> MockResponse:
        seen.append(trace.get_current_span())
        with tracer.start_as_current_span("send"):
            pass
        if len(seen) == 1:
            return MockResponse(503, headers={"retry-after-ms": "1"}, json={"error": {}})
        return MockResponse(json=tiered("m-current"))

    async with asyncchat.Client(
        api_key=API_KEY, base_url="http://localhost/v1", transport=MockTransport(answer),
        max_retries=1, observers=[Observer()],
    ) as client:  # fmt: skip
        with trace.get_tracer("app").start_as_current_span("handle") as outer:
            await client.chat.completions.create(model="m-current", messages=user())
            assert trace.get_current_span() is outer
    [chat] = [span for span in spans() if span.name == "chat m-current"]
    assert [span.get_span_context() for span in seen] == [chat.get_span_context()] * 2
    # started, failed, started again, succeeded
    assert [span.get_span_context() for span in observed] == [chat.get_span_context()] * 4
    sends = [span for span in spans() if span.name == "send"]
    assert len(sends) == 2
    chat_id = chat.get_span_context().span_id
    assert [span.parent.span_id for span in sends if span.parent] == [chat_id] * 2


async def test_aiohttp_instrumentation_nests_its_http_spans_under_the_request(
    server: MockServer,
) -> None:
    """With opentelemetry-instrumentation-aiohttp-client, which auto-instrumentation
    turns on, each attempt's HTTP span is a child of the request's span, and the
    server is told the HTTP span (the instrumentation's own trace context wins)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument()
    try:
        async with asyncchat.Client(api_key=API_KEY, base_url=server.base_url) as client:
            server.enqueue(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "1"})
            await client.chat.completions.create(model="m-http", messages=user())
            await read_all(client, "m-http")
    finally:
        instrumentor.uninstrument()
    chats = [span for span in spans() if span.name == "chat m-http"]
    http = [span for span in spans() if span.kind is SpanKind.CLIENT and span not in chats]
    assert len(chats) == 2 and len(http) == 3  # the first request was tried twice
    parents = [span.parent.span_id for span in http if span.parent]
    first, second = (span.get_span_context().span_id for span in chats)
    assert parents == [first, first, second]
    told = [request.headers["traceparent"] for request in server.requests[-3:]]
    contexts = [span.get_span_context() for span in http]
    assert told == [f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}" for c in contexts]


class _SpanNoter(logging.Handler):
    """Notes the span current as each record is written, as OpenTelemetry's log
    handler does to tie a record to its trace."""

    def __init__(self) -> None:
        super().__init__()
        self.noted: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        span_id = trace.get_current_span().get_span_context().span_id
        self.noted.append((record.getMessage(), span_id))


async def test_a_requests_log_lines_are_tied_to_its_span(
    client: asyncchat.Client, server: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The info lines of a request (a retry's, its answer's) and the line a stream
    writes when it ends are written with the request's span current."""
    noter = _SpanNoter()
    logger = logging.getLogger("asyncchat")
    caplog.set_level(logging.INFO, logger="asyncchat")
    logger.addHandler(noter)
    try:
        server.enqueue(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "1"})
        await client.chat.completions.create(model="m-logged", messages=user())
        await read_all(client, "m-logged")
    finally:
        logger.removeHandler(noter)
    first, second = (s.get_span_context().span_id for s in spans() if s.name == "chat m-logged")
    [retried, answered, streamed] = noter.noted
    assert "retry 1" in retried[0] and "ended=done" in streamed[0]
    assert [retried[1], answered[1], streamed[1]] == [first, first, second]


# An application with no line of OpenTelemetry in it.
_PLAIN_APP = (
    "import asyncio\n"
    "import asyncchat\n"
    "from asyncchat.testing import MockServer\n"
    "async def main():\n"
    "    asked = [{'role': 'user', 'content': 'hi'}]\n"
    "    async with MockServer() as server:\n"
    "        async with asyncchat.Client(base_url=server.base_url, api_key='k') as client:\n"
    "            await client.chat.completions.create(model='m-zero', messages=asked)\n"
    "            async for _ in client.chat.stream_text(model='m-zero', messages=asked):\n"
    "                pass\n"
    "asyncio.run(main())\n"
)


def console_exports(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporters wrote, one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def test_zero_code_instrumentation_records_an_application_that_never_names_it() -> None:
    """Under `opentelemetry-instrument` (the distro), which sets up the SDK before the
    application runs, its requests are traced and measured, each HTTP span a child
    of its request's span: how auto-instrumentation deploys an application."""
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    settings = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code",
    }
    done = subprocess.run(
        [str(instrument), sys.executable, "-c", _PLAIN_APP],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    exported = console_exports(done.stdout)
    spans = [document for document in exported if "parent_id" in document]
    chats = [span for span in spans if span["name"] == "chat m-zero"]
    assert len(chats) == 2
    assert [span["attributes"].get("gen_ai.request.stream") for span in chats] == [None, True]
    http = [span for span in spans if span not in chats]
    assert len(http) == 2
    assert {span["parent_id"] for span in http} == {span["context"]["span_id"] for span in chats}
    measured = {
        metric["name"]
        for document in exported
        for resource in document.get("resource_metrics", ())
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.token.usage",
    } <= measured


_PROPAGATORS_APP = (
    "import asyncio, os, sys\n"
    "os.environ['OTEL_PROPAGATORS'] = sys.argv[1]\n"
    "from opentelemetry import trace\n"
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
    "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
    "exporter = InMemorySpanExporter()\n"
    "provider = TracerProvider()\n"
    "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
    "trace.set_tracer_provider(provider)\n"
    "import asyncchat\n"
    "from asyncchat.testing import MockServer\n"
    "async def main():\n"
    "    async with MockServer() as server:\n"
    "        async with asyncchat.Client(base_url=server.base_url, api_key='k') as client:\n"
    "            await client.chat.completions.create(model='m', messages=[{'role': 'user',"
    " 'content': 'hi'}])\n"
    "        print(sorted(k.lower() for k in server.requests[0].headers))\n"
    "    print([span.name for span in exporter.get_finished_spans()])\n"
    "asyncio.run(main())\n"
)


@pytest.mark.parametrize("propagators", ["baggage", "no-such-propagator"])
def test_otel_propagators_choose_what_is_sent(propagators: str) -> None:
    """`baggage` alone sends no trace context; a name the API cannot load costs the
    trace context (a warning says so), not the request or its span."""
    done = subprocess.run(
        [sys.executable, "-c", _PROPAGATORS_APP, propagators], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    headers, names = done.stdout.splitlines()
    assert "'authorization'" in headers  # the headers were read
    assert "traceparent" not in headers
    assert names == "['chat m']"
    if propagators == "no-such-propagator":
        assert "asyncchat telemetry sends no trace context" in done.stderr


async def test_retries_are_events_on_one_span(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "1"})
    await client.chat.completions.create(model="m-retry", messages=user())
    [span] = spans()
    [retry] = [event for event in span.events if event.name == "asyncchat.retry"]
    assert retry.attributes is not None
    assert retry.attributes["retry.attempt"] == 1 and retry.attributes["error.type"] == "503"
    assert span.status.status_code is StatusCode.UNSET

    EXPORTER.clear()
    for _ in range(3):
        server.enqueue(429, {"error": {"message": "slow down"}}, headers={"retry-after-ms": "1"})
    with pytest.raises(asyncchat.RateLimitError):
        await client.chat.completions.create(model="m-refused", messages=user())
    [span] = spans()
    assert span.attributes is not None and span.attributes["error.type"] == "429"
    assert len([e for e in span.events if e.name == "asyncchat.retry"]) == 2


async def test_a_fan_out_is_a_span_per_request(client: asyncchat.Client) -> None:
    requests = [{"model": "m-fan", "messages": user(f"number {i}")} for i in range(5)]
    results = await client.chat.batch(requests, concurrency=3)
    assert all(isinstance(r, asyncchat.ChatCompletion) for r in results)
    assert sorted(span.name for span in spans()) == ["chat m-fan"] * 5
    assert len({span.context.span_id for span in spans()}) == 5  # type: ignore[union-attr]
    [duration] = points("gen_ai.client.operation.duration", "m-fan")
    assert duration.count == 5


async def test_each_request_gets_its_own_attributes_however_many_share_a_model(
    client: asyncchat.Client, server: MockServer
) -> None:
    """What requests to one model share is built once; nothing of one request (its
    parameters, its answer's model) may reach another's span or metrics."""
    await client.chat.completions.create(model="m-a", messages=user(), temperature=0.3)
    stream = await client.chat.completions.create(model="m-a", messages=user(), stream=True)
    async with stream:
        async for _ in stream:
            pass
    await client.chat.completions.create(model="m-b", messages=user())
    async with (
        MockServer(resolved_models={"m-a": "m-a-2026-01-01"}) as other,
        asyncchat.Client(base_url=other.base_url, api_key=API_KEY) as other_client,
    ):
        await other_client.chat.completions.create(model="m-a", messages=user())
    first, second, third, fourth = sorted(spans(), key=lambda span: span.start_time or 0)
    assert [span.name for span in (first, second, third, fourth)] == ["chat m-a"] * 2 + [
        "chat m-b",
        "chat m-a",
    ]
    assert first.attributes is not None and first.attributes["gen_ai.request.temperature"] == 0.3
    for span in (second, third, fourth):
        assert span.attributes is not None
        assert "gen_ai.request.temperature" not in span.attributes
        assert "gen_ai.response.time_to_first_chunk" not in span.attributes or span is second
    assert second.attributes is not None and second.attributes["server.port"] == server.port
    assert fourth.attributes is not None and fourth.attributes["server.port"] == other.port
    assert fourth.attributes["gen_ai.response.model"] == "m-a-2026-01-01"
    durations = points("gen_ai.client.operation.duration", "m-a")
    by_answer = {
        (p.attributes["server.port"], p.attributes["gen_ai.response.model"]): p.count
        for p in durations
    }
    assert by_answer == {(server.port, "m-a"): 2, (other.port, "m-a-2026-01-01"): 1}
    usage = points("gen_ai.client.token.usage", "m-a")
    assert sorted(
        (p.attributes["gen_ai.response.model"], p.attributes["gen_ai.token.type"]) for p in usage
    ) == [("m-a", "input"), ("m-a", "output"), ("m-a-2026-01-01", "input"),
          ("m-a-2026-01-01", "output")]  # fmt: skip
    [b_duration] = points("gen_ai.client.operation.duration", "m-b")
    assert b_duration.attributes["gen_ai.response.model"] == "m-b"


async def test_models_named_per_request_keep_what_is_built_bounded(
    client: asyncchat.Client,
) -> None:
    from asyncchat._telemetry import shared_telemetry

    requests = [{"model": f"m-many-{i}", "messages": user()} for i in range(300)]
    await client.chat.batch(requests, concurrency=20)
    assert sorted(span.name for span in spans()) == sorted(f"chat m-many-{i}" for i in range(300))
    assert all(
        span.attributes is not None
        and span.name == f"chat {span.attributes['gen_ai.request.model']}"
        and span.attributes["gen_ai.response.model"] == span.attributes["gen_ai.request.model"]
        for span in spans()
    )
    assert len(shared_telemetry()._targets) <= 256


async def test_embeddings_and_models(client: asyncchat.Client) -> None:
    await client.embeddings.create(model="e-1", input=["a b c"], dimensions=256)
    await client.models.list()  # not a GenAI operation: no span
    [span] = spans()
    assert span.name == "embeddings e-1"
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.embeddings.dimension.count"] == 256
    assert span.attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[operator]
    assert not [name for name in span.attributes if name.startswith("openai.")]  # chat's only


async def test_message_content_only_when_opted_in(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        await client.chat.completions.create(model="m-content", messages=user("Say hi"))
    [span] = spans()
    assert span.attributes is not None
    assert json.loads(str(span.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hi"}]}
    ]
    assert json.loads(str(span.attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "You said: Say hi"}],
            "finish_reason": "stop",
        }
    ]
    assert API_KEY not in json.dumps(dict(span.attributes))


async def test_captured_input_messages_are_what_was_sent(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's loop sends back the answer's own message object: it is recorded too."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        first = await client.chat.completions.create(model="m-loop", messages=user("One"))
        EXPORTER.clear()
        await client.chat.completions.create(
            model="m-loop", messages=[*user("One"), first.choices[0].message, *user("Two")]
        )
    [span] = spans()
    assert span.attributes is not None
    shaped = json.loads(str(span.attributes["gen_ai.input.messages"]))
    assert [(m["role"], m["parts"][0]["content"]) for m in shaped] == [
        ("user", "One"),
        ("assistant", "You said: One"),
        ("user", "Two"),
    ]


@pytest.mark.parametrize("reasoning", ["reasoning_content", "reasoning", "thinking"])
async def test_captured_messages_keep_the_reasoning_as_its_own_part(
    server: MockServer, monkeypatch: pytest.MonkeyPatch, reasoning: Any
) -> None:
    """A thinking model's reasoning (under either key, or Mistral's `thinking` parts) is
    the conventions' `reasoning` part, in the answer and in the message sent back."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    server.style = StreamStyle(reasoning=reasoning)
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        async with client.chat.stream(model="m-think", messages=user("One")) as stream:
            answer = await stream.final_completion()
        await client.chat.completions.create(
            model="m-think", messages=[*user("One"), answer.choices[0].message, *user("Two")]
        )
    streamed, sent_back = spans()
    assert streamed.attributes is not None and sent_back.attributes is not None
    thought = {"type": "reasoning", "content": "Let me think."}
    said = {"type": "text", "content": "You said: One"}
    assert json.loads(str(streamed.attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [thought, said], "finish_reason": "stop"}
    ]
    assistant = json.loads(str(sent_back.attributes["gen_ai.input.messages"]))[1]
    assert assistant == {"role": "assistant", "parts": [thought, said]}


async def test_the_tools_offered_are_recorded_by_name_only_when_opted_in(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                          "parameters": {"type": "object"}}},
        {"type": "web_search", "web_search": {"enable": True}},  # GLM's, with no name
    ]  # fmt: skip
    for capture in ("true", "false"):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
        async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
            await client.chat.completions.create(model="m-tools", messages=user(), tools=tools)
    opted_in, not_opted_in = [dict(span.attributes or {}) for span in spans()]
    assert json.loads(str(opted_in["gen_ai.tool.definitions"])) == [
        {"type": "function", "name": "get_weather"},
        {"type": "web_search", "name": "web_search"},
    ]
    assert "gen_ai.tool.definitions" not in not_opted_in
    assert "gen_ai.input.messages" not in not_opted_in


@pytest.mark.parametrize(
    "choices",
    [
        [{"index": 0, "message": "just text", "finish_reason": "stop"}],
        [{"index": 0, "message": {"content": "hi", "tool_calls": True}, "finish_reason": 5}],
        {"0": {"message": {"content": "hi"}}},
    ],
)
async def test_an_answer_of_an_unforeseen_shape_is_recorded_not_raised(
    server: MockServer, monkeypatch: pytest.MonkeyPatch, choices: Any
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    server.enqueue(json={"id": "odd-1", "model": "m-odd", "choices": choices})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        completion = await client.chat.completions.create(model="m-odd", messages=user())
    assert completion.id == "odd-1"
    [span] = spans()
    assert span.attributes is not None
    assert span.attributes["gen_ai.response.id"] == "odd-1"
    assert isinstance(json.loads(str(span.attributes["gen_ai.output.messages"])), list)
    assert span.status.status_code is not StatusCode.ERROR


class _BrokenProcessor(SpanProcessor):
    """A span processor of the application's that raises, for two models only."""

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if span.name in ("chat m-broken-start", "execute_tool broken_start"):
            raise RuntimeError("the processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        if span.name in ("chat m-broken-end", "execute_tool broken_end"):
            raise RuntimeError("the processor broke on end")


@pytest.fixture
def broken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    """A `_BrokenProcessor` among the application's (once added, it stays), the failure
    count reset, and the log that reports them."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(_BrokenProcessor())
    monkeypatch.setattr(_telemetry, "_failures", 0)
    caplog.set_level(logging.DEBUG, logger="asyncchat")
    return caplog


async def test_a_failure_in_telemetry_never_fails_the_request(
    client: asyncchat.Client, server: MockServer, broken: pytest.LogCaptureFixture
) -> None:
    for model in ("m-broken-start", "m-broken-end"):
        completion = await client.chat.completions.create(model=model, messages=user("Hi"))
        assert completion.choices[0].message.content == "You said: Hi"
        stream = await client.chat.completions.create(model=model, messages=user("Hi"), stream=True)
        async with stream:
            texts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(t or "" for t in texts) == "You said: Hi"
    assert server.connection_count == 1  # every answer read to its end, the connection pooled
    failures = [r for r in broken.records if "asyncchat telemetry" in r.getMessage()]
    assert len(failures) == 4  # one per request
    assert [r.levelno for r in failures] == [logging.WARNING] + [logging.DEBUG] * 3
    assert "RuntimeError: the processor broke on start" in failures[0].getMessage()
    assert "the processor broke on end" in failures[-1].getMessage()


async def test_latest_conventions_on_opt_in(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        stream = await client.chat.completions.create(
            model="m-latest",
            messages=user(),
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for _ in stream:
                pass
    [span] = spans()
    assert span.attributes is not None
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0  # type: ignore[operator]
    assert points("gen_ai.client.inference.duration", "m-latest")
    assert points("gen_ai.client.inference.time_to_first_chunk", "m-latest")
    assert points("gen_ai.client.operation.duration", "m-latest") == []
    # A histogram for each kind of token, so no `gen_ai.token.type`.
    [output] = points("gen_ai.client.inference.usage.output_tokens", "m-latest")
    assert output.sum == span.attributes["gen_ai.usage.output_tokens"] == 4  # 4 words
    assert "gen_ai.token.type" not in output.attributes
    [prompt] = points("gen_ai.client.inference.usage.input_tokens", "m-latest")
    assert prompt.sum == span.attributes["gen_ai.usage.input_tokens"]
    assert points("gen_ai.client.token.usage", "m-latest") == []


async def test_telemetry_false_records_nothing_and_times_nothing(server: MockServer) -> None:
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, telemetry=False
    ) as client:
        stream = await client.chat.completions.create(model="m-off", messages=user(), stream=True)
        assert stream._timing is None  # no read is wrapped
        async with stream:
            async for _ in stream:
                pass
        runner = client.chat.run_tools(model="m-off", messages=user(), tools=[get_weather])
        await runner.final_completion()
    assert runner.completions[0].choices[0].message.tool_calls  # the tool was called
    assert [span.name for span in spans()] == ["look up the weather"]  # the tool's own only


def test_without_opentelemetry_nothing_is_imported() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import asyncchat\n"
        "asyncchat.Client(api_key='k')\n"
        "assert 'asyncchat._telemetry' not in sys.modules\n"
        "try:\n"
        "    asyncchat.Client(api_key='k', telemetry=True)\n"
        "except asyncchat.ConfigurationError as e:\n"
        "    print(e)\n"
    )
    printed = run_python(code)
    assert "pip install 'asyncchat[otel]'" in printed


def test_opentelemetry_is_never_imported_first() -> None:
    """Installed but not imported by the application: requests do not import it."""
    code = (
        "import asyncio, sys\n"
        "import asyncchat\n"
        "from asyncchat.testing import MockResponse, MockTransport\n"
        "async def main():\n"
        "    transport = MockTransport(lambda r: MockResponse(json={'choices': []}))\n"
        "    async with asyncchat.Client(api_key='k', transport=transport) as client:\n"
        "        await client.chat.completions.create(model='m', messages=[{'role': 'user',"
        " 'content': 'hi'}])\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', "
        "'asyncchat._telemetry'))))\n"
    )
    printed = run_python(code)
    assert printed.strip() == "[]"


# --- the tool runner's runs and calls -------------------------------------------------------

TOOL_TRACER = trace.get_tracer("tools under test")


async def get_weather(city: str) -> dict[str, Any]:
    """The current weather in a city."""
    with TOOL_TRACER.start_as_current_span("look up the weather"):
        await asyncio.sleep(0)
    return {"city": city, "celsius": 21}


def to_fahrenheit(celsius: float) -> float:
    """Celsius to Fahrenheit."""
    with TOOL_TRACER.start_as_current_span("convert in a thread"):
        return celsius * 9 / 5 + 32


async def get_time(zone: str) -> str:
    """The local time in a time zone."""
    raise ValueError(f"unknown time zone {zone!r}")


def tool_spans() -> dict[str, ReadableSpan]:
    """The finished `execute_tool` spans by tool name."""
    return {span.name.split(" ", 1)[1]: span for span in spans() if span.name.startswith("exec")}


def child_of(span: ReadableSpan, parent: Any) -> bool:
    context = parent.get_span_context() if hasattr(parent, "get_span_context") else parent.context
    return span.parent is not None and span.parent.span_id == context.span_id


async def test_a_run_is_an_invoke_agent_span_and_each_call_an_execute_tool_span(
    server: MockServer,
) -> None:
    """The run is one INTERNAL `invoke_agent` span, parent of its turns' `chat` spans
    and of one INTERNAL span a call, with the conventions' attributes. A call's span
    is current while the tool runs (a thread's too), so what the tool traces, a
    request of its own included, is its child; a call that fails is an error span,
    and the model is told as before. The reader's own spans stay the reader's."""
    script = MockServer(
        api_key=API_KEY,
        turns=[
            Turn(
                tool_calls=[
                    ("get_weather", {"city": "Paris"}),
                    ("to_fahrenheit", {"celsius": 21}),
                    ("get_time", {"zone": "Mars/X"}),
                    ("ask_expert", {"question": "Umbrella?"}),
                ]
            ),
            Turn(content="Sunny, 21 °C.", expect_results=['"celsius":21', "69.8"]),
        ],
    )

    async def ask_expert(question: str) -> str:
        """Ask another model."""
        answer = await expert.chat.completions.create(model="m-expert", messages=user(question))
        return answer.choices[0].message.content or ""

    tools = [get_weather, to_fahrenheit, get_time, ask_expert]
    async with (
        script,
        asyncchat.Client(base_url=script.base_url, api_key=API_KEY) as client,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as expert,
    ):
        with TOOL_TRACER.start_as_current_span("the agent") as agent:
            runner = client.chat.run_tools(
                model="m-agent",
                messages=user(),
                tools=tools,
                temperature=0.3,
                stream_options={"include_usage": True},
            )
            async for event in runner:
                if isinstance(event, asyncchat.ToolFinished):
                    with TOOL_TRACER.start_as_current_span(f"saw {event.name}"):
                        pass
            final = await runner.final_completion()
    assert final.choices[0].message.content == "Sunny, 21 °C."
    assert script.turns is not None and script.turns.errors == []

    [run] = [span for span in spans() if span.name == "invoke_agent"]
    assert run.kind is SpanKind.INTERNAL and child_of(run, agent)
    assert run.status.status_code is StatusCode.UNSET
    turns = [span for span in spans() if span.name == "chat m-agent"]
    assert len(turns) == 2 and all(child_of(turn, run) for turn in turns)
    usage = [dict(turn.attributes or {}) for turn in turns]
    assert dict(run.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m-agent",
        "gen_ai.request.temperature": 0.3,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": sum(u["gen_ai.usage.input_tokens"] for u in usage),
        "gen_ai.usage.output_tokens": sum(u["gen_ai.usage.output_tokens"] for u in usage),
    }

    called = tool_spans()
    assert sorted(called) == ["ask_expert", "get_time", "get_weather", "to_fahrenheit"]
    weather = called["get_weather"]
    assert weather.kind is SpanKind.INTERNAL and child_of(weather, run)
    assert dict(weather.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "call_1_0",
        "gen_ai.tool.description": "The current weather in a city.",
    }
    assert weather.status.status_code is StatusCode.UNSET
    by_name = {span.name: span for span in spans()}
    assert child_of(by_name["look up the weather"], weather)
    assert child_of(by_name["convert in a thread"], called["to_fahrenheit"])
    assert child_of(by_name["chat m-expert"], called["ask_expert"])
    assert all(child_of(by_name[f"saw {name}"], agent) for name in called)

    failed = called["get_time"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "unknown time zone 'Mars/X'"
    assert failed.attributes is not None and failed.attributes["error.type"] == "ValueError"
    assert [event.name for event in failed.events] == ["exception"]
    assert "gen_ai.tool.call.arguments" not in json.dumps(
        [dict(s.attributes or {}) for s in spans()]
    )


async def test_a_runs_content_and_its_calls_arguments_and_results_only_when_opted_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With content capture on, the run's span has the messages it began from (a message
    object of an earlier answer included), the tools it offered and its last answer;
    a call's span, the arguments and the result. Off, the first test above has none."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    script = MockServer(
        api_key=API_KEY,
        turns=[
            Turn(tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "Mars"})]),
            Turn(content="Done."),
        ],
    )
    earlier = asyncchat.ChatCompletionMessage({"role": "assistant", "content": "Hello."})
    async with script, asyncchat.Client(base_url=script.base_url, api_key=API_KEY) as client:
        runner = client.chat.run_tools(
            model="m-agent", messages=[*user("Hi"), earlier, *user()], tools=[get_weather, get_time]
        )
        await runner.final_completion()
    [run] = [dict(span.attributes or {}) for span in spans() if span.name == "invoke_agent"]
    began = json.loads(str(run["gen_ai.input.messages"]))
    assert [(m["role"], m["parts"]) for m in began] == [
        ("user", [{"type": "text", "content": "Hi"}]),
        ("assistant", [{"type": "text", "content": "Hello."}]),
        ("user", [{"type": "text", "content": "hello there"}]),
    ]  # as the run began: not the turns it added
    assert json.loads(str(run["gen_ai.tool.definitions"])) == [
        {"type": "function", "name": "get_weather"},
        {"type": "function", "name": "get_time"},
    ]
    assert json.loads(str(run["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Done."}],
            "finish_reason": "stop",
        }
    ]
    called = tool_spans()
    weather = dict(called["get_weather"].attributes or {})
    assert weather["gen_ai.tool.call.arguments"] == '{"city":"Oslo"}'  # as the model sent them
    assert weather["gen_ai.tool.call.result"] == '{"city":"Oslo","celsius":21}'  # as text
    failed = dict(called["get_time"].attributes or {})
    assert failed["gen_ai.tool.call.arguments"] == '{"zone":"Mars"}'
    assert "gen_ai.tool.call.result" not in failed  # the conventions: a successful call's only


def calls_stream(*calls: tuple[str, str]) -> list[dict[str, Any] | str]:
    """A streamed answer that makes these calls, (name, arguments text) each."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m-agent"}
    made = [
        {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
        for i, (n, a) in enumerate(calls)
    ]
    return [
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": made}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]


def with_usage(stream: list[dict[str, Any] | str], cached: int | None) -> list[Any]:
    """`stream` ending in a usage chunk: 100 tokens in, 10 out, and `cached` of the
    input from the server's cache when it says."""
    usage: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return [*stream, {"id": "c", "model": "m-agent", "choices": [], "usage": usage}]


@pytest.mark.parametrize(("cached", "summed"), [((0, 64), 64), ((0, None), None)])
async def test_a_runs_tokens_are_its_turns_added_up_when_every_turn_told_them(
    client: asyncchat.Client,
    server: MockServer,
    cached: tuple[int | None, int | None],
    summed: int | None,
) -> None:
    """Cached input tokens too (an agent's turns resend what the last one sent): a sum
    only when every turn reported them, since a missing count is not a zero."""
    server.enqueue(sse=with_usage(calls_stream(("get_weather", '{"city": "Rome"}')), cached[0]))
    answer = {
        "id": "c",
        "model": "m-agent",
        "choices": [{"index": 0, "delta": {"content": "Hot."}, "finish_reason": "stop"}],
    }
    server.enqueue(sse=with_usage([answer], cached[1]))
    runner = client.chat.run_tools(model="m-agent", messages=user(), tools=[get_weather])
    await runner.final_completion()
    [run] = [dict(span.attributes or {}) for span in spans() if span.name == "invoke_agent"]
    assert run["gen_ai.usage.input_tokens"] == 200
    assert run["gen_ai.usage.output_tokens"] == 20
    assert run.get("gen_ai.usage.cache_read.input_tokens") == summed


async def test_a_call_of_no_tool_or_with_bad_arguments_is_an_error_span(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue(sse=calls_stream(("get_tide", "{}"), ("get_weather", '{"town": "Bergen"}')))
    runner = client.chat.run_tools(model="m-agent", messages=user(), tools=[get_weather])
    await runner.final_completion()
    called = tool_spans()
    unknown = dict(called["get_tide"].attributes or {})
    assert unknown["error.type"] == "LookupError"
    assert "gen_ai.tool.description" not in unknown  # no such tool to describe
    misfit = called["get_weather"]
    assert dict(misfit.attributes or {})["error.type"] == "asyncchat.ToolArgumentsError"
    assert misfit.status.status_code is StatusCode.ERROR
    assert "look up the weather" not in [span.name for span in spans()]  # never ran


def run_error() -> Any:
    """The `error.type` of the one run's span."""
    [run] = [span for span in spans() if span.name == "invoke_agent"]
    assert run.status.status_code is StatusCode.ERROR or "error.type" not in (run.attributes or {})
    return dict(run.attributes or {}).get("error.type")


async def test_a_vetoed_raised_or_cancelled_tool_call_ends_its_span_as_an_error(
    client: asyncchat.Client, server: MockServer
) -> None:
    started = asyncio.Event()

    async def wait(seconds: float) -> str:
        """Waits, and is cancelled first."""
        started.set()
        await asyncio.sleep(seconds)
        return "too late"

    server.enqueue(sse=calls_stream(("get_weather", '{"city": "Rome"}')))
    vetoed = client.chat.run_tools(
        model="m-agent", messages=user(), tools=[get_weather], approve=lambda call: "No."
    )
    await vetoed.final_completion()
    [span] = tool_spans().values()
    assert dict(span.attributes or {})["error.type"] == "PermissionError"
    assert span.status.description == "No."
    assert run_error() is None  # the model was told, and answered

    EXPORTER.clear()
    server.enqueue(sse=calls_stream(("get_time", '{"zone": "Mars"}')))
    raising = client.chat.run_tools(
        model="m-agent", messages=user(), tools=[get_time], on_error="raise"
    )
    with pytest.raises(asyncchat.ToolCallError):
        await raising.final_completion()
    [span] = tool_spans().values()
    assert dict(span.attributes or {})["error.type"] == "ValueError"  # the tool's own error
    assert run_error() == "asyncchat.ToolCallError"

    EXPORTER.clear()
    server.enqueue(sse=calls_stream(("wait", '{"seconds": 60}')))
    runner = client.chat.run_tools(model="m-agent", messages=user(), tools=[wait])
    task = asyncio.ensure_future(runner.final_completion())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [span] = tool_spans().values()
    assert dict(span.attributes or {})["error.type"] == "asyncio.CancelledError"
    assert span.end_time is not None
    assert run_error() == "asyncio.CancelledError"


async def test_a_run_left_early_or_out_of_turns_still_ends_its_span(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(chunk_delay=0.01)
    runner = client.chat.run_tools(model="m-agent", messages=user(), tools=[get_weather])
    async for _ in runner:
        break  # the reader leaves: not an error
    await runner.close()
    [run] = [span for span in spans() if span.name == "invoke_agent"]
    assert run.status.status_code is StatusCode.UNSET
    assert [event.name for event in run.events] == ["asyncchat.run_closed_early"]
    assert client.transport.connections()[1] == 0  # type: ignore[attr-defined]

    EXPORTER.clear()
    runner = client.chat.run_tools(
        model="m-agent", messages=user(), tools=[get_weather], max_turns=1
    )
    with pytest.raises(asyncchat.MaxTurnsError):
        await runner.final_completion()
    assert run_error() == "asyncchat.MaxTurnsError"
    [run] = [span for span in spans() if span.name == "invoke_agent"]
    assert dict(run.attributes or {})["gen_ai.response.finish_reasons"] == ("tool_calls",)


async def test_a_failure_in_telemetry_never_fails_a_tool_call(
    client: asyncchat.Client, server: MockServer, broken: pytest.LogCaptureFixture
) -> None:
    def broken_start(word: str) -> str:
        """Echo."""
        return word.upper()

    def broken_end(word: str) -> str:
        """Echo."""
        return word * 2

    server.enqueue(
        sse=calls_stream(("broken_start", '{"word": "a"}'), ("broken_end", '{"word": "b"}'))
    )
    runner = client.chat.run_tools(
        model="m-agent", messages=user(), tools=[broken_start, broken_end]
    )
    await runner.final_completion()
    assert [m["content"] for m in runner.messages if m["role"] == "tool"] == ["A", "bb"]
    failures = [r for r in broken.records if "asyncchat telemetry" in r.getMessage()]
    assert len(failures) == 2  # one a call
    assert "RuntimeError: the processor broke on start" in failures[0].getMessage()
    assert sorted(tool_spans()) == ["broken_end"]  # the other was never begun
