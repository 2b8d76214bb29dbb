"""Pure rate-limit bookkeeping for fan-out: when may the next request start?

Requests-per-minute and tokens-per-minute ceilings are kept by pacing
(a generic cell-rate algorithm): each start pushes a cursor forward by its
share of the minute, and a request may start once every cursor has passed.
A server pushing back (a 429 `Retry-After`, or `x-ratelimit-remaining-*: 0`)
pauses every start until the time it names. A 429 also slows the limit below
its ceilings (`Slowdown`): a ceiling set above what the provider allows would
otherwise meet a 429 for a share of its requests for as long as it runs. No
clock of its own: callers pass the time, so the arithmetic is tested without
waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from asyncchat.ratelimits import spent_budgets

__all__ = [
    "MAX_RESET_PAUSE",
    "RateLimit",
    "RateLimiter",
    "Slowdown",
    "estimate_tokens",
    "spent_budget_pauses",
]

# The longest pause an `x-ratelimit-reset-*` header can impose. Longer than Retry-After's
# cap, since a per-minute budget can legitimately reset minutes away, but bounded: a
# daily budget (Cerebras's `-requests-day`) or an hourly one, spent, must not park every
# request for hours, nor a server saying `1e8` for years.
MAX_RESET_PAUSE = 600.0
# Completion tokens assumed for a request that does not cap them.
DEFAULT_COMPLETION_ESTIMATE = 256


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """A rough token count: the messages at ~4 bytes a token, plus the completion cap."""
    prompt = len(orjson.dumps(body.get("messages", []), default=str)) // 4
    completion = (
        body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_COMPLETION_ESTIMATE
    )
    n = body.get("n") or 1
    return prompt + int(completion) * int(n)


# After a 429, a limit runs slower than its ceilings and climbs back slowly: the
# additive-increase, multiplicative-decrease rule by which TCP finds a link's rate.
# Chosen in a 429 storm (`benchmarks.shared_limit --server-rpm 450`, 4 processes at
# 600/min): these keep the provider's whole rate with a third of the 429s; a step of
# 1.5 with 0.02 recovery cut them to an eighth but lost 12% of the rate.
SLOWDOWN_STEP = 1.25  # a 429 makes the time between starts this much longer
SLOWDOWN_COOLDOWN = 2.0  # seconds in which further 429s are the same signal (one burst)
SLOWDOWN_RECOVERY = 0.05  # how far the multiplier falls back toward 1 each second
SLOWDOWN_MAX = 16.0


class Slowdown:
    """How far below its ceilings a limit runs: a multiplier (1 or more) of the time
    between starts, raised by each refusal, falling back to 1 as time passes."""

    __slots__ = ("multiplier", "since")

    def __init__(self) -> None:
        self.multiplier = 1.0  # as of `since`
        self.since = float("-inf")

    def factor(self, now: float) -> float:
        """The multiplier now."""
        return max(1.0, self.multiplier - (now - self.since) * SLOWDOWN_RECOVERY)

    def refused(self, now: float) -> bool:
        """The server refused a request for its rate; True if that slowed the limit
        (not within `SLOWDOWN_COOLDOWN` of the step before)."""
        if now - self.since < SLOWDOWN_COOLDOWN:
            return False
        self.multiplier = min(self.factor(now) * SLOWDOWN_STEP, SLOWDOWN_MAX)
        self.since = now
        return True


class RateLimit(Protocol):
    """What a fan-out asks of its rate limit; `RateLimiter` is the in-process one.

    Another implementation (one shared by several processes or machines) passes
    as `chat.batch(..., rate_limit=...)`. Times are the fan-out clock's seconds.
    A limit that must ask a server before a request may start (`RedisRateLimit`)
    also has `async def acquire(tokens)`, which waits itself: the fan-out awaits it
    instead of `reserve`. A limit with `slow_down(now)` hears of every 429.
    """

    @property
    def counts_tokens(self) -> bool:
        """True when requests must bring a token estimate to `reserve`."""
        ...

    def reserve(self, now: float, tokens: int = 0) -> float:
        """Book a start for a request of `tokens`; when it may start (>= now)."""
        ...

    def correct_tokens(self, estimated: int, actual: int) -> None:
        """A response reported its real usage."""
        ...

    def pause(self, until: float) -> None:
        """Hold every start until `until` (the server asked everyone to wait)."""
        ...

    def observe(self, headers: Mapping[str, str], now: float) -> list[str]:
        """Follow a response's rate-limit headers; returns the ones not followed."""
        ...


class RateLimiter:
    """Paces request starts under optional per-minute ceilings, shared by every worker.

    `adaptive` (the default): a 429 slows it below the ceilings for a while (see
    `Slowdown`); False keeps the ceilings whatever the server says."""

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self._seconds_per_request = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._seconds_per_token = 60.0 / tokens_per_minute if tokens_per_minute else 0.0
        self._requests_free_at = float("-inf")
        self._tokens_free_at = float("-inf")
        self.paused_until = float("-inf")
        self.slowdown = Slowdown() if adaptive else None

    @property
    def counts_tokens(self) -> bool:
        """True when a tokens-per-minute ceiling is set (requests need an estimate)."""
        return bool(self._seconds_per_token)

    def reserve(self, now: float, tokens: int = 0) -> float:
        """Book a start for a request of `tokens`; returns when it may start (>= now)."""
        start = max(now, self._requests_free_at, self._tokens_free_at, self.paused_until)
        slower = 1.0 if self.slowdown is None else self.slowdown.factor(start)
        if self._seconds_per_request:
            self._requests_free_at = start + self._seconds_per_request * slower
        if self._seconds_per_token:
            self._tokens_free_at = start + tokens * self._seconds_per_token * slower
        return start

    def slow_down(self, now: float) -> None:
        """The server refused a request for its rate (429): run slower for a while."""
        if self.slowdown is not None:
            self.slowdown.refused(now)

    def correct_tokens(self, estimated: int, actual: int) -> None:
        """A response reported its real usage: settle the difference with the estimate."""
        if self._seconds_per_token:
            self._tokens_free_at += (actual - estimated) * self._seconds_per_token

    def pause(self, until: float) -> None:
        """Hold every start until `until` (the server asked the whole client to wait)."""
        self.paused_until = max(self.paused_until, until)

    def observe(self, headers: Mapping[str, str], now: float) -> list[str]:
        """Follow `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` when a budget is spent.

        A reset further off than `MAX_RESET_PAUSE`, or not a duration, is not waited
        for; returns those headers, to report.
        """
        pauses, declined = spent_budget_pauses(headers)
        for seconds in pauses:
            self.pause(now + seconds)
        return declined


def spent_budget_pauses(headers: Mapping[str, str]) -> tuple[list[float], list[str]]:
    """The pauses a response's spent budgets ask for (`x-ratelimit-remaining-*: 0`
    with its `x-ratelimit-reset-*`, in every window the headers name), in seconds;
    and the resets not followed (longer than `MAX_RESET_PAUSE`, or not a duration),
    as header lines to report."""
    pauses: list[float] = []
    declined: list[str] = []
    for budget in spent_budgets(headers):
        if budget.reset_header is None:
            continue
        if budget.reset is None or budget.reset > MAX_RESET_PAUSE:
            declined.append(budget.reset_header)
        else:
            pauses.append(budget.reset)
    return pauses, declined
