"""RedisRateLimit against a real redis-server on a loopback port: several limiters
(each its own connection, as separate processes have) share one schedule."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio

import asyncchat
from asyncchat._ratelimit import SLOWDOWN_STEP
from asyncchat.redislimit import RedisRateLimit, limit_name
from asyncchat.testing import MockServer

from .conftest import API_KEY, free_port

ROOT = Path(__file__).resolve().parent.parent


def limiter(url: str, name: str, **options: object) -> RedisRateLimit:
    return RedisRateLimit(url, name=name, **options)  # type: ignore[arg-type]


async def test_two_processes_share_one_schedule(redis_url: str) -> None:
    """Slots booked by two limiters (two processes) are never closer than the limit."""
    first = limiter(redis_url, "shared", requests_per_minute=600, lease=3)  # 0.1 s a request
    second = limiter(redis_url, "shared", requests_per_minute=600, lease=3)
    planned: list[float] = []
    longest_booking = 0.0  # each process turns Redis's wait into a time on its own clock
    # when the answer arrives, so two processes' slots can be closer by a round trip

    async def book(limit: RedisRateLimit) -> None:
        nonlocal longest_booking
        async with limit._lock:
            started = time.monotonic()
            planned.append(await limit._slot(0))
            longest_booking = max(longest_booking, time.monotonic() - started)

    async with first, second:
        for _ in range(6):
            await asyncio.gather(book(first), book(second))
        assert first.round_trips + second.round_trips == 4  # 12 requests, 3 a lease
        assert first.members == 2 or second.members == 2
    planned.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(planned)]
    assert len(planned) == 12
    assert min(gaps) >= 0.1 - longest_booking - 0.002  # never faster than 600 a minute
    assert planned[-1] - planned[0] < 11 * 0.1 + 0.5  # and not much slower


async def test_tokens_are_reserved_and_reconciled(redis_url: str) -> None:
    async with limiter(redis_url, "tokens", tokens_per_minute=60_000, lease=1) as limit:
        client = redis.asyncio.Redis.from_url(redis_url)
        first = await limit._slot(1000)  # 1000 tokens: 1 s of the budget
        second = await limit._slot(1000)
        assert second - first == pytest.approx(1.0, abs=0.01)
        limit.correct_tokens(estimated=1000, actual=3000)  # it used 2000 more
        third = await limit._slot(1000)
        assert third - second == pytest.approx(3.0, abs=0.01)  # the difference is paid
        assert await client.exists("asyncchat:ratelimit:tokens:tokens")
        await client.aclose()


async def test_a_tokens_only_limit_leases_too(redis_url: str) -> None:
    async with limiter(redis_url, "tokens-only", tokens_per_minute=6_000_000, lease=4) as limit:
        for _ in range(8):
            await limit._slot(100)
        assert limit.round_trips == 2  # 8 requests, 4 a round trip


async def test_a_pause_holds_every_process(redis_url: str) -> None:
    first = limiter(redis_url, "pause", requests_per_minute=6000, lease=1)
    second = limiter(redis_url, "pause", requests_per_minute=6000, lease=1)
    async with first, second:
        await first._slot(0)
        first.pause(first._clock() + 2.0)  # a 429 said: wait 2 s
        await asyncio.gather(*first._pending)
        waited = await second._slot(0) - second._clock()
    assert 1.5 < waited <= 2.0


async def test_a_429_slows_every_process_and_only_once_a_burst(redis_url: str) -> None:
    first = limiter(redis_url, "slow", requests_per_minute=600, lease=1)  # 0.1 s a request
    second = limiter(redis_url, "slow", requests_per_minute=600, lease=1)
    fixed = limiter(redis_url, "slow-fixed", requests_per_minute=600, lease=1, adaptive=False)
    async with first, second, fixed:
        before = [await second._slot(0) for _ in range(3)]
        for _ in range(5):  # five 429s of one burst, from one process
            first.slow_down(first._clock())
        await asyncio.gather(*first._pending)
        after = [await second._slot(0) for _ in range(3)]
        fixed.slow_down(fixed._clock())
        unchanged = [await fixed._slot(0) for _ in range(3)]
    assert first.slowed == 1  # the burst counted once
    assert before[2] - before[1] == pytest.approx(0.1, abs=0.01)
    assert after[2] - after[1] == pytest.approx(0.1 * SLOWDOWN_STEP, abs=0.01)  # everyone
    assert unchanged[2] - unchanged[1] == pytest.approx(0.1, abs=0.01)
    assert fixed.slowed == 0


async def test_spent_budget_headers_pause_everyone(redis_url: str) -> None:
    first = limiter(redis_url, "headers", requests_per_minute=6000, lease=1)
    second = limiter(redis_url, "headers", requests_per_minute=6000, lease=1)
    async with first, second:
        declined = first.observe(
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"},
            first._clock(),
        )
        assert declined == []
        await asyncio.gather(*first._pending)
        assert 0.5 < await second._slot(0) - second._clock() <= 1.0


async def test_the_name_is_a_hash_of_base_url_and_key_never_the_key(redis_url: str) -> None:
    one = asyncchat.Client(base_url="https://api.example.com/v1", api_key="sk-secret-1")
    same = asyncchat.Client(base_url="https://api.example.com/v1", api_key="sk-secret-1")
    other = asyncchat.Client(base_url="https://api.example.com/v1", api_key="sk-secret-2")
    names = [
        RedisRateLimit(redis_url, requests_per_minute=60, client=c).name for c in (one, same, other)
    ]
    assert names[0] == names[1] != names[2]
    assert names[0] == limit_name("https://api.example.com/v1", "sk-secret-1")
    async with RedisRateLimit(redis_url, requests_per_minute=60, client=one) as limit:
        await limit.acquire()
        keys = [key.decode() async for key in limit.redis.scan_iter("*")]
    assert keys and not any("sk-secret" in key for key in keys)
    for client in (one, same, other):
        await client.close()


async def test_unreachable_redis_falls_back_to_a_local_share(
    recwarn: pytest.WarningsRecorder,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with limiter(url, "down", requests_per_minute=600, retry_redis_after=60) as limit:
        limit.members = 3  # it had seen three processes
        first = await limit._slot(0)
        second = await limit._slot(0)
    assert second - first == pytest.approx(0.3)  # 600 / 3 a minute, on its own
    messages = [str(w.message) for w in recwarn.list if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1  # said once
    assert "cannot be reached" in messages[0] and "1/3 of the shared limit" in messages[0]


async def test_a_fan_out_paced_by_redis(redis_url: str) -> None:
    async with (
        MockServer(api_key=API_KEY) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        async with RedisRateLimit(
            redis_url, requests_per_minute=6000, client=client, lease=4
        ) as limit:
            requests = [
                {"model": "m", "messages": [{"role": "user", "content": f"n{i}"}]}
                for i in range(12)
            ]
            results = await client.chat.batch(requests, concurrency=4, rate_limit=limit)
        assert all(isinstance(result, asyncchat.ChatCompletion) for result in results)
        assert limit.round_trips == 3  # 12 requests in leases of 4


async def _members(redis_url: str, key: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return int(await client.zcard(key))
    finally:
        await client.aclose()


@pytest.mark.slow
def test_batch_command_with_a_shared_limit(
    redis_url: str, background_server: MockServer, tmp_path: Path
) -> None:
    """Two `asyncchat batch` processes, one Redis: both finish, booked in one schedule."""
    runs = []
    for part in (1, 2):
        requests = tmp_path / f"in{part}.jsonl"
        lines = [
            {
                "custom_id": f"p{part}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            }
            for i in range(10)
        ]
        requests.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        command = [
            sys.executable, "-m", "asyncchat", "batch", str(requests),
            "-o", str(tmp_path / f"out{part}.jsonl"),
            "--base-url", background_server.base_url, "--api-key", API_KEY,
            "--rpm", "1200", "--redis-url", redis_url,
        ]  # fmt: skip
        runs.append(
            subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    for part in (1, 2):
        assert len((tmp_path / f"out{part}.jsonl").read_text().splitlines()) == 10
    assert len(background_server.requests) == 20
    members = "asyncchat:ratelimit:" + limit_name(background_server.base_url, API_KEY)
    assert asyncio.run(_members(redis_url, members + ":members")) == 2
