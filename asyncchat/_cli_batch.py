"""`asyncchat batch`: an OpenAI Batch file run resumably, here, on Ray, or through the
provider's Batch API; its summary and exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from asyncchat._batchrun import BatchStop, BatchSummary, fatal_hint, run_batch_file
from asyncchat._cli_args import (
    add_connection,
    client_from,
    connection_from,
    json_object,
    key_value,
    non_negative_float,
    positive_float,
    positive_int,
    shard_spec,
)
from asyncchat._serverwatch import DEFAULT_PATIENCE
from asyncchat.batchapi import run_batch_api
from asyncchat.client import Client
from asyncchat.errors import ConfigurationError, ConnectError, TLSError


def add_batch(commands: Any) -> None:
    batch = commands.add_parser(
        "batch", help="run an OpenAI Batch file (JSONL), resumably, writing results as they finish"
    )
    batch.add_argument("input", type=Path, help="requests, one JSON object a line")
    batch.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="results file; rerunning with it resumes where the last run stopped"
        " (- for standard output, without resume)",
    )
    batch.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        help="most requests open at once (default: 64)",
    )
    batch.add_argument("--rpm", type=float, help="requests-per-minute ceiling")
    batch.add_argument("--tpm", type=float, help="tokens-per-minute ceiling (estimated)")
    batch.add_argument(
        "--redis-url",
        metavar="URL",
        help="share --rpm/--tpm through this Redis with every process using the same base URL "
        "and key (needs the redis extra)",
    )
    batch.add_argument(
        "--limit-name", help="with --redis-url: share the limit under this name instead"
    )
    batch.add_argument("-m", "--model", help="use this model for every request")
    batch.add_argument(
        "--shard",
        type=shard_spec,
        default=(1, 1),
        metavar="K/N",
        help="run only shard K of N (K from 1): a stable split by custom_id",
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the requests that failed in an earlier run",
    )
    batch.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long requests in flight may finish (default: 10);"
        " a second Ctrl-C cancels them at once",
    )
    batch.add_argument(
        "--server-wait",
        type=non_negative_float,
        metavar="SECONDS",
        help="how long to wait for a server that answered and then takes no connection (a"
        f" restart) before stopping the job (default: {DEFAULT_PATIENCE:g}; a server that"
        " never answered stops it at once, unless --server-starting)",
    )
    batch.add_argument(
        "--server-starting",
        action="store_true",
        help="the server may still be starting (a script that starts it too): wait up to"
        " --server-wait seconds for its first answer instead of stopping the job at once,"
        " and take a 502 or 503 before it (a proxy with no server behind it yet) as not up"
        " (llama.cpp's 503 'Loading model' is waited for without it)",
    )
    batch.add_argument(
        "--via",
        choices=("requests", "batch-api"),
        default="requests",
        help="requests: send each request now (default); batch-api: submit the file to the "
        "provider's Batch API (OpenAI, GLM: half price, results within the completion window)",
    )
    batch.add_argument(
        "--completion-window",
        help="with --via batch-api: how long the provider may take (default: 24h)",
    )
    batch.add_argument(
        "--metadata",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="with --via batch-api: a label on each batch (repeatable)",
    )
    batch.add_argument(
        "--poll-interval",
        type=positive_float,
        metavar="SECONDS",
        help="with --via batch-api: the first wait between looks at the batches; longer "
        "while nothing changes (default: 10)",
    )
    batch.add_argument(
        "--max-requests-per-batch",
        type=positive_int,
        metavar="N",
        help="with --via batch-api: split into batches of at most N requests "
        "(default: the provider's limit, 50,000)",
    )
    batch.add_argument(
        "--cancel",
        action="store_true",
        help="with --via batch-api: cancel this job's running batches and keep what they finished",
    )
    batch.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: actors on a Ray cluster (needs the ray extra)",
    )
    batch.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)",
    )
    batch.add_argument(
        "--ray-actors",
        type=positive_int,
        default=2,
        metavar="N",
        help="with --engine ray: actors sending requests, --concurrency split between them"
        " (default: 2)",
    )
    batch.add_argument(
        "--ray-runtime-env",
        type=json_object,
        metavar="JSON",
        help="with --engine ray: the Ray runtime environment of the job's workers, as a JSON "
        "object (a worker_process_setup_hook there sets up telemetry in each actor)",
    )
    batch.add_argument(
        "--ray-start-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with --ray-runtime-env: give up when no worker with it has started by then "
        "(default: 600)",
    )
    add_connection(batch)


def batch(args: argparse.Namespace) -> int:
    """Run the job in this process or on Ray; the exit status."""
    _check_flags(args)
    if args.engine == "ray":
        return _batch_on_ray(args)
    return asyncio.run(_batch_here(args))


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that do not go together, refused before anything runs."""
    for flag, given in (
        ("--ray-address", args.ray_address),
        ("--ray-runtime-env", args.ray_runtime_env is not None),
        ("--ray-start-timeout", args.ray_start_timeout),
    ):
        if given and args.engine != "ray":
            raise ConfigurationError(f"{flag} needs --engine ray")
    if args.ray_start_timeout and args.ray_runtime_env is None:
        raise ConfigurationError("--ray-start-timeout needs --ray-runtime-env")
    if args.via == "batch-api":
        clashing = [
            flag
            for flag, given in (
                ("--engine ray", args.engine == "ray"),
                ("--rpm", args.rpm),
                ("--tpm", args.tpm),
                ("--redis-url", args.redis_url),
            )
            if given
        ]
        if clashing:
            raise ConfigurationError(
                f"--via batch-api leaves the pace to the provider: drop {', '.join(clashing)}"
            )
        for flag, given in (
            ("--server-wait", args.server_wait is not None),
            ("--server-starting", args.server_starting),
        ):
            if given:
                raise ConfigurationError(
                    f"{flag} is for requests sent one by one: drop it with --via batch-api"
                )
    else:
        batch_api_only = (
            ("--cancel", args.cancel),
            ("--metadata", args.metadata),
            ("--max-requests-per-batch", args.max_requests_per_batch),
            ("--completion-window", args.completion_window),
            ("--poll-interval", args.poll_interval),
        )
        for flag, given in batch_api_only:
            if given:
                raise ConfigurationError(f"{flag} needs --via batch-api")


async def _batch_here(args: argparse.Namespace) -> int:
    stop = BatchStop(grace=args.grace)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(number, stop.request, number.name)
    try:
        if args.via == "batch-api":
            async with client_from(args) as client:
                summary = await run_batch_api(
                    client,
                    args.input,
                    args.output,
                    model=args.model,
                    shard=args.shard,
                    retry_failed=args.retry_failed,
                    completion_window=args.completion_window or "24h",
                    metadata=dict(args.metadata) or None,
                    poll_interval=args.poll_interval or 10.0,
                    max_requests_per_batch=args.max_requests_per_batch,
                    cancel=args.cancel,
                    stop=stop,
                )
            return _report_batch(args, summary)
        async with client_from(args) as client, _shared_limit(args, client) as shared:
            summary = await run_batch_file(
                client,
                **_job(args),
                requests_per_minute=None if shared else args.rpm,
                tokens_per_minute=None if shared else args.tpm,
                rate_limit=shared,
                stop=stop,
            )
    finally:
        for number in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(number)
    return _report_batch(args, summary)


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """What both engines take alike: the files, and which requests to run how."""
    return {
        "input_path": args.input,
        "output_path": args.output,
        "concurrency": args.concurrency,
        "model": args.model,
        "shard": args.shard,
        "retry_failed": args.retry_failed,
        "server_wait": DEFAULT_PATIENCE if args.server_wait is None else args.server_wait,
        "server_starting": args.server_starting,
    }


def _batch_on_ray(args: argparse.Namespace) -> int:
    """`--engine ray`: the same job on Ray actors; the driver writes the output."""
    if (args.rpm or args.tpm) and not args.redis_url:
        raise ConfigurationError(
            "--engine ray shares --rpm/--tpm between its actors through Redis: add --redis-url"
        )
    if args.limit_name and not args.redis_url:
        raise ConfigurationError("--limit-name needs --redis-url")
    connection = connection_from(args)  # the actors get these: a remote one has not our environment
    try:
        from asyncchat import ray as ray_engine
    except ImportError as exc:
        raise ConfigurationError(
            f"--engine ray needs Ray Data ({exc}): pip install 'asyncchat[ray]'"
        ) from None
    stop = BatchStop()
    summary = ray_engine.run_batch_file(
        **_job(args),
        address=args.ray_address,
        actors=args.ray_actors,
        client_options=connection,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        redis_url=args.redis_url,
        limit_name=args.limit_name,
        stop=stop,
        handle_signals=True,
        runtime_env=args.ray_runtime_env,
        start_timeout=args.ray_start_timeout or ray_engine.WORKER_START_SECONDS,
    )
    return _report_batch(args, summary)


@contextlib.asynccontextmanager
async def _shared_limit(args: argparse.Namespace, client: Client) -> AsyncIterator[Any]:
    """The Redis-shared limit `--redis-url` asks for, or None."""
    if not args.redis_url:
        yield None
        return
    if not (args.rpm or args.tpm):
        raise ConfigurationError("--redis-url shares a limit: give --rpm, --tpm or both")
    try:
        from asyncchat.redislimit import RedisRateLimit
    except ImportError:  # pragma: no cover - the redis package is missing
        raise ConfigurationError(
            "--redis-url needs the redis package: pip install 'asyncchat[redis]'"
        ) from None
    limit = RedisRateLimit(
        args.redis_url,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        client=None if args.limit_name else client,
        name=args.limit_name,
    )
    async with limit:
        yield limit


def _report_batch(args: argparse.Namespace, summary: BatchSummary) -> int:
    """The summary on stderr; the exit status."""
    rerun = f"run the same command again to resume: {_command_line(args.argv)}"
    if summary.fatal is not None:
        hint = fatal_hint(summary.fatal)
        if _refused_from_the_start(args, summary):
            hint = f"{hint} (--server-starting waits for a server still starting)"
        print(
            f"asyncchat: error: batch stopped, every request would fail: {summary.fatal}; "
            f"{hint}. {summary.succeeded + summary.failed} of "
            f"{summary.total} results are in {args.output}, {summary.not_run} still to run; "
            "fix this and run the same command again",
            file=sys.stderr,
        )
        return 1
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard[1] > 1 else ""
    print(
        f"batch{shard}: {summary.total} requests, {summary.succeeded} succeeded, "
        f"{summary.failed} failed, {summary.skipped} already done before this run; "
        f"{summary.tokens} tokens in {summary.seconds:.1f}s; results in {args.output}",
        file=sys.stderr,
    )
    if summary.stopped_by is not None:
        print(
            f"stopped by {summary.stopped_by}: {summary.not_run} requests not run; {rerun}",
            file=sys.stderr,
        )
        return 128 + int(getattr(signal, summary.stopped_by, signal.SIGINT))
    if summary.failed:
        print("rerun with --retry-failed to try the failed requests again", file=sys.stderr)
    return 0 if summary.ok else 1


def _refused_from_the_start(args: argparse.Namespace, summary: BatchSummary) -> bool:
    """The job stopped as its server took no connection and had not answered: it may
    have been started with the job, and not be up yet."""
    fatal = summary.fatal
    return (
        isinstance(fatal, ConnectError)
        and not isinstance(fatal, TLSError)
        and summary.succeeded + summary.failed == summary.skipped  # nothing written this run
        and not args.server_starting
    )


def _command_line(argv: Sequence[str]) -> str:
    """The command as typed, the API key masked."""
    shown, hide_next = ["asyncchat"], False
    for word in argv:
        if hide_next:
            word, hide_next = "***", False
        elif word == "--api-key":
            hide_next = True
        elif word.startswith("--api-key="):
            word = "--api-key=***"
        shown.append(word)
    return shlex.join(shown).replace("'***'", "***")
