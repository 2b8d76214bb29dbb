"""`asyncchat batch`: run an OpenAI Batch input file, resumably.

Input: one JSON object a line, `{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {...}}`. Output: one line per request, in the
OpenAI Batch output format, written and flushed as each request finishes.

Every input line is checked before anything runs. The output file is the
checkpoint: rerunning skips the ids it already holds, cuts a partly written
last line (a crash mid-write), and `retry_failed` reruns only the failures, so
in the end every `custom_id` appears exactly once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from asyncchat.client import Client
from asyncchat.errors import APIError, APIStatusError, APITimeoutError
from asyncchat.types import ChatCompletion

__all__ = ["BatchInputError", "BatchSummary", "run_batch_file", "shard_of"]

_CHAT_URLS = ("/v1/chat/completions", "/chat/completions")


class BatchInputError(ValueError):
    """The input (or output) file has lines that cannot be run; `problems` lists them all."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} bad line(s), nothing was run:\n  {shown}{more}")


def shard_of(custom_id: str, shards: int) -> int:
    """The shard (from 1 to `shards`) an id belongs to: a stable hash, the same on every machine."""
    digest = hashlib.sha256(custom_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def _check_line(
    number: int, text: str, seen: set[str], model: str | None
) -> tuple[str | None, str | None]:
    """(custom_id, None) for a good line, (None, problem) for a bad one."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"line {number}: not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"line {number}: not a JSON object"
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, f"line {number}: missing custom_id (a non-empty string)"
    if custom_id in seen:
        return None, f"line {number}: custom_id {custom_id!r} is used more than once"
    seen.add(custom_id)
    if record.get("method", "POST") != "POST":
        return None, f"line {number}: method must be POST, got {record.get('method')!r}"
    if record.get("url") not in _CHAT_URLS:
        return None, f"line {number}: url must be /v1/chat/completions, got {record.get('url')!r}"
    body = record.get("body")
    if not isinstance(body, dict):
        return None, f"line {number}: body must be a JSON object"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return None, f"line {number}: body.messages must be a non-empty list"
    if not model and not body.get("model"):
        return None, f"line {number}: body.model is missing (or pass --model)"
    if body.get("stream"):
        return None, f"line {number}: body.stream is not supported in a batch"
    return custom_id, None


def _input_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield number, line


def check_input(path: Path, model: str | None) -> int:
    """Check every line; raises `BatchInputError` listing all bad lines. Returns the count."""
    seen: set[str] = set()
    problems = []
    for number, text in _input_lines(path):
        _, problem = _check_line(number, text, seen, model)
        if problem:
            problems.append(problem)
    if problems:
        raise BatchInputError(path, problems)
    return len(seen)


@dataclass
class _Previous:
    """What an earlier run left in the output file."""

    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)


def _is_success(record: dict[str, Any]) -> bool:
    response = record.get("response")
    return (
        record.get("error") is None
        and isinstance(response, dict)
        and response.get("status_code") == 200
    )


def load_output(path: Path, retry_failed: bool) -> _Previous:
    """Read (and repair) the output of an earlier run.

    A last line cut short by a crash is removed. With `retry_failed`, the lines
    of failed requests are removed too, so that they run again.
    """
    previous = _Previous()
    if not path.exists():
        return previous
    raw = path.read_bytes()
    keep: list[bytes] = []
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    problems = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            custom_id = record["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if number == len(complete) and not tail:
                break  # a last line cut short, newline included: dropped below
            problems.append(f"line {number}: not an output record")
            continue
        if _is_success(record):
            previous.succeeded.add(custom_id)
        elif retry_failed:
            continue
        else:
            previous.failed.add(custom_id)
        keep.append(line)
    if problems:
        raise BatchInputError(path, problems)
    repaired = b"".join(line + b"\n" for line in keep)
    if repaired != raw:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(repaired)
        os.replace(temporary, path)
    return previous


def _record(custom_id: str, result: ChatCompletion | Exception) -> dict[str, Any]:
    """One output line in the OpenAI Batch format."""
    record: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id}
    if isinstance(result, ChatCompletion):
        record["response"] = {
            "status_code": 200,
            "request_id": result.request_id,
            "body": result.to_dict(),
        }
        record["error"] = None
    elif isinstance(result, APIStatusError):
        body = (
            result.body if isinstance(result.body, dict) else {"error": {"message": result.message}}
        )
        record["response"] = {
            "status_code": result.status_code,
            "request_id": result.request_id,
            "body": body,
        }
        record["error"] = None
    else:
        code = (
            "timeout"
            if isinstance(result, APITimeoutError)
            else ("connection_error" if isinstance(result, APIError) else "client_error")
        )
        record["response"] = None
        record["error"] = {"code": code, "message": str(result) or type(result).__name__}
    return record


@dataclass
class BatchSummary:
    total: int  # requests in this shard
    skipped: int  # already in the output from an earlier run
    succeeded: int  # in the output now, across runs
    failed: int
    seconds: float
    tokens: int

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.succeeded == self.total


class _Progress:
    """A live status line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.total = total
        self.done = self.failed = self.in_flight = self.tokens = 0
        self.started = time.monotonic()
        self.last_shown = 0.0

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.live or (not force and now - self.last_shown < 0.2):
            return
        self.last_shown = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "-"
        self.stream.write(
            f"\r{self.done}/{self.total} done, {self.failed} failed, {self.in_flight} in flight,"
            f" {rate:.1f} req/s, {self.tokens} tokens, ETA {eta}  "
        )
        self.stream.flush()


async def run_batch_file(
    client: Client,
    input_path: Path,
    output_path: Path,
    *,
    concurrency: int = 64,
    model: str | None = None,
    shard: tuple[int, int] = (1, 1),
    retry_failed: bool = False,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    progress: TextIO = sys.stderr,
) -> BatchSummary:
    """Run every request of the input file (in this shard) not already in the output."""
    shard_index, shard_count = shard
    check_input(input_path, model)
    previous = load_output(output_path, retry_failed)
    done = previous.succeeded | previous.failed

    def mine(custom_id: str) -> bool:
        return shard_count == 1 or shard_of(custom_id, shard_count) == shard_index

    total = sum(1 for _, text in _input_lines(input_path) if mine(orjson.loads(text)["custom_id"]))
    pending_ids: list[str] = []

    async def pending() -> AsyncIterator[dict[str, Any]]:
        for _, text in _input_lines(input_path):
            record = orjson.loads(text)
            custom_id = record["custom_id"]
            if custom_id in done or not mine(custom_id):
                continue
            body = record["body"]
            if model:
                body["model"] = model
            pending_ids.append(custom_id)
            status.in_flight += 1
            yield body

    status = _Progress(progress, total)
    succeeded = sum(1 for i in previous.succeeded if mine(i))
    failed = sum(1 for i in previous.failed if mine(i))
    skipped = status.done = succeeded + failed
    started = time.monotonic()
    with output_path.open("a", encoding="utf-8") as output:
        async for index, result in client.chat.as_completed(
            pending(),
            concurrency=concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        ):
            output.write(orjson.dumps(_record(pending_ids[index], result)).decode() + "\n")
            output.flush()
            status.in_flight -= 1
            status.done += 1
            if isinstance(result, ChatCompletion):
                succeeded += 1
                if result.usage and result.usage.total_tokens:
                    status.tokens += result.usage.total_tokens
            else:
                failed += 1
                status.failed += 1
            status.show()
    status.show(force=True)
    if status.live:
        progress.write("\n")
    return BatchSummary(
        total=total,
        skipped=skipped,
        succeeded=succeeded,
        failed=failed,
        seconds=time.monotonic() - started,
        tokens=status.tokens,
    )
