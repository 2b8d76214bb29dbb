"""Hostile servers and faults: nothing leaks, hangs or is lost.

Where HTTP itself must be broken, a raw asyncio server on loopback plays the
server; elsewhere the MockServer does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import tracemalloc
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import asyncchat
from asyncchat._transport import AiohttpTransport
from asyncchat.testing import MockServer, StreamStyle

from .conftest import API_KEY

USER = [{"role": "user", "content": "one two three four five"}]
SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding frame."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk_event(content: str) -> bytes:
    return (
        b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "'
        + content.encode()
        + b'"}}]}\n\n'
    )


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on loopback that answers with whatever bytes `handler` writes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request head; the body is ignored
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()


def client_for(base_url: str, **options: Any) -> asyncchat.Client:
    return asyncchat.Client(base_url=base_url, api_key=API_KEY, max_retries=0, **options)


async def consume(stream: asyncchat.ChatCompletionStream) -> list[str]:
    texts = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
    return texts


# --- 1. broken streams ---------------------------------------------------------------


async def test_truncated_chunked_frame_keeps_what_arrived() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + frame(chunk_event("Hello")) + frame(chunk_event(" world")))
        writer.write(b"64\r\n" + b"data: {" * 3)  # a frame announcing 100 bytes, then gone
        await writer.drain()

    async with raw_server(handler) as url, client_for(url) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.IncompleteStreamError, match="cut off") as info:
            await consume(stream)
    partial = info.value.partial
    assert partial is not None
    assert partial.choices[0].message.content == "Hello world"


async def test_connection_reset_mid_stream() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + frame(chunk_event("kept")))
        await writer.drain()
        writer.transport.abort()  # RST, not FIN

    async with raw_server(handler) as url, client_for(url) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises((asyncchat.APIConnectionError, asyncchat.StreamError)) as info:
            await consume(stream)
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "kept"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"data: {oops\n\n", "not JSON: '{oops'"),
        (b"data: this is not json\n\n", "not JSON: 'this is not json'"),
        (b"data: [1, 2]\n\n", "not a JSON object: '[1, 2]'"),
        (b"data: " + b"z" * 5000 + b"\n\n", "not JSON: 'zzzz"),
    ],
)
async def test_malformed_events_say_what_was_wrong(payload: bytes, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + frame(chunk_event("before")) + frame(payload) + b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as url, client_for(url) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.MalformedStreamError) as info:
            await consume(stream)
    assert message in str(info.value)
    assert len(str(info.value)) < 400  # the offending payload is cut short
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "before"


# --- 2. stalls ---------------------------------------------------------------------


async def test_no_response_at_all_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with raw_server(handler) as url, client_for(url, timeout=0.3) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncchat.APITimeoutError, match="read timeout"):
            await client.chat.completions.create(model="m", messages=USER)
        assert asyncio.get_running_loop().time() - started < 2


async def test_a_failed_get_names_get() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass  # the server closes the connection without a word

    async with raw_server(hang) as url, client_for(url, timeout=0.3) as client:
        with pytest.raises(asyncchat.APITimeoutError, match=r"on GET http://\S+/v1/models$"):
            await client.models.list()
    async with raw_server(hang_up) as url, client_for(url) as client:
        with pytest.raises(asyncchat.APIConnectionError, match=r"before answering GET http"):
            await client.models.list()


async def test_headers_then_stall_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + frame(chunk_event("first")))
        await writer.drain()
        await asyncio.sleep(10)

    async with raw_server(handler) as url, client_for(url, timeout=0.3) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.APITimeoutError) as info:
            await consume(stream)
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "first"


async def test_trickle_past_the_total_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS)
        for _ in range(100):  # a byte every 0.1 s: the read timeout never fires
            writer.write(frame(b":"))
            await writer.drain()
            await asyncio.sleep(0.1)

    timeout = asyncchat.Timeout(connect=1, read=1, total=0.8)
    async with raw_server(handler) as url, client_for(url, timeout=timeout) as client:
        started = asyncio.get_running_loop().time()
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.APITimeoutError, match="total timeout"):
            await consume(stream)
        assert asyncio.get_running_loop().time() - started < 2


# --- 3. hostile sizes -----------------------------------------------------------------


async def _endless(writer: asyncio.StreamWriter, piece: bytes) -> None:
    while True:
        writer.write(frame(piece))
        await writer.drain()


@pytest.mark.parametrize(
    ("first", "piece"),
    [(b"data: ", b"x" * 65536), (b"", b": keep-alive\n\n" * 1000)],
    ids=["one-100MiB-line", "endless-keepalives"],
)
async def test_hostile_sizes_end_at_the_cap_with_bounded_memory(first: bytes, piece: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + (frame(first) if first else b""))
        await _endless(writer, piece)

    cap = 1024 * 1024
    tracemalloc.start()
    try:
        async with raw_server(handler) as url, client_for(url, max_event_size=cap) as client:
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            with pytest.raises(asyncchat.EventTooLargeError, match="max_event_size"):
                await consume(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * cap, f"peak {peak} bytes for a {cap}-byte cap"


# --- 4. overload ----------------------------------------------------------------------


@pytest.mark.slow
async def test_5000_streams_through_a_pool_of_100() -> None:
    async with (
        MockServer(style=StreamStyle(tokens=5)) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_connections=100) as client,
    ):
        peak = 0

        async def one(i: int) -> str:
            nonlocal peak
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"q{i}"}], stream=True
            )
            async with stream:
                text = "".join(await consume(stream))
            transport = client.transport
            assert isinstance(transport, AiohttpTransport)
            peak = max(peak, transport.connections()[1])
            return text

        texts = await asyncio.gather(*(one(i) for i in range(5000)))
    # Five tokens of the reply "You said: q<i>", cycled.
    assert texts == ["".join((["You", " said:", f" q{i}"] * 2)[:5]) for i in range(5000)]
    assert peak <= 100
    assert server.connection_count <= 100
    assert server.max_in_flight <= 100


async def test_half_rate_limited_each_retried_at_most_max_retries() -> None:
    async with (
        MockServer(delay=0.001) as server,
        asyncchat.Client(
            base_url=server.base_url, api_key=API_KEY, max_connections=50, max_retries=2
        ) as client,
    ):
        for _ in range(500):
            server.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
        results = await client.chat.batch(
            [
                {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
                for i in range(1000)
            ],
            concurrency=200,
        )
    attempts = Counter(r.body["messages"][0]["content"] for r in server.requests)
    assert max(attempts.values()) <= 1 + 2
    failed = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, asyncchat.RateLimitError) for r in failed)
    assert len(results) - len(failed) >= 500


# --- 5. cancellation storms ------------------------------------------------------------


def _close_wait_sockets(port: int) -> int:
    """Client sockets to `port` stuck in CLOSE_WAIT (Linux /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file)
                for line in file:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and fields[3] == "08":
                        count += 1
        except FileNotFoundError:
            continue
    return count


@pytest.mark.slow
async def test_1000_streams_cancelled_at_random_points() -> None:
    asyncio.get_running_loop().set_debug(True)  # aiohttp then warns of unclosed responses
    rng = random.Random(7)
    async with (
        MockServer(style=StreamStyle(chunk_delay=0.002)) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_connections=50) as client,
    ):

        async def one() -> None:
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            async with stream:
                await consume(stream)

        for _ in range(10):
            tasks = [asyncio.create_task(one()) for _ in range(100)]
            await asyncio.sleep(0)
            for task in tasks:
                asyncio.get_running_loop().call_later(rng.uniform(0, 0.03), task.cancel)
            await asyncio.gather(*tasks, return_exceptions=True)
        transport = client.transport
        assert isinstance(transport, AiohttpTransport)
        assert transport.connections()[1] == 0
        await asyncio.sleep(0.05)
        assert _close_wait_sockets(server.port) == 0
        # The pool is still usable.
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "You said: one two three four five"


# --- 6. client lifecycle ---------------------------------------------------------------


async def test_client_collected_unclosed_warns_once_and_frees_its_sockets(
    server: MockServer,
) -> None:
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY)
    await client.chat.completions.create(model="m", messages=USER)
    transport = client.transport
    assert isinstance(transport, AiohttpTransport) and not transport.closed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == 1
    assert "asyncchat.Client" in str(unclosed[0].message)
    assert transport.closed


async def test_closing_the_client_ends_open_streams(server: MockServer) -> None:
    server.style = StreamStyle(chunk_delay=0.05)
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY)
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"
    await client.close()
    with pytest.raises(
        asyncchat.ClientClosedError, match="Client was closed while this stream"
    ) as info:
        await consume(stream)
    assert info.value.partial is not None


# --- 7. secrets and redirects ----------------------------------------------------------


async def test_key_never_leaks(server: MockServer, caplog: pytest.LogCaptureFixture) -> None:
    client = asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    texts = [repr(client), str(client.__dict__)]
    with caplog.at_level(logging.DEBUG, logger="asyncchat"):
        completion = await client.chat.completions.create(model="m", messages=USER)
        texts.append(completion.to_json())
        server.enqueue(401, {"error": {"message": "no"}})
        with pytest.raises(asyncchat.AuthenticationError) as info:
            await client.chat.completions.create(model="m", messages=USER)
        texts += [str(info.value), repr(info.value), str(info.value.headers)]
    await client.close()
    texts.append(caplog.text)
    for text in texts:
        assert API_KEY not in text
    assert "Bearer" not in caplog.text


async def test_redirect_to_another_host_drops_the_key() -> None:
    async with MockServer() as elsewhere, MockServer() as origin:
        # Same address, other port: another origin. A 307 keeps the method and body.
        target = elsewhere.base_url.replace("127.0.0.1", "localhost") + "/chat/completions"
        origin.enqueue(307, "", headers={"Location": target})
        async with asyncchat.Client(base_url=origin.base_url, api_key=API_KEY) as client:
            completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "You said: one two three four five"
    assert "Authorization" in origin.requests[0].headers
    assert "Authorization" not in elsewhere.requests[0].headers


def test_plain_http_to_a_remote_host_warns_once() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncchat.Client(base_url="http://llm.example.com/v1", api_key="k")
        asyncchat.Client(base_url="http://llm.example.com/v1", api_key="k")
        asyncchat.Client(base_url="http://127.0.0.1:8000/v1", api_key="k")
        asyncchat.Client(base_url="http://localhost:8000/v1", api_key="k")
        asyncchat.Client(base_url="https://llm.example.com/v1", api_key="k")
    insecure = [w for w in caught if "unencrypted" in str(w.message)]
    assert len(insecure) == 1
    assert "llm.example.com" in str(insecure[0].message)


async def test_error_event_split_across_reads() -> None:
    """`event: error` in one read, its data in the next: still an error, not a chunk."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEADERS + frame(chunk_event("so far")) + frame(b"event: error\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(frame(b'data: {"message": "upstream failed"}\n\n') + b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as url, client_for(url) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.InternalServerError, match="upstream failed") as info:
            await consume(stream)
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "so far"


async def test_mock_server_keeps_a_providers_limit_with_retry_after() -> None:
    """`MockServer(requests_per_minute=)`: the request over the limit gets a 429 whose
    headers say when to come back."""
    async with (
        MockServer(requests_per_minute=60) as server,
        asyncchat.Client(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(asyncchat.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.headers["Retry-After"] == "1"
    limits = caught.value.rate_limits
    assert limits is not None and limits.remaining_requests == 0
    assert server.rate_limited == 1


async def test_mock_server_loading_answers_503_as_llama_cpp_then_serves() -> None:
    """`MockServer(loading=)`: chat and embeddings get llama.cpp's 503 until it has
    loaded; the model list answers all along."""
    async with (
        MockServer(loading=0.5) as server,
        asyncchat.Client(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        with pytest.raises(asyncchat.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(asyncchat.InternalServerError):
            await client.embeddings.create(model="m", input="x")
        assert [model.id for model in (await client.models.list()).data] == ["mock-model"]
        await asyncio.sleep(0.5)
        await client.chat.completions.create(model="m", messages=USER)
        await client.embeddings.create(model="m", input="x")
    assert caught.value.status_code == 503
    assert caught.value.message.endswith(": Loading model")
    assert caught.value.type == "unavailable_error"
    assert server.unavailable == 2


async def test_a_fan_out_against_a_providers_limit_finishes() -> None:
    """Its 429s pause the whole fan-out, retried after Retry-After: everything lands."""
    async with (
        MockServer(requests_per_minute=600) as server,
        asyncchat.Client(base_url=server.base_url, api_key="k", max_retries=5) as client,
    ):
        requests = [{"model": "m", "messages": USER}] * 20
        results = await client.chat.batch(requests, concurrency=8)
    assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
    assert server.rate_limited >= 1
