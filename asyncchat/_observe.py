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

from typing import Protocol

from asyncchat._http import Request, Response
from asyncchat._logging import describe_request, logger
from asyncchat._redact import redact
from asyncchat.errors import APIError

__all__ = ["LoggingObserver", "RequestObserver"]


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
    """The `asyncchat` logger's lines (ASYNCCHAT_LOG=debug|info): never a header."""

    def request_started(self, request: Request, attempt: int) -> None:
        if attempt == 0 and logger.isEnabledFor(10):
            logger.debug(
                "%s %s options=%s", request.method, redact(request.url), describe_request(request)
            )

    def request_succeeded(self, request: Request, response: Response, seconds: float) -> None:
        if logger.isEnabledFor(20):
            logger.info(
                "%s %s -> %s (request id %s) in %.3fs",
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
