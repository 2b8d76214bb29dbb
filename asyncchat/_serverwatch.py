"""A batch job's view of its server: does it still take connections?

A request whose connection could not be opened (`ConnectError`) was never sent,
so it has no result to write. Before any request of the job has had an answer,
that is a wrong address or a server not started, and the job stops at once;
unless the caller says the server may still be `starting` (a script that starts
vLLM and the job together). Once one has, the server was there and may be
restarting (a vLLM reloading its model takes minutes). Either way the request
waits and tries again, and the job stops only when the server has taken no
connection for `patience` seconds.

While the job waits for its server anyway, a 502 or 503 answer says the same:
not serving yet (a proxy answers so while the server behind it starts). A 503
that says its model is loading (llama.cpp's "Loading model") says so at any
time: the address is right and the server restarted, or is starting. Such a
request was not run, so it waits and is sent again. Any other answer ends the
wait, after which a 502 or 503 is that one request's error, as an overloaded
server means it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

from asyncchat.errors import (
    APIStatusError,
    ConnectError,
    ServerNotReadyError,
    StreamError,
    TLSError,
)
from asyncchat.quirks import says_loading_model
from asyncchat.types import ChatCompletion

__all__ = ["DEFAULT_PATIENCE", "ServerWatch", "log_outages", "send_patiently"]

DEFAULT_PATIENCE = 300.0  # seconds a server may take to come back (or to start)
_FIRST_WAIT = 1.0  # seconds before a request tries again, doubling up to
_LONGEST_WAIT = 15.0
NOT_SERVING = frozenset({502, 503})  # what a proxy without its server (or one loading) answers


class ServerWatch:
    """Whether the job's server has answered, and since when it takes no connection
    (or is not serving)."""

    def __init__(
        self,
        patience: float = DEFAULT_PATIENCE,
        clock: Callable[[], float] = time.monotonic,
        *,
        starting: bool = False,  # the server may not be up yet: wait for its first answer
        on_refusal: Callable[[], None] = lambda: None,  # to show the wait as it goes on
        on_return: Callable[[float], None] = lambda seconds: None,  # back after seconds
    ) -> None:
        self.patience = patience
        self.clock = clock
        self.starting = starting
        self.on_refusal = on_refusal
        self.on_return = on_return
        self.answered = False  # has any request had an HTTP answer, even an error?
        self.down_since: float | None = None  # the first refusal (or 502/503) since an answer
        self.down_status: int | None = None  # what it answers while down; None: no connection
        self.seen_down: set[int | None] = set()  # every down_status met, for the summary
        self.outages = 0  # times the server was down (no connection, 502/503), then answered
        self.down_seconds = 0.0  # how long those lasted, in all

    def saw_answer(self) -> None:
        self.answered = True
        if self.down_since is not None:
            seconds = self.clock() - self.down_since
            self.down_since = None
            self.outages += 1
            self.down_seconds += seconds
            self.on_return(seconds)

    def downtime(self) -> tuple[int, float]:
        """Outages so far, one still going on included, and their seconds in all."""
        if self.down_since is None:
            return self.outages, self.down_seconds
        return self.outages + 1, self.down_seconds + self.clock() - self.down_since

    def not_serving(self, error: APIStatusError) -> bool:
        """Whether an error answer says the server is not serving yet: one that says
        its model is loading, or a 502 or 503 while the job waits for it anyway (it
        may be starting and has not answered, or it took no connection since its
        last answer)."""
        if error.status_code not in NOT_SERVING:
            return False
        waiting = self.down_since is not None or (self.starting and not self.answered)
        return waiting or says_loading_model(error.status_code, error.body)

    def wait_before_retry(self, retries: int, status: int | None = None) -> float | None:
        """Seconds a refused request (or one answered `status`, not serving) waits
        before its next try, after `retries` tries already; None when the job
        should stop."""
        if status is None and not (self.answered or self.starting):
            return None  # refused, never answered: a wrong address
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
        self.down_status = status
        self.seen_down.add(status)
        self.on_refusal()
        left = self.down_since + self.patience - now
        if left <= 0:
            return None
        return min(_FIRST_WAIT * 2.0**retries, _LONGEST_WAIT, left)


def log_outages(watch: ServerWatch, stream: TextIO) -> None:
    """Make `watch` write a line to `stream` when its server stops taking connections
    and one when it is back: a job that waits minutes must say so in its log."""
    told = False
    at_start = False  # the wait is for a server's first answer, not for a restart

    def refused() -> None:
        nonlocal told, at_start
        if not told:
            told, at_start = True, not watch.answered
            does = "takes no connection" if watch.down_status is None else "is not serving"
            status = "" if watch.down_status is None else f" (HTTP {watch.down_status})"
            waits = "wait for it to start" if at_start else "wait for it"
            stream.write(
                f"batch: the server {does}{status}; requests {waits} up to {watch.patience:g}s\n"
            )
            stream.flush()

    def back(seconds: float) -> None:
        nonlocal told
        told = False
        stream.write(f"batch: the server is {'up' if at_start else 'back'} after {seconds:.0f}s\n")
        stream.flush()

    watch.on_refusal, watch.on_return = refused, back


async def send_patiently(
    send: Callable[[Mapping[str, Any]], Awaitable[ChatCompletion]],
    body: Mapping[str, Any],
    watch: ServerWatch,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ChatCompletion:
    """`send(body)`, tried again while the server restarts, as `watch` allows.

    Raises the `ConnectError` (or, when the server answered 502 or 503 last, the
    `ServerNotReadyError`) that made the watch give up, its message saying how
    long the server was waited for.
    """
    retries = 0
    while True:
        try:
            answer = await send(body)
        except TLSError:
            raise  # the same certificate again: job-wide at once
        except ConnectError as exc:
            delay = watch.wait_before_retry(retries)
            if delay is None:
                if watch.answered or watch.starting:
                    raise ConnectError(
                        f"{exc}; the server has taken no connection for {watch.patience:g}s"
                    ) from None
                raise
        except APIStatusError as exc:
            if not watch.not_serving(exc):
                watch.saw_answer()  # the server is up, whatever it said
                raise
            delay = watch.wait_before_retry(retries, exc.status_code)
            if delay is None:
                raise ServerNotReadyError.after(exc, watch.patience) from None
        except StreamError:
            watch.saw_answer()
            raise
        else:
            watch.saw_answer()
            return answer
        await sleep(delay)
        retries += 1
