"""Partial JSON as it streams: asyncchat's incremental parser against re-parsing.

Tool arguments of 1 KB to 1 MB arrive in 4-character fragments. Measured, in
one process and one run: asyncchat's `PartialJSONParser` fed every fragment
(reading nothing; applying the changes it returns, as a UI would; reading
`.value` after every fragment), and re-parsing the whole buffer after every
fragment: jiter in partial mode (the official SDK's method, and instructor's)
and the `partial-json-parser` package (both installed with the `bench` extra;
skipped, and said so, when they are not). Re-parsing is quadratic, so each
re-parser stops at the size where it would take minutes.

    python -m benchmarks.partial [--sizes 1000 10000 100000 1000000] [--plot docs/partial.png]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from asyncchat.partial_json import Change, PartialJSONParser

FRAGMENT = 4


def arguments(size: int) -> str:
    """Tool arguments of about `size` bytes: a file-writing call, mostly one long string."""
    return json.dumps({"path": "/tmp/notes.md", "content": "word " * (size // 5), "mode": "w"})


def _render(widgets: dict[tuple[Any, ...], list[str]], change: Change) -> None:
    """What a UI does with a change: a new widget per value, text appended to its widget."""
    if change.kind == "text":
        widgets[change.path].append(change.value)
    else:
        widgets[change.path] = [repr(change.value)]


def feed_only(pieces: list[str]) -> Any:
    parser = PartialJSONParser()
    for piece in pieces:
        parser.feed(piece)
    return parser.close()


def feed_and_render_changes(pieces: list[str]) -> Any:
    parser, widgets = PartialJSONParser(), {}
    for piece in pieces:
        for change in parser.feed(piece):
            _render(widgets, change)
    return parser.close()


def feed_and_read_value(pieces: list[str]) -> Any:
    parser = PartialJSONParser()
    for piece in pieces:
        parser.feed(piece)
        parser.value  # noqa: B018  (the read is what is measured)
    return parser.close()


def jiter_reparse(pieces: list[str]) -> Any:
    import jiter

    buffer, value = "", None
    for piece in pieces:
        buffer += piece
        value = jiter.from_json(buffer.encode(), partial_mode=True)  # as the SDK calls it
    return value


def partial_json_parser_reparse(pieces: list[str]) -> Any:
    from partial_json_parser import loads

    buffer, value = "", None
    for piece in pieces:
        buffer += piece
        value = loads(buffer)
    return value


# Each runner, and the largest size (bytes) it is run at: a quadratic one takes
# minutes beyond it.
RUNNERS: dict[str, tuple[Callable[[list[str]], Any], int]] = {
    "asyncchat (feed)": (feed_only, 10**9),
    "asyncchat (feed + render changes)": (feed_and_render_changes, 10**9),
    "asyncchat (feed + .value)": (feed_and_read_value, 1_000_000),
    "jiter re-parse (official SDK)": (jiter_reparse, 300_000),
    "partial-json-parser re-parse": (partial_json_parser_reparse, 30_000),
}


def measure(run: Callable[[list[str]], Any], size: int, repeat: int = 5) -> float | None:
    """CPU seconds to parse arguments of `size` bytes in fragments, the best of `repeat`
    runs (this machine is shared: the best is the least disturbed; a run over two
    seconds is not repeated); None if the parser is not installed."""
    text = arguments(size)
    pieces = [text[i : i + FRAGMENT] for i in range(0, len(text), FRAGMENT)]
    try:
        run(list(arguments(100)))  # a warm-up, which also imports the re-parser: not timed
    except ImportError:
        return None
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()  # CPU time: a shared machine's waits are not counted
        result = run(pieces)
        seconds = time.process_time() - started
        assert result == json.loads(text), run.__name__
        best = min(best, seconds)
        if seconds > 2:
            break
    return best


def plot(results: dict[str, dict[int, float]], path: str) -> None:
    """Milliseconds by size, log-log: a straight line of slope 1 is linear time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in results.items():
        if points:
            sizes = sorted(points)
            axis.plot(sizes, [points[s] * 1000 for s in sizes], marker="o", label=name)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("tool arguments (bytes), in 4-character fragments")
    axis.set_ylabel("total parse time (ms)")
    axis.set_title("Partial JSON as it streams: incremental vs re-parse per fragment")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000]
    )
    options.add_argument("--repeat", type=int, default=5, help="runs of each cell (best kept)")
    options.add_argument("--plot", metavar="PNG", help="also draw the curves into this file")
    args = options.parse_args()
    sizes = args.sizes
    results: dict[str, dict[int, float]] = {}
    print(f"{'runner':34}" + "".join(f"{size:>12,} B" for size in sizes))
    for name, (run, limit) in RUNNERS.items():
        cells, results[name] = [], {}
        for size in sizes:
            seconds = measure(run, size, args.repeat) if size <= limit else None
            if size > limit:
                cells.append(f"{'-':>14}")
            elif seconds is None:
                cells.append(f"{'not installed':>14}")
            else:
                results[name][size] = seconds
                cells.append(f"{seconds * 1000:>11.1f} ms")
        print(f"{name:34}" + "".join(cells), flush=True)
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
