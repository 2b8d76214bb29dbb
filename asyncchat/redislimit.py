"""A rate limit shared through Redis by every process, machine and worker of a job.

    limit = RedisRateLimit("redis://localhost:6379", requests_per_minute=600,
                           tokens_per_minute=200_000, client=client)
    results = await client.chat.batch(requests, rate_limit=limit)

(`asyncchat batch ... --rpm 600 --redis-url redis://...` does the same.) Every
process that uses the same Redis, base URL and API key shares one limit: its
Redis keys are named after a hash of the two (never the key itself), or after
`name=`. Needs the `redis` package (`pip install 'asyncchat[redis]'`).

How it keeps the limit, and stays cheap:

- The schedule lives in Redis and is moved by one Lua script, atomically, on
  Redis's clock: machines whose clocks disagree still space their requests
  right, since each gets back only how long to wait (counted from when the
  answer arrives: late by the answer's trip, never early).
- A process takes a lease of a few requests (and their estimated tokens) per
  round trip, not one; so the shared rate is never above the limit by more than
  one lease, and Redis sees a fraction of the requests.
- Token estimates are reconciled with the usage each answer reports; the
  difference rides along with the next lease.
- A 429 with `Retry-After`, or an `x-ratelimit-remaining-*: 0`, pauses every
  process, through Redis.
- A 429 also slows the shared limit below its ceilings, for every process, and
  it climbs back slowly (the rule of `asyncchat._ratelimit.Slowdown`, kept in
  Redis): a ceiling above what the provider allows finds the provider's rate
  instead of meeting a 429 for a share of its requests for as long as it runs.
- When Redis cannot be reached, each process falls back to its share of the
  limit (the limit divided by the processes seen in the last minute), says so
  once in a warning, and tries Redis again every `retry_redis_after` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from asyncchat._ratelimit import (
    SLOWDOWN_COOLDOWN,
    SLOWDOWN_MAX,
    SLOWDOWN_RECOVERY,
    SLOWDOWN_STEP,
    RateLimiter,
    spent_budget_pauses,
)

if TYPE_CHECKING:
    from asyncchat.client import Client

__all__ = ["RedisRateLimit"]

# The slowdown's multiplier now, from its hash (`m` as of `since`, Redis µs): the
# arithmetic of `Slowdown.factor`. Defines `slowdown(key, now, recovery_per_us)`.
_SLOWDOWN_FACTOR = """
local function slowdown(key, now, recovery)
  local kept = redis.call('HMGET', key, 'm', 'since')
  if not kept[1] then return 1 end
  return math.max(1, tonumber(kept[1]) - (now - tonumber(kept[2])) * recovery)
end
"""
# KEYS: the request schedule, the token schedule, the pause, the members seen, the
# slowdown. ARGV: µs per request, µs per token, requests, tokens, token correction,
# member id, key lifetime (ms), the slowdown's recovery per µs (0: not adaptive).
# The schedules hold the time (Redis's, in µs) from which the next request may
# start. Returns the µs to wait for the lease, then the members.
_LEASE = (
    _SLOWDOWN_FACTOR
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per_request, per_token = tonumber(ARGV[1]), tonumber(ARGV[2])
local requests, tokens, correction = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[7])
local request_at = tonumber(redis.call('GET', KEYS[1]) or '0')
local token_at = tonumber(redis.call('GET', KEYS[2]) or '0') + correction * per_token
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
local start = math.max(now, request_at, token_at, paused)
if tonumber(ARGV[8]) > 0 then
  local slower = slowdown(KEYS[5], start, tonumber(ARGV[8]))
  per_request, per_token = per_request * slower, per_token * slower
end
if per_request > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', start + requests * per_request), 'PX', ttl)
end
if per_token > 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', start + tokens * per_token), 'PX', ttl)
end
redis.call('ZADD', KEYS[4], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[4], 0, now - 60000000)
redis.call('PEXPIRE', KEYS[4], ttl)
return {start - now, redis.call('ZCARD', KEYS[4])}
"""
)
# KEYS: the slowdown. ARGV: step, cooldown (µs), recovery per µs, most, key lifetime
# (ms). `Slowdown.refused`, on Redis's clock, for every process at once.
_SLOW_DOWN = (
    _SLOWDOWN_FACTOR
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '-1e18')
if now - since < tonumber(ARGV[2]) then return 0 end
local slower = slowdown(KEYS[1], now, tonumber(ARGV[3])) * tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'm', tostring(math.min(slower, tonumber(ARGV[4]))),
           'since', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
)
# KEYS: the pause. ARGV: seconds to pause from now (Redis's clock), key lifetime (ms).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1]) * 1000000
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > paused then
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', ARGV[2])
end
return 0
"""
_KEY_LIFETIME_MS = 10 * 60 * 1000  # an idle limit's keys expire after ten minutes


def limit_name(base_url: str, api_key: str | None) -> str:
    """The name of the limit shared by every user of one base URL and API key: a
    hash of the two, so the key never reaches Redis."""
    digest = hashlib.sha256(f"{base_url}\0{api_key or ''}".encode()).hexdigest()
    return digest[:24]


class RedisRateLimit:
    """Requests- and tokens-per-minute ceilings shared through Redis (see the module).

    Pass it as `rate_limit=` to `chat.batch` and `chat.as_completed`. `redis` is
    a URL or a `redis.asyncio.Redis`; `client` (or `name`) says which limit to
    share; `lease` is how many requests one round trip reserves; `adaptive=False`
    keeps the ceilings whatever the server says (no slowdown after a 429).
    """

    def __init__(
        self,
        redis: Any,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        client: Client | None = None,
        name: str | None = None,
        lease: int = 4,
        prefix: str = "asyncchat:ratelimit",
        retry_redis_after: float = 10.0,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not requests_per_minute and not tokens_per_minute:
            raise ValueError("give requests_per_minute, tokens_per_minute, or both")
        for label, value in (("requests_per_minute", requests_per_minute),
                             ("tokens_per_minute", tokens_per_minute)):  # fmt: skip
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        if lease < 1:
            raise ValueError(f"lease must be at least 1, got {lease}")
        if name is None:
            if client is None:
                raise ValueError("give client= (to share with its base URL and key) or name=")
            name = limit_name(client.base_url, client._api_key)
        if isinstance(redis, str):
            import redis.asyncio as redis_asyncio  # the `redis` extra, only when used

            redis = redis_asyncio.Redis.from_url(redis)
        self.redis = redis
        self.name = name
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.lease = lease
        self._per_request = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._per_token = 60.0 / tokens_per_minute if tokens_per_minute else 0.0
        base = f"{prefix}:{name}"
        self._keys = [
            f"{base}:requests",
            f"{base}:tokens",
            f"{base}:pause",
            f"{base}:members",
            f"{base}:slowdown",
        ]
        self._member = uuid.uuid4().hex
        self._lease_script = redis.register_script(_LEASE)
        self._pause_script = redis.register_script(_PAUSE)
        self._slow_down_script = redis.register_script(_SLOW_DOWN)
        self.adaptive = adaptive
        self._clock, self._sleep = clock, sleep
        self._lock = asyncio.Lock()
        # The lease being used: requests left, tokens left, the next slot (local clock).
        self._left_requests = 0
        self._left_tokens = 0
        self._next_slot = float("-inf")
        self._correction = 0  # reported minus estimated tokens, not yet sent
        self._paused_until = float("-inf")
        self.members = 1  # processes seen sharing the limit in the last minute
        self.round_trips = 0
        self.slowed = 0  # 429s of this process that slowed the shared limit
        self._fallback: RateLimiter | None = None
        self._fallback_since = 0.0
        self._warned = False  # once an outage
        self._retry_redis_after = retry_redis_after
        self._pending: set[asyncio.Task[None]] = set()

    # --- the RateLimit seam ----------------------------------------------------------------

    @property
    def counts_tokens(self) -> bool:
        return bool(self._per_token)

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of `tokens` may start; returns when it started
        (the local clock)."""
        async with self._lock:
            start = await self._slot(tokens)
        delay = start - self._clock()
        if delay > 0:
            await self._sleep(delay)
        return start

    def reserve(self, now: float, tokens: int = 0) -> float:
        """The synchronous seam's booking, served from the lease in hand or the local
        share; `acquire` is what a fan-out calls."""
        return self._local().reserve(now, tokens)

    def correct_tokens(self, estimated: int, actual: int) -> None:
        self._correction += actual - estimated
        if self._fallback is not None:
            self._fallback.correct_tokens(estimated, actual)

    def pause(self, until: float) -> None:
        """Hold every process's starts until `until` (this process's clock)."""
        self._paused_until = max(self._paused_until, until)
        if self._fallback is not None:
            self._fallback.pause(until)
        seconds = until - self._clock()
        if seconds > 0:
            self._in_background(self._send_pause(seconds))

    def _in_background(self, sending: Awaitable[None]) -> None:
        """Tell Redis without holding up the request that learned it; `close` waits."""
        task = asyncio.ensure_future(sending)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def observe(self, headers: Mapping[str, str], now: float) -> list[str]:
        pauses, declined = spent_budget_pauses(headers)
        for seconds in pauses:
            self.pause(now + seconds)
        return declined

    def slow_down(self, now: float) -> None:
        """A 429: every process runs slower for a while (see the module)."""
        if not self.adaptive:
            return
        if self._fallback is not None:
            self._fallback.slow_down(now)
        self._in_background(self._send_slow_down())

    async def close(self) -> None:
        """Wait for pauses still being sent, then close the Redis connection."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.redis.aclose()

    async def __aenter__(self) -> RedisRateLimit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- leases -----------------------------------------------------------------------------

    async def _slot(self, tokens: int) -> float:
        now = self._clock()
        if self._fallback is not None:
            if now - self._fallback_since < self._retry_redis_after:
                return self._fallback.reserve(now, tokens)
            self._fallback = None  # time to try Redis again
        token_room = not self._per_token or self._left_tokens >= tokens
        if self._left_requests > 0 and token_room:
            slot = max(self._next_slot, now, self._paused_until)
        else:
            try:
                wait = await self._take_lease(tokens)
            except Exception as exc:  # Redis unreachable, or refusing
                return self._fall_back(exc, now, tokens)
            self._warned = False
            slot = max(self._clock() + wait, self._paused_until)
        self._left_requests -= 1
        self._left_tokens -= tokens
        self._next_slot = slot + self._per_request
        return slot

    async def _take_lease(self, tokens: int) -> float:
        """Reserve `lease` requests and their tokens in Redis; seconds until the first."""
        requests = self.lease
        lease_tokens = max(tokens, 1) * self.lease if self._per_token else 0
        correction, self._correction = self._correction, 0
        try:
            wait_us, members = await self._lease_script(
                keys=self._keys,
                args=[
                    self._per_request * 1e6,
                    self._per_token * 1e6,
                    requests,
                    lease_tokens,
                    correction,
                    self._member,
                    _KEY_LIFETIME_MS,
                    SLOWDOWN_RECOVERY / 1e6 if self.adaptive else 0,
                ],
            )
        except Exception:
            self._correction += correction  # not sent: sent with the next lease
            raise
        self.round_trips += 1
        self.members = max(int(members), 1)
        self._left_requests = requests
        self._left_tokens = lease_tokens
        return max(float(wait_us), 0.0) / 1e6

    async def _send_pause(self, seconds: float) -> None:
        try:
            await self._pause_script(keys=[self._keys[2]], args=[seconds, _KEY_LIFETIME_MS])
            self.round_trips += 1
        except Exception:  # unreachable: the local pause holds this process at least
            pass

    async def _send_slow_down(self) -> None:
        try:
            stepped = await self._slow_down_script(
                keys=[self._keys[4]],
                args=[
                    SLOWDOWN_STEP,
                    SLOWDOWN_COOLDOWN * 1e6,
                    SLOWDOWN_RECOVERY / 1e6,
                    SLOWDOWN_MAX,
                    _KEY_LIFETIME_MS,
                ],
            )
            # Not `+= await`: that reads the count before the await, and sends that
            # overlap would each write back their own stale sum.
            self.slowed += stepped
            self.round_trips += 1
        except Exception:  # unreachable: the pause, and the local share, hold this process
            pass

    # --- without Redis ---------------------------------------------------------------------

    def _local(self) -> RateLimiter:
        """This process's share of the limit, for when Redis cannot be asked."""
        if self._fallback is None:
            share = self.members
            self._fallback = RateLimiter(
                requests_per_minute=self.requests_per_minute / share
                if self.requests_per_minute
                else None,
                tokens_per_minute=self.tokens_per_minute / share
                if self.tokens_per_minute
                else None,
                adaptive=self.adaptive,
            )
            self._fallback.pause(self._paused_until)
        return self._fallback

    def _fall_back(self, error: Exception, now: float, tokens: int) -> float:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"asyncchat: Redis at {self._describe_redis()} cannot be reached ({error}); "
                f"this process keeps 1/{self.members} of the shared limit on its own, and "
                f"tries Redis again every {self._retry_redis_after:g}s",
                RuntimeWarning,
                stacklevel=2,
            )
        self._fallback_since = now
        self._left_requests = self._left_tokens = 0
        return self._local().reserve(now, tokens)

    def _describe_redis(self) -> str:
        kwargs = getattr(getattr(self.redis, "connection_pool", None), "connection_kwargs", {})
        host, port = kwargs.get("host"), kwargs.get("port")
        return f"{host}:{port}" if host else "the given client"
