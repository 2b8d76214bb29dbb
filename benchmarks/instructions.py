"""Instructions per stream, counted by valgrind: a measure that machine noise does not move.

CPU time on a shared machine moves by tens of percent from run to run; the number
of instructions a client executes does not. This runs one benchmark client under
`valgrind --tool=cachegrind` twice, with `--small` and `--large` concurrent
streams, and reports the difference divided by the difference in streams, so the
interpreter's start and imports cancel out.

    python -m benchmarks.instructions --runners asyncchat floor-parse --scenarios bulk

Needs valgrind (`apt-get install valgrind`). Under valgrind a client runs about 50
times slower: keep the official SDK's runners to a few dozen streams.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

from benchmarks.__main__ import LoadServer
from benchmarks.clients import RUNNERS
from benchmarks.scenarios import SCENARIOS, build

_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def count_instructions(runner: str, url: str, n: int, scenario: str) -> int:
    """Instructions executed by one client process running n streams."""
    completed = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.clients",
            runner,
            url,
            str(n),
            scenario,
        ],
        capture_output=True,
        text=True,
        check=True,
        # One hash seed for every run unless told otherwise: with a random one,
        # dicts and sets lay out differently each run, moving counts a little.
        env={"PYTHONHASHSEED": "0", **os.environ},
    )
    match = _TOTAL.search(completed.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {completed.stderr[-300:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--runners", nargs="+", default=["asyncchat", "floor-parse"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--small", type=int, default=50, help="streams in the first run")
    parser.add_argument("--large", type=int, default=250, help="streams in the second run")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    unknown = [runner for runner in args.runners if runner not in RUNNERS]
    if unknown or args.large <= args.small:
        parser.error(f"unknown runners {unknown}" if unknown else "--large must exceed --small")
    server = LoadServer()
    try:
        for scenario in args.scenarios:
            chunks = build(scenario).chunk_count
            for runner in args.runners:
                small = count_instructions(runner, server.url, args.small, scenario)
                large = count_instructions(runner, server.url, args.large, scenario)
                per_stream = (large - small) / (args.large - args.small)
                print(
                    f"{scenario:6} {runner:17} {per_stream / 1e6:8.3f} M instructions per stream"
                    f"  {per_stream / chunks / 1e3:7.1f} k per chunk",
                    flush=True,
                )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
