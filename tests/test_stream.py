"""Streaming over the loopback MockServer: chunks, server styles, errors, and no leaks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, get_args

import pytest

import asyncchat
from asyncchat._transport import AiohttpTransport
from asyncchat.testing import MockServer, StreamStyle, ToolCallStyle

from .conftest import API_KEY, completion_json

USER = [{"role": "user", "content": "one two three four five"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "hours": {"type": "integer"}},
        },
    },
}
TOOL_MESSAGES = [{"role": "user", "content": "get_current_weather and get_time in Paris"}]
EXPECTED_CALLS = [
    ("get_current_weather", {"location": "Paris", "unit": "celsius"}),
    ("get_time", {"zone": "Paris", "hours": 1}),
]


async def open_stream(client: asyncchat.Client) -> asyncchat.ChatCompletionStream:
    return await client.chat.completions.create(model="m", messages=USER, stream=True)


async def consume(stream: asyncchat.ChatCompletionStream) -> None:
    async for _ in stream:
        pass


def pooled_connections(client: asyncchat.Client) -> int:
    """Connections the pool holds: idle ones plus those in use."""
    transport = client.transport
    assert isinstance(transport, AiohttpTransport)
    return sum(transport.connections())


async def test_content_stream(client: asyncchat.Client, server: MockServer) -> None:
    stream = await open_stream(client)
    pieces = []
    async with stream:
        async for chunk in stream:
            assert isinstance(chunk, asyncchat.ChatCompletionChunk)
            assert chunk.request_id == stream.request_id
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "You said: one two three four five"
    assert len(pieces) == 7
    completion = stream.completion
    assert completion.choices[0].message.content == "You said: one two three four five"
    assert completion.choices[0].finish_reason == "stop"
    assert stream.finished
    request = server.requests[0]
    assert request.body["stream"] is True
    assert request.headers["Accept"] == "text/event-stream"


async def test_usage_chunk(client: asyncchat.Client) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert stream.completion.usage is not None
    assert stream.completion.usage.completion_tokens == 7


@pytest.mark.parametrize("asked", [False, True])
@pytest.mark.parametrize("style", ["in_choice", "x_groq"])
async def test_usage_where_moonshot_and_groq_send_it(
    client: asyncchat.Client, server: MockServer, style: Any, asked: bool
) -> None:
    """Moonshot reports usage inside the finishing choice, Groq in the finishing
    chunk's `x_groq` (and, asked with `stream_options`, in a last chunk too): the
    completion has it either way."""
    server.style = StreamStyle(usage=style)
    options = {"stream_options": {"include_usage": True}} if asked else {}
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True, **options)
    async with stream:
        chunks = [chunk async for chunk in stream]
    finishing = chunks[-2] if asked and style == "x_groq" else chunks[-1]
    assert finishing.choices[0].finish_reason == "stop"
    usage = stream.completion.usage
    assert usage is not None and usage.completion_tokens == 7
    assert usage.total_tokens == usage.prompt_tokens + 7 and usage.prompt_tokens > 0


async def test_a_choices_own_fields_are_kept_as_a_non_streamed_answer_has_them(
    client: asyncchat.Client, server: MockServer
) -> None:
    """vLLM tells which stop string ended an answer (`stop_reason`), SGLang
    `matched_stop`, Azure its filter's results: on the choice of the finishing chunk."""

    def event(choice: dict[str, Any]) -> str:
        chunk = {"id": "c1", "model": "m", "created": 1, "choices": [choice]}
        return f"data: {json.dumps(chunk)}\n\n"

    filtered = {"hate": {"filtered": False, "severity": "safe"}}
    server.enqueue_stream(
        event({"index": 0, "delta": {"content": "1, 2"}, "finish_reason": None,
               "stop_reason": None})
        + event({"index": 1, "delta": {"content": "a"}, "finish_reason": None})
        + event({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": ", 3",
                 "content_filter_results": filtered})
        + event({"index": 1, "delta": {}, "finish_reason": "stop", "matched_stop": 128009})
        + "data: [DONE]\n\n"
    )  # fmt: skip
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        async for _ in stream:
            pass
    first, second = stream.completion.choices
    assert first.to_dict() == {
        "index": 0,
        "message": {"role": "assistant", "content": "1, 2"},
        "finish_reason": "stop",
        "logprobs": None,
        "stop_reason": ", 3",
        "content_filter_results": filtered,
    }
    assert first.stop_reason == ", 3"  # type: ignore[attr-defined]
    assert second.matched_stop == 128009  # type: ignore[attr-defined]
    assert "stop_reason" not in second.to_dict()


async def test_azure_filter_annotations_name_no_answer(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Azure opens a stream with its filter's results on the prompt and annotates the
    answer after its finish, in chunks whose id and model are empty: the completion
    keeps the answer's own, and the prompt's results."""
    server.style = StreamStyle(filter_annotations=True)
    stream = await open_stream(client)
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert [chunk.model for chunk in chunks[:2]] == ["", "m"]
    assert chunks[-1].model == "" and chunks[-1].choices[0].content_filter_offsets
    completion = stream.completion
    assert completion.id == chunks[1].id and completion.id.startswith("chatcmpl-")
    assert (completion.model, completion.created) == ("m", chunks[1].created)
    assert completion.choices[0].message.content == "You said: one two three four five"
    assert completion.choices[0].finish_reason == "stop"
    [prompt] = completion.prompt_filter_results
    assert prompt["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}


@pytest.mark.parametrize("style", get_args(ToolCallStyle))
async def test_tool_call_streams_in_every_server_style(
    client: asyncchat.Client, server: MockServer, style: Any
) -> None:
    server.style = StreamStyle(tool_calls=style, argument_fragment_size=3)
    stream = await client.chat.completions.create(
        model="m", messages=TOOL_MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL], stream=True
    )
    async with stream:
        fragments = [
            chunk.choices[0].delta.tool_calls
            async for chunk in stream
            if chunk.choices and chunk.choices[0].delta.tool_calls
        ]
    if style not in ("whole", "object_arguments"):
        assert len(fragments) > 10  # really fragmented
    message = stream.completion.choices[0].message
    assert message.tool_calls is not None
    calls = [(call.function.name, call.function.parsed_arguments()) for call in message.tool_calls]
    assert calls == EXPECTED_CALLS
    assert [call.id for call in message.tool_calls] == ["call_mock_1_0", "call_mock_1_1"]
    assert stream.completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "style",
    [
        StreamStyle(line_ending="\r\n"),
        StreamStyle(line_ending="\r"),
        StreamStyle(keepalive=True),
        StreamStyle(send_done=False),
        StreamStyle(events_per_write=50),
        StreamStyle(reasoning="reasoning_content"),
        StreamStyle(reasoning="reasoning"),
    ],
    ids=["crlf", "cr", "keepalive", "no-done", "batched-writes", "reasoning_content", "reasoning"],
)
async def test_server_styles(
    client: asyncchat.Client, server: MockServer, style: StreamStyle
) -> None:
    server.style = style
    stream = await open_stream(client)
    texts = [
        chunk.choices[0].delta.content
        async for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert "".join(texts) == "You said: one two three four five"
    message = stream.completion.choices[0].message
    if style.reasoning:
        assert message.reasoning_content == "Let me think."
    assert stream.finished


async def test_no_done_and_no_finish_reason_is_an_incomplete_stream(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(send_done=False, send_finish_reason=False)
    stream = await open_stream(client)
    received = []
    with pytest.raises(asyncchat.IncompleteStreamError, match="closed the stream before") as info:
        async for chunk in stream:
            received.append(chunk)
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "You said: one two three four five"
    assert info.value.request_id == stream.request_id


async def test_error_event_mid_stream_keeps_what_arrived(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(error_after=3)
    stream = await open_stream(client)
    with pytest.raises(asyncchat.InternalServerError, match="mock server error") as info:
        async with stream:
            await consume(stream)
    error = info.value
    assert "in the stream" in str(error)
    assert error.partial is not None
    assert error.partial.choices[0].message.content == "You said:"
    assert error.request_id == "mock-req-1"


async def test_connection_dropped_mid_stream(client: asyncchat.Client, server: MockServer) -> None:
    server.style = StreamStyle(drop_after=4)
    stream = await open_stream(client)
    texts = []
    with pytest.raises(asyncchat.StreamError) as info:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content)
    assert "".join(texts) == "You said: one"
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "You said: one"
    assert stream.completion.choices[0].message.content == "You said: one"


async def test_stall_past_the_read_timeout(server: MockServer) -> None:
    """A stall ends the stream no sooner than the read timeout; what came is kept,
    and the stalled connection is not reused."""
    server.style = StreamStyle(tokens=3, chunk_delay=3.0)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, timeout=asyncchat.Timeout(connect=1, read=0.3)
    ) as client:
        stream = await open_stream(client)
        await stream.__anext__()  # the first chunk; the next comes 3 s later
        waited_from = time.monotonic()
        with pytest.raises(asyncchat.APITimeoutError, match="read timeout") as info:
            await consume(stream)
        assert time.monotonic() - waited_from >= 0.3
        assert info.value.partial is not None
        assert info.value.partial.choices[0].message.role == "assistant"
        assert pooled_connections(client) == 0


async def test_silence_while_the_reader_is_busy_is_not_a_read_timeout(
    server: MockServer,
) -> None:
    """The read timeout counts a reader's wait for bytes, not the time the server
    is quiet while the reader is busy: each chunk here is in the buffer before the
    reader asks for it, though the server pauses longer than the timeout."""
    server.style = StreamStyle(tokens=3, chunk_delay=0.3)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, timeout=asyncchat.Timeout(read=0.2)
    ) as client:
        stream = await open_stream(client)
        async for _ in stream:
            await asyncio.sleep(0.45)  # slower than the server
        assert stream.finished


async def test_waits_shorter_than_the_read_timeout_go_on(server: MockServer) -> None:
    server.style = StreamStyle(tokens=5, chunk_delay=0.1)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, timeout=asyncchat.Timeout(read=0.2)
    ) as client:
        stream = await open_stream(client)
        await consume(stream)
        assert stream.finished


async def test_the_read_timeout_stops_with_the_stream(server: MockServer) -> None:
    """However a stream ends, its read-timeout timer is cancelled with it: no timer
    outlives the stream, keeping its reader alive and firing into it."""
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, timeout=asyncchat.Timeout(read=30)
    ) as client:
        for end in ("read to the end", "closed early", "cancelled mid-read", "dropped"):
            # The cancelled read waits on a server that pauses 10 s after the first chunk.
            delay = 10.0 if end == "cancelled mid-read" else 0.01
            server.style = StreamStyle(tokens=5, chunk_delay=delay)
            stream = await open_stream(client)
            response = stream._response
            timer = response._read_timeout  # type: ignore[attr-defined]
            assert timer is not None
            handle = timer._handle
            assert handle is not None and not handle.cancelled()
            if end == "read to the end":
                await consume(stream)
            elif end == "closed early":
                await stream.__anext__()
                await stream.close()
            elif end == "cancelled mid-read":
                await stream.__anext__()
                task = asyncio.create_task(stream.__anext__())
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                await stream.__anext__()
                del stream  # collected without close(): __del__ closes the connection
            assert response._read_timeout is None, end  # type: ignore[attr-defined]
            assert handle.cancelled(), end


async def test_server_that_ignores_stream_true(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue(200, completion_json("whole"))
    stream = await open_stream(client)
    chunks = [chunk async for chunk in stream]
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["whole"]
    assert stream.completion.choices[0].message.content == "whole"


async def test_html_instead_of_a_stream(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(
        200, "<html><body>Please log in</body></html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(asyncchat.MalformedStreamError, match=r"HTML page.*Please log in"):
        await open_stream(client)


async def test_malformed_json_chunk(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue_stream('data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: {"broken\n\n')
    stream = await open_stream(client)
    with pytest.raises(asyncchat.MalformedStreamError, match=r"not JSON.*broken") as info:
        await consume(stream)
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "ok"


async def test_vllm_and_event_error_shapes(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue_stream(
        'data: {"object": "error", "message": "context too long", '
        '"type": "BadRequestError", "code": 400}\n\n'
    )
    stream = await open_stream(client)
    with pytest.raises(asyncchat.BadRequestError, match="context too long"):
        await consume(stream)
    server.enqueue_stream("event: error\ndata: upstream overloaded\n\n")
    stream = await open_stream(client)
    with pytest.raises(asyncchat.InternalServerError, match="upstream overloaded"):
        await consume(stream)


async def test_nothing_after_an_error_event_in_the_same_read(
    client: asyncchat.Client, server: MockServer
) -> None:
    chunk = 'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}\n\n'
    server.enqueue_stream(
        chunk % "before" + 'data: {"error": {"message": "overloaded"}}\n\n' + chunk % "after"
    )
    stream = await open_stream(client)
    assert (await stream.__anext__()).choices[0].delta.content == "before"
    with pytest.raises(asyncchat.APIError, match="overloaded") as info:
        await stream.__anext__()
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "before"
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()  # a caller that goes on gets nothing more


async def test_done_twice_and_without_blank_line(
    client: asyncchat.Client, server: MockServer
) -> None:
    late = 'data: {"choices": [{"index": 0, "delta": {"content": "late"}}]}\n\n'
    body = (
        'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n'
        f"data: [DONE]\n\n{late}data: [DONE]\n\n"
    )
    server.enqueue_stream(body)
    stream = await open_stream(client)
    assert [chunk.choices[0].delta.content async for chunk in stream] == ["a"]
    assert stream.completion.choices[0].message.content == "a"
    # The same after an event the fast path declines (a comment line).
    server.enqueue_stream(body.replace("data: [DONE]", ": end\ndata: [DONE]", 1))
    stream = await open_stream(client)
    assert [chunk.choices[0].delta.content async for chunk in stream] == ["a"]
    server.enqueue_stream(
        'data: {"choices": [{"index": 0, "delta": {"content": "b"}}]}\n\ndata: [DONE]'
    )
    stream = await open_stream(client)
    assert [chunk.choices[0].delta.content async for chunk in stream] == ["b"]
    assert stream.finished


async def test_event_size_cap(server: MockServer) -> None:
    server.enqueue_stream("data: " + "x" * 5000 + "\n\n")
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_event_size=1024
    ) as client:
        stream = await open_stream(client)
        with pytest.raises(asyncchat.EventTooLargeError, match="1024 bytes"):
            await consume(stream)


async def test_retried_before_the_first_byte_only(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue(503, {"error": {"message": "warming up"}})
    stream = await open_stream(client)
    async with stream:
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(t for t in texts if t) == "You said: one two three four five"
    assert len(server.requests) == 2
    # Broken after the first byte: raised, never retried (no duplicated tokens).
    server.style = StreamStyle(drop_after=3)
    stream = await open_stream(client)
    with pytest.raises(asyncchat.StreamError):
        await consume(stream)
    assert len(server.requests) == 3


async def test_finished_streams_return_their_connection_to_the_pool(
    client: asyncchat.Client, server: MockServer
) -> None:
    for _ in range(20):
        stream = await open_stream(client)
        async with stream:
            await consume(stream)
    assert server.connection_count == 1


@pytest.mark.slow
async def test_1000_early_exits_leak_nothing(server: MockServer) -> None:
    asyncio.get_running_loop().set_debug(True)  # aiohttp then warns of any unclosed response
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_connections=10
    ) as client:
        for i in range(1000):
            stream = await open_stream(client)
            if i % 3 == 0:
                async with stream:
                    async for _ in stream:
                        break
            elif i % 3 == 1:
                async for _ in stream:
                    break  # no async with: the stream is closed when dropped
                del stream
            else:
                await stream.close()
            assert pooled_connections(client) <= 10
        # The pool still works.
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "You said: one two three four five"


async def test_task_cancellation_releases_the_connection(server: MockServer) -> None:
    asyncio.get_running_loop().set_debug(True)
    server.style = StreamStyle(chunk_delay=0.01)
    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, max_connections=5
    ) as client:

        async def open_and_read() -> None:
            stream = await open_stream(client)
            async with stream:
                await consume(stream)

        for _ in range(50):
            task = asyncio.create_task(open_and_read())
            await asyncio.sleep(0.015)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pooled_connections(client) <= 5
        server.style = StreamStyle()
        await open_and_read()
