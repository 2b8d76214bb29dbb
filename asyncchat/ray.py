"""Batch jobs on Ray Data, in the OpenAI Batch file format (`pip install 'asyncchat[ray]'`).

    requests = read_batch_jsonl("s3://bucket/requests/")  # or a local path
    results = map_chat_completions(requests, actors=4, concurrency=32, base_url=...)
    write_batch_jsonl(results, "results.jsonl")

- `read_batch_jsonl`: the request lines of OpenAI Batch files, on any filesystem
  Ray reads, as rows `custom_id`, `body` (JSON text).
- `ChatBatchUDF`: the callable class for `Dataset.map_batches`. Each actor holds
  one asyncchat client and keeps at most `concurrency` requests open, across all
  the batches Ray hands it at once. Each row in gives one row out, with the
  OpenAI Batch result fields; a request that fails gives an error row, never a
  failed job. `map_chat_completions` applies it with settings that suit
  network-bound actors.
- `write_batch_jsonl`: result rows into a local results file, with the same
  safety as `asyncchat batch` (locked, appended to, never rewritten).
- `run_batch_file`: `asyncchat batch --engine ray`: the resumable job, from an
  input file to its results file, on a cluster or a local one.

Result rows hold `response` and `error` as JSON text: answers differ in shape from
row to row, and an Arrow column needs one type. `status_code` is the HTTP status
(null when no answer came), for filtering without parsing. `retry_after` is the
pause an error answer's headers asked for, which the record does not hold.

Per-minute ceilings are shared between actors through Redis (`redis_url`): a
ceiling per actor would multiply by the number of actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson
import pyarrow as pa
import ray
import ray.data
import ray.exceptions
import ray.runtime_env

from asyncchat._batchfile import (
    TLS_ERROR,
    UNREACHABLE,
    ResultsFile,
    batch_record,
    check_input,
    check_request,
    input_requests,
    unstorable_record,
)
from asyncchat._batchrun import BatchStop, BatchSummary, RunTally, fatal_hint
from asyncchat._retry import pause_in_headers
from asyncchat._serverwatch import DEFAULT_PATIENCE, ServerWatch, log_outages, send_patiently
from asyncchat.client import Client
from asyncchat.errors import (
    APIError,
    APIStatusError,
    ConnectError,
    ServerNotReadyError,
    TLSError,
    status_error,
)
from asyncchat.types import ChatCompletion

__all__ = [
    "REQUEST_SCHEMA",
    "RESULT_SCHEMA",
    "ChatBatchUDF",
    "map_chat_completions",
    "read_batch_jsonl",
    "run_batch_file",
    "write_batch_jsonl",
]

REQUEST_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("body", pa.string()),  # the request body as JSON text; null when `problem` is set
        ("problem", pa.string()),  # why the input line cannot be run, or null
    ]
)
RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("custom_id", pa.string()),
        ("status_code", pa.int32()),
        ("response", pa.string()),
        ("error", pa.string()),
        # The pause an error answer's headers asked for (Retry-After, retry-after-ms,
        # a 429's budget spent for long), in seconds, or null: the headers are not in
        # the record, and the driver needs it to see the job-wide stop the actor saw.
        ("retry_after", pa.float64()),
    ]
)
NOT_SENT = "not_sent"  # the error code of a request held back after a job-wide error
# The error code of a request whose server was not serving (502, 503) for all of
# `server_wait`: job-wide, where a row of its status would read as one request's.
NOT_READY = "server_not_ready"
# A job stopped early (a stop, a job-wide error) has its actors torn down while
# Ray still reports on them; shutting Ray down in that moment can make its core
# worker end the process. Ray is given this long to settle first.
SETTLE_SECONDS = 1.0
ACTOR_CALLS = 8  # Ray calls (blocks) an actor works on at once; see map_chat_completions
ACTOR_CPUS = 0.25  # what an actor asks of Ray by default; see map_chat_completions
# How long `run_batch_file` waits for a first worker with the job's runtime env. Ray
# starts a worker whose setup hook fails again and again, and Ray Data waits for its
# actors forever, so a job with such a hook would never end.
WORKER_START_SECONDS = 600.0


# --- reading --------------------------------------------------------------------------


def read_batch_jsonl(paths: str | Path | list[str], **read_text_options: Any) -> ray.data.Dataset:
    """The requests of OpenAI Batch JSONL files as rows `custom_id`, `body`, `problem`.

    `paths` and `read_text_options` (`filesystem=` among them) go to
    `ray.data.read_text`. A line that cannot be run keeps its place as a row with
    a `problem`, which `ChatBatchUDF` turns into an error result.
    """
    if isinstance(paths, Path):
        paths = str(paths)
    lines = ray.data.read_text(paths, drop_empty_lines=True, **read_text_options)
    return lines.map_batches(_requests_from_lines, batch_format="pyarrow")


def _requests_from_lines(lines: pa.Table) -> pa.Table:
    rows = []
    for text in lines.column("text").to_pylist():
        try:
            record = orjson.loads(text.lstrip("\ufeff"))  # a BOM, from files saved on Windows
        except orjson.JSONDecodeError as exc:
            rows.append({"custom_id": "", "body": None, "problem": f"not valid JSON ({exc})"})
            continue
        problem = check_request(record, model="any")  # the UDF checks the model
        custom_id = record.get("custom_id") if isinstance(record, dict) else None
        rows.append(
            {
                "custom_id": custom_id if isinstance(custom_id, str) else "",
                "body": None if problem else orjson.dumps(record["body"]).decode(),
                "problem": problem,
            }
        )
    return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)


# --- the UDF --------------------------------------------------------------------------


class ChatBatchUDF:
    """Sends each row's request; one result row per row (see the module).

    Rows need `custom_id` and `body` (a dict or JSON text); `model` fills in a body
    without one. `concurrency` bounds the requests this actor has open. The
    per-minute ceilings need `redis_url`: every actor (and process) using that
    Redis with the same base URL and key, or `limit_name`, shares them.
    `client_options` are more `Client` arguments (`timeout`, `max_retries`, ...).
    A server that answered and then takes no connection is waited for up to
    `server_wait` seconds before the actor stops sending (see `_serverwatch`);
    with `server_starting`, so is one that has not answered yet, or answers 502 or
    503 (a proxy before its server is up). A 503 "Loading model" is waited for
    either way.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        redis_url: str | None = None,
        limit_name: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        server_wait: float = DEFAULT_PATIENCE,
        server_starting: bool = False,
    ) -> None:
        # Made on the first batch, in the event loop Ray runs async UDFs in: the
        # client's connections belong to that loop.
        self._requests: _ActorRequests | None = None
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if (requests_per_minute or tokens_per_minute) and not redis_url:
            raise ValueError(
                "per-minute ceilings are shared between actors through Redis: give redis_url "
                "(a ceiling per actor would multiply by the number of actors)"
            )
        self.model = model
        self._client_options = {"base_url": base_url, "api_key": api_key, **(client_options or {})}
        self._concurrency = concurrency
        self._limit = (redis_url, requests_per_minute, tokens_per_minute, limit_name)
        self._server = (server_wait, server_starting)

    async def __call__(self, batch: pa.Table | Mapping[str, Any]) -> AsyncIterator[pa.Table]:
        # An async generator, as Ray Data calls async UDFs since 2.31; it yields once.
        if self._requests is None:
            self._requests = _ActorRequests(
                self._client_options, self._concurrency, self._limit, self.model, self._server
            )
        rows = await asyncio.gather(*(self._requests.result(*row) for row in _request_rows(batch)))
        yield pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    def __del__(self) -> None:
        # Ray Data drops the UDF when its actor retires; close the connections
        # in their loop, which still runs in its own thread.
        requests, self._requests = self._requests, None
        if requests is None or not requests.loop.is_running():
            return
        closing = asyncio.run_coroutine_threadsafe(requests.close(), requests.loop)
        if threading.current_thread() is not requests.loop_thread:  # else waiting would block it
            with contextlib.suppress(Exception):
                closing.result(timeout=5)


def _request_rows(batch: pa.Table | Mapping[str, Any]) -> Iterator[tuple[str, Any, str | None]]:
    """`(custom_id, body, problem)` for each row of a batch, in whatever format Ray gave it."""
    if isinstance(batch, pa.Table):
        columns = {name: batch.column(name).to_pylist() for name in batch.column_names}
    else:
        columns = {name: list(values) for name, values in batch.items()}
    if "custom_id" not in columns or "body" not in columns:
        raise ValueError(
            f"ChatBatchUDF needs the columns custom_id and body; got {sorted(columns)}"
        )
    problems = columns.get("problem") or [None] * len(columns["custom_id"])
    return zip(columns["custom_id"], columns["body"], problems, strict=True)


class _ActorRequests:
    """One actor's client, its bound on open requests, and what stops it."""

    def __init__(
        self,
        client_options: Mapping[str, Any],
        concurrency: int,
        limit: tuple[str | None, float | None, float | None, str | None],
        model: str | None,
        server: tuple[float, bool],  # server_wait, server_starting
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.current_thread()
        self.client = Client(**client_options)
        redis_url, requests_per_minute, tokens_per_minute, limit_name = limit
        self.rate_limit = None
        if redis_url:
            from asyncchat.redislimit import RedisRateLimit  # the redis extra, only when used

            self.rate_limit = RedisRateLimit(
                redis_url,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                client=None if limit_name else self.client,
                name=limit_name,
            )
        self.send = self.client.chat._request_runner(None, None, self.rate_limit)
        self.open = asyncio.Semaphore(concurrency)
        self.model = model
        self.stopped_by: str | None = None  # a job-wide error: nothing more is sent
        self.server = ServerWatch(server[0], starting=server[1])
        log_outages(self.server, sys.stderr)  # Ray shows an actor's stderr on the driver

    async def result(self, custom_id: Any, body: Any, problem: str | None) -> dict[str, Any]:
        custom_id = "" if custom_id is None else str(custom_id)
        request, problem = _parse_body(body, self.model, problem)
        if request is None:
            return _error_row(custom_id, "invalid_request", problem or "no request body")
        async with self.open:
            if self.stopped_by is not None:
                return _error_row(custom_id, NOT_SENT, self.stopped_by)
            try:
                answer: ChatCompletion | Exception = await send_patiently(
                    self.send, request, self.server
                )
            except Exception as exc:
                answer = exc
        if isinstance(answer, APIError) and self.stopped_by is None:
            hint = fatal_hint(answer)
            if hint is not None:
                self.stopped_by = f"not sent: an earlier request failed with {answer}; {hint}"
        if isinstance(answer, ServerNotReadyError):
            row = _error_row(custom_id, NOT_READY, str(answer))
            row["status_code"] = answer.status_code
            return row
        return result_row(custom_id, answer)

    async def close(self) -> None:
        try:
            if self.rate_limit is not None:
                await self.rate_limit.close()
        finally:
            await self.client.close()


def _parse_body(
    body: Any, model: str | None, problem: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    if problem:
        return None, problem
    if isinstance(body, (str, bytes)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return None, f"body is not valid JSON ({exc})"
    elif isinstance(body, Mapping):
        # A dict came through an Arrow struct column, which gives every row every
        # key of every other row, null where it had none: such nulls are not sent.
        body = _without_nulls(body)
    if not isinstance(body, Mapping):
        return None, f"body must be a JSON object, got {type(body).__name__}"
    request = dict(body)
    if model and not request.get("model"):
        request["model"] = model
    problem = check_request(
        {"custom_id": "-", "url": "/v1/chat/completions", "body": request}, model=None
    )
    return (None, problem) if problem else (request, None)


def _without_nulls(value: Any) -> Any:
    if type(value).__module__ == "numpy":  # arrays and scalars of Ray's numpy batches
        value = value.tolist()
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nulls(item) for item in value]
    return value


def result_row(custom_id: str, result: ChatCompletion | Exception) -> dict[str, Any]:
    """The result row of one request: the OpenAI Batch record, its parts as JSON text."""
    record = batch_record(custom_id, result)
    try:
        response = None if record["response"] is None else orjson.dumps(record["response"])
    except TypeError as exc:  # an answer nested deeper than orjson encodes
        record, response = unstorable_record(custom_id, exc), None
    error = record["error"]
    return {
        "id": record["id"],
        "custom_id": custom_id,
        "status_code": None if response is None else record["response"]["status_code"],
        "response": None if response is None else response.decode(),
        "error": None if error is None else orjson.dumps(error).decode(),
        "retry_after": (
            pause_in_headers(result.status_code, result.headers, time.time())
            if isinstance(result, APIStatusError)
            else None
        ),
    }


def _error_row(custom_id: str, code: str, message: str) -> dict[str, Any]:
    row = result_row(custom_id, ValueError(message))
    row["error"] = orjson.dumps({"code": code, "message": message}).decode()
    return row


def map_chat_completions(
    requests: ray.data.Dataset,
    *,
    actors: int = 2,
    concurrency: int = 32,
    batch_size: int | None = None,
    num_cpus: float = ACTOR_CPUS,
    **udf_options: Any,
) -> ray.data.Dataset:
    """`requests` mapped through `ChatBatchUDF` on `actors` actors (lazily, as Ray does).

    An actor mostly waits on the network, so each asks for a quarter of a CPU by
    default: whole CPUs would leave none for the tasks that read the input, and
    on a small machine the job would wait forever. Ray gives an actor one block
    at a time and runs four of its batches at once; so that small blocks still
    keep `concurrency` requests open, each actor takes `ACTOR_CALLS` blocks at
    once (its UDF's bound holds across them). Batches of a quarter of
    `concurrency` rows bring results back in small steps.
    """
    if actors < 1:
        raise ValueError(f"actors must be at least 1, got {actors}")
    return requests.map_batches(
        ChatBatchUDF,
        fn_constructor_kwargs={"concurrency": concurrency, **udf_options},
        batch_size=batch_size or max(1, concurrency // 4),
        batch_format="pyarrow",
        num_cpus=num_cpus,
        **_actor_pool(actors),
    )


def _actor_pool(actors: int) -> dict[str, Any]:
    """`map_batches` arguments for `actors` actors taking `ACTOR_CALLS` calls at once:
    a strategy option from Ray 2.59, the actor's `max_concurrency` before (what
    `make test-oldest` runs, on Ray 2.57)."""
    strategy = ray.data.ActorPoolStrategy
    if "max_concurrent_calls_per_actor" in inspect.signature(strategy).parameters:
        return {"compute": strategy(size=actors, max_concurrent_calls_per_actor=ACTOR_CALLS)}
    return {"compute": strategy(size=actors), "max_concurrency": ACTOR_CALLS}


# --- writing --------------------------------------------------------------------------


def result_line(row: Mapping[str, Any]) -> bytes:
    """A result row back as its line of an OpenAI Batch output file."""
    record = {
        "id": row["id"],
        "custom_id": row["custom_id"],
        # Fragments: the parts are JSON already, and go in as they are.
        "response": None if row["response"] is None else orjson.Fragment(row["response"]),
        "error": None if row["error"] is None else orjson.Fragment(row["error"]),
    }
    return orjson.dumps(record) + b"\n"


def write_batch_jsonl(results: ray.data.Dataset, path: str | Path) -> int:
    """Append the result rows to a local results file; returns how many.

    The file is treated as `asyncchat batch` treats its output: one that holds
    anything but result records is refused, it is locked while written, and
    nothing already in it is changed. Rows arrive as the job runs.
    """
    output = ResultsFile.open(Path(path), input_path=None, ids=set())
    written = 0
    try:
        tables: Iterable[Any] = results.iter_batches(batch_format="pyarrow", batch_size=None)
        for table in tables:
            output.write(b"".join(result_line(row) for row in table.to_pylist()))
            written += table.num_rows
    finally:
        output.close()
    return written


# --- the resumable job ----------------------------------------------------------------


def run_batch_file(
    input_path: Path,
    output_path: Path,
    *,
    address: str | None = None,
    actors: int = 2,
    concurrency: int = 64,
    model: str | None = None,
    shard: tuple[int, int] = (1, 1),
    retry_failed: bool = False,
    client_options: Mapping[str, Any] | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    redis_url: str | None = None,
    limit_name: str | None = None,
    progress: TextIO | None = None,  # stderr as it is when called
    stop: BatchStop | None = None,
    handle_signals: bool = False,
    runtime_env: Mapping[str, Any] | None = None,
    start_timeout: float = WORKER_START_SECONDS,
    server_wait: float = DEFAULT_PATIENCE,
    server_starting: bool = False,
) -> BatchSummary:
    """`asyncchat batch --engine ray`: the requests of the input (and shard) that the
    output does not hold yet, run on Ray, each result written as it comes back.

    `concurrency` bounds the requests open across the job, split between the
    actors. The driver reads the input, so it may be a file only this machine
    has; a local cluster is started (and stopped) when Ray is not running and no
    `address` is given. A `stop` ends the job at once: the results that came back
    are kept, and a rerun sends the requests that were still out. With
    `handle_signals`, SIGINT and SIGTERM request the stop, as in the command.
    A server that answered and then takes no connection is waited for up to
    `server_wait` seconds by each actor before the job stops; with
    `server_starting`, so is one that has not answered yet, or answers 502 or 503
    (a proxy before its server is up). A 503 "Loading model" is waited for either way.

    `runtime_env` is the Ray runtime environment of the job's workers (given to
    `ray.init`, so Ray must not be running in this process yet): a
    `worker_process_setup_hook` there sets up telemetry in each actor. One worker
    with it is started first: one that has not started within `start_timeout`
    seconds ends the job with a `TimeoutError`, and a runtime env Ray cannot set up
    with a `ValueError`, nothing sent. A new local cluster runs only the actors it
    has room for, `concurrency` split between them.
    """
    _check_ray_options(runtime_env, start_timeout)
    ids = check_input(input_path, model, shard)
    results = ResultsFile.open(
        output_path, input_path=input_path, ids=ids, retry_failed=retry_failed
    )
    try:
        stop = stop or BatchStop()
        job = _RayJob(results, ids, stop, progress, counts_in_flight=False)
        pending = [
            {"custom_id": custom_id, "body": orjson.dumps(body).decode(), "problem": None}
            for custom_id, body in input_requests(input_path, model)
            if custom_id in ids and custom_id not in job.done_before
        ]
        if pending:
            udf_options = {
                "client_options": client_options,
                "requests_per_minute": requests_per_minute,
                "tokens_per_minute": tokens_per_minute,
                "redis_url": redis_url,
                "limit_name": limit_name,
                "server_wait": server_wait,
                "server_starting": server_starting,
            }
            with (
                _ray_cluster(address, runtime_env) as new_local,
                _signals_to(job.on_signal, handle_signals),
                _runtime_env_errors(),
            ):
                if runtime_env is not None:
                    _check_a_worker_starts(start_timeout)
                used = min(actors, len(pending))
                if new_local and used > (room := _actor_room()):
                    # A local cluster never grows: the rest would never start, and
                    # their share of `concurrency` would never be open.
                    job.notes.append(
                        f"the local Ray cluster has room for {room} actors "
                        f"({ACTOR_CPUS:g} CPU each), not {used}: {room} run"
                    )
                    used = room
                job.run(pending, used, max(1, -(-concurrency // used)), udf_options)
    finally:
        results.close()
    return job.summary()


def _check_ray_options(runtime_env: Mapping[str, Any] | None, start_timeout: float) -> None:
    """`run_batch_file`'s Ray options that cannot work, refused before any work."""
    if not start_timeout > 0:
        raise ValueError(f"start_timeout must be more than 0 seconds, got {start_timeout}")
    if runtime_env is None:
        return
    if ray.is_initialized():
        raise ValueError(
            "runtime_env is given to the ray.init that run_batch_file makes, and Ray is "
            "running in this process already: give it to your ray.init instead"
        )
    try:
        ray.runtime_env.RuntimeEnv(**runtime_env)  # Ray's own checks of its fields
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Ray refused the runtime env: {exc}") from None


def _check_a_worker_starts(start_timeout: float) -> None:
    """A worker with the job's runtime env starts: checked with a task that does nothing
    and needs no CPU, since the actors' wait for one would have no end. A task whose
    worker dies is retried a few times, then fails; the timeout bounds the rest."""
    started = ray.remote(num_cpus=0)(_nothing).remote()
    try:
        ray.get(started, timeout=start_timeout)
    except ray.exceptions.WorkerCrashedError:
        raise ValueError(
            "Ray workers with the runtime env die as they start: its "
            "worker_process_setup_hook fails (Ray's logs say why)"
        ) from None
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(
            f"no Ray worker with the runtime env started within {start_timeout:g} s (Ray's "
            "logs say why)"
        ) from None


def _nothing() -> None:
    """The task of `_check_a_worker_starts`."""


@contextlib.contextmanager
def _runtime_env_errors() -> Iterator[None]:
    """A runtime env Ray cannot set up as one line: Ray's message is a worker's
    traceback, whose last line says why."""
    try:
        yield
    except ray.exceptions.RuntimeEnvSetupError as exc:
        why = str(exc).strip().splitlines()[-1]
        raise ValueError(f"Ray could not set up the runtime env: {why}") from None


def _actor_room() -> int:
    """How many actors of `ACTOR_CPUS` the Ray cluster has CPUs for (1 at least)."""
    resources: Callable[[], dict[str, float]] = ray.cluster_resources  # untyped in Ray
    return max(1, math.floor(resources().get("CPU", 0.0) / ACTOR_CPUS))


@contextlib.contextmanager
def _ray_cluster(address: str | None, runtime_env: Mapping[str, Any] | None) -> Iterator[bool]:
    """Ray, connected: the cluster at `address`, the one already joined, or a new local one
    (stopped afterwards), with the job's `runtime_env`; whether it is a new local one.
    Ray Data's progress bars stay off while the job prints its own."""
    context = ray.data.DataContext.get_current()
    shown = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = context.print_on_execution_start = False
    # Quiet: Ray Data's notes on each execution, its warning that the bars are off, and
    # its logged copy of an exception that it raises to us anyway.
    quieted = {
        "ray.data": logging.WARNING,
        "ray.data._internal.progress": logging.ERROR,
        "ray.data.exceptions": logging.CRITICAL,
    }
    levels = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    started = False
    try:
        if not ray.is_initialized():
            ray.init(
                address=address,
                runtime_env=None if runtime_env is None else dict(runtime_env),
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
            started = True
        yield started and not (address or os.environ.get("RAY_ADDRESS"))
    finally:
        if started:
            gc.collect()  # references into Ray's object store in cycles: freed while Ray runs
            ray.shutdown()
        context.enable_progress_bars, context.print_on_execution_start = shown
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _signals_to(handler: Callable[[int, Any], None], handle: bool) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` (installed after `ray.init`, which sets its own)."""
    if not handle or threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(number) for number in signals]
    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, handler_before in zip(signals, previous, strict=True):
            signal.signal(number, handler_before)


class _Interrupted(Exception):
    """A signal came while the driver waited for Ray: stop waiting."""


class _RayJob(RunTally):
    """The driver's side: results written as they come back, counted, shown.

    Ray is iterated in this thread, so that stopping closes the iteration here and
    Ray's execution ends before Ray does. A signal stops the wait for the next
    batch at once (`on_signal` raises only inside that wait); a stop requested
    otherwise is seen between batches.
    """

    waiting = False  # in Ray's wait for the next batch, where a signal may interrupt

    def on_signal(self, number: int, _frame: Any) -> None:
        self.stop.request(signal.Signals(number).name)
        if self.waiting:
            raise _Interrupted

    def run(
        self, pending: list[dict[str, Any]], actors: int, per_actor: int, udf_options: Any
    ) -> None:
        """Send `pending` on `actors` actors of `per_actor` open requests each.

        The dataset lives in this call only, so its references into Ray's object
        store are freed while Ray still runs.
        """
        # Blocks of one actor's share of open requests: Ray returns a block's
        # results when the whole block is done, so small blocks bring results
        # back (and to disk) sooner.
        blocks = max(actors, len(pending) // per_actor)
        dataset = ray.data.from_items(pending, override_num_blocks=blocks)
        mapped = map_chat_completions(dataset, actors=actors, concurrency=per_actor, **udf_options)
        batches: Iterator[Any] = iter(mapped.iter_batches(batch_format="pyarrow", batch_size=None))
        finished = False
        try:
            while self.fatal is None and not self.stop.requested:
                try:
                    self.waiting = True
                    table = next(batches, None)
                except _Interrupted:
                    return  # the block that may have just arrived is sent again by a rerun
                finally:
                    self.waiting = False
                if table is None:
                    finished = True
                    return
                self.results.write(b"".join(self.lines(table.to_pylist())))
                self.status.show()
        finally:
            close = getattr(batches, "close", None)  # a generator: closing ends the execution
            if close is not None:
                close()
            if not finished:
                # What Ray Data leaves behind when stopped early is finalized here,
                # while Ray runs, not by Ray's own collector thread during shutdown.
                del batches, mapped, dataset
                gc.collect()
                time.sleep(SETTLE_SECONDS)
            self.status.show(force=True)
            if self.status.live:
                self.status.stream.write("\n")

    def lines(self, rows: list[dict[str, Any]]) -> Iterator[bytes]:
        """The lines to write: all but job-wide errors and requests held back after
        one, which a rerun sends."""
        for row in rows:
            response = None if row["response"] is None else orjson.loads(row["response"])
            if response is not None and row["status_code"] != 200:
                error = status_error(
                    row["status_code"],
                    response.get("body"),
                    request_id=response.get("request_id"),
                    headers=_pause_headers(row["retry_after"]),
                )
                if fatal_hint(error) is not None:
                    self.fatal = self.fatal or error
                    continue
            elif row["error"] is not None:
                failure = orjson.loads(row["error"])
                if failure.get("code") == NOT_SENT:
                    continue
                if failure.get("code") == TLS_ERROR:  # as job-wide as a 401
                    self.fatal = self.fatal or TLSError(failure.get("message", ""))
                    continue
                if failure.get("code") == UNREACHABLE:
                    self.fatal = self.fatal or ConnectError(failure.get("message", ""))
                    continue
                if failure.get("code") == NOT_READY:
                    self.fatal = self.fatal or ServerNotReadyError(
                        failure.get("message", ""), status_code=row["status_code"] or 503
                    )
                    continue
            yield result_line(row)
            answer = response.get("body") if response else None
            self.count(row["status_code"] == 200, answer if isinstance(answer, dict) else None)


def _pause_headers(seconds: float | None) -> dict[str, str] | None:
    """The pause an actor read from an error answer's headers, as a header again, for
    the error the driver rebuilds from its row (and `fatal_hint` reads)."""
    return None if seconds is None else {"retry-after": repr(seconds)}
