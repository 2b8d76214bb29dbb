"""The pure rate-limit arithmetic, on a fake clock."""

from __future__ import annotations

import time

import pytest

from asyncchat._ratelimit import (
    SLOWDOWN_COOLDOWN,
    SLOWDOWN_MAX,
    SLOWDOWN_RECOVERY,
    SLOWDOWN_STEP,
    RateLimiter,
    Slowdown,
    estimate_tokens,
)
from asyncchat.ratelimits import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("6ms", 0.006),
        ("0.5s", 0.5),
        ("2h", 7200.0),
        ("20", 20.0),
        ("1h2m3s", 3723.0),
        ("17ms", 0.017),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "m", "1m 30s"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_requests_per_minute_is_a_ceiling() -> None:
    limiter = RateLimiter(requests_per_minute=120)
    now = 1000.0
    starts = [limiter.reserve(now) for _ in range(600)]
    assert starts == sorted(starts)
    # In every 60-second window, at most 120 starts (+1 for the window's edge).
    for first in range(len(starts)):
        in_window = [s for s in starts[first:] if s < starts[first] + 60]
        assert len(in_window) <= 121
    assert starts[-1] - starts[0] == pytest.approx(599 * 0.5)


def test_unlimited_starts_now() -> None:
    limiter = RateLimiter()
    assert [limiter.reserve(5.0, tokens=10_000) for _ in range(3)] == [5.0, 5.0, 5.0]


def test_tokens_per_minute_and_correction() -> None:
    limiter = RateLimiter(tokens_per_minute=6000)  # 100 tokens a second
    assert limiter.reserve(0.0, tokens=500) == 0.0
    assert limiter.reserve(0.0, tokens=500) == pytest.approx(5.0)
    # The first request really used 100 tokens, not 500: 4 seconds come back.
    limiter.correct_tokens(estimated=500, actual=100)
    assert limiter.reserve(0.0, tokens=100) == pytest.approx(6.0)


def test_pause_holds_every_start() -> None:
    limiter = RateLimiter(requests_per_minute=6000)
    limiter.pause(30.0)
    assert limiter.reserve(10.0) == 30.0
    limiter.pause(20.0)  # an earlier end never shortens a pause
    assert limiter.reserve(10.0) >= 30.0


def test_ratelimit_headers() -> None:
    limiter = RateLimiter()
    limiter.observe(
        {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1m30s"}, now=0.0
    )
    assert limiter.reserve(0.0) == 0.0
    limiter.observe(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}, now=0.0
    )
    assert limiter.reserve(0.0) == 90.0
    limiter.observe(
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "120s"}, now=0.0
    )
    assert limiter.reserve(0.0) == 120.0


def test_estimate_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert 150 <= estimate_tokens(body) <= 165  # 430 bytes of JSON / 4, plus max_tokens
    assert estimate_tokens({"messages": [], "n": 2}) == 2 * 256 + 0


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=0)
    with pytest.raises(ValueError, match="tokens_per_minute"):
        RateLimiter(tokens_per_minute=-5)


IN_TWO_HOURS = time.time() + 7200


@pytest.mark.parametrize(
    "reset",
    ["inf", "nan", "-inf", "601s", "2h", f"{IN_TWO_HOURS:.0f}", f"{IN_TWO_HOURS * 1000:.0f}"],
)
def test_a_reset_beyond_the_cap_is_not_waited_for(reset: str) -> None:
    """Like Retry-After, the reset headers are capped (at MAX_RESET_PAUSE, 10 minutes),
    a reset sent as a moment (Unix seconds or milliseconds) too."""
    limiter = RateLimiter()
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset}
    assert limiter.observe(headers, now=1000.0) == [f"x-ratelimit-reset-requests: {reset}"]
    assert limiter.reserve(1000.0) == 1000.0
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "9m59s"}
    assert limiter.observe(headers, now=1000.0) == []
    assert limiter.reserve(1000.0) == 1599.0


def test_a_reset_sent_as_a_moment_is_waited_for_until_then() -> None:
    """The request budget without its suffix, its reset in Unix milliseconds (as
    OpenRouter sends it) or as a date and time, read as `RateLimits` reads it; a
    moment past asks no pause."""
    limiter = RateLimiter()
    soon = f"{(time.time() + 90) * 1000:.0f}"
    assert limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": soon}, 0.0) == []
    assert limiter.reserve(0.0) == pytest.approx(90.0, abs=2)
    limiter = RateLimiter()  # a date and time, as some gateways send it
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 90))
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": soon}
    assert limiter.observe(headers, 0.0) == []
    assert limiter.reserve(0.0) == pytest.approx(90.0, abs=2)
    limiter = RateLimiter()
    past = f"{time.time() - 90:.0f}"
    assert limiter.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": past}, 0.0) == []
    assert limiter.reserve(0.0) == 0.0


# Cerebras names the window each budget counts over; its requests are counted per day.
CEREBRAS = {
    "x-ratelimit-limit-requests-day": "14400",
    "x-ratelimit-limit-tokens-minute": "60000",
    "x-ratelimit-remaining-requests-day": "14398",
    "x-ratelimit-remaining-tokens-minute": "0",
    "x-ratelimit-reset-requests-day": "33011.382867097855",
    "x-ratelimit-reset-tokens-minute": "11.382867097854614",
}


def test_a_budget_spent_in_any_window_pauses_until_its_reset() -> None:
    limiter = RateLimiter()
    assert limiter.observe(CEREBRAS, now=0.0) == []
    assert limiter.reserve(0.0) == pytest.approx(11.382867097854614)
    # Nous: the per-minute names, and the same again per hour (`-1h`).
    hour_spent = {
        "x-ratelimit-remaining-requests": "43",
        "x-ratelimit-reset-requests": "40s",
        "x-ratelimit-remaining-requests-1h": "0",
        "x-ratelimit-reset-requests-1h": "8m",
    }
    limiter = RateLimiter()
    assert limiter.observe(hour_spent, now=0.0) == []
    assert limiter.reserve(0.0) == 480.0
    # Together's token budget.
    limiter = RateLimiter()
    assert limiter.observe({"x-tokenlimit-remaining": "0", "x-tokenlimit-reset": "2"}, 0.0) == []
    assert limiter.reserve(0.0) == 2.0
    # A daily budget spent is not waited for: hours away.
    day_spent = {**CEREBRAS, "x-ratelimit-remaining-requests-day": "0"}
    limiter = RateLimiter()
    declined = ["x-ratelimit-reset-requests-day: 33011.382867097855"]
    assert limiter.observe(day_spent, now=0.0) == declined
    assert limiter.reserve(0.0) == pytest.approx(11.382867097854614)


def test_a_refusal_slows_the_limit_and_it_climbs_back() -> None:
    slowdown = Slowdown()
    assert slowdown.factor(0.0) == 1.0
    assert slowdown.refused(10.0)
    assert slowdown.factor(10.0) == SLOWDOWN_STEP
    assert not slowdown.refused(10.0 + SLOWDOWN_COOLDOWN / 2)  # the same burst of 429s
    assert slowdown.factor(10.0) == SLOWDOWN_STEP
    assert slowdown.refused(10.0 + SLOWDOWN_COOLDOWN)  # a second signal compounds
    later = 10.0 + SLOWDOWN_COOLDOWN
    assert slowdown.factor(later) == pytest.approx(
        (SLOWDOWN_STEP - SLOWDOWN_COOLDOWN * SLOWDOWN_RECOVERY) * SLOWDOWN_STEP
    )
    halfway = later + 5
    assert slowdown.factor(later) - slowdown.factor(halfway) == pytest.approx(5 * SLOWDOWN_RECOVERY)
    assert slowdown.factor(later + 1000) == 1.0  # all the way back, and no further
    for step in range(100):
        slowdown.refused(2000.0 + step * SLOWDOWN_COOLDOWN)
    assert slowdown.multiplier == SLOWDOWN_MAX  # bounded however many 429s come


def test_a_limiter_spaces_starts_wider_after_a_429() -> None:
    adaptive = RateLimiter(requests_per_minute=600, tokens_per_minute=60_000)  # 0.1 s, 1 ms
    fixed = RateLimiter(requests_per_minute=600, tokens_per_minute=60_000, adaptive=False)
    for limiter in (adaptive, fixed):
        limiter.reserve(0.0, tokens=10)
        limiter.slow_down(0.0)
    assert adaptive.reserve(0.0, tokens=10) == pytest.approx(0.1)  # booked before the 429
    assert adaptive.reserve(0.0, tokens=10) == pytest.approx(0.1 + 0.1 * SLOWDOWN_STEP, rel=0.01)
    assert fixed.reserve(0.0, tokens=10) == pytest.approx(0.1)
    assert fixed.reserve(0.0, tokens=10) == pytest.approx(0.2)
    assert fixed.slowdown is None
