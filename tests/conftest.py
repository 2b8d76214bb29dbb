"""Fixtures: a loopback MockServer, a client bound to it, and a loop that fails on leaks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

import asyncchat
from asyncchat.testing import MockServer

if TYPE_CHECKING:  # the TLS tests' CA; CI's oldest-opentelemetry run goes without it
    import trustme

API_KEY = "sk-test-secret-key-0123456789"
Served = TypeVar("Served", bound=contextlib.AbstractAsyncContextManager[Any])


if os.environ.get("ASYNCCHAT_TEST_LOOP") == "uvloop":
    # CI runs the stream, fault and hostile-server suites again on uvloop, the loop
    # many users run in production.
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        return {"uvloop": uvloop.new_event_loop}


if os.environ.get("ASYNCCHAT_TEST_TELEMETRY") == "on":
    # CI runs the stream, fault, hostile-server, client, fan-out and tool-runner suites
    # again with telemetry recording into the SDK: it must change nothing a user sees,
    # and leave nothing open. The SDK is test_telemetry's, set up before any test, so
    # that suite passes in such a run too.
    from .otel_sdk import install

    install()


_RUN_SETTINGS = {"event loop": "ASYNCCHAT_TEST_LOOP", "telemetry": "ASYNCCHAT_TEST_TELEMETRY"}


def pytest_report_header() -> list[str]:
    return [
        f"{what}: {os.environ[name]}" for what, name in _RUN_SETTINGS.items() if name in os.environ
    ]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported so far lives for the whole run: keep it out of the garbage
    collections each test makes (below), which then take milliseconds, not tens."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
async def fail_on_loop_errors() -> AsyncIterator[None]:
    """Unretrieved task exceptions, unclosed sessions and the like fail the test."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    gc.collect()
    await asyncio.sleep(0)
    assert not errors, errors


@pytest.fixture
def background_server() -> Iterator[MockServer]:
    """A MockServer on its own loop in a thread, since main() runs its own loop."""
    with served_in_a_thread(MockServer(api_key=API_KEY)) as server:
        yield server


@contextlib.contextmanager
def served_in_a_thread(server: Served) -> Iterator[Served]:
    """`server` running on its own event loop in a thread, for as long as the block lasts
    (the code under test runs its own loop, or is a subprocess)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def run() -> None:
        async with server:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),))
    thread.start()
    assert started.wait(10)
    yield server
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A server's TLS context presenting `leaf`, a certificate a test's own CA issued."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(api_key=API_KEY) as mock:
        yield mock


@pytest.fixture
async def client(server: MockServer) -> AsyncIterator[asyncchat.Client]:
    # No real waits between retries: record them instead.
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with asyncchat.Client(
        base_url=server.base_url, api_key=API_KEY, sleep=no_sleep
    ) as chat_client:
        chat_client.sleeps = sleeps  # type: ignore[attr-defined]
        yield chat_client


def completion_json(content: str) -> dict[str, Any]:
    """A minimal non-streamed completion body, as a server would send it."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


def tool_call_stream(fragments: list[dict[str, Any]], finish_reason: str = "tool_calls") -> str:
    """An event stream of tool-call fragments, each in a chunk of its own, then a
    finish (`tool_calls` unless told) and `[DONE]`."""
    choices = [{"index": 0, "delta": {"tool_calls": [fragment]}} for fragment in fragments]
    choices.append({"index": 0, "delta": {}, "finish_reason": finish_reason})
    events = [f"data: {json.dumps({'choices': [choice]})}\n\n" for choice in choices]
    return "".join(events) + "data: [DONE]\n\n"


def openrouter_429(
    reset_at: float, *, limit: int = 50, remaining: int = 0, window: str = "free-models-per-day"
) -> dict[str, Any]:
    """OpenRouter's 429 body: its rate-limit headers inside, the reset (`reset_at`, a
    Unix time) in milliseconds, as in Gitlawb/openclaude#936."""
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(reset_at * 1000)),
    }
    message = f"Rate limit exceeded: {window}."
    return {"error": {"message": message, "code": 429, "metadata": {"headers": headers}}}


def free_port() -> int:
    """A loopback port nobody listens on (for refused connections and subprocess servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_that_accepts_nothing() -> Iterator[int]:
    """A loopback port that listens but accepts no connection: its one-place backlog
    is taken, so a connect there waits until the connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)):
            yield port


class RestartingServer:
    """A loopback server that answers its first request, then takes no connection
    (refused) for `down_for` seconds, or for good; then answers every request.
    `starts_down`: it takes no connection for its first `down_for` seconds instead
    (a server still starting), then answers every request. `loading`: once back
    (or started), it answers 503 "Loading model" for that long first, as
    llama.cpp's server does while it loads; None, for good."""

    def __init__(
        self, down_for: float | None, starts_down: bool = False, loading: float | None = 0.0
    ) -> None:
        self.down_for = down_for
        self.starts_down = starts_down
        self.loading = loading
        self.loading_until = 0.0  # the loop's time; 503 until then
        self.answered = 0
        self.unavailable = 0  # requests answered 503
        self.port = 0  # any, the first time; the same one after a restart
        self.listening: asyncio.Server | None = None
        self.restart: asyncio.TimerHandle | None = None
        self.restarted: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.listening = await asyncio.start_server(self.answer, "127.0.0.1", self.port)
        self.port = self.listening.sockets[0].getsockname()[1]

    async def __aenter__(self) -> str:
        if not self.starts_down:
            await self.start()
        else:
            self.port = free_port()
            if self.down_for == 0:  # up at once, though maybe loading
                self._restart()
                assert self.restarted is not None
                await self.restarted
            elif self.down_for is not None:
                self.restart = asyncio.get_running_loop().call_later(self.down_for, self._restart)
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aexit__(self, *exc_info: object) -> None:
        if self.restart is not None:
            self.restart.cancel()
        if self.restarted is not None:
            await self.restarted
        if self.listening is not None:
            self.listening.close()

    def _restart(self) -> None:
        loop = asyncio.get_running_loop()
        self.loading_until = float("inf") if self.loading is None else loop.time() + self.loading
        self.restarted = asyncio.ensure_future(self.start())

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        if asyncio.get_running_loop().time() < self.loading_until:
            self.unavailable += 1
            status = b"503 Service Unavailable"
            error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
            body = json.dumps({"error": error}).encode()
        else:
            self.answered += 1
            if self.answered == 1 and not self.starts_down and self.listening is not None:
                self.listening.close()  # down: the port refuses connections
                self.listening = None
                if self.down_for is not None:
                    loop = asyncio.get_running_loop()
                    self.restart = loop.call_later(self.down_for, self._restart)
            status = b"200 OK"
            body = json.dumps(completion_json(f"answer {self.answered}")).encode()
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session (`make test` installs the Debian package)."""
    binary = shutil.which("redis-server")
    assert binary, "no redis-server: apt-get install redis-server (`make test` does it as root)"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (a clean `sys.modules`); its standard output."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout
