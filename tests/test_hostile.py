"""Hostile servers and sloppy inputs: every failure is an asyncchat error, nothing
leaks, nothing hangs. Raw sockets on loopback play the server where HTTP itself
must misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import asyncchat
from asyncchat.testing import MockServer

from .conftest import API_KEY

USER = [{"role": "user", "content": "hi"}]
CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"
COMPLETION = (
    b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, '
    b'"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]}'
)


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding frame."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


SSE = {"Content_Type": "text/event-stream", "Transfer_Encoding": "chunked"}

# Where a request can be cancelled, and what the server sends before it stalls there.
STALLS: dict[str, bytes] = {
    "waiting for the response head": b"",
    "mid-stream": head(**SSE) + frame(CHUNK),
    "after [DONE], draining the body": head(**SSE) + frame(CHUNK + DONE),
    "reading a JSON answer to stream=True": head(
        Content_Type="application/json", Content_Length="1000"
    )
    + COMPLETION[:20],
    "reading an error body": head("500 Internal Server Error", Content_Length="1000")
    + b'{"error": ',
    "reading an HTML page instead of a stream": head(
        Content_Type="text/html", Content_Length="1000"
    ),
}


@asynccontextmanager
async def stalling_server(first: bytes, reached: asyncio.Event) -> AsyncIterator[str]:
    """The first connection gets `first` and then silence; later ones a normal answer."""
    connections = 0
    hold = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if number == 1:
                    writer.write(first)
                    await writer.drain()
                    reached.set()
                    await hold.wait()
                    return
                writer.write(
                    head(Content_Type="application/json", Content_Length=str(len(COMPLETION)))
                    + COMPLETION
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        hold.set()
        server.close()
        await server.wait_closed()


async def _stream_to_the_end(client: asyncchat.Client) -> None:
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        async for _ in stream:
            pass


async def _stream_without_async_with(client: asyncchat.Client) -> None:
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async for _ in stream:
        pass


async def _stream_text(client: asyncchat.Client) -> None:
    async for _ in client.chat.stream_text(model="m", messages=USER):
        pass


async def _typed_events(client: asyncchat.Client) -> None:
    async with client.chat.stream(model="m", messages=USER) as events:
        async for _ in events:
            pass


async def _plain_create(client: asyncchat.Client) -> None:
    await client.chat.completions.create(model="m", messages=USER)


WAYS: dict[str, Callable[[asyncchat.Client], Awaitable[None]]] = {
    "async with + async for": _stream_to_the_end,
    "async for alone": _stream_without_async_with,
    "stream_text": _stream_text,
    "typed events": _typed_events,
    "create without streaming": _plain_create,
}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("stall", list(STALLS))
async def test_cancelling_at_every_await_point_releases_the_connection(
    stall: str, way: str
) -> None:
    """With a pool of one, a request cancelled anywhere must give its connection back,
    or the next request waits forever."""
    reached = asyncio.Event()
    async with (
        stalling_server(STALLS[stall], reached) as base_url,
        asyncchat.Client(
            base_url=base_url, api_key=API_KEY, max_connections=1, max_retries=0
        ) as client,
    ):
        task = asyncio.create_task(WAYS[way](client))
        await asyncio.wait_for(reached.wait(), 10)
        await asyncio.sleep(0.05)  # the client is now awaiting at that point
        assert not task.done(), task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        completion = await asyncio.wait_for(
            client.chat.completions.create(model="m", messages=USER), 5
        )
        assert completion.choices[0].message.content == "fine"


# --- configuration a little off ---------------------------------------------------


@pytest.mark.parametrize("where", ["argument", "environment"])
async def test_a_key_read_from_a_file_keeps_working(
    server: MockServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    key = f"  {API_KEY}\n"  # as open(path).read() gives it
    if where == "environment":
        monkeypatch.setenv("ASYNCCHAT_API_KEY", key)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=key if where == "argument" else None
    ) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "You said: hi"
    assert server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("bad", ["sk-abc\ndef", "sk-abc\rdef", "sk-abc\x00def", "sk-\x7f"])
def test_a_key_with_a_control_character_is_refused_unshown(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    with pytest.raises(asyncchat.ConfigurationError, match="from api_key contains") as info:
        asyncchat.Client(api_key=bad, base_url="https://api.example.com/v1")
    assert bad.strip() not in str(info.value) and "abc" not in str(info.value)
    if "\x00" in bad:
        return  # an environment variable cannot hold a NUL
    monkeypatch.setenv("OPENAI_API_KEY", bad)
    monkeypatch.delenv("ASYNCCHAT_API_KEY", raising=False)
    with pytest.raises(asyncchat.ConfigurationError, match="from OPENAI_API_KEY contains"):
        asyncchat.Client(base_url="https://api.example.com/v1")


async def test_a_base_url_with_a_query_keeps_it(server: MockServer) -> None:
    """Azure documents `.../openai/deployments/NAME?api-version=...` as the base URL."""
    base_url = server.base_url + "/?api-version=2024-06-01"
    async with asyncchat.Client(base_url=base_url, api_key=API_KEY) as client:
        assert client.base_url == server.base_url
        await client.chat.completions.create(model="m", messages=USER)
        stream = await client.chat.completions.create(
            model="m", messages=USER, stream=True, extra_query={"trace": "1"}
        )
        async with stream:
            async for _ in stream:
                pass
    first, second = server.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert first.query == {"api-version": "2024-06-01"}
    assert second.query == {"api-version": "2024-06-01", "trace": "1"}


# --- unbounded waits ----------------------------------------------------------------


async def test_a_far_off_rate_limit_reset_does_not_park_a_fan_out(
    server: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    for reset in ("1e9", "inf", "1767225600"):
        server.enqueue(
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}
        )
    requests = [{"model": "m", "messages": USER}] * 6
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        results = await asyncio.wait_for(client.chat.batch(requests, concurrency=1), 10)
    assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "x-ratelimit-reset-requests: 1e9" in warnings[0]
