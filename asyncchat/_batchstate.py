"""The state file of a Batch API job: which parts were uploaded and submitted as which
batches, so that a run killed at any point is picked up by the next.

It lives beside the output (`<output>.batches.json`), is rewritten whole through a
temporary file and a rename (a crash leaves the old state or the new, never half),
and is removed once every part is merged into the output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from asyncchat._batchfile import BatchFileError

__all__ = ["BatchState", "Part", "state_path"]

_STATE_VERSION = 1


def state_path(output: Path) -> Path:
    """Where a run keeps its batch and file ids: beside the output."""
    return output.with_name(output.name + ".batches.json")


@dataclass
class Part:
    """One uploaded part of the job: its file, its batch once created, its ids."""

    ids: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    merged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "batch_id": self.batch_id,
            "status": self.status,
            "merged": self.merged,
            "ids": self.ids,
        }


class BatchState:
    """The state file: written whole to a temporary file, then renamed over the old one,
    so a crash leaves the old state or the new one, never half of one."""

    def __init__(self, path: Path, base_url: str, parts: list[Part]) -> None:
        self.path = path
        self.base_url = base_url
        self.parts = parts

    @classmethod
    def load(cls, path: Path, base_url: str) -> BatchState:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(path, base_url, [])
        except orjson.JSONDecodeError:
            raise BatchFileError(
                f"{path} is not a batch state file of asyncchat (not JSON); move it away "
                "and run again"
            ) from None
        try:
            if data["version"] != _STATE_VERSION:
                raise ValueError(data["version"])
            parts = [
                Part(list(p["ids"]), p["file_id"], p["batch_id"], p["status"], bool(p["merged"]))
                for p in data["parts"]
            ]
            state = cls(path, str(data["base_url"]), parts)
        except (KeyError, TypeError, ValueError):
            raise BatchFileError(
                f"{path} is not a batch state file of this asyncchat version; it was left as "
                "it is: move it away and run again"
            ) from None
        if state.active and data["base_url"] != base_url:
            raise BatchFileError(
                f"the batches in {path} were submitted to {data['base_url']}, not "
                f"{base_url}: run with --base-url {data['base_url']} to collect them"
            )
        state.base_url = base_url
        return state

    @property
    def active(self) -> list[Part]:
        """The parts whose results are not in the output yet."""
        return [part for part in self.parts if not part.merged]

    def save(self) -> None:
        data = {
            "version": _STATE_VERSION,
            "base_url": self.base_url,
            "parts": [part.to_dict() for part in self.parts],
        }
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(data))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def finish(self) -> None:
        """Every part merged: the state has nothing left to tell, and goes."""
        if not self.active:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
