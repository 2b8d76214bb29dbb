"""The built-in mock server in a process of its own, so only a client's CPU is counted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def mock_server(*options: str) -> Iterator[str]:
    """`asyncchat mock-server` on a free port (with `options`, such as `--delay 0.1`);
    its base URL, until the block ends."""
    server = subprocess.Popen(
        [sys.executable, "-m", "asyncchat", "mock-server", "--port", "0", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().split(" on ")[1].split()[0]  # "... listening on URL (...)"
    finally:
        server.terminate()
        server.wait()
