"""Fan-out: chat.batch and chat.as_completed, their concurrency, rate limits and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

import asyncchat
from asyncchat._ratelimit import RateLimiter
from asyncchat._transport import AiohttpTransport
from asyncchat.testing import MockServer

from .conftest import API_KEY, openrouter_429


def request(i: int, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"n{i}"}], **extra}


def in_use(client: asyncchat.Client) -> int:
    transport = client.transport
    assert isinstance(transport, AiohttpTransport)
    return transport.connections()[1]


async def test_batch_keeps_input_order(client: asyncchat.Client, server: MockServer) -> None:
    server.delay = 0.005
    results = await client.chat.batch([request(i) for i in range(50)], concurrency=8)
    assert [r.choices[0].message.content for r in results] == [  # type: ignore[union-attr]
        f"You said: n{i}" for i in range(50)
    ]
    assert len(server.requests) == 50


async def test_concurrency_is_never_exceeded(client: asyncchat.Client, server: MockServer) -> None:
    server.delay = 0.02
    await client.chat.batch([request(i) for i in range(40)], concurrency=5)
    assert server.max_in_flight == 5


async def test_failures_stay_in_place(client: asyncchat.Client, server: MockServer) -> None:
    requests = [request(i) for i in range(10)]
    requests[3] = request(3, extra_headers={"Authorization": "Bearer wrong"})
    requests[6] = {"model": "m", "messages": []}
    requests[8] = request(8, stream=True)
    results = await client.chat.batch(requests, concurrency=4)
    assert isinstance(results[3], asyncchat.AuthenticationError)
    assert isinstance(results[6], ValueError)
    assert isinstance(results[8], ValueError)
    assert "stream=True" in str(results[8])
    good = [i for i in range(10) if i not in (3, 6, 8)]
    for i in good:
        result = results[i]
        assert isinstance(result, asyncchat.ChatCompletion)
        assert result.choices[0].message.content == f"You said: n{i}"


async def test_return_exceptions_false_raises_and_cancels_the_rest(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.delay = 0.05
    requests = [request(0, extra_headers={"Authorization": "Bearer wrong"})]
    requests += [request(i) for i in range(1, 100)]
    with pytest.raises(asyncchat.AuthenticationError):
        await client.chat.batch(requests, concurrency=4, return_exceptions=False)
    assert in_use(client) == 0  # the rest were cancelled before batch() raised
    await asyncio.sleep(0.1)
    assert len(server.requests) < 20


async def test_as_completed_yields_as_they_finish(
    client: asyncchat.Client, server: MockServer
) -> None:
    seen = {}
    async for index, result in client.chat.as_completed(
        [request(i) for i in range(20)], concurrency=6
    ):
        assert isinstance(result, asyncchat.ChatCompletion)
        seen[index] = result.choices[0].message.content
    assert seen == {i: f"You said: n{i}" for i in range(20)}


async def test_async_input_is_read_lazily(client: asyncchat.Client, server: MockServer) -> None:
    server.delay = 0.01
    pulled = 0

    async def requests() -> AsyncIterator[dict[str, Any]]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield request(i)

    got = 0
    async with aclosing(client.chat.as_completed(requests(), concurrency=3)) as results:
        async for _index, result in results:
            assert isinstance(result, asyncchat.ChatCompletion)
            got += 1
            if got == 10:
                break
    # Never much more than what was consumed plus what was in flight.
    assert pulled <= 10 + 2 * 3
    assert in_use(client) == 0


async def test_cancelling_the_caller_releases_every_connection(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.delay = 5.0  # requests hang until cancelled
    task = asyncio.create_task(client.chat.batch([request(i) for i in range(30)], concurrency=10))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if server.in_flight == 10:
            break
    assert server.in_flight == 10
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_use(client) == 0
    server.delay = 0
    result = await client.chat.completions.create(**request(99))
    assert result.choices[0].message.content == "You said: n99"


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.frozen = False

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Sleepers wake in the order they slept; each moves time to its own wake-up.
        self.sleeps.append(seconds)
        wake_at = self.now + seconds
        await asyncio.sleep(0)
        if not self.frozen:
            self.now = max(self.now, wake_at)


async def test_requests_per_minute_ceiling(client: asyncchat.Client, server: MockServer) -> None:
    clock = FakeClock()
    client._clock, client._sleep = clock, clock.sleep  # type: ignore[method-assign]
    starts: list[float] = []
    original = client.transport.send

    async def recording_send(*args: Any, **kwargs: Any) -> Any:
        starts.append(clock.now)
        return await original(*args, **kwargs)

    client.transport.send = recording_send  # type: ignore[method-assign]
    await client.chat.batch(
        [request(i) for i in range(30)], concurrency=30, requests_per_minute=120
    )
    starts.sort()
    assert len(starts) == 30
    # 120 a minute is one every half second: no window of 60 s holds more than 121.
    assert starts[-1] - starts[0] >= 29 * 0.5 - 1e-6
    for first in range(len(starts)):
        assert sum(1 for s in starts if starts[first] <= s < starts[first] + 0.5) <= 2


@pytest.mark.parametrize("asked_by", ["retry-after", "openrouter-body", "gemini-body"])
async def test_429_retry_after_pauses_every_worker(
    client: asyncchat.Client, server: MockServer, asked_by: str
) -> None:
    clock = FakeClock()
    clock.frozen = True  # time stands still: every start after the 429 must wait for it
    client._clock, client._sleep = clock, clock.sleep  # type: ignore[method-assign]
    if asked_by == "retry-after":
        server.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"})
    elif asked_by == "openrouter-body":  # the spent budget's reset, in Unix ms
        server.enqueue(429, openrouter_429(time.time() + 7, window="free-models-per-min"))
    else:  # Gemini: a google.rpc.RetryInfo detail, in a list of one error
        pause = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
        server.enqueue(429, [{"error": {"message": "slow down", "details": [pause]}}])
    results = await client.chat.batch([request(i) for i in range(8)], concurrency=4)
    assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
    # The limited request retried once; it and every request started after it waited 7 s.
    assert len(server.requests) == 9
    long_waits = [s for s in clock.sleeps if s == pytest.approx(7.0, abs=0.5)]
    assert len(long_waits) >= 5, clock.sleeps


async def test_a_429_slows_the_fan_outs_limit(client: asyncchat.Client, server: MockServer) -> None:
    """Every 429 reaches the limit, with or without Retry-After; a fixed one ignores it."""
    clock = FakeClock()
    client._clock, client._sleep = clock, clock.sleep  # type: ignore[method-assign]
    for adaptive in (True, False):
        server.enqueue(429, {"error": {"message": "slow down"}})  # no Retry-After
        limit = RateLimiter(requests_per_minute=6000, adaptive=adaptive)
        results = await client.chat.batch([request(i) for i in range(4)], rate_limit=limit)
        assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
        if adaptive:
            assert limit.slowdown is not None and limit.slowdown.multiplier > 1
        else:
            assert limit.slowdown is None


async def test_a_429_for_a_request_too_large_neither_pauses_nor_slows_the_others(
    client: asyncchat.Client, server: MockServer
) -> None:
    """A request larger than the whole budget (OpenAI's words, Groq's Retry-After) fails
    alone: the pace was not what the server refused, so the others go on as before."""
    clock = FakeClock()
    clock.frozen = True  # time stands still: a pause would show as a sleep
    client._clock, client._sleep = clock, clock.sleep  # type: ignore[method-assign]
    error = {"message": "Request too large for gpt-4o in organization org-x on tokens per "
             "min (TPM): Limit 30000, Requested 250011. The input or output tokens must be "
             "reduced in order to run successfully.", "type": "tokens",
             "code": "rate_limit_exceeded"}  # fmt: skip
    server.enqueue(429, {"error": error}, headers={"Retry-After": "7"})
    limit = RateLimiter(requests_per_minute=6000)
    results = await client.chat.batch([request(i) for i in range(8)], rate_limit=limit)
    assert [type(result) for result in results].count(asyncchat.RateLimitError) == 1
    assert len(server.requests) == 8  # the large one sent once, the others once each
    assert limit.slowdown is not None and limit.slowdown.multiplier == 1
    assert not any(s >= 1 for s in clock.sleeps), clock.sleeps


SPENT = {
    "openai": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"},
    # Cerebras names the window: here its per-minute token budget is spent.
    "cerebras": {
        "x-ratelimit-remaining-requests-day": "14000",
        "x-ratelimit-reset-requests-day": "33011.38",
        "x-ratelimit-remaining-tokens-minute": "0",
        "x-ratelimit-reset-tokens-minute": "90.0",
    },
}


@pytest.mark.parametrize("names", SPENT)
async def test_ratelimit_headers_pause_the_fan_out(
    client: asyncchat.Client, server: MockServer, names: str
) -> None:
    clock = FakeClock()
    client._clock, client._sleep = clock, clock.sleep  # type: ignore[method-assign]
    server.enqueue(200, None, headers=SPENT[names])
    # The first answer says the budget is spent: the next starts wait for the reset.
    await client.chat.batch([request(i) for i in range(3)], concurrency=1)
    assert any(s >= 89.9 for s in clock.sleeps), clock.sleeps


async def test_bad_arguments(client: asyncchat.Client) -> None:
    with pytest.raises(TypeError, match="iterable of request dicts"):
        await client.chat.batch(request(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        await client.chat.batch([request(0)], concurrency=0)
    results = await client.chat.batch(["not a dict"])  # type: ignore[list-item]
    assert isinstance(results[0], TypeError)


async def test_each_request_keeps_its_own_retries(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY, max_retries=1) as client:
        client._sleep = FakeClock().sleep  # type: ignore[method-assign]
        server.enqueue(500, {"error": {"message": "flaky"}})
        server.enqueue(500, {"error": {"message": "flaky"}})
        results = await client.chat.batch([request(0)], concurrency=1)
    assert isinstance(results[0], asyncchat.InternalServerError)
    assert len(server.requests) == 2
