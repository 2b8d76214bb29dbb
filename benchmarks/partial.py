"""Partial JSON as it streams: asyncchat's incremental parser against re-parsing.

Tool arguments of 1 KB to 1 MB arrive in 4-character fragments. Measured, in
one process and one run: asyncchat's `PartialJSONParser` fed every fragment
(reading nothing; applying the changes it returns, as a UI would; reading
`.value` after every fragment), and the official SDK's method, jiter
re-parsing the whole buffer in partial mode after every fragment (installed
with the `bench` extra; skipped, and said so, when it is not). Re-parsing is
quadratic, so it stops at the sizes where it would take minutes.

    python -m benchmarks.partial [--sizes 1000 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from asyncchat.partial_json import Change, PartialJSONParser

FRAGMENT = 4
REPARSE_LIMIT = 100_000  # bytes: beyond this a quadratic re-parse takes minutes


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


RUNNERS: dict[str, Callable[[list[str]], Any]] = {
    "asyncchat (feed)": feed_only,
    "asyncchat (feed + render changes)": feed_and_render_changes,
    "asyncchat (feed + .value)": feed_and_read_value,
    "jiter re-parse (official SDK)": jiter_reparse,
}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000]
    )
    sizes = options.parse_args().sizes
    print(f"{'runner':34}" + "".join(f"{size:>12,} B" for size in sizes))
    for name, run in RUNNERS.items():
        cells = []
        for size in sizes:
            text = arguments(size)
            pieces = [text[i : i + FRAGMENT] for i in range(0, len(text), FRAGMENT)]
            if (name.startswith("jiter") and size > REPARSE_LIMIT) or (
                name.endswith(".value)") and size > REPARSE_LIMIT * 10
            ):
                cells.append(f"{'-':>14}")
                continue
            try:
                started = time.perf_counter()
                result = run(pieces)
                seconds = time.perf_counter() - started
            except ImportError:
                cells.append(f"{'not installed':>14}")
                continue
            assert result == json.loads(text), name
            cells.append(f"{seconds * 1000:>11.1f} ms")
        print(f"{name:34}" + "".join(cells))


if __name__ == "__main__":
    main()
