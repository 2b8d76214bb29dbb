"""Instructions per chunk of each step a streamed chunk takes, counted by valgrind.

`python -m benchmarks.instructions --split` says what one more chunk costs a whole
client; this says where it goes. Each step runs the scenario's events through the
sans-IO pieces in a loop, one event a read, and adds one piece to the step before:

- `floor`: what `floor-parse` does with a read: split on blank lines,
  `orjson.loads`, take the text or arguments piece out of the dict (its `_touch`);
- `decode`: `asyncchat.sse`'s fast path and the stream's checks of the decoded
  JSON instead of the split;
- `accumulate`: the accumulator takes in every chunk;
- `objects`: each chunk handed out as a `ChatCompletionChunk` and read as the
  benchmark's clients read it (`chunk.choices[0].delta.content`, `.tool_calls`)
  instead of the dict.

    python -m benchmarks.steps --scenarios token tools [--steps floor decode]

`BENCH_STREAM_SCALE=5` counts on streams five times as long. Every step checks
that it got the stream's text or arguments back. What is left of a client's cost
per chunk after these is the transport and the event loop: aiohttp's read, the
stream's `__anext__`, the reader's `async for`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable

import orjson

from benchmarks.clients import _touch
from benchmarks.instructions import counting_environment, valgrind_instructions
from benchmarks.scenarios import SCENARIOS, STREAM_SCALE, Stream, build

STEPS = ("floor", "decode", "accumulate", "objects")


def _floor(reads: list[bytes]) -> list[str]:
    pieces: list[str] = []
    arguments = pieces  # one list: a stream is text or a tool call's arguments
    buffer = b""
    for read in reads:
        events = (buffer + read).split(b"\n\n")
        buffer = events.pop()
        for event in events:
            if event != b"data: [DONE]":
                _touch(orjson.loads(event[6:]), pieces, arguments)
    return pieces


def _asyncchat(reads: list[bytes], accumulate: bool, objects: bool) -> list[str]:
    from asyncchat.accumulate import ChatCompletionAccumulator
    from asyncchat.sse import SSEDecoder
    from asyncchat.types import ChatCompletionChunk

    pieces: list[str] = []
    decoder = SSEDecoder()
    accumulator = ChatCompletionAccumulator()
    for read in reads:
        payloads = decoder.take_data_events(read)
        assert payloads is not None, "every event takes the decoder's fast path"
        for payload in payloads:
            if payload == b"[DONE]":
                continue
            data = orjson.loads(payload)
            if type(data) is not dict or "choices" not in data or "error" in data:
                raise AssertionError(f"not a plain chunk: {payload!r}")
            if accumulate:
                accumulator._ingest(data)
            if not objects:
                _touch(data, pieces, pieces)
                continue
            chunk = ChatCompletionChunk(data, None)
            if chunk.choices:
                delta = chunk.choices[0].delta
                if delta.content:
                    pieces.append(delta.content)
                elif delta.tool_calls:
                    piece = delta.tool_calls[0].function.arguments
                    if piece:
                        pieces.append(piece)
    return pieces


def step_function(step: str) -> Callable[[list[bytes]], list[str]]:
    if step == "floor":
        return _floor
    index = STEPS.index(step)
    return lambda reads: _asyncchat(reads, accumulate=index >= 2, objects=index >= 3)


def _expected(stream: Stream) -> str:
    return stream.content or stream.arguments or ""


def run(step: str, scenario: str, streams: int) -> None:
    """What one counted process does: `streams` times the scenario through `step`."""
    stream = build(scenario)
    function = step_function(step)
    for _ in range(streams):
        if "".join(function(stream.events)) != _expected(stream):
            raise AssertionError(f"step {step} did not get the {scenario} stream back")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steps", description=__doc__)
    parser.add_argument("--scenarios", nargs="+", default=["token", "tools"], choices=SCENARIOS)
    parser.add_argument(
        "--steps", nargs="+", default=list(STEPS), choices=STEPS, help="count only these"
    )
    parser.add_argument("--small", type=int, default=20, help="streams in the first run")
    parser.add_argument("--large", type=int, default=220, help="streams in the second run")
    # What each counted process is told to do.
    parser.add_argument("--run", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        step, scenario, streams = args.run
        run(step, scenario, int(streams))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.large <= args.small:
        parser.error("--large must exceed --small")
    # The counted processes build the streams this one counts chunks of: the same
    # length, `BENCH_STREAM_SCALE` times the usual when it is set.
    environment = counting_environment(STREAM_SCALE)
    for scenario in args.scenarios:
        chunks = build(scenario).chunk_count
        before: float | None = None  # the step before's count, when it was counted
        for step in STEPS:
            if step not in args.steps:
                before = None
                continue
            command = [sys.executable, "-m", "benchmarks.steps", "--run", step, scenario]
            small = valgrind_instructions([*command, str(args.small)], environment)
            large = valgrind_instructions([*command, str(args.large)], environment)
            per_chunk = (large - small) / (args.large - args.small) / chunks
            added = f"  {(per_chunk - before) / 1e3:+6.1f} k" if before is not None else ""
            print(f"{scenario:6} {step:11} {per_chunk / 1e3:7.1f} k per chunk{added}", flush=True)
            before = per_chunk
    return 0


if __name__ == "__main__":
    sys.exit(main())
