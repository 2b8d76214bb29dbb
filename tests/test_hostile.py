"""Hostile servers and sloppy inputs: every failure is an asyncchat error, nothing
leaks, nothing hangs. Raw sockets on loopback play the server where HTTP itself
must misbehave."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import asyncchat
from asyncchat._config import bypasses_proxy, proxy_from_environment
from asyncchat._redact import redact
from asyncchat._transport import AiohttpTransport
from asyncchat.testing import MockServer, StreamStyle

from .conftest import API_KEY
from .test_faults import Handler, raw_server

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
    # A moment long past (Unix seconds), not a duration, a moment ten years away.
    for reset in ("1e9", "inf", f"{time.time() + 10 * 365 * 86400:.0f}"):
        server.enqueue(
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}
        )
    requests = [{"model": "m", "messages": USER}] * 6
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        results = await asyncio.wait_for(client.chat.batch(requests, concurrency=1), 10)
    assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "x-ratelimit-reset-requests: inf" in warnings[0]


# --- secrets in errors, NO_PROXY ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("url='http://user:pw@proxy:3128'", "url='http://***@proxy:3128'"),
        ("https://sk-token@host/v1 failed", "https://***@host/v1 failed"),
        ("GET /v1?api-key=abc&x=1", "GET /v1?api-key=***&x=1"),
        ("https://h/p?key=abc#frag", "https://h/p?key=***#frag"),
        ("https://h/p?a=1&access_token=abc&sig=zz", "https://h/p?a=1&access_token=***&sig=***"),
        ("mail me at someone@example.com", "mail me at someone@example.com"),
        ("https://h/p?model=gpt", "https://h/p?model=gpt"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


async def test_proxy_credentials_never_show(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy refusing CONNECT: aiohttp's message quotes the proxy URL, password and all."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw-secret@127.0.0.1:{port}")
    caplog.set_level(logging.DEBUG, logger="asyncchat")
    try:
        async with asyncchat.Client(
            base_url="https://api.example.invalid/v1", api_key=API_KEY, max_retries=1
        ) as client:
            with pytest.raises(asyncchat.APIConnectionError) as info:
                await client.chat.completions.create(
                    model="m", messages=USER, extra_query={"token": "q-secret"}
                )
    finally:
        proxy.close()
        await proxy.wait_closed()
    shown = str(info.value) + repr(info.value) + caplog.text
    assert "407" in str(info.value) and "***@127.0.0.1" in str(info.value)
    assert "pw-secret" not in shown and "q-secret" not in shown and API_KEY not in shown


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("localhost:8000", "localhost", 8000, True),
        ("localhost:8000", "localhost", 9000, False),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("192.168.1.5", "192.168.1.5", 80, True),
        ("::1", "::1", 80, True),
        ("[::1]:8000", "::1", 8000, True),
        ("[::1]:8000", "::1", 8001, False),
        ("*", "anything.at.all", 443, True),
        ("a.com other.org", "x.other.org", 443, True),
        ("a.com, ,b.com", "c.com", 443, False),
        ("", "api.openai.com", 443, False),
    ],
)
def test_no_proxy_rules(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypassed


def test_no_proxy_with_a_port_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost:8000")
    assert proxy_from_environment("http://localhost:8000/v1") is None
    assert proxy_from_environment("http://localhost:8001/v1") == "http://proxy.corp:3128"


# --- credentials on redirects -------------------------------------------------------

CREDENTIALS = {
    "api-key": "azure-secret",
    "x-api-key": "anthropic-style-secret",
    "x-goog-api-key": "gemini-secret",
    "X-Auth-Token": "token-secret",
    "Cookie": "session=cookie-secret",
}


@pytest.mark.parametrize("status", [307, 308])
async def test_a_redirect_to_another_origin_carries_no_credentials(status: int) -> None:
    async with MockServer() as elsewhere, MockServer() as origin:
        # Same address, another port: another origin.
        target = elsewhere.base_url.replace("127.0.0.1", "localhost") + "/chat/completions"
        origin.enqueue(status, "", headers={"Location": target})
        async with asyncchat.Client(
            base_url=origin.base_url,
            api_key=API_KEY,
            default_headers={**CREDENTIALS, "X-Trace": "kept"},
        ) as client:
            completion = await client.chat.completions.create(
                model="m", messages=USER, extra_headers={"X-Custom-Key": "extra-secret"}
            )
    assert completion.choices[0].message.content == "You said: hi"
    sent, forwarded = origin.requests[0].headers, elsewhere.requests[0].headers
    for name in (*CREDENTIALS, "Authorization", "X-Custom-Key"):
        assert name in sent
        assert name not in forwarded
    assert forwarded["X-Trace"] == "kept"
    assert elsewhere.requests[0].body["messages"] == USER  # 307/308 keep method and body


async def test_a_redirect_within_the_origin_keeps_the_credentials(server: MockServer) -> None:
    server.enqueue(307, "", headers={"Location": "/chat/completions"})
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, default_headers=CREDENTIALS
    ) as client:
        await client.chat.completions.create(model="m", messages=USER)
    first, second = server.requests
    assert first.path == "/v1/chat/completions" and second.path == "/chat/completions"
    for name in (*CREDENTIALS, "Authorization"):
        assert second.headers[name] == first.headers[name]


async def test_a_redirect_loop_is_an_error(server: MockServer) -> None:
    for _ in range(11):
        server.enqueue(307, "", headers={"Location": "/v1/chat/completions"})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        with pytest.raises(asyncchat.APIError, match="redirected more than 10 times"):
            await client.chat.completions.create(model="m", messages=USER)
    assert len(server.requests) == 11  # not retried


# --- streams that never end -----------------------------------------------------------

KEEPALIVES = {
    "comments": b": keep-alive\n\n",
    "OpenRouter's comments": b": OPENROUTER PROCESSING\n\n",
    "empty data lines": b"data: \n\n",
    "ping events": b"event: ping\ndata: {}\n\n",
    "a line trickling in": b"x",
}


@asynccontextmanager
async def endless_server(piece: bytes, first: bytes = b"") -> AsyncIterator[str]:
    """A stream that sends `first`, then `piece` every 20 ms, forever."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(**SSE) + (frame(first) if first else b""))
        if piece == b"x":
            writer.write(frame(b"data: {"))
        while True:
            writer.write(frame(piece))
            await writer.drain()
            await asyncio.sleep(0.02)

    async with raw_server(serve) as base_url:
        yield base_url


@pytest.mark.parametrize("kind", list(KEEPALIVES))
async def test_a_stream_of_keep_alives_ends_at_the_idle_timeout(kind: str) -> None:
    async with (
        endless_server(KEEPALIVES[kind], first=CHUNK) as base_url,
        asyncchat.Client(
            base_url=base_url,
            api_key=API_KEY,
            timeout=asyncchat.Timeout(read=30, idle=0.3),
            max_connections=1,
        ) as client,
    ):
        started = asyncio.get_running_loop().time()
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.APITimeoutError, match="idle timeout") as info:
            async with stream:
                async for _ in stream:
                    pass
        assert asyncio.get_running_loop().time() - started < 5
        assert info.value.partial is not None
        assert info.value.partial.choices[0].message.content == "hi"
        assert isinstance(client.transport, AiohttpTransport)
        assert client.transport.connections()[1] == 0


async def test_keep_alives_between_chunks_do_not_trip_the_idle_timeout() -> None:
    """Idle counts time without a chunk, not time since the stream began."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(**SSE))
        for _ in range(10):  # 1 s of stream, 0.1 s between chunks, comments in between
            for _ in range(5):
                writer.write(frame(b": keep-alive\n\n"))
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(frame(CHUNK))
        writer.write(frame(DONE) + b"0\r\n\r\n")
        await writer.drain()

    async with (
        raw_server(serve) as base_url,
        asyncchat.Client(
            base_url=base_url, api_key=API_KEY, timeout=asyncchat.Timeout(idle=0.3)
        ) as client,
    ):
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async with stream:
            async for _ in stream:
                pass
        assert stream.completion.choices[0].message.content == "hi" * 10


def test_timeout_defaults_and_coercion() -> None:
    assert asyncchat.Timeout() == asyncchat.Timeout(connect=10, read=600, total=None, idle=600)
    assert asyncchat.Timeout.coerce(5) == asyncchat.Timeout(connect=5, read=5, idle=5)
    assert asyncchat.Timeout.coerce(None).idle is None
    with pytest.raises(asyncchat.ConfigurationError, match=r"Timeout\.idle"):
        asyncchat.Timeout(idle=0)


# --- mislabelled and mis-encoded streams ----------------------------------------------


@pytest.mark.parametrize("label", ["application/json", "application/json; charset=utf-8"])
@pytest.mark.parametrize("first", [b"data: ", b": hello\n\n", b"\xef\xbb\xbfdata: ", b"\n\ndata: "])
async def test_an_event_stream_labelled_json_is_read_as_one(
    server: MockServer, label: str, first: bytes
) -> None:
    """Hand-written servers (FastAPI's StreamingResponse defaults) send SSE as JSON."""
    body = first + CHUNK.removeprefix(b"data: ") + CHUNK + DONE
    if first.endswith(b"\n\n"):
        body = first + CHUNK + CHUNK + DONE
    server.enqueue(200, body, headers={"Content-Type": label})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async with stream:
            texts = [chunk.choices[0].delta.content async for chunk in stream]
    assert texts == ["hi", "hi"]


async def test_a_json_answer_to_a_stream_is_held_to_the_size_cap(server: MockServer) -> None:
    big = COMPLETION.replace(b'"fine"', b'"' + b"x" * 2_000_000 + b'"')
    server.enqueue(200, big, headers={"Content-Type": "application/json"})
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_event_size=1_000_000
    ) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.EventTooLargeError, match="max_event_size"):
            async with stream:
                async for _ in stream:
                    pass
        # Under the cap, the same answer is one chunk.
        server.enqueue(200, COMPLETION, headers={"Content-Type": "application/json"})
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async with stream:
            assert [c.choices[0].delta.content async for c in stream] == ["fine"]


@pytest.mark.parametrize(
    "label, body, error, message",
    [
        ("application/json", b"", asyncchat.IncompleteStreamError, "with an empty body"),
        ("application/json", b" \r\n", asyncchat.IncompleteStreamError, "with an empty body"),
        ("text/event-stream", b": hi\n\ndata: [DONE]\n\n", asyncchat.MalformedStreamError,
         "before any chunk"),
        ("application/json", b"data: [DONE]\n\n", asyncchat.MalformedStreamError,
         "before any chunk"),
    ],
)  # fmt: skip
async def test_a_stream_with_no_chunk_is_no_answer(
    server: MockServer, label: str, body: bytes, error: type[Exception], message: str
) -> None:
    """A gateway's empty 200, or a proxy's `[DONE]` alone when its upstream failed, is
    no answer: it raises, as it does answering a call made without `stream`, never
    an empty completion; the client goes on."""
    server.enqueue(200, body, headers={"Content-Type": label})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(error, match=message) as caught:
            async with stream:
                async for _ in stream:
                    pass
        assert isinstance(caught.value, asyncchat.StreamError)
        assert caught.value.request_id == "mock-req-1" and caught.value.partial is None
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "You said: hi"
    if not body.strip():  # read to its end: the connection went back to the pool
        assert server.requests[0].peer == server.requests[1].peer


# --- a stream for a request that did not ask for one ----------------------------------


async def test_a_stream_answering_a_request_without_stream_is_assembled() -> None:
    """unsloth's server and mini-sglang stream whatever the request says."""
    style = StreamStyle(stream_always=True, keepalive=True)
    async with (
        MockServer(api_key=API_KEY, style=style) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "three words here"}]
        )
        assert completion.choices[0].message.content == "You said: three words here"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.request_id == "mock-req-1"
        assert completion.object == "chat.completion"
        assert "stream" not in server.requests[0].body
        calls = await client.chat.completions.create(
            model="m", messages=USER, tools=[{"type": "function", "function": {"name": "f"}}]
        )
        assert calls.choices[0].message.tool_calls[0].function.name == "f"


@pytest.mark.parametrize(
    "body, content",
    [
        (CHUNK + CHUNK + DONE, "hihi"),
        (b": ping\n\n" + CHUNK + b'data: {"choices": [{"index": 0, "delta": {}, '
         b'"finish_reason": "stop"}]}\n\n', "hi"),  # no [DONE], but finished
        (b"data: " + COMPLETION + b"\n\n" + DONE, "fine"),  # a whole answer as one event
        (COMPLETION + b"\n\n" + DONE, "fine"),  # JSON with a stream's end glued on
        (COMPLETION + b"\ndata:[DONE]", "fine"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("label", ["text/event-stream", "application/json"])
async def test_a_non_streamed_answer_framed_as_a_stream_is_read(
    server: MockServer, body: bytes, content: str, label: str
) -> None:
    server.enqueue(200, body, headers={"Content-Type": label})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == content


@pytest.mark.parametrize(
    "body, error, message",
    [
        (b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
         asyncchat.InternalServerError, "overloaded"),
        (CHUNK, asyncchat.IncompleteStreamError, "closed the stream before it finished"),
        (DONE, asyncchat.MalformedStreamError, "an event stream that carried no completion"),
        (b"data: not json\n\n", asyncchat.MalformedStreamError, "not JSON"),
    ],
)  # fmt: skip
async def test_a_broken_stream_answering_a_request_without_stream_raises(
    server: MockServer, body: bytes, error: type[Exception], message: str
) -> None:
    server.enqueue(200, body, headers={"Content-Type": "text/event-stream"})
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(error, match=message) as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert info.value.request_id == "mock-req-1"
    if error is asyncchat.IncompleteStreamError:
        assert info.value.partial.choices[0].message.content == "hi"  # what came is kept


BAD_UTF8 = b'data: {"choices": [{"index": 0, "delta": {"content": "caf\xe9 \xff"}}]}\n\n'


@pytest.mark.parametrize("split", [None, 10, 40, len(BAD_UTF8) - 3])
async def test_invalid_utf8_gets_one_outcome_however_it_is_split(split: int | None) -> None:
    """Replaced by U+FFFD, as the SSE standard decodes, in one read or several."""
    pieces = [BAD_UTF8 + DONE] if split is None else [BAD_UTF8[:split], BAD_UTF8[split:] + DONE]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(**SSE))
        for piece in pieces:
            writer.write(frame(piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with (
        raw_server(serve) as base_url,
        asyncchat.Client(base_url=base_url, api_key=API_KEY) as client,
    ):
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async with stream:
            texts = [chunk.choices[0].delta.content async for chunk in stream]
    assert texts == ["caf\ufffd \ufffd"]


# --- other event loops ---------------------------------------------------------------


async def test_the_suite_runs_on_the_loop_it_was_asked_for() -> None:
    """CI runs this file again with ASYNCCHAT_TEST_LOOP=uvloop: make sure it did."""
    loop = type(asyncio.get_running_loop())
    if os.environ.get("ASYNCCHAT_TEST_LOOP") == "uvloop":
        assert loop.__module__.startswith("uvloop"), loop
    else:
        assert loop.__module__.startswith("asyncio"), loop


def test_mock_server_and_client_on_uvloop() -> None:
    import uvloop  # in the test extra

    async def main() -> str:
        async with (
            MockServer() as server,
            asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
        ):
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            async with stream:
                return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert uvloop.run(main()) == "You said: hi"


# --- bodies without end ----------------------------------------------------------------


def endless_body(status: str, content_type: str, first: bytes, more: bytes) -> Handler:
    """A server answering with `status`, then a body of `first` and `more` forever."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, Content_Type=content_type, Transfer_Encoding="chunked"))
        writer.write(frame(first))
        while True:
            writer.write(frame(more * 65536))
            await writer.drain()

    return serve


async def test_an_endless_error_body_is_read_only_so_far() -> None:
    """A 500 whose body never ends (a runaway page): the error comes after 1 MiB."""
    page = endless_body("500 Internal Server Error", "text/html", b"<html>Something broke", b" ")
    async with (
        raw_server(page) as base_url,
        asyncchat.Client(base_url=base_url, api_key=API_KEY, max_retries=0) as client,
    ):
        with pytest.raises(asyncchat.InternalServerError, match="Something broke"):
            await asyncio.wait_for(client.chat.completions.create(model="m", messages=USER), 10)


async def test_an_endless_answer_stops_at_max_response_size() -> None:
    """A 200 whose JSON body never ends (a misconfigured proxy): an error at the cap,
    not a client that reads until the machine's memory runs out."""
    answer = endless_body("200 OK", "application/json", b'{"choices": [{"message": "', b"x")
    async with (
        raw_server(answer) as base_url,
        asyncchat.Client(base_url=base_url, api_key=API_KEY, max_response_size=1 << 20) as client,
    ):
        with pytest.raises(asyncchat.ResponseTooLargeError) as raised:
            await asyncio.wait_for(client.chat.completions.create(model="m", messages=USER), 10)
    assert str(raised.value) == (
        f"POST {base_url}/chat/completions answered with a body over max_response_size "
        "(1,048,576 bytes); the rest was not read"
    )


async def test_an_answer_at_max_response_size_is_read_and_one_byte_over_is_not(
    server: MockServer,
) -> None:
    at_cap = COMPLETION[:-1] + b', "padding": "' + b"x" * 1000 + b'"}'
    json = {"Content-Type": "application/json"}
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_response_size=len(at_cap)
    ) as client:
        server.enqueue(200, at_cap, headers=json)
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "fine"
        server.enqueue(200, at_cap[:-1] + b" }", headers=json)  # the same, a byte longer
        with pytest.raises(asyncchat.ResponseTooLargeError, match="max_response_size"):
            await client.chat.completions.create(model="m", messages=USER)
        assert len(server.requests) == 2  # not retried: the answer would be as large again
        server.enqueue(200, at_cap[:-1] + b" " * 200_000 + b"}", headers=json)
        with pytest.raises(asyncchat.ResponseTooLargeError, match="max_response_size"):
            await client.chat.completions.create(model="m", messages=USER)
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "You said: hi"
    # A byte over, the answer was read to its end and its connection served the next
    # request; far over, the rest was left unread and the connection closed.
    assert server.connection_count == 2


def test_max_response_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_response_size must be positive, got 0"):
        asyncchat.Client(base_url="http://127.0.0.1:1/v1", max_response_size=0)
