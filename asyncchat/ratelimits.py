"""`x-ratelimit-*` response headers as typed values.

OpenAI, Groq, DeepSeek and others report the caller's quota on every response:

    x-ratelimit-limit-requests: 5000        x-ratelimit-limit-tokens: 2000000
    x-ratelimit-remaining-requests: 4999    x-ratelimit-remaining-tokens: 1999000
    x-ratelimit-reset-requests: 12ms        x-ratelimit-reset-tokens: 1m30s

Others give the request budget without the `-requests` suffix (`x-ratelimit-limit`,
`-remaining`, `-reset`), its reset at times a moment rather than a wait: OpenRouter
sends them so inside a 429's body, the reset in Unix milliseconds.

`RateLimits.from_headers` reads them (durations as seconds); it is what
`completion.rate_limits`, `stream.rate_limits` and `error.rate_limits` return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from asyncchat._ratelimit import parse_duration

__all__ = ["RateLimits"]

# No rate-limit window lasts 30 years: a reset past this many seconds is a moment, in
# Unix seconds, or in Unix milliseconds past a thousand times as many (OpenRouter's).
_A_MOMENT = 1e9


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


def _reset(text: str | None, now: float | None) -> float | None:
    """Seconds until a budget resets, from a wait (`1m30s`, `20`) or a moment."""
    seconds = None if text is None else parse_duration(text)
    if seconds is None or seconds < _A_MOMENT:
        return seconds
    moment = seconds / 1000.0 if seconds >= _A_MOMENT * 1000 else seconds
    return max(moment - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The quota a response reported; None for what the server did not send.

    `reset_*` are seconds until that budget is whole again.
    """

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], now: float | None = None
    ) -> RateLimits | None:
        """The values of `x-ratelimit-*` headers (case-insensitive); None when a
        response has none of them. A value that is not a count or a duration is
        left out. A reset given as a moment is counted from `now` (a Unix time;
        the clock's when not given)."""
        get = headers.get
        if isinstance(headers, dict):  # a plain dict: match the names case-insensitively
            lowered = {key.lower(): value for key, value in headers.items()}
            get = lowered.get
        values = [
            get(f"x-ratelimit-{field}-{kind}")
            for field in ("limit", "remaining", "reset")
            for kind in ("requests", "tokens")
        ]
        plain = [get(f"x-ratelimit-{field}") for field in ("limit", "remaining", "reset")]
        if all(value is None for value in values + plain):
            return None
        limit_r, limit_t, remaining_r, remaining_t, reset_r, reset_t = values
        return cls(
            _count(limit_r if limit_r is not None else plain[0]),
            _count(limit_t),
            _count(remaining_r if remaining_r is not None else plain[1]),
            _count(remaining_t),
            _reset(reset_r, now) if reset_r is not None else _reset(plain[2], now),
            _reset(reset_t, now),
        )

    def describe(self) -> str:
        """What is left, for a progress line: "4,999 requests, 1.9M tokens left"."""
        parts = []
        if self.remaining_requests is not None:
            parts.append(f"{self.remaining_requests:,} requests")
        if self.remaining_tokens is not None:
            parts.append(f"{_short_count(self.remaining_tokens)} tokens")
        return f"{', '.join(parts)} left" if parts else ""


def _short_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    return f"{count:,}"
