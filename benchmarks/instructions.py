"""Instructions per stream, counted by valgrind: a measure that machine noise does not move.

CPU time on a shared machine moves by tens of percent from run to run; the number
of instructions a client executes does not. This runs one benchmark client under
`valgrind --tool=cachegrind` twice, with `--small` and `--large` concurrent
streams, and reports the difference divided by the difference in streams, so the
interpreter's start and imports cancel out.

    python -m benchmarks.instructions --runners asyncchat floor-parse --scenarios bulk

With `--split`, each count is taken again on streams `--scale` times as long,
and split into what one more chunk costs and what a stream costs besides its
chunks (the request, the response's headers, telemetry's span): a per-stream
cost weighs less the longer the streams are, a per-chunk one does not.

The `paced` scenario is counted at 4 and 12 streams unless told otherwise: slowed
by valgrind, a client keeps up with that many at a model's pace, reading each
event on its own, and at 50 it would not. Count it on an idle machine: a client
that shares the cores falls behind, reads some events two at a time, and counts
about 4% fewer instructions. Even idle, its counts move by a percent or two from
run to run: its streams' events arrive together, and how many of them the event
loop takes in one turn (each turn costs its own instructions) varies with timing.

With `--repeat K`, the runners are counted in K rounds, one after another in each,
and each runner's median is reported with its range and the median of its ratios to
the first runner in the same round: the numbers to compare where counts move.

Needs valgrind (`apt-get install valgrind`). Under valgrind a client runs about 50
times slower: keep the official SDK's runners to a few dozen streams.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

from benchmarks.__main__ import LoadServer
from benchmarks.clients import RUNNERS
from benchmarks.scenarios import SCENARIOS

_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")
# The (small, large) stream counts of a scenario, unless the command line gives them.
_STREAMS = {"paced": (4, 12)}
_USUAL_STREAMS = (50, 250)


def counting_environment(scale: int) -> dict[str, str]:
    """The environment of a counted process whose streams are `scale` times as long."""
    # One hash seed for every run unless told otherwise: with a random one, dicts
    # and sets lay out differently each run, moving counts a little.
    return {"PYTHONHASHSEED": "0", **os.environ, "BENCH_STREAM_SCALE": str(scale)}


def valgrind_instructions(command: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions `command` executes, start to exit, counted by valgrind."""
    completed = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         *command],
        capture_output=True,
        text=True,
        env=env if env is not None else counting_environment(1),
    )  # fmt: skip
    if completed.returncode != 0:  # the command's own error, without valgrind's lines
        own = [line for line in completed.stderr.splitlines() if not line.startswith("==")]
        raise RuntimeError(
            f"{' '.join(command)} exited {completed.returncode} under valgrind: "
            + "\n".join(own[-15:])
        )
    match = _TOTAL.search(completed.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {completed.stderr[-300:]}")
    return int(match.group(1).replace(",", ""))


def count_instructions(runner: str, url: str, n: int, scenario: str, scale: int = 1) -> int:
    """Instructions executed by one client process running n streams."""
    return valgrind_instructions(
        [sys.executable, "-m", "benchmarks.clients", runner, url, str(n), scenario],
        counting_environment(scale),
    )


def per_stream(
    runner: str, url: str, scenario: str, small: int, large: int, scale: int = 1
) -> float:
    """Instructions per stream: the difference between runs of `small` and `large`
    streams, divided by the difference in streams."""
    difference = count_instructions(runner, url, large, scenario, scale) - count_instructions(
        runner, url, small, scenario, scale
    )
    return difference / (large - small)


def _chunk_count(scenario: str, scale: int) -> int:
    """Chunks per stream of `scenario` at `scale` (what that process would build)."""
    code = f"from benchmarks.scenarios import build; print(build({scenario!r}).chunk_count)"
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=counting_environment(scale),
    ).stdout
    return int(output)


def stream_counts(scenario: str, small: int | None, large: int | None) -> tuple[int, int]:
    """The stream counts to count `scenario` at: those given, else its defaults."""
    usual_small, usual_large = _STREAMS.get(scenario, _USUAL_STREAMS)
    return (usual_small if small is None else small, usual_large if large is None else large)


def summary_lines(scenario: str, counts: dict[str, list[float]]) -> list[str]:
    """Per runner, its median count per stream over the rounds, their range, and the
    median of its ratios to the first runner's count in the same round (counted just
    before or after it, so on the machine as it was then)."""
    first = next(iter(counts))
    lines = []
    for runner, values in counts.items():
        line = (
            f"{scenario:6} {runner:19} median {statistics.median(values) / 1e6:8.3f} M"
            f"  ({min(values) / 1e6:.3f} to {max(values) / 1e6:.3f})"
        )
        if runner != first:
            pairs = zip(values, counts[first], strict=True)
            ratios = [value / base for value, base in pairs]
            line += (
                f"  {statistics.median(ratios):.3f}x {first}"
                f" ({min(ratios):.3f}x to {max(ratios):.3f}x)"
            )
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--runners", nargs="+", default=["asyncchat", "floor-parse"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--small", type=int, help="streams in the first run (default 50; paced: 4)")
    parser.add_argument(
        "--large", type=int, help="streams in the second run (default 250; paced: 12)"
    )
    parser.add_argument(
        "--split", action="store_true", help="also count on longer streams: per chunk, per stream"
    )
    parser.add_argument("--scale", type=int, default=5, help="how much longer, with --split")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of counts, summarized when more than one"
    )
    args = parser.parse_args(argv)
    unknown = [runner for runner in args.runners if runner not in RUNNERS]
    if unknown:
        parser.error(f"unknown runners {unknown}")
    streams = {
        scenario: stream_counts(scenario, args.small, args.large) for scenario in args.scenarios
    }
    for scenario, (small, large) in streams.items():
        if large <= small:
            parser.error(f"{scenario}: --large ({large}) must exceed --small ({small})")
    if args.split and args.scale < 2:
        parser.error("--scale must be at least 2")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.repeat > 1 and len(set(args.runners)) < len(args.runners):
        parser.error("with --repeat, name each runner once")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    server = LoadServer(counting_environment(1))
    longer = LoadServer(counting_environment(args.scale)) if args.split else None
    try:
        for scenario in args.scenarios:
            chunks = _chunk_count(scenario, 1)
            small, large = streams[scenario]
            counts: dict[str, list[float]] = {runner: [] for runner in args.runners}
            for runner in args.runners * args.repeat:  # rounds of every runner
                usual = per_stream(runner, server.url, scenario, small, large)
                counts[runner].append(usual)
                line = (
                    f"{scenario:6} {runner:19} {usual / 1e6:8.3f} M instructions per stream"
                    f"  {usual / chunks / 1e3:7.1f} k per chunk"
                )
                if longer is not None:
                    more_chunks = _chunk_count(scenario, args.scale)
                    long = per_stream(runner, longer.url, scenario, small, large, args.scale)
                    per_chunk = (long - usual) / (more_chunks - chunks)
                    fixed = usual - per_chunk * chunks
                    line += (
                        f"  = {per_chunk / 1e3:6.1f} k per chunk + {fixed / 1e6:6.3f} M per stream"
                    )
                print(line, flush=True)
            if args.repeat > 1:
                print("\n".join(summary_lines(scenario, counts)), flush=True)
    finally:
        server.stop()
        if longer is not None:
            longer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
