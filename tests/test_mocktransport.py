"""`MockTransport`: the client's whole stack, answered in-process with no socket."""

from __future__ import annotations

from typing import Any

import pytest

import asyncchat
from asyncchat.testing import MockResponse, MockServer, MockTransport

from .conftest import completion_json

USER = [{"role": "user", "content": "hi"}]
CHUNKS: list[dict[str, Any] | str] = [
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
    ": a comment, sent as it is\n\n",
    {"id": "c", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
]


def client_for(transport: MockTransport, **options: Any) -> asyncchat.Client:
    return asyncchat.Client(
        base_url="https://api.example.com/v1", api_key="sk-test", transport=transport, **options
    )


async def test_a_completion() -> None:
    def handler(request: asyncchat.testing.Request) -> MockResponse:
        assert request.method == "POST"
        assert request.url == "https://api.example.com/v1/chat/completions"
        assert request.headers["Authorization"] == "Bearer sk-test"
        assert request.json()["messages"] == USER
        return MockResponse(json=completion_json("hello"), headers={"x-request-id": "r-9"})

    transport = MockTransport(handler)
    async with client_for(transport) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "hello"
    assert completion.request_id == "r-9"
    assert [r.json()["model"] for r in transport.requests] == ["m"]


async def test_a_stream_every_way() -> None:
    async def handler(request: asyncchat.testing.Request) -> MockResponse:  # async works too
        return MockResponse(sse=CHUNKS)

    async with client_for(MockTransport(handler)) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async with stream:
            texts = [chunk.choices[0].delta.content async for chunk in stream]
        assert texts == ["Hel", "lo"]
        assert stream.completion.choices[0].finish_reason == "stop"
        assert [t async for t in client.chat.stream_text(model="m", messages=USER)] == ["Hel", "lo"]
        async with client.chat.stream(model="m", messages=USER) as events:
            kinds = [type(event).__name__ async for event in events]
        assert kinds == ["ContentDelta", "ContentDelta", "ChoiceFinished"]


async def test_errors_and_retries() -> None:
    answers = [
        MockResponse(429, json={"error": {"message": "slow"}}, headers={"Retry-After": "0"}),
        MockResponse(json=completion_json("after the 429")),
        MockResponse(400, json={"error": {"message": "bad model", "code": "bad"}}),
    ]
    transport = MockTransport(lambda request: answers.pop(0))
    async with client_for(transport) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "after the 429"
        with pytest.raises(asyncchat.BadRequestError, match="bad model") as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert info.value.code == "bad"
    assert len(transport.requests) == 3


@pytest.mark.parametrize("error", [asyncchat.APIConnectionError, asyncchat.ConnectError])
async def test_a_network_failure_is_played_by_raising(error: type[Exception]) -> None:
    def handler(request: asyncchat.testing.Request) -> MockResponse:
        raise error("the network is down")

    transport = MockTransport(handler)
    async with client_for(transport, max_retries=1) as client:
        with pytest.raises(error, match="network is down") as info:
            await client.chat.completions.create(model="m", messages=USER)
    assert type(info.value) is error  # raised as itself, after its retries
    assert len(transport.requests) == 2  # retried once


async def test_a_broken_stream_keeps_what_arrived() -> None:
    transport = MockTransport(lambda request: MockResponse(sse=CHUNKS[:1], done=False))
    async with client_for(transport) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(asyncchat.IncompleteStreamError) as info:
            async with stream:
                async for _ in stream:
                    pass
    assert info.value.partial is not None
    assert info.value.partial.choices[0].message.content == "Hel"


async def test_the_same_answer_through_the_mock_server(server: MockServer) -> None:
    server.enqueue(sse=CHUNKS)
    async with asyncchat.Client(base_url=server.base_url, api_key="k") as client:
        texts = [t async for t in client.chat.stream_text(model="m", messages=USER)]
    assert texts == ["Hel", "lo"]


async def test_a_handler_must_answer_with_a_mock_response() -> None:
    transport = MockTransport(lambda request: {"not": "a MockResponse"})  # type: ignore[arg-type,return-value]
    async with client_for(transport) as client:
        with pytest.raises(TypeError, match="must return a MockResponse"):
            await client.chat.completions.create(model="m", messages=USER)


async def test_headers_of_a_completion() -> None:
    answer = MockResponse(
        json=completion_json("x"), headers={"X-RateLimit-Remaining-Requests": "9"}
    )
    async with client_for(MockTransport(lambda request: answer)) as client:
        completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.headers["x-ratelimit-remaining-requests"] == "9"
    assert asyncchat.ChatCompletion({}).headers == {}
