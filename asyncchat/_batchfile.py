"""The files of `asyncchat batch`: the input checked, the output kept safe.

Input: one JSON object a line, `{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {...}}`, every line checked before anything
runs. Output: one line per request in the OpenAI Batch output format.

The output file is the checkpoint of a resumable run, and it may hold what a
user cares about, so this module never truncates, rewrites or deletes a line
this program did not write:

- an output that is the input file, or holds a line that is not a result
  record, is refused before anything is written;
- the output is locked (`flock`, which the kernel drops when a process dies,
  even by `kill -9`), so two runs never write one file;
- a torn last line (a crash mid-write) is cut only when it follows a valid
  record, and cut alone, in place;
- `--retry-failed` drops only failure records of this run's ids; every other
  line is copied byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from asyncchat.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConnectError,
    TLSError,
)
from asyncchat.types import ChatCompletion

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run at a time is up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TLS_ERROR",
    "BatchFileError",
    "BatchInputError",
    "ResultsFile",
    "batch_record",
    "check_input",
    "check_request",
    "encode_record",
    "input_requests",
    "shard_of",
    "unstorable_record",
]

_CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
# The error code of a request whose server's certificate failed (`TLSError`).
TLS_ERROR = "tls_error"
# The error code of a request whose connection could not be opened (`ConnectError`,
# the connect timeout too): a batch engine gets one only once it gave up on the server.
UNREACHABLE = "unreachable"


class BatchFileError(ValueError):
    """An input or output file that cannot be used; nothing was sent or written."""


class BatchInputError(BatchFileError):
    """The input file has lines that cannot be run; `problems` lists them all."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} bad line(s), nothing was run:\n  {shown}{more}")


def shard_of(custom_id: str, shards: int) -> int:
    """The shard (from 1 to `shards`) an id belongs to: a stable hash, the same on every machine."""
    digest = hashlib.sha256(custom_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def check_request(record: Any, model: str | None) -> str | None:
    """What is wrong with one input record, or None; the duplicate check is the caller's."""
    if not isinstance(record, dict):
        return "not a JSON object"
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing custom_id (a non-empty string)"
    if record.get("method", "POST") != "POST":
        return f"method must be POST, got {record.get('method')!r}"
    if record.get("url") not in _CHAT_URLS:
        return f"url must be /v1/chat/completions, got {record.get('url')!r}"
    body = record.get("body")
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "body.messages must be a non-empty list"
    if not model and not body.get("model"):
        return "body.model is missing (or pass --model)"
    if body.get("stream"):
        return "body.stream is not supported in a batch"
    return None


def _check_line(
    number: int, text: str, seen: set[str], model: str | None
) -> tuple[str | None, str | None]:
    """(custom_id, None) for a good line, (None, problem) for a bad one."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"line {number}: not valid JSON ({exc})"
    problem = check_request(record, model)
    if problem is not None:
        return None, f"line {number}: {problem}"
    custom_id: str = record["custom_id"]
    if custom_id in seen:
        return None, f"line {number}: custom_id {custom_id!r} is used more than once"
    seen.add(custom_id)
    return custom_id, None


def _input_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines, numbered; a leading BOM (files saved on Windows) is skipped."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise BatchInputError(
                    path, [f"line {number}: not UTF-8 text (byte {exc.start + 1} of the line)"]
                ) from None
            if line.strip():
                yield number, line


def check_input(path: Path, model: str | None, shard: tuple[int, int] = (1, 1)) -> set[str]:
    """Check every line; raises `BatchInputError` listing all bad lines.

    Returns the ids of this shard: the only ids this run counts and touches.
    """
    seen: set[str] = set()
    problems = []
    for number, text in _input_lines(path):
        _, problem = _check_line(number, text, seen, model)
        if problem:
            problems.append(problem)
    if problems:
        raise BatchInputError(path, problems)
    index, count = shard
    if count == 1:
        return seen
    return {custom_id for custom_id in seen if shard_of(custom_id, count) == index}


def input_requests(path: Path, model: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(custom_id, body)` for each line of a checked input, read lazily."""
    for _, text in _input_lines(path):
        record = orjson.loads(text)
        body = record["body"]
        if model:
            body["model"] = model
        yield record["custom_id"], body


# --- the output -------------------------------------------------------------------


def _result_id(line: bytes) -> tuple[str, bool] | None:
    """`(custom_id, succeeded)` for a batch result record, None for anything else."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("custom_id"), str)
        and "response" in record
        and "error" in record
    ):
        return None
    response = record["response"]
    succeeded = (
        record["error"] is None
        and isinstance(response, dict)
        and response.get("status_code") == 200
    )
    return record["custom_id"], succeeded


def _preview(line: bytes) -> str:
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    return repr(text if len(text) <= 60 else text[:60] + "...")


@dataclass
class _Scan:
    """What an output file holds, for this run's ids."""

    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    records: int = 0  # result records of any input
    complete_size: int = 0  # bytes up to the end of the last complete line
    torn_tail: bool = False  # a last line without newline that is not a record
    unterminated_record: bool = False  # a last line that is a record, newline missing


def _scan(file: BinaryIO, path: Path, ids: set[str]) -> _Scan:
    """Read the output once; raise `BatchFileError` at a line this program did not write."""
    scan = _Scan()
    file.seek(0)
    for number, line in enumerate(file, 1):
        terminated = line.endswith(b"\n")
        if not line.strip():
            if terminated:
                scan.complete_size += len(line)
            continue
        found = _result_id(line)
        if found is None:
            if not terminated and scan.records:
                scan.torn_tail = True  # a crash cut our last write short
                break
            raise BatchFileError(
                f"{path} is not a results file of asyncchat batch: line {number} is not a "
                f"result record ({_preview(line)}); nothing was changed, choose another -o"
            )
        custom_id, succeeded = found
        scan.records += 1
        if custom_id in ids:
            (scan.succeeded if succeeded else scan.failed).add(custom_id)
        if terminated:
            scan.complete_size += len(line)
        else:
            scan.unterminated_record = True
    scan.failed -= scan.succeeded  # an id with a success is done, whatever else is there
    return scan


def _lock(file: BinaryIO, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BatchFileError(
            f"{path} is being written by another asyncchat batch run; wait for it to "
            "finish (or stop it) and run again"
        ) from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class ResultsFile:
    """The output of a run: checked, locked, repaired; takes one record a line.

    A regular file (or a new one) is a checkpoint: `succeeded` and `failed` say
    which of this run's ids it already holds. `-`, a pipe or a device (such as
    `/dev/stdout` into a pipe) is written to as a stream, with nothing to resume:
    reading it back would block or find nothing.
    """

    def __init__(self, file: BinaryIO, *, path: Path | None, scan: _Scan) -> None:
        self._file = file
        self.path = path
        self.succeeded = scan.succeeded
        self.failed = scan.failed

    @classmethod
    def open(
        cls, output: Path, *, input_path: Path | None, ids: set[str], retry_failed: bool = False
    ) -> ResultsFile:
        """The output of the run over `input_path` (and its `ids`), ready to append to."""
        if str(output) == "-":
            return cls(sys.stdout.buffer, path=None, scan=_Scan())
        if input_path is not None and _same_file(output, input_path):
            raise BatchFileError(
                f"the output {output} is the input file {input_path}: choose another -o "
                "(nothing was sent)"
            )
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.stat(output).st_mode):
                return cls(open(output, "ab"), path=None, scan=_Scan())
        file = cls._open_locked(output)
        try:
            scan = _scan(file, output, ids)
            if scan.torn_tail:
                file.truncate(scan.complete_size)
            elif scan.unterminated_record:
                file.write(b"\n")
                file.flush()
            if retry_failed and scan.failed:
                file = _drop_failures(file, output, scan.failed)
                scan.failed = set()
        except BaseException:
            file.close()
            raise
        return cls(file, path=output, scan=scan)

    @staticmethod
    def _open_locked(path: Path) -> BinaryIO:
        """Open for append and lock; retry if the path was replaced while we waited."""
        while True:
            file = open(path, "a+b")  # noqa: SIM115  (held for the whole run)
            try:
                _lock(file, path)
                if os.fstat(file.fileno()).st_ino == os.stat(path).st_ino:
                    return file
            except BaseException:
                file.close()
                raise
            file.close()  # another run replaced the file (--retry-failed): lock the new one

    def write(self, line: bytes) -> None:
        """Append one record line and flush it: each result is on disk as it finishes."""
        self._file.write(line)
        self._file.flush()

    def close(self) -> None:
        if self._file is sys.stdout.buffer:
            self._file.flush()
        else:
            self._file.close()


def _drop_failures(file: BinaryIO, path: Path, failed: set[str]) -> BinaryIO:
    """A copy of the output without the failure records of `failed`, put in its place.

    Every other line is copied byte for byte. The copy is locked before it
    replaces the original, so no other run can slip in between; a crash before
    the replace leaves the original as it was.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    copy = os.fdopen(fd, "a+b")
    try:
        _lock(copy, path)
        os.chmod(temporary, stat.S_IMODE(os.fstat(file.fileno()).st_mode))
        file.seek(0)
        for line in file:
            found = _result_id(line)
            if found is None or found[0] not in failed or found[1]:
                copy.write(line)
        copy.flush()
        os.fsync(copy.fileno())
        os.replace(temporary, path)
    except BaseException:
        copy.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    file.close()
    return copy


def batch_record(custom_id: str, result: ChatCompletion | Exception) -> dict[str, Any]:
    """One output line in the OpenAI Batch format."""
    record: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id}
    if isinstance(result, ChatCompletion):
        record["response"] = {
            "status_code": 200,
            "request_id": result.request_id,
            "body": result._data,
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
        if isinstance(result, TLSError):
            code = TLS_ERROR
        elif isinstance(result, ConnectError):  # before the timeouts: a connect timeout is one
            code = UNREACHABLE
        elif isinstance(result, APITimeoutError):
            code = "timeout"
        elif isinstance(result, APIConnectionError):
            code = "connection_error"
        else:
            code = "invalid_response"
        record["response"] = None
        record["error"] = {"code": code, "message": str(result) or type(result).__name__}
    return record


def encode_record(custom_id: str, result: ChatCompletion | Exception) -> tuple[bytes, bool]:
    """`(line, succeeded)`: the record of one result, newline included.

    An answer that decoded but cannot be written back as JSON (nested deeper
    than orjson encodes) becomes that request's error record: one odd answer
    never stops a run.
    """
    try:
        line = orjson.dumps(batch_record(custom_id, result))
        succeeded = isinstance(result, ChatCompletion)
    except TypeError as exc:
        line, succeeded = orjson.dumps(unstorable_record(custom_id, exc)), False
    return line + b"\n", succeeded


def unstorable_record(custom_id: str, error: TypeError) -> dict[str, Any]:
    """The error record of an answer orjson cannot encode (nested too deep)."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": None,
        "error": {
            "code": "invalid_response",
            "message": f"the answer could not be stored as JSON: {error}",
        },
    }
