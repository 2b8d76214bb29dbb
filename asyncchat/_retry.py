"""Pure retry decisions: whether to try a request again, and after how long.

No IO and no clock of its own: the caller passes the current time and a
random source, so every branch is testable without a network or a sleep.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from typing import Any

from asyncchat._ratelimit import MAX_RESET_PAUSE
from asyncchat.errors import error_fields
from asyncchat.quirks import (
    rate_limit_headers_in_body,
    retry_delay_in_body,
    retry_delay_in_message,
    says_limit_is_zero,
    says_out_of_credits,
    says_quota_spent_for_long,
    says_request_too_large,
)
from asyncchat.ratelimits import RateLimits, parse_duration, spent_budgets

__all__ = [
    "MAX_RETRY_DELAY",
    "backoff_delay",
    "pause_in_headers",
    "requested_pause",
    "retry_after",
    "retry_delay",
    "slows_the_pace",
]

INITIAL_DELAY = 0.5
MAX_BACKOFF = 8.0
# A server asking for a longer pause than this is not waited for: the error is raised.
MAX_RETRY_DELAY = 60.0
# 498 is Groq's "flex tier at capacity" (`capacity_exceeded`), which its docs say to
# retry with backoff, as a 503.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 498})
# Rate-limit windows (as `x-ratelimit-*` headers name them) no retry outlasts.
LONG_WINDOWS = frozenset({"day", "week", "month"})


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter for retry number `attempt` (0 for the first)."""
    base = min(INITIAL_DELAY * 2.0**attempt, MAX_BACKOFF)
    jitter = 1.0 - 0.25 * (rng or random).random()
    return base * jitter


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The pause the server asks for, in seconds, or None when it asks for none.

    Reads `retry-after-ms` (milliseconds, as OpenAI sends it) first, then
    `Retry-After` as seconds or as an HTTP date (relative to `now`, a Unix time).
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            milliseconds = float(value)
        except ValueError:
            pass
        else:
            if milliseconds >= 0:
                return milliseconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    return max(seconds, 0.0)


def pause_in_headers(status: int | None, headers: Mapping[str, str], now: float) -> float | None:
    """The pause an error answer's headers ask for, in seconds, or None: its
    `Retry-After`; else, for a 429, a budget they say is spent until more than
    `MAX_RESET_PAUSE` away (a day's requests, say), the latest such reset. A budget
    of a day or longer spent with no reset named (Mistral's `-tokens-month`) asks
    for an endless pause: no wait a client could make mends it."""
    requested = retry_after(headers, now)
    if requested is not None or status != 429:
        return requested
    # A budget back sooner is the pacer's to wait for, and a token budget's reset is
    # when it is whole again, not when the next request fits: taken as the pause, it
    # would give up on 429s that a short backoff gets past.
    resets = [
        math.inf if budget.reset is None else budget.reset
        for budget in spent_budgets(headers, now)
        if (budget.reset is None and budget.window in LONG_WINDOWS)
        or (budget.reset is not None and budget.reset > MAX_RESET_PAUSE)
    ]
    return max(resets, default=None)


def requested_pause(
    status: int | None, headers: Mapping[str, str], body: Any, now: float
) -> float | None:
    """The pause an error answer asks for, in seconds, or None when it asks for none:
    the one its headers ask for (`pause_in_headers`); else, for a 429, an endless one
    where its body says no wait mends it (a quota spent for a day or longer, a budget
    of nothing, an account out of credits: the `quirks.says_*` below); the one its
    body names (Gemini's `retryDelay`) or its message asks for in words ("Please try
    again in 11.054s"); or the time until the budget its body says is spent resets
    (OpenRouter puts its rate-limit headers there)."""
    requested = pause_in_headers(status, headers, now)
    if requested is not None or status != 429:
        return requested
    message, code, error_type, _ = error_fields(body)
    if (
        says_quota_spent_for_long(code, message, body)
        or says_limit_is_zero(message, body)
        or says_out_of_credits(code, error_type, message)
    ):
        return math.inf  # no wait mends these: Gemini's RetryInfo seconds least of all
    delay = retry_delay_in_body(body) or retry_delay_in_message(message)
    if delay is not None:
        return parse_duration(delay)
    in_body = rate_limit_headers_in_body(body)
    limits = None if in_body is None else RateLimits.from_headers(in_body, now)
    if limits is None or limits.remaining_requests != 0:
        return None
    return limits.reset_requests


def retry_delay(
    *,
    attempt: int,
    max_retries: int,
    status: int | None,
    headers: Mapping[str, str],
    now: float,
    rng: random.Random | None = None,
    body: Any = None,
) -> float | None:
    """Seconds to wait before retrying, or None to give up.

    `status` is the HTTP status, or None for a connection error or timeout (always
    worth another try). `x-should-retry: true|false` from the server overrides the
    status rules; a pause asked for (`requested_pause`, from the headers or the
    error's `body`) longer than `MAX_RETRY_DELAY` means give up, and so does a 429
    saying the request alone is more than the budget holds.
    """
    if attempt >= max_retries:
        return None
    if status == 429 and says_request_too_large(error_fields(body)[0]):
        return None  # no wait mends it, whatever Retry-After or x-should-retry say
    should_retry = headers.get("x-should-retry")
    if should_retry == "false":
        return None
    retryable = status is None or status in RETRYABLE_STATUSES or status >= 500
    if should_retry != "true" and not retryable:
        return None
    requested = requested_pause(status, headers, body, now)
    if requested is not None:
        return requested if requested <= MAX_RETRY_DELAY else None
    return backoff_delay(attempt, rng)


def slows_the_pace(status: int | None, body: Any) -> bool:
    """Whether an error answer says requests come faster than the server allows: a
    429, unless it says the request alone is more than the budget holds (no slower
    pace admits that one, and the others may fit)."""
    return status == 429 and not says_request_too_large(error_fields(body)[0])
