"""`x-ratelimit-*` response headers as typed values.

OpenAI, Groq, DeepSeek and others report the caller's quota on every response:

    x-ratelimit-limit-requests: 5000        x-ratelimit-limit-tokens: 2000000
    x-ratelimit-remaining-requests: 4999    x-ratelimit-remaining-tokens: 1999000
    x-ratelimit-reset-requests: 12ms        x-ratelimit-reset-tokens: 1m30s

Others give the request budget without the `-requests` suffix (`x-ratelimit-limit`,
`-remaining`, `-reset`), its reset at times a moment rather than a wait: OpenRouter
sends them so inside a 429's body, the reset in Unix milliseconds. Together sends them
so, and its token budget as `x-tokenlimit-limit` and `-remaining`. Some gateways send a
reset as a date and time (`2026-12-08T03:30:00Z`). Others again name the window each
budget counts over after its kind, and may send several windows:
`x-ratelimit-remaining-requests-day` and `-tokens-minute` (Cerebras), `-req-minute`,
`-req-10-second` and `-tokens-month` (Mistral), `-requests-1h` beside the per-minute
names (Nous).

`read_budgets` reads every budget a response names; `RateLimits.from_headers` keeps,
for requests and for tokens, the one that runs out first. It is what
`completion.rate_limits`, `stream.rate_limits` and `error.rate_limits` return.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

__all__ = ["Budget", "RateLimits", "parse_duration", "read_budgets", "spent_budgets"]

# No rate-limit window lasts 30 years: a reset past this many seconds is a moment, in
# Unix seconds, or in Unix milliseconds past a thousand times as many (OpenRouter's).
_A_MOMENT = 1e9
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# x-ratelimit-{limit|remaining|reset}, then the budget's kind, then the window it counts
# over where the server names one. A name without a kind is the request budget's.
_PREFIX = "x-ratelimit-"
_TOKEN_PREFIX = "x-tokenlimit-"  # Together's token budget: x-tokenlimit-{limit|remaining}
_FIELDS = ("limit", "remaining", "reset")
_KINDS = {"requests": "requests", "req": "requests", "tokens": "tokens"}
# What no count of none starts with (`spent_budgets`' shortcut).
_NEVER_NONE = frozenset("123456789" + string.ascii_letters)


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value such as `1m30s`, `6ms`, `0.5s` or `20`;
    None for anything else (`inf` and `nan` included)."""
    text = text.strip()
    if text[-1:].isalpha():  # a unit, or a word: no float() to raise and catch
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            return None
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    try:
        seconds = float(text)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


def _reset(text: str | None, now: float | None) -> float | None:
    """Seconds until a budget resets, from a wait (`1m30s`, `20`) or a moment: Unix
    seconds or milliseconds, or a date and time (`2026-12-08T03:30:00Z`)."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is None:
        moment = _date_and_time(text)
        if moment is None:
            return None
    elif seconds < _A_MOMENT:
        return seconds
    else:
        moment = seconds / 1000.0 if seconds >= _A_MOMENT * 1000 else seconds
    return max(moment - (time.time() if now is None else now), 0.0)


def _date_and_time(text: str) -> float | None:
    """The Unix time of an RFC 3339 date and time (`2026-12-08T03:30:00Z`, UTC where
    no offset is given), as some gateways send a reset; None for anything else."""
    text = text.strip()
    if text[4:5] != "-" or text[10:11] not in ("T", "t", " "):
        return None
    try:  # Python 3.10 reads no "Z"
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class Budget(NamedTuple):  # a tuple: built for every budget of every response read
    """One quota a response reported: `kind` is "requests" or "tokens", `window` what
    the header names it by ("day", "10-second", "1h"; "" where it names none). `reset` is
    seconds until it is whole again; `reset_header` the reset as sent, for a message."""

    kind: str
    window: str
    limit: int | None
    remaining: int | None
    reset: float | None
    reset_header: str | None


# The headers of one budget, by field ("limit", "remaining", "reset"): (name, value).
_Sent = dict[str, tuple[str, str]]


def _sent_budgets(headers: Mapping[str, str]) -> dict[tuple[str, str], _Sent]:
    """The rate-limit headers (case-insensitive), by budget: (kind, window). A name
    without a kind (the request budget's) and Together's `x-tokenlimit-*` (the token
    budget's) are read where the names with a kind say nothing."""
    sent: dict[tuple[str, str], _Sent] = {}
    fallback: dict[tuple[str, str], _Sent] = {}
    for name, value in headers.items():
        if name[:1] not in ("x", "X"):  # most headers, passed over before any other work
            continue
        name = name.lower()
        if name.startswith(_PREFIX):
            field, _, rest = name[len(_PREFIX) :].partition("-")
            kind, _, window = rest.partition("-")
            if field not in _FIELDS or (rest and kind not in _KINDS):
                continue
            if rest:
                sent.setdefault((_KINDS[kind], window), {})[field] = (name, value)
            else:
                fallback.setdefault(("requests", ""), {})[field] = (name, value)
        elif name.startswith(_TOKEN_PREFIX) and name[len(_TOKEN_PREFIX) :] in _FIELDS:
            fallback.setdefault(("tokens", ""), {})[name[len(_TOKEN_PREFIX) :]] = (name, value)
    for budget, fields in fallback.items():
        said = sent.setdefault(budget, {})
        for field, header in fields.items():
            said.setdefault(field, header)
    return sent


def _budget(kind: str, window: str, fields: _Sent, now: float | None) -> Budget:
    limit, remaining, reset = fields.get("limit"), fields.get("remaining"), fields.get("reset")
    return Budget(
        kind,
        window,
        None if limit is None else _count(limit[1]),
        None if remaining is None else _count(remaining[1]),
        None if reset is None else _reset(reset[1], now),
        None if reset is None else f"{reset[0]}: {reset[1]}",
    )


def read_budgets(headers: Mapping[str, str], now: float | None = None) -> list[Budget]:
    """Every budget the `x-ratelimit-*` headers name (case-insensitive), in the order
    sent. A value that is not a count or a duration is None; a reset sent as a moment
    is counted from `now` (a Unix time; the clock's when not given)."""
    return [
        _budget(kind, window, fields, now)
        for (kind, window), fields in _sent_budgets(headers).items()
    ]


def spent_budgets(headers: Mapping[str, str], now: float | None = None) -> list[Budget]:
    """The budgets the headers say are spent (none remaining), as `read_budgets` reads
    them. Asked of every response in a fan-out, where a budget is seldom spent."""
    # No count of none starts with a letter or a digit other than 0: a response whose
    # `x-` headers' values all do is passed over before any name is parsed, at a
    # tenth of the cost.
    for name, value in headers.items():
        if value[:1] not in _NEVER_NONE and name[:1] in ("x", "X"):
            break
    else:
        return []
    return [
        _budget(kind, window, fields, now)
        for (kind, window), fields in _sent_budgets(headers).items()
        if "remaining" in fields and _count(fields["remaining"][1]) == 0
    ]


def _tighter(held: Budget | None, budget: Budget) -> Budget:
    """Of two budgets of one kind, the one that allows less: the fewer remaining, the
    later reset among equals; where neither says what remains, the one without a
    window, else the first."""
    if held is None:
        return budget
    if held.remaining is None or budget.remaining is None:
        if held.remaining is not None:
            return held
        if budget.remaining is not None:
            return budget
        return budget if budget.window == "" and held.window != "" else held
    if budget.remaining != held.remaining:
        return budget if budget.remaining < held.remaining else held
    return budget if (budget.reset or 0.0) > (held.reset or 0.0) else held


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
        """The quota the `x-ratelimit-*` headers report (see `read_budgets`); None when
        a response has none of them. Where a server reports one kind over several
        windows (per minute and per day, say), the values are the window's that runs
        out first: a request may start only when every window allows it."""
        budgets = read_budgets(headers, now)
        if not budgets:
            return None
        requests = tokens = None
        for budget in budgets:
            if budget.kind == "requests":
                requests = _tighter(requests, budget)
            else:
                tokens = _tighter(tokens, budget)
        return cls(
            None if requests is None else requests.limit,
            None if tokens is None else tokens.limit,
            None if requests is None else requests.remaining,
            None if tokens is None else tokens.remaining,
            None if requests is None else requests.reset,
            None if tokens is None else tokens.reset,
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
