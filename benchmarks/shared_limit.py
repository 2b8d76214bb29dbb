"""How well processes sharing one `RedisRateLimit` keep to it, and what it costs.

Starts a redis-server and the mock server, then `--processes` workers that send
requests as fast as the limit lets them for `--seconds`: with one limit shared
through Redis (`--rpm` for all of them), and with the naive split (each process
`--rpm / processes` on its own) when one worker has all the work (a skewed
job: the split leaves the others' share unused). Reports the rate the server
saw against the limit, the fastest 10-second window, and Redis round trips per
request.

With `--server-rpm` below `--rpm`, the server keeps a provider's limit of its own
and answers what is over it with a 429 and `Retry-After` (a 429 storm): every
worker has work, and the table adds the 429s per answered request, shared limit
(whose pauses, and slowdown after a 429, hold every process) against the same
shared limit at a fixed rate, and against the split (each process slows itself).

    python -m benchmarks.shared_limit [--processes 4] [--rpm 600] [--seconds 30]
                                      [--server-rpm 450]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.mock import mock_server

MESSAGES = [{"role": "user", "content": "hi"}]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Count429:
    """Counts the 429s a client's requests got (each retried after its Retry-After)."""

    def __init__(self) -> None:
        self.count = 0

    def request_started(self, request: Any, attempt: int) -> None:
        pass

    def request_succeeded(self, request: Any, response: Any, seconds: float) -> None:
        pass

    def request_failed(
        self, request: Any, attempt: int, error: Any, seconds: float, retry_in: float | None
    ) -> None:
        self.count += getattr(error, "status_code", None) == 429


async def worker(
    url: str, redis_url: str, rpm: float, seconds: float, mode: str, busy: bool
) -> dict[str, Any]:
    """One process's requests for `seconds`; the times they were answered."""
    import asyncchat
    from asyncchat._ratelimit import RateLimiter
    from asyncchat.redislimit import RedisRateLimit

    too_many = _Count429()
    async with asyncchat.Client(
        base_url=url, api_key="bench", max_retries=10, observers=[too_many]
    ) as client:
        limit: Any
        if mode.startswith("shared"):
            limit = RedisRateLimit(
                redis_url, requests_per_minute=rpm, client=client, adaptive=mode == "shared"
            )
        else:
            limit = RateLimiter(requests_per_minute=rpm)
        deadline = time.monotonic() + seconds
        answered: list[float] = []

        async def requests() -> Any:
            while busy and time.monotonic() < deadline:
                yield {"model": "m", "messages": MESSAGES}

        async for _, result in client.chat.as_completed(
            requests(), concurrency=8, rate_limit=limit
        ):
            if isinstance(result, Exception):
                raise result
            answered.append(time.time())
        trips = getattr(limit, "round_trips", 0)
        if mode.startswith("shared"):
            await limit.close()
    return {"answered": answered, "round_trips": trips, "429s": too_many.count}


async def booking_overhead(redis_url: str, count: int = 20_000) -> list[float]:
    """Seconds each `acquire()` takes under a limit too high to wait on: the time a
    request spends booking, a Redis round trip every `lease` requests."""
    from asyncchat.redislimit import RedisRateLimit

    times = []
    async with RedisRateLimit(redis_url, requests_per_minute=1e12, name="overhead") as limit:
        for _ in range(count):
            started = time.perf_counter()
            await limit.acquire()
            times.append(time.perf_counter() - started)
    return sorted(times)


def run_mode(
    mode: str, processes: int, rpm: float, seconds: float, url: str, redis_url: str, skew: bool
) -> dict[str, Any]:
    """Every worker of one mode, as separate processes; what the server saw."""
    shared = mode.startswith("shared")
    share = rpm if shared else rpm / processes
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for index in range(processes):
            busy = shared or index == 0 or not skew  # skewed: one has the work
            out = Path(tmp) / f"{index}.json"
            code = (
                "import asyncio, json, sys\n"
                "from benchmarks.shared_limit import worker\n"
                f"r = asyncio.run(worker({url!r}, {redis_url!r}, {share}, {seconds}, "
                f"{mode!r}, {busy}))\n"
                f"open({str(out)!r}, 'w').write(json.dumps(r))\n"
            )
            runs.append((subprocess.Popen([sys.executable, "-c", code]), out))
        times: list[float] = []
        trips = too_many = 0
        for process, out in runs:
            assert process.wait(seconds + 120) == 0, f"a {mode} worker failed"
            result = json.loads(out.read_text())
            times += result["answered"]
            trips += result["round_trips"]
            too_many += result["429s"]
    times.sort()
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    window = max((sum(1 for t in times if start <= t < start + 10) for start in times), default=0)
    return {
        "mode": mode,
        "requests": len(times),
        "per_minute": (len(times) - 1) / span * 60 if span else 0.0,
        "fastest_10s_per_minute": window * 6,
        "round_trips_per_request": trips / len(times) if times else 0.0,
        "429s_per_request": too_many / len(times) if times else 0.0,
    }


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--processes", type=int, default=4)
    options.add_argument("--rpm", type=float, default=600)
    options.add_argument("--seconds", type=float, default=30)
    options.add_argument("--server-rpm", type=float, help="the server's own limit (429s over it)")
    args = options.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("needs redis-server (apt-get install redis-server)")
    redis_port = _free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        server_options = ("--rpm", str(args.server_rpm)) if args.server_rpm else ()
        with mock_server(*server_options) as url:
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            time.sleep(0.5)
            storm = f", the server's own limit {args.server_rpm:g}/min" if args.server_rpm else ""
            print(
                f"{args.processes} processes, limit {args.rpm:g}/min{storm}, "
                f"{args.seconds:g} s each"
            )
            booked = asyncio.run(booking_overhead(redis_url))
            print(
                f"booking a request: {statistics.mean(booked) * 1e6:.0f} µs mean, "
                f"{booked[len(booked) // 2] * 1e6:.0f} µs median, "
                f"{booked[len(booked) * 99 // 100] * 1e6:.0f} µs p99 (lease of 4, loopback Redis)"
            )
            print(
                f"{'mode':22}{'requests':>10}{'per min':>10}{'fastest 10 s':>14}"
                f"{'trips/req':>11}{'429s/req':>10}"
            )
            skew = not args.server_rpm
            # In a storm, also the shared limit that does not slow down after a 429.
            modes = ("shared", "shared-fixed", "split") if args.server_rpm else ("shared", "split")
            labels = {
                "shared": "shared (Redis)",
                "shared-fixed": "shared, fixed rate",
                "split": "naive split, skewed" if skew else "naive split",
            }
            for mode in modes:
                row = run_mode(mode, args.processes, args.rpm, args.seconds, url, redis_url, skew)
                label = labels[mode]
                print(
                    f"{label:22}{row['requests']:>10}{row['per_minute']:>10.1f}"
                    f"{row['fastest_10s_per_minute']:>14}{row['round_trips_per_request']:>11.2f}"
                    f"{row['429s_per_request']:>10.2f}",
                    flush=True,
                )
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
