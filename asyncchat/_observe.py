"""Observers: what sees every request of a client, without being inlined in it.

Logging is one; telemetry, metrics or a test's recorder are others. The client
calls each observer at the three moments of an attempt, synchronously (keep them
quick: they run on the request's path):

    class MyObserver:
        def request_started(self, request, attempt): ...
        def request_succeeded(self, request, response, seconds): ...
        def request_failed(self, request, attempt, error, seconds, retry_in): ...

    asyncchat.Client(observers=[MyObserver()])   # logging stays on as well

`attempt` counts from 0; `retry_in` is the wait before the next attempt, or None when
the error is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from asyncchat._http import Request, Response
from asyncchat._logging import describe_request, logger
from asyncchat._redact import redact
from asyncchat.errors import APIError

if TYPE_CHECKING:
    from asyncchat._timing import StreamTiming
    from asyncchat.accumulate import ChatCompletionAccumulator

__all__ = ["LoggingObserver", "RequestObserver", "stream_line"]


class RequestObserver(Protocol):
    def request_started(self, request: Request, attempt: int) -> None: ...

    def request_succeeded(self, request: Request, response: Response, seconds: float) -> None: ...

    def request_failed(
        self,
        request: Request,
        attempt: int,
        error: APIError,
        seconds: float,
        retry_in: float | None,
    ) -> None: ...


class LoggingObserver:
    """The `asyncchat` logger's lines (ASYNCCHAT_LOG=debug|info): never a header.

    One line per request at info, `key=value` for grep: its status, request id and
    duration; a stream's is written when it ends, with its time to first chunk,
    its chunks and how it ended.
    """

    def request_started(self, request: Request, attempt: int) -> None:
        if attempt == 0 and logger.isEnabledFor(10):
            logger.debug(
                "%s %s options=%s", request.method, redact(request.url), describe_request(request)
            )

    def request_succeeded(self, request: Request, response: Response, seconds: float) -> None:
        if request.headers.get("Accept") == "text/event-stream":
            return  # a stream's line comes at its end: see stream_line
        if logger.isEnabledFor(20):
            logger.info(
                "%s %s -> %s request_id=%s duration=%.3fs",
                request.method,
                redact(request.url),
                response.status,
                response.headers.get("x-request-id"),
                seconds,
            )

    def request_failed(
        self,
        request: Request,
        attempt: int,
        error: APIError,
        seconds: float,
        retry_in: float | None,
    ) -> None:
        if retry_in is None:
            logger.info("%s", error)
        else:
            logger.info("%s; retry %d in %.2fs", error, attempt + 1, retry_in)


def stream_line(
    request: Request, response: Response
) -> Callable[[StreamTiming, ChatCompletionAccumulator, BaseException | None], None]:
    """A stream's info line, written when the stream ends (see `StreamTiming`)."""

    def log(
        timing: StreamTiming, accumulator: ChatCompletionAccumulator, error: BaseException | None
    ) -> None:
        first = timing.time_to_first_chunk
        if error is not None:
            ended = f"error:{type(error).__name__}"
        else:
            ended = "closed" if timing.closed_early else "done"
        logger.info(
            "%s %s -> %s request_id=%s duration=%.3fs ttfc=%s chunks=%d ended=%s",
            request.method,
            redact(request.url),
            response.status,
            response.headers.get("x-request-id"),
            time.perf_counter() - timing.started,
            "-" if first is None else f"{first:.3f}s",
            accumulator.chunk_count,
            ended,
        )

    return log
