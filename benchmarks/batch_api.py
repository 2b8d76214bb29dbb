"""One batch file two ways, as the command a user runs, against the mock server in a
process of its own: what each costs the machine that runs it.

- `asyncchat batch` (the local runner): every request sent from this process;
- `asyncchat batch --via batch-api`: split, uploaded, polled, merged; the mock's
  Batch API answers the requests (`--batch-pace` a second), as a provider would.

Each command runs in a fresh interpreter whose CPU time (user + system) and peak
memory (max RSS) are read from the kernel when it exits. With `--content-bytes`,
each request carries that much text, to show that the Batch API path streams its
parts and results instead of holding them: its peak memory should not grow with
the file.

    python -m benchmarks.batch_api [--requests 20000] [--content-bytes 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.mock import mock_server

# Runs one command and reports what the kernel counted for it.
_MEASURE = """
import resource, subprocess, sys, json
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": done.returncode, "cpu": usage.ru_utime + usage.ru_stime,
                  "rss_kb": usage.ru_maxrss, "stderr": done.stderr[-2000:]}))
"""


def write_requests(path: Path, count: int, content_bytes: int) -> None:
    with path.open("wb") as file:
        for i in range(count):
            text = f"hi {i} " + "x" * max(0, content_bytes - 8)
            record = {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
            }
            file.write(orjson.dumps(record) + b"\n")


def measure(command: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result['stderr']}")
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--content-bytes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-pace", type=float, default=100_000)
    options = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory() as folder,
        mock_server("--batch-pace", str(options.batch_pace)) as url,
    ):
        source = Path(folder) / "requests.jsonl"
        write_requests(source, options.requests, options.content_bytes)
        batch = [sys.executable, "-m", "asyncchat", "batch", str(source), "--base-url", url]
        local = ["-o", f"{folder}/local.jsonl", "--concurrency", str(options.concurrency)]
        via_api = ["-o", f"{folder}/api.jsonl", "--via", "batch-api", "--poll-interval", "0.2"]
        ways = {"local runner": [*batch, *local], "--via batch-api": [*batch, *via_api]}
        megabytes = source.stat().st_size / 1e6
        print(
            f"{options.requests:,} requests, {megabytes:.1f} MB of input; mock server in "
            f"its own process (batch pace {options.batch_pace:g}/s)\n"
        )
        print(
            f"{'way':<18}{'wall s':>9}{'client CPU s':>14}{'CPU µs/request':>16}{'peak RSS MB':>13}"
        )
        for name, command in ways.items():
            result = measure(command)
            output = Path(command[command.index("-o") + 1])
            assert sum(1 for _ in output.open("rb")) == options.requests, name
            print(
                f"{name:<18}{result['seconds']:>9.1f}{result['cpu']:>14.2f}"
                f"{result['cpu'] / options.requests * 1e6:>16.0f}{result['rss_kb'] / 1024:>13.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
