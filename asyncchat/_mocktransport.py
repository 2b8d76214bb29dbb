"""`MockTransport`: answers a client's requests in-process, with no socket.

The fastest way to unit-test code that uses asyncchat: give the client a
transport whose handler returns the answer.

    def handler(request):
        assert request.json()["model"] == "m"
        return MockResponse(json={"choices": [...]})    # or MockResponse(sse=[...])

    client = asyncchat.Client(api_key="test", transport=MockTransport(handler))

Everything above the transport runs for real: retries, errors, streams, the
accumulator, typed events. `MockResponse` is also what `MockServer.enqueue`
scripts, so one answer can be played either way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from asyncchat._config import Timeout
from asyncchat._http import Headers, Request, Response
from asyncchat.errors import ClientClosedError

__all__ = ["MockResponse", "MockTransport"]


@dataclass
class MockResponse:
    """A scripted answer.

    The body is one of: `json` (any JSON value, sent as `application/json`);
    `sse`, a list of events (a dict is sent as `data: <its JSON>`, a string as
    the raw event-stream text it is), followed by `data: [DONE]` unless `done`
    is False; or `body` (a dict or list sent as JSON, text, or bytes). `delay`
    holds the answer back that many seconds.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    json: Any = None
    sse: list[dict[str, Any] | str] | None = None
    done: bool = True

    @property
    def has_body(self) -> bool:
        return self.body is not None or self.json is not None or self.sse is not None

    def render(self) -> tuple[dict[str, str], list[bytes]]:
        """The headers to send and the body, in the pieces it is sent in."""
        headers = dict(self.headers)
        if self.sse is not None:
            headers.setdefault("Content-Type", "text/event-stream")
            pieces = [
                b"data: " + orjson.dumps(event) + b"\n\n"
                if isinstance(event, dict)
                else event.encode()
                for event in self.sse
            ]
            if self.done:
                pieces.append(b"data: [DONE]\n\n")
            return headers, pieces
        body = self.json if self.json is not None else self.body
        if self.json is not None or isinstance(body, (dict, list)):
            headers.setdefault("Content-Type", "application/json")
            return headers, [orjson.dumps(body)]
        if isinstance(body, str):
            return headers, [body.encode()]
        return headers, [body or b""]


Handler = Callable[[Request], "MockResponse | Awaitable[MockResponse]"]


class _MockResponse(Response):
    """A `MockResponse` being read: one piece per `receive()`."""

    def __init__(self, answer: MockResponse, url: str) -> None:
        headers, self._pieces = answer.render()
        super().__init__(answer.status, Headers(headers), url=url)
        self._pieces.reverse()

    async def receive(self) -> bytes:
        return self._pieces.pop() if self._pieces else b""


class MockTransport:
    """A transport that answers with `handler(request)`, sync or async.

    `requests` records every request sent. A handler may raise an asyncchat
    error to play a network failure: `ConnectError` (refused, never sent),
    `APIConnectionError` (dropped after sending), `APITimeoutError`.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._closed = False

    async def send(self, request: Request, timeout: Timeout) -> Response:
        if self._closed:
            raise ClientClosedError("this asyncchat.Client is closed; create a new one")
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, MockResponse):
            raise TypeError(f"a MockTransport handler must return a MockResponse, not {answer!r}")
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return _MockResponse(answer, request.url)

    async def close(self) -> None:
        self._closed = True
