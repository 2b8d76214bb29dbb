"""Rate-limit headers as values: on completions, streams, errors, and the batch
progress line."""

from __future__ import annotations

import io
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

import asyncchat
from asyncchat._batchrun import run_batch_file
from asyncchat.ratelimits import Budget, RateLimits, read_budgets
from asyncchat.testing import MockServer

from .conftest import API_KEY, openrouter_429

USER = [{"role": "user", "content": "hi"}]
QUOTA = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "1m30s",
}
EXPECTED = RateLimits(5000, 2_000_000, 4999, 1_999_000, 0.012, 90.0)
NOW = 1_700_000_000.0
CEREBRAS = {
    "x-ratelimit-limit-requests-day": "14400",
    "x-ratelimit-limit-tokens-minute": "60000",
    "x-ratelimit-remaining-requests-day": "14398",
    "x-ratelimit-remaining-tokens-minute": "59875",
    "x-ratelimit-reset-requests-day": "33011.382867097855",
    "x-ratelimit-reset-tokens-minute": "11.382867097854614",
}
MISTRAL = {
    "x-ratelimit-limit-req-minute": "720",
    "x-ratelimit-remaining-req-minute": "717",
    "x-ratelimit-limit-req-10-second": "2",
    "x-ratelimit-remaining-req-10-second": "0",
    "x-ratelimit-limit-tokens-minute": "5000000",
    "x-ratelimit-remaining-tokens-minute": "4999911",
    "x-ratelimit-limit-tokens-month": "1000000000000",
    "x-ratelimit-remaining-tokens-month": "999998798434",
    "x-ratelimit-tokens-query-cost": "52",
}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (QUOTA, EXPECTED),
        ({"X-RateLimit-Remaining-Tokens": "10"}, RateLimits(remaining_tokens=10)),
        ({"x-ratelimit-reset-requests": "6m0s"}, RateLimits(reset_requests=360.0)),
        ({"x-ratelimit-reset-tokens": "250ms"}, RateLimits(reset_tokens=0.25)),
        ({"x-ratelimit-reset-tokens": "20"}, RateLimits(reset_tokens=20.0)),
        ({"x-ratelimit-reset-tokens": "1.5s"}, RateLimits(reset_tokens=1.5)),
        ({"x-ratelimit-limit-requests": "lots", "x-ratelimit-reset-tokens": "soon"}, RateLimits()),
        ({"x-ratelimit-remaining-requests": "-1"}, RateLimits()),
        ({"content-type": "application/json"}, None),
        ({}, None),
        # The request budget without its suffix (Together; OpenRouter's in a 429's body).
        (
            {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"},
            RateLimits(limit_requests=20, remaining_requests=0, reset_requests=7.0),
        ),
        # The suffixed form wins where both are sent.
        (
            {"x-ratelimit-remaining": "9", "x-ratelimit-remaining-requests": "4"},
            RateLimits(remaining_requests=4),
        ),
        # Cerebras names each budget's window: requests per day, tokens per minute.
        (
            CEREBRAS,
            RateLimits(14400, 60000, 14398, 59875, 33011.382867097855, 11.382867097854614),
        ),
        # Mistral: `req` for requests; windows of 10 seconds, a minute and a month. The
        # window with the fewest left is the one that binds.
        (MISTRAL, RateLimits(2, 5_000_000, 0, 4_999_911, None, None)),
        # Nous: the per-minute names, and the same per hour; the hour has fewer left.
        (
            {
                **QUOTA,
                "x-ratelimit-limit-requests-1h": "6000",
                "x-ratelimit-remaining-requests-1h": "12",
                "x-ratelimit-reset-requests-1h": "2919",
            },
            RateLimits(6000, 2_000_000, 12, 1_999_000, 2919.0, 90.0),
        ),
        # Two windows both spent: the later reset is when a request may start.
        (
            {
                "x-ratelimit-remaining-tokens-minute": "0",
                "x-ratelimit-reset-tokens-minute": "30",
                "x-ratelimit-remaining-tokens-day": "0",
                "x-ratelimit-reset-tokens-day": "9000",
            },
            RateLimits(remaining_tokens=0, reset_tokens=9000.0),
        ),
        # Where no window says what remains, the one without a window speaks.
        (
            {"x-ratelimit-limit-requests-day": "100", "x-ratelimit-limit-requests": "10"},
            RateLimits(limit_requests=10),
        ),
        ({"x-ratelimit-tokens-query-cost": "52", "x-ratelimit-used": "3"}, None),
        # Together: the request budget without a kind, the token budget as x-tokenlimit-*.
        (
            {
                "x-ratelimit-limit": "10",
                "x-ratelimit-remaining": "9",
                "x-ratelimit-reset": "1",
                "X-TokenLimit-Limit": "200000",
                "x-tokenlimit-remaining": "199500",
            },
            RateLimits(10, 200_000, 9, 199_500, 1.0, None),
        ),
        # The OpenAI names win where both are sent.
        (
            {"x-tokenlimit-remaining": "5", "x-ratelimit-remaining-tokens": "7"},
            RateLimits(remaining_tokens=7),
        ),
        ({"x-tokenlimit-cost": "5", "x-ratelimit-limit-tokens_usage_based": "9"}, None),
    ],
)
def test_headers_become_values(headers: dict[str, str], expected: RateLimits | None) -> None:
    assert RateLimits.from_headers(headers) == expected


def test_every_window_is_read() -> None:
    assert read_budgets(MISTRAL) == [
        Budget("requests", "minute", 720, 717, None, None),
        Budget("requests", "10-second", 2, 0, None, None),
        Budget("tokens", "minute", 5_000_000, 4_999_911, None, None),
        Budget("tokens", "month", 1_000_000_000_000, 999_998_798_434, None, None),
    ]
    assert read_budgets({"X-RateLimit-Reset": "7", "x-ratelimit-limit-tokens": "9"}) == [
        Budget("tokens", "", 9, None, None, None),
        Budget("requests", "", None, None, 7.0, "x-ratelimit-reset: 7"),
    ]


IN_90_SECONDS = datetime.fromtimestamp(NOW + 90, timezone.utc)  # 2023-11-14T22:14:50Z


@pytest.mark.parametrize(
    "reset",
    [
        str(NOW + 90),
        str(int((NOW + 90) * 1000)),
        f"{NOW + 90:.3f}",
        IN_90_SECONDS.strftime("%Y-%m-%dT%H:%M:%SZ"),
        IN_90_SECONDS.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        IN_90_SECONDS.astimezone(timezone(timedelta(hours=8))).isoformat(),
        IN_90_SECONDS.strftime("%Y-%m-%d %H:%M:%S"),  # no offset: UTC
    ],
    ids=[
        "unix-seconds",
        "unix-milliseconds",
        "fraction",
        "rfc3339",
        "rfc3339-ms",
        "rfc3339-offset",
        "no-offset",
    ],
)
def test_a_reset_sent_as_a_moment_is_counted_from_now(reset: str) -> None:
    """No window lasts 30 years: a reset that large is a moment, in Unix seconds or
    (OpenRouter's) milliseconds, and becomes the seconds from `now` to it. So is a
    date and time, as some gateways send it (`2023-11-14T22:14:50Z`)."""
    limits = RateLimits.from_headers({"x-ratelimit-reset": reset}, now=NOW)
    assert limits is not None and limits.reset_requests == pytest.approx(90.0)
    past = RateLimits.from_headers({"x-ratelimit-reset": str(NOW - 5)}, now=NOW)
    assert past == RateLimits(reset_requests=0.0)


@pytest.mark.parametrize(
    "reset", ["2023-11-14", "22:14:50", "2023-11-14T25:14:50Z", "2023-11-14T22:14:50Q", "Z"]
)
def test_a_reset_that_is_neither_a_wait_nor_a_moment_is_none(reset: str) -> None:
    limits = RateLimits.from_headers({"x-ratelimit-reset-tokens": reset}, now=NOW)
    assert limits == RateLimits()


def test_describe_says_what_is_left() -> None:
    assert EXPECTED.describe() == "4,999 requests, 2.0M tokens left"
    assert RateLimits(remaining_tokens=45_000).describe() == "45k tokens left"
    assert RateLimits(remaining_requests=3).describe() == "3 requests left"
    assert RateLimits(limit_requests=3).describe() == ""


async def test_on_a_completion_a_stream_and_an_error(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue(headers=QUOTA)  # the default answer, with these headers
    completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.rate_limits == EXPECTED
    plain = await client.chat.completions.create(model="m", messages=USER)
    assert plain.rate_limits is None

    server.enqueue(headers=QUOTA)
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        assert stream.rate_limits == EXPECTED
        async for _ in stream:
            pass

    spent = {**QUOTA, "x-ratelimit-remaining-tokens": "0", "retry-after": "0"}
    for _ in range(3):  # the first try and both retries
        server.enqueue(429, json={"error": {"message": "slow down"}}, headers=spent)
    with pytest.raises(asyncchat.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.rate_limits == RateLimits(5000, 2_000_000, 4999, 0, 0.012, 90.0)


async def test_openrouter_s_limits_in_a_429_s_body_are_read_and_waited_for(
    client: asyncchat.Client, server: MockServer
) -> None:
    """A per-minute cap that resets in 30 s is waited for, as a Retry-After would
    be; a daily one that resets in hours is not retried at all, and the error says
    what is spent and until when."""
    per_minute = openrouter_429(time.time() + 30, limit=20, window="free-models-per-min")
    server.enqueue(429, json=per_minute)
    completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "You said: hi"
    [waited] = client.sleeps  # type: ignore[attr-defined]
    assert 25 < waited <= 30

    server.enqueue(429, json=openrouter_429(time.time() + 5 * 3600))
    with pytest.raises(asyncchat.RateLimitError, match="free-models-per-day") as caught:
        await client.chat.completions.create(model="m", messages=USER)
    assert len(server.requests) == 3 and len(client.sleeps) == 1  # type: ignore[attr-defined]
    limits = caught.value.rate_limits
    assert limits is not None and (limits.limit_requests, limits.remaining_requests) == (50, 0)
    assert limits.reset_requests == pytest.approx(5 * 3600, abs=60)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_batch_progress_line_shows_the_quota_left(
    server: MockServer, tmp_path: Path
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": USER},
        }
        for i in range(3)
    ]
    requests.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    for left in (10, 9, 8):
        server.enqueue(headers={**QUOTA, "x-ratelimit-remaining-requests": str(left)})
    terminal = Terminal()
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        ticks = iter(range(10**9))
        client._clock = lambda: float(next(ticks))  # a second per look: every result shows
        summary = await run_batch_file(client, requests, output, concurrency=1, progress=terminal)
    assert summary.ok
    shown = re.findall(r"(\d+) requests, 2\.0M tokens left", terminal.getvalue())
    changes = [n for i, n in enumerate(shown) if i == 0 or shown[i - 1] != n]
    assert changes == ["10", "9", "8"]
