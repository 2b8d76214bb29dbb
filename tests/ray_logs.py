"""Where a Ray cluster that a command starts keeps its workers' output, the spans
an OpenTelemetry console exporter printed there, and which auto-instrumentation made them."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def ray_root() -> Iterator[Path]:
    """A folder for RAY_TMPDIR, removed after: a short path, as Ray's socket paths
    must be."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def console_spans(root: Path) -> list[dict[str, Any]]:
    """The spans in the workers' output of the last cluster started under `root`: the
    JSON documents that begin and end at a line's start."""
    output = "".join(path.read_text() for path in root.glob("ray/session_latest/logs/*.out"))
    found = re.findall(r"^\{\n.*?^\}$", output, flags=re.DOTALL | re.MULTILINE)
    return [json.loads(document) for document in found]


def instrumentation_version() -> tuple[int, int]:
    """The installed opentelemetry-instrumentation's version, as (0, 48) for 0.48b0:
    what `opentelemetry-instrument` does for the processes it starts changed with it."""
    version = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("opentelemetry-instrumentation"))
    assert version is not None
    return int(version[1]), int(version[2])
