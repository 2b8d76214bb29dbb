"""The client's seams: observers see every attempt; a rate limit can be shared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import asyncchat
from asyncchat._ratelimit import RateLimiter
from asyncchat.testing import MockResponse, MockTransport

from .conftest import completion_json

USER = [{"role": "user", "content": "hi"}]


class Recorder:
    """An observer that writes down what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def request_started(self, request: asyncchat.Request, attempt: int) -> None:
        self.seen.append(("started", request.method, request.url.rsplit("/", 1)[1], attempt))

    def request_succeeded(
        self, request: asyncchat.Request, response: asyncchat.Response, seconds: float
    ) -> None:
        assert seconds >= 0
        self.seen.append(("succeeded", response.status))

    def request_failed(
        self,
        request: asyncchat.Request,
        attempt: int,
        error: asyncchat.APIError,
        seconds: float,
        retry_in: float | None,
    ) -> None:
        self.seen.append(("failed", type(error).__name__, attempt, retry_in is not None))


async def no_sleep(seconds: float) -> None:
    pass


async def test_observers_see_every_attempt_of_every_endpoint() -> None:
    answers = [
        MockResponse(500, json={"error": {"message": "oops"}}),
        MockResponse(json=completion_json("ok")),
        MockResponse(sse=[{"choices": [{"index": 0, "delta": {"content": "s"}}]}]),
        MockResponse(json={"data": [{"id": "m"}]}),
        MockResponse(401, json={"error": {"message": "no"}}),
    ]
    recorder = Recorder()
    async with asyncchat.Client(
        base_url="https://api.example.com/v1",
        api_key="k",
        transport=MockTransport(lambda request: answers.pop(0)),
        observers=[recorder],
        sleep=no_sleep,
    ) as client:
        await client.chat.completions.create(model="m", messages=USER)
        async for _ in client.chat.stream_text(model="m", messages=USER):
            pass
        await client.models.list()
        with pytest.raises(asyncchat.AuthenticationError):
            await client.models.list()
    assert recorder.seen == [
        ("started", "POST", "completions", 0),
        ("failed", "InternalServerError", 0, True),
        ("started", "POST", "completions", 1),
        ("succeeded", 200),
        ("started", "POST", "completions", 0),
        ("succeeded", 200),
        ("started", "GET", "models", 0),
        ("succeeded", 200),
        ("started", "GET", "models", 0),
        ("failed", "AuthenticationError", 0, False),
    ]


class CountingLimit(RateLimiter):
    """A rate limit of one's own (here the in-process one, counting its bookings)."""

    def __init__(self) -> None:
        super().__init__(requests_per_minute=600)
        self.reserved = 0
        self.observed: list[Mapping[str, str]] = []

    def reserve(self, now: float, tokens: int = 0) -> float:
        self.reserved += 1
        return super().reserve(now, tokens)

    def observe(self, headers: Mapping[str, str], now: float) -> list[str]:
        self.observed.append(headers)
        return super().observe(headers, now)


async def test_one_rate_limit_shared_by_two_fan_outs() -> None:
    shared = CountingLimit()
    transport = MockTransport(lambda request: MockResponse(json=completion_json("x")))
    requests = [{"model": "m", "messages": USER}] * 5
    async with asyncchat.Client(
        base_url="https://api.example.com/v1", api_key="k", transport=transport, sleep=no_sleep
    ) as client:
        await client.chat.batch(requests, rate_limit=shared)
        async for _ in client.chat.as_completed(requests, rate_limit=shared):
            pass
        with pytest.raises(ValueError, match="not both"):
            await client.chat.batch(requests, rate_limit=shared, requests_per_minute=10)
    assert shared.reserved == 10 and len(shared.observed) == 10
