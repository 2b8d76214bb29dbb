"""A load server cheap enough that the client is what gets measured.

A raw asyncio protocol speaking just enough HTTP/1.1 (keep-alive, chunked
responses) to stream pre-rendered SSE bytes. The request's `model` names the
scenario: `token` and `tools` write one event per socket write, yielding to
the loop between writes as a token-by-token server does; `bulk` writes the
whole body at once. A client that reads slower than this writes gets several
events a read. `paced` waits `scenarios.PACE` seconds between writes instead
(`BENCH_PACE`, 0.05 unless set), so each event is a read of its own, as when a
model makes the tokens.
`GET /stats` reports the server's own CPU time and the connections it accepted,
so a saturated server shows in the results.

Run: `python -m benchmarks.load_server --port 0` prints `PORT <n>` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

import orjson

from benchmarks.scenarios import PACE, SCENARIOS, build

_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\n"
    b"x-request-id: bench\r\n\r\n"
)


def _framed(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0


class BenchProtocol(asyncio.Protocol):
    """One connection: parses requests, streams the scenario's events."""

    def __init__(self, stats: Stats, frames: dict[str, list[bytes]]) -> None:
        self.stats = stats
        self.frames = frames
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body_end = head_end + 4 + length
        if len(self.buffer) < body_end:
            return
        body = self.buffer[head_end + 4 : body_end]
        self.buffer = self.buffer[body_end:]
        self.stats.requests += 1
        if method == "GET" and path.endswith("/stats"):
            self._reply_json(
                {
                    "cpu_seconds": time.process_time(),
                    "connections": self.stats.connections,
                    "requests": self.stats.requests,
                }
            )
            return
        scenario = orjson.loads(body).get("model", "token") if body else "token"
        self.busy = True
        asyncio.get_running_loop().create_task(self._stream(scenario))

    def _reply_json(self, value: object) -> None:
        payload = orjson.dumps(value)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        self._next_request()

    async def _stream(self, scenario: str) -> None:
        frames = self.frames[scenario]
        transport = self.transport
        if transport is None:
            return
        if scenario == "bulk":
            transport.write(_HEADERS + b"".join(frames))
        else:
            transport.write(_HEADERS)
            pause = PACE if scenario == "paced" else 0  # 0: only yield to the loop
            for frame in frames:
                if self.transport is None:
                    return
                transport.write(frame)
                await asyncio.sleep(pause)
                if not self.can_write.is_set():
                    await self.can_write.wait()
        self.busy = False
        if self.transport is not None:
            self._next_request()


async def serve(host: str, port: int) -> None:
    stats = Stats()
    frames = {}
    for scenario in SCENARIOS:
        stream = build(scenario)
        frames[scenario] = [_framed(event) for event in stream.events] + [b"0\r\n\r\n"]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BenchProtocol(stats, frames), host, port, backlog=4096, reuse_address=True
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def raise_file_limit() -> None:
    """10,000 connections need 10,000 file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_file_limit()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
