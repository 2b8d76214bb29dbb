"""Fan-out: many completions with bounded concurrency and a shared rate limit.

`fan_out` runs `concurrency` workers that pull requests lazily from any
iterable or async iterable (a million-line input never sits in memory) and
yields `(index, result)` as each finishes, an exception object in place of a
failed result. Leaving early, or being cancelled, cancels every request still
in flight, which releases its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from typing import Any, TypeVar

from asyncchat._logging import logger
from asyncchat._ratelimit import MAX_RESET_PAUSE, RateLimit

__all__ = ["Pacer", "Requests", "fan_out"]

T = TypeVar("T")
R = TypeVar("R")
Requests = Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]]
_WORKER_DONE: Any = object()


class Pacer:
    """The async side of a `RateLimit`: waits until a request may start."""

    def __init__(
        self,
        limiter: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limiter = limiter
        self.clock = clock
        self.sleep = sleep
        self._warned = False

    @property
    def counts_tokens(self) -> bool:
        return self.limiter.counts_tokens

    async def wait_turn(self, tokens: int) -> None:
        acquire = getattr(self.limiter, "acquire", None)
        if acquire is not None:  # a limit kept on a server: see RateLimit
            await acquire(tokens)
            return
        start = self.limiter.reserve(self.clock(), tokens)
        delay = start - self.clock()
        if delay > 0:
            await self.sleep(delay)

    def pause_for(self, seconds: float) -> None:
        self.limiter.pause(self.clock() + seconds)

    def refused(self) -> None:
        """A 429: a limit that adapts (`slow_down`) runs slower for a while."""
        slow_down = getattr(self.limiter, "slow_down", None)
        if slow_down is not None:
            slow_down(self.clock())

    def observe(self, headers: Mapping[str, str]) -> None:
        for header in self.limiter.observe(headers, self.clock()):
            if self._warned:
                return  # once per fan-out, not once per response
            self._warned = True
            logger.warning(
                "asyncchat: not pausing for %s with the budget spent: longer than %.0fs or "
                "not a duration; requests go on, and a 429 then says how long to wait",
                header,
                MAX_RESET_PAUSE,
            )


async def _numbered(
    requests: Iterable[R] | AsyncIterable[R],
) -> AsyncGenerator[tuple[int, R], None]:
    if isinstance(requests, AsyncIterable):
        index = 0
        async for request in requests:
            yield index, request
            index += 1
    else:
        for index, request in enumerate(requests):
            yield index, request


async def fan_out(
    run_one: Callable[[R], Awaitable[T]],
    requests: Iterable[R] | AsyncIterable[R],
    *,
    concurrency: int,
) -> AsyncGenerator[tuple[int, T | Exception], None]:
    """Run `run_one` over the requests, at most `concurrency` at a time, as they finish."""
    if isinstance(requests, (str, bytes, Mapping)):
        raise TypeError("requests must be an iterable of request dicts, not a single one")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    source = _numbered(requests)
    source_lock = asyncio.Lock()
    finished: asyncio.Queue[Any] = asyncio.Queue()

    async def worker() -> None:
        try:
            while True:
                async with source_lock:
                    try:
                        index, request = await source.__anext__()
                    except StopAsyncIteration:
                        return
                try:
                    result: T | Exception = await run_one(request)
                except Exception as exc:  # kept in place; cancellation still propagates
                    result = exc
                finished.put_nowait((index, result))
        finally:
            finished.put_nowait(_WORKER_DONE)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    running = len(workers)
    try:
        while running:
            item = await finished.get()
            if item is _WORKER_DONE:
                running -= 1
            else:
                yield item
        for task in workers:
            task.result()  # a worker that died of something else than an item's error
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await source.aclose()
