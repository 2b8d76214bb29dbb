"""One batch file three ways, against the mock server in a process of its own.

- the single-process runner (`asyncchat batch`, the local engine);
- `asyncchat batch --engine ray`: `ChatBatchUDF` on 2 actors;
- Ray Data's own `HttpRequestProcessorConfig` on 2 actors, its batches and blocks as
  ours; and on `concurrency / 4` actors, the most requests it can then keep open
  (4 an actor) being `concurrency`, as ours.

Each gets `--concurrency` requests open at most (split between the actors) and
writes every result to a JSONL file. The Ray cluster is started once, before any
timing; each Ray run includes starting its actors. With `--delay`, the server
holds each answer that long, as a provider does, and `requests/s x delay` tells
how many requests each way really kept open.

    python -m benchmarks.ray_batch [--requests 2000] [--delay 0.1] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.mock import mock_server

ACTORS = 2


def write_requests(path: Path, count: int) -> None:
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]},
                }
            )
            + b"\n"
            for i in range(count)
        )
    )


def local_runner(url: str, source: Path, output: Path, concurrency: int) -> int:
    import asyncchat
    from asyncchat._batchrun import run_batch_file

    async def run() -> int:
        async with asyncchat.Client(base_url=url, api_key="bench") as client:
            summary = await run_batch_file(client, source, output, concurrency=concurrency)
        return summary.succeeded

    return asyncio.run(run())


def asyncchat_ray(url: str, source: Path, output: Path, concurrency: int) -> int:
    from asyncchat.ray import run_batch_file

    summary = run_batch_file(
        source,
        output,
        actors=ACTORS,
        concurrency=concurrency,
        client_options={"base_url": url, "api_key": "bench"},
    )
    return summary.succeeded


def ray_http_processor(
    url: str, source: Path, output: Path, concurrency: int, actors: int = ACTORS
) -> int:
    """Ray's processor. It awaits a batch's requests one after another and runs four
    batches of an actor at once: at most 4 requests open per actor, whatever the
    batch size, so 2 actors keep 8 open, and `concurrency / 4` actors match ours."""
    import ray.data
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    rows = [orjson.loads(line) for line in source.read_bytes().splitlines()]
    dataset = ray.data.from_items(
        [{"custom_id": r["custom_id"], "body": r["body"]} for r in rows],
        override_num_blocks=max(ACTORS, len(rows) // (concurrency // ACTORS)),  # as ours
    )
    config = HttpRequestProcessorConfig(
        url=f"{url}/chat/completions",
        headers={"Authorization": "Bearer bench"},
        batch_size=max(1, concurrency // ACTORS // 4),  # as ours
        concurrency=actors,
        # As ours: a fraction of a CPU an actor (whole CPUs would starve the rest).
        http_request_stage={"num_cpus": min(0.25, 1.5 / actors)},
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {"payload": row["body"], "custom_id": row["custom_id"]},
        postprocess=lambda row: {
            "custom_id": row["custom_id"],
            "response": orjson.dumps(row["http_response"]).decode(),
        },
    )
    done = 0
    with output.open("wb") as file:
        for table in processor(dataset).iter_batches(batch_format="pyarrow", batch_size=None):
            for row in table.to_pylist():
                file.write(orjson.dumps(row) + b"\n")
                done += 1
    return done


def ray_http_processor_matched(url: str, source: Path, output: Path, concurrency: int) -> int:
    return ray_http_processor(url, source, output, concurrency, actors=concurrency // 4)


RUNS = {
    "single process (local engine)": local_runner,
    "asyncchat --engine ray": asyncchat_ray,
    "Ray HttpRequestProcessor, 2 actors": ray_http_processor,
    "Ray HttpRequestProcessor, c/4 actors": ray_http_processor_matched,
}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--requests", type=int, default=2000)
    options.add_argument("--delay", type=float, default=0.1, help="the server's seconds a reply")
    options.add_argument("--concurrency", type=int, default=64)
    args = options.parse_args()

    import ray
    import ray.data

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    results: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp, mock_server("--delay", str(args.delay)) as url:
        source = Path(tmp) / "in.jsonl"
        write_requests(source, args.requests)
        for label, run in RUNS.items():
            output = Path(tmp) / f"{len(results)}.jsonl"
            started = time.perf_counter()
            done = run(url, source, output, args.concurrency)
            results.append((label, done, time.perf_counter() - started))
    ray.shutdown()

    print(
        f"\n{args.requests} requests, server delay {args.delay:g} s, "
        f"--concurrency {args.concurrency}, {ACTORS} actors for Ray"
    )
    print(f"{'':38}{'done':>7}{'seconds':>9}{'req/s':>8}{'open (req/s x delay)':>22}")
    for label, done, seconds in results:
        rate = done / seconds
        print(f"{label:38}{done:>7}{seconds:>9.1f}{rate:>8.0f}{rate * args.delay:>22.1f}")


if __name__ == "__main__":
    main()
