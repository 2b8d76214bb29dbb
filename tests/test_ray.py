"""Batch jobs on a real local Ray cluster (`ray.init(num_cpus=2)`) against the loopback
MockServer: the UDF's rows, its bounds, its job-wide stop, the results file, and the
`asyncchat batch --engine ray` command in subprocesses, resumed and interrupted."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
import ray
import trustme

from asyncchat import Client, RateLimitError
from asyncchat._batchfile import BatchFileError
from asyncchat.ray import (
    ChatBatchUDF,
    map_chat_completions,
    read_batch_jsonl,
    run_batch_file,
    write_batch_jsonl,
)
from asyncchat.testing import MockServer
from asyncchat.types import ChatCompletion

from .conftest import (
    API_KEY,
    RestartingServer,
    free_port,
    openrouter_429,
    served_in_a_thread,
    server_context,
)
from .ray_logs import console_spans, instrumentation_version, ray_root
from .test_batch_safety import OUTAGES, Outage, restarting_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray cluster of two CPUs for this module; its address, for the commands
    that join it with --ray-address."""
    context = ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


def request_line(custom_id: str, text: str = "hi", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": text}], **body},
    }


def write_input(path: Path, count: int) -> Path:
    path.write_bytes(
        b"".join(orjson.dumps(request_line(f"r{i}", f"hi {i}")) + b"\n" for i in range(count))
    )
    return path


def client_options(server: MockServer, api_key: str = API_KEY) -> dict[str, Any]:
    return {"base_url": server.base_url, "api_key": api_key, "max_retries": 0}


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["custom_id"]: row for row in rows}


def test_each_row_gives_one_result_row_and_a_failure_is_an_error_row(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    background_server.response_formats = ("text",)  # a json_schema request gets a 400
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    no_model = request_line("no-model")
    del no_model["body"]["model"]
    lines = [
        b"\xef\xbb\xbf" + orjson.dumps(request_line("first", "hello")),  # a BOM first
        orjson.dumps(request_line("refused", response_format=schema)),
        b"{not json",
        orjson.dumps({**request_line("get"), "method": "GET"}),
        orjson.dumps(no_model),
        *(orjson.dumps(request_line(f"r{i}", f"hi {i}")) for i in range(20)),
    ]
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n\n")  # and a blank line at the end

    results = map_chat_completions(
        read_batch_jsonl(source),
        actors=2,
        concurrency=4,
        client_options=client_options(background_server),
    )
    rows = results.take_all()

    assert len(rows) == 25  # one row per line, the blank one aside
    found = by_id(rows)
    first = found["first"]
    assert first["status_code"] == 200 and first["error"] is None
    answer = orjson.loads(first["response"])["body"]
    assert answer["choices"][0]["message"]["content"] == "You said: hello"
    assert first["id"].startswith("batch_req_")
    refused = found["refused"]
    assert refused["status_code"] == 400 and refused["error"] is None
    assert "response_format" in orjson.loads(refused["response"])["body"]["error"]["message"]
    for custom_id in ("get", "no-model"):
        assert found[custom_id]["response"] is None
        assert orjson.loads(found[custom_id]["error"])["code"] == "invalid_request"
    assert "method must be POST" in orjson.loads(found["get"]["error"])["message"]
    assert "body.model is missing" in orjson.loads(found["no-model"]["error"])["message"]
    not_json = found[""]
    assert "not valid JSON" in orjson.loads(not_json["error"])["message"]
    assert all(found[f"r{i}"]["status_code"] == 200 for i in range(20))
    assert len(background_server.requests) == 22  # the 20, "first" and "refused"


def test_the_udf_takes_dict_bodies_and_fills_in_the_model(
    cluster: str, background_server: MockServer
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    bodies = [body] * 5 + [{**body, "temperature": 0.5}]  # Arrow gives the others a null one
    requests = ray.data.from_items([{"custom_id": f"d{i}", "body": bodies[i]} for i in range(6)])
    rows = map_chat_completions(
        requests, actors=1, concurrency=2, model="given",
        client_options=client_options(background_server),
    ).take_all()  # fmt: skip
    assert sorted(row["custom_id"] for row in rows) == [f"d{i}" for i in range(6)]
    assert {request.body["model"] for request in background_server.requests} == {"given"}
    temperatures = [request.body.get("temperature") for request in background_server.requests]
    assert sorted(temperatures, key=str) == [0.5] + [None] * 5
    assert all(b"null" not in request.raw_body for request in background_server.requests)


def test_the_udf_in_a_plain_map_batches_over_numpy_batches(
    cluster: str, background_server: MockServer
) -> None:
    """As a user writes it, with Ray's default batch format: dicts of numpy arrays."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1}
    requests = ray.data.from_items([{"custom_id": f"n{i}", "body": body} for i in range(5)])
    rows = requests.map_batches(
        ChatBatchUDF,
        fn_constructor_kwargs={
            "concurrency": 2,
            "client_options": client_options(background_server),
        },
        batch_size=2,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.25,
    ).take_all()
    assert sorted(row["custom_id"] for row in rows) == [f"n{i}" for i in range(5)]
    assert {row["status_code"] for row in rows} == {200}
    assert all(request.body == body for request in background_server.requests)


def test_a_task_returns_a_completion_and_raises_asyncchats_error(
    cluster: str, background_server: MockServer
) -> None:
    def ask(base_url: str) -> ChatCompletion:  # local: Ray sends it by value
        async def main() -> ChatCompletion:
            async with Client(base_url=base_url, api_key=API_KEY, max_retries=0) as client:
                user = [{"role": "user", "content": "hello"}]
                return await client.chat.completions.create(model="m", messages=user)

        return asyncio.run(main())

    task = ray.remote(ask)
    completion = ray.get(task.remote(background_server.base_url))
    assert completion.choices[0].message.content == "You said: hello"
    assert completion.headers["content-type"].startswith("application/json")

    background_server.enqueue(
        429, {"error": {"message": "slow down"}}, headers={"x-ratelimit-remaining-tokens": "12"}
    )
    with pytest.raises(RateLimitError, match="slow down") as raised:
        ray.get(task.remote(background_server.base_url))
    assert raised.value.status_code == 429
    assert raised.value.rate_limits is not None
    assert raised.value.rate_limits.remaining_tokens == 12


def test_concurrency_bounds_each_actors_open_requests(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    background_server.delay = 0.05
    source = write_input(tmp_path / "in.jsonl", 60)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=3, batch_size=8,
        client_options=client_options(background_server),
    ).take_all()  # fmt: skip
    assert len(rows) == 60
    # Ray hands an actor several batches of 8 at once: the bound holds across them.
    assert 3 <= background_server.max_in_flight <= 6


def test_a_job_wide_error_stops_each_actor_sending(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "in.jsonl", 200)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=2,
        client_options=client_options(background_server, api_key="sk-wrong"),
    ).take_all()  # fmt: skip
    assert len(rows) == 200
    refused = [row for row in rows if row["status_code"] == 401]
    held = [row for row in rows if row["error"] and "not_sent" in row["error"]]
    assert len(refused) + len(held) == 200
    assert 1 <= len(refused) <= 4  # what each actor had open when the first 401 came back
    assert len(background_server.requests) == len(refused)
    message = orjson.loads(held[0]["error"])["message"]
    assert "401" in message and "check the API key" in message


def test_an_error_row_keeps_the_pause_its_headers_asked_for(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """The headers are not in the record, so the row says what pause they asked for; a
    pause past a minute stops the actor, as it stops the driver's job."""
    background_server.enqueue(503, {"error": {"message": "busy"}}, {"retry-after-ms": "1500"})
    background_server.enqueue(429, {"error": {"message": "slow down"}}, {"Retry-After": "3600"})
    source = write_input(tmp_path / "in.jsonl", 30)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=1, concurrency=1,
        client_options=client_options(background_server),
    ).take_all()  # fmt: skip

    assert len(rows) == 30 and len(background_server.requests) == 2
    by_status = {row["status_code"]: row for row in rows if row["status_code"]}
    assert set(by_status) == {429, 503}
    assert by_status[503]["retry_after"] == 1.5
    assert by_status[429]["retry_after"] == 3600.0
    held = [row for row in rows if row["error"] and "not_sent" in row["error"]]
    assert len(held) == 28 and all(row["retry_after"] is None for row in held)
    message = orjson.loads(held[0]["error"])["message"]
    assert "slow down" in message and "allows no requests for 1h 0m" in message


@pytest.mark.parametrize(
    ("status", "error", "stops"),
    [
        (402, {"code": 402, "message": "Insufficient credits."}, True),
        # xAI's credits spent, a 429 not retried; Fireworks's suspended account
        (429, "Your team t has either used all available credits or reached its monthly "
              "spending limit.", True),
        (412, {"object": "error", "message": "Account suspended"}, True),
        (403, {"code": 403, "message": "Your input was flagged",
               "metadata": {"reasons": ["violence"], "flagged_input": "..."}}, False),
    ],
)  # fmt: skip
def test_an_account_out_of_credits_stops_the_actor_and_a_flagged_input_does_not(
    cluster: str,
    background_server: MockServer,
    tmp_path: Path,
    status: int,
    error: Any,
    stops: bool,
) -> None:
    background_server.enqueue(status, {"error": error})
    source = write_input(tmp_path / "in.jsonl", 20)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=1, concurrency=1,
        client_options=client_options(background_server),
    ).take_all()  # fmt: skip
    statuses = [row["status_code"] for row in rows]
    assert statuses.count(status) == 1
    held = [row for row in rows if row["error"] and "not_sent" in row["error"]]
    assert (len(held), statuses.count(200)) == ((19, 0) if stops else (0, 19))


def test_a_server_no_request_reaches_stops_each_actor_sending(cluster: str, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", 100)
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=2,
        client_options={"base_url": nobody, "api_key": API_KEY, "max_retries": 0},
    ).take_all()  # fmt: skip
    unreachable = [row for row in rows if row["error"] and "unreachable" in row["error"]]
    held = [row for row in rows if row["error"] and "not_sent" in row["error"]]
    assert len(unreachable) + len(held) == 100
    assert 1 <= len(unreachable) <= 4  # what each actor had open when the first one failed
    message = orjson.loads(held[0]["error"])["message"]
    assert "could not connect" in message and "check --base-url" in message


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES)
async def test_an_actor_waits_for_a_server_that_restarts_or_starts(
    capsys: pytest.CaptureFixture[str], outage: Outage
) -> None:
    """The actor's own code, called as Ray calls it (no cluster needed); what it
    writes to stderr, Ray shows on the driver."""
    lines = [request_line(f"r{i}", f"hi {i}") for i in range(3)]
    requests = [
        {"custom_id": line["custom_id"], "body": orjson.dumps(line["body"]).decode()}
        for line in lines
    ]
    server = restarting_server(outage, down_for=0.5, loading=1.5)
    async with server as base_url:
        udf = ChatBatchUDF(
            base_url=base_url, api_key=API_KEY, concurrency=1,
            client_options={"max_retries": 0}, server_wait=30, server_starting=outage.starting,
        )  # fmt: skip
        tables = [table async for table in udf(pa.Table.from_pylist(requests))]
        assert udf._requests is not None
        await udf._requests.close()
    rows = tables[0].to_pylist()
    assert [row["custom_id"] for row in rows] == ["r0", "r1", "r2"]
    assert [row["status_code"] for row in rows] == [200] * 3
    assert server.answered == 3
    # The actor's own lines: a cluster an earlier test started in this process may
    # forward its processes' logs here too, as "(pid=gcs_server) ..." lines.
    log = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batch: ")]
    assert len(log) == 2, log
    assert log[0] == f"batch: the server {outage.does}; requests {outage.waits} up to 30s"
    assert re.fullmatch(rf"batch: the server is {outage.is_up} after [0-9]+s", log[1])


async def test_an_actor_stops_sending_when_its_server_never_loads() -> None:
    """A server that answers only 503 for all of `server_wait` is job-wide: a row
    with its own code (a 503 row reads as one request's error), then none sent."""
    requests = [
        {"custom_id": f"r{i}", "body": orjson.dumps(request_line(f"r{i}", "hi")["body"]).decode()}
        for i in range(3)
    ]
    async with RestartingServer(0.0, starts_down=True, loading=None) as base_url:
        udf = ChatBatchUDF(
            base_url=base_url, api_key=API_KEY, concurrency=1,
            client_options={"max_retries": 0}, server_wait=0.5, server_starting=True,
        )  # fmt: skip
        tables = [table async for table in udf(pa.Table.from_pylist(requests))]
        assert udf._requests is not None
        await udf._requests.close()
    rows = tables[0].to_pylist()
    errors = [orjson.loads(row["error"]) for row in rows]
    assert [error["code"] for error in errors] == ["server_not_ready", "not_sent", "not_sent"]
    assert rows[0]["status_code"] == 503
    assert "Loading model" in errors[0]["message"]
    assert "served no request for 0.5s" in errors[0]["message"]
    assert "never finished starting" in errors[1]["message"]


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MockServer, str]]:
    """A MockServer over HTTPS whose certificate a private CA signed, and that CA's file."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = MockServer(ssl_context=server_context(ca.issue_cert("127.0.0.1")))
    with served_in_a_thread(server):
        yield server, str(ca_file)


def test_tls_settings_reach_the_actors_and_a_failing_certificate_stops_them(
    cluster: str, https_server: tuple[MockServer, str], tmp_path: Path
) -> None:
    server, ca_file = https_server
    source = write_input(tmp_path / "in.jsonl", 100)
    before = len(server.requests)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=2,
        client_options=client_options(server),  # without the CA
    ).take_all()  # fmt: skip
    refused = [row for row in rows if row["error"] and "tls_error" in row["error"]]
    held = [row for row in rows if row["error"] and "not_sent" in row["error"]]
    assert len(refused) + len(held) == 100
    assert 1 <= len(refused) <= 4  # what each actor had open when the first one failed
    assert "failed verification" in orjson.loads(held[0]["error"])["message"]
    assert len(server.requests) == before  # none got through

    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=2,
        client_options={**client_options(server), "verify": ca_file},
    ).take_all()  # fmt: skip
    assert sorted(row["status_code"] for row in rows) == [200] * 100
    assert len(server.requests) == before + 100


def test_per_minute_ceilings_need_redis() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        ChatBatchUDF(requests_per_minute=60)


def test_actors_share_one_limit_through_redis(
    cluster: str, background_server: MockServer, redis_url: str, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "in.jsonl", 12)
    rows = map_chat_completions(
        read_batch_jsonl(source), actors=2, concurrency=4,
        client_options=client_options(background_server),
        requests_per_minute=6000, redis_url=redis_url, limit_name="ray-test",
    ).take_all()  # fmt: skip
    assert [row["status_code"] for row in rows] == [200] * 12

    import redis

    members = redis.Redis.from_url(redis_url).zcard("asyncchat:ratelimit:ray-test:members")
    # Each actor that Ray gave work booked it in the one schedule (Ray may hand every
    # block to the actor that started first, so one or two of them).
    assert 1 <= members <= 2


def test_write_batch_jsonl_appends_and_keeps_what_is_there(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    earlier = orjson.dumps(
        {"id": "batch_req_0", "custom_id": "old", "response": None, "error": {"code": "x"}}
    )
    output = tmp_path / "out.jsonl"
    output.write_bytes(earlier + b"\n")
    results = map_chat_completions(
        read_batch_jsonl(write_input(tmp_path / "in.jsonl", 5)), actors=1, concurrency=2,
        client_options=client_options(background_server),
    )  # fmt: skip
    assert write_batch_jsonl(results, output) == 5
    lines = output.read_bytes().splitlines()
    assert lines[0] == earlier
    records = [orjson.loads(line) for line in lines[1:]]
    assert sorted(record["custom_id"] for record in records) == [f"r{i}" for i in range(5)]
    assert all(record["response"]["status_code"] == 200 for record in records)
    assert set(records[0]) == {"id", "custom_id", "response", "error"}

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(BatchFileError, match="not a results file"):
        write_batch_jsonl(results, notes)
    assert notes.read_text() == "my notes\n"


# --- the command ---------------------------------------------------------------------


def batch_command(source: Path, output: Path, server: MockServer, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "asyncchat", "batch", str(source), "-o", str(output),
        "--engine", "ray", "--ray-actors", "2", "--concurrency", "8",
        "--base-url", server.base_url, *more,
    ]  # fmt: skip


def run(
    command: list[str], api_key: str = API_KEY, **settings: str
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ASYNCCHAT_API_KEY": api_key, "RAY_ADDRESS": "", **settings}
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, env=environment
    )


def output_ids(output: Path) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in output.read_bytes().splitlines()]


@pytest.mark.slow
def test_the_command_runs_on_a_local_cluster_and_resumes(
    background_server: MockServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    lines = (
        request_line(f"r{i}", f"hi {i}", **({"max_tokens": 1} if i % 4 == 1 else {}))
        for i in range(40)
    )
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    output = tmp_path / "out.jsonl"
    done = orjson.dumps(
        {"id": "batch_req_x", "custom_id": "r0", "error": None,
         "response": {"status_code": 200, "request_id": "a", "body": {}}}
    )  # fmt: skip
    output.write_bytes(done + b"\n")  # an earlier run's result: not sent again

    first = run(batch_command(source, output, background_server))

    assert first.returncode == 0, first.stderr
    assert "40 requests, 40 succeeded, 0 failed, 1 already done" in first.stderr
    assert "note: 10 answers of this run stopped at the token limit" in first.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(40))
    assert len(background_server.requests) == 39

    again = run(batch_command(source, output, background_server))
    assert again.returncode == 0, again.stderr
    assert "40 already done" in again.stderr and "note:" not in again.stderr
    assert len(background_server.requests) == 39  # nothing sent, no cluster started


@pytest.mark.slow
def test_a_wrong_key_stops_the_job_and_a_rerun_does_each_request_once(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "in.jsonl", 300)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, background_server, "--ray-address", cluster)

    wrong = run(command, api_key="sk-wrong")

    assert wrong.returncode == 1
    message = wrong.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncchat: error: batch stopped, every request would fail")
    assert "check the API key" in message
    assert output.read_bytes() == b""  # nothing written: the rerun sends them all
    assert len(background_server.requests) <= 16  # what the actors had open, not 300

    right = run(command)
    assert right.returncode == 0, right.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(300))


# A 429 that allows no request for hours, with what the stop's line says: OpenRouter's
# daily cap, in its body; a pause in `Retry-After`, Cerebras's daily budget spent, or
# Mistral's monthly one with no reset named, in headers only the actor sees, so its
# row carries the pause to the driver.
LONG_PAUSES = {
    "openrouter": (
        lambda: (openrouter_429(time.time() + 5 * 3600), {}),
        "the rate limit allows no requests for 5h 0m: wait that long",
    ),
    "retry-after": (
        lambda: ({"error": {"message": "Rate limit reached"}}, {"Retry-After": "3600"}),
        "the rate limit allows no requests for 1h 0m: wait that long",
    ),
    "cerebras-day": (
        lambda: (
            {"message": "Requests per day limit exceeded", "type": "too_many_requests_error"},
            {"x-ratelimit-remaining-requests-day": "0", "x-ratelimit-reset-requests-day": "7200"},
        ),
        "the rate limit allows no requests for 2h 0m: wait that long",
    ),
    "mistral-month": (
        lambda: (
            {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited"},
            {"x-ratelimit-remaining-tokens-month": "0", "x-ratelimit-limit-tokens-month": "9"},
        ),
        "the rate limit allows no more requests for hours or longer",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("answer, hint", LONG_PAUSES.values(), ids=LONG_PAUSES)
def test_a_429_that_allows_nothing_for_hours_stops_the_job_and_a_rerun_finishes_it(
    cluster: str,
    background_server: MockServer,
    tmp_path: Path,
    answer: Callable[[], tuple[dict[str, Any], dict[str, str]]],
    hint: str,
) -> None:
    """The driver reads it as a job-wide error, as the actor did and as the local
    runner does."""
    source = write_input(tmp_path / "in.jsonl", 300)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, background_server, "--ray-address", cluster)
    body, headers = answer()
    background_server.enqueue(429, body, headers)
    sent_before = len(background_server.requests)

    capped = run(command)

    assert capped.returncode == 1
    message = capped.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncchat: error: batch stopped, every request would fail")
    assert hint in message
    # Only the first request met the cap here; the others were answered until the
    # driver heard of it, and the job stopped there, with the 429 not written.
    sent = len(background_server.requests) - sent_before
    written = output_ids(output)
    assert sent < 300 and len(written) < sent and len(written) == len(set(written))

    again = run(command)
    assert again.returncode == 0, again.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(300))


@pytest.mark.slow
def test_a_failing_certificate_stops_the_command_and_a_rerun_with_cacert_finishes(
    cluster: str, https_server: tuple[MockServer, str], tmp_path: Path
) -> None:
    server, ca_file = https_server
    source = write_input(tmp_path / "in.jsonl", 100)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, server, "--ray-address", cluster)

    refused = run(command)

    assert refused.returncode == 1
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncchat: error: batch stopped, every request would fail")
    assert "failed verification" in message and "fix the TLS settings first" in message
    assert output.read_bytes() == b""  # nothing written: the rerun sends them all

    trusted = run([*command, "--cacert", ca_file])
    assert trusted.returncode == 0, trusted.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(100))


@pytest.mark.slow
@pytest.mark.parametrize("loads", [False, True], ids=["refuses", "never-loads"])
def test_a_server_no_request_reaches_stops_the_command_and_a_rerun_finishes(
    cluster: str, background_server: MockServer, tmp_path: Path, loads: bool
) -> None:
    source = write_input(tmp_path / "in.jsonl", 100)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, background_server, "--ray-address", cluster)

    if loads:  # listening, but only ever 503 "Loading model"
        with served_in_a_thread(RestartingServer(0.0, starts_down=True, loading=None)) as server:
            wrong = [
                f"http://127.0.0.1:{server.port}/v1",
                "--server-starting",
                "--server-wait",
                "1",
            ]
            said = ["HTTP 503", "Loading model", "served no request for 1s", "never finished"]
            nobody = run([*command, "--base-url", *wrong])  # the last --base-url wins
    else:
        said = ["could not connect", "check --base-url"]
        nobody = run([*command, "--base-url", f"http://127.0.0.1:{free_port()}/v1"])

    assert nobody.returncode == 1
    message = nobody.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncchat: error: batch stopped, every request would fail")
    assert all(words in message for words in said), message
    assert output.read_bytes() == b""  # nothing written: the rerun sends them all

    right = run(command)
    assert right.returncode == 0, right.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(100))


@pytest.mark.slow
def test_ctrl_c_keeps_what_came_back_and_a_rerun_finishes(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    background_server.delay = 0.1  # 8 open at a time: about 80 answers a second
    source = write_input(tmp_path / "in.jsonl", 300)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, background_server, "--ray-address", cluster)
    environment = {**os.environ, "ASYNCCHAT_API_KEY": API_KEY, "RAY_ADDRESS": ""}
    job = subprocess.Popen(
        command,
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (output.exists() and output.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)

    assert job.returncode == 130, err
    assert "stopped by SIGINT" in err and "run the same command again to resume" in err
    text = output.read_bytes()
    assert text.endswith(b"\n")  # no torn line
    kept = output_ids(output)
    assert 0 < len(kept) < 300

    rerun = run(command)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(300))


# A setup hook that records each span, as it ends, in a file of the worker's own.
SPAN_FILES_HOOK = """
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


def set_up():
    out = open(os.path.join(os.environ["SPANS_DIR"], f"{os.getpid()}.jsonl"), "a")
    line = lambda span: span.to_json(indent=None) + "\\n"
    exporter = ConsoleSpanExporter(out=out, formatter=line)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
"""


@pytest.mark.slow
def test_the_runtime_env_sets_up_telemetry_in_each_actor(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """--ray-runtime-env reaches the actors of a cluster the command joins: its setup
    hook, shipped with py_modules, traces every request where it is sent."""
    hook = tmp_path / "span_files.py"
    hook.write_text(SPAN_FILES_HOOK)
    spans = tmp_path / "spans"
    spans.mkdir()
    runtime_env = {
        "py_modules": [str(hook)],
        "worker_process_setup_hook": "span_files.set_up",
        "env_vars": {"SPANS_DIR": str(spans)},
    }
    source = write_input(tmp_path / "in.jsonl", 12)
    output = tmp_path / "out.jsonl"
    command = batch_command(
        source, output, background_server,
        "--ray-address", cluster, "--ray-runtime-env", orjson.dumps(runtime_env).decode(),
    )  # fmt: skip

    done = run(command)

    assert done.returncode == 0, done.stderr
    assert "12 requests, 12 succeeded" in done.stderr
    recorded = [
        orjson.loads(line) for path in spans.iterdir() for line in path.read_bytes().splitlines()
    ]
    chats = [span for span in recorded if span["name"] == "chat m"]
    assert len(chats) == 12
    assert {span["attributes"]["server.port"] for span in chats} == {background_server.port}
    assert len({span["attributes"]["gen_ai.response.id"] for span in chats}) == 12
    # Every worker of the job runs the hook; the spans are in the two actors' files.
    assert 1 <= len([path for path in spans.iterdir() if path.stat().st_size]) <= 2


@pytest.mark.slow
def test_opentelemetry_instrument_reaches_the_actors_of_a_local_cluster(
    background_server: MockServer, tmp_path: Path
) -> None:
    """Under `opentelemetry-instrument`, a local cluster the command starts inherits its
    settings: each actor traces its requests with no runtime env given. Before
    opentelemetry-instrumentation 0.63b0 the command kept its setup from child
    processes, and the actors trace nothing, as the README says."""
    source = write_input(tmp_path / "in.jsonl", 6)
    output = tmp_path / "out.jsonl"
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    exporters = ["--traces_exporter", "console", "--metrics_exporter", "none"]
    command = [str(instrument), *exporters, "--logs_exporter", "none"]
    command += batch_command(source, output, background_server)
    with ray_root() as root:
        done = run(command, RAY_TMPDIR=str(root))
        assert done.returncode == 0, done.stderr
        spans = console_spans(root)
    chats = [span for span in spans if span["name"] == "chat m"]
    reaches_children = instrumentation_version() >= (0, 63)
    assert len(chats) == (6 if reaches_children else 0)
    assert len({span["attributes"]["gen_ai.response.id"] for span in chats}) == len(chats)


def failed_job_line(
    runtime_env: str, cluster: str, server: MockServer, tmp_path: Path, *more: str
) -> str:
    """A job of 4 requests on `cluster` with `runtime_env`, which must fail: status 2,
    no traceback of ours, nothing sent, an earlier run's result in the output as it was.
    Its last line."""
    source = write_input(tmp_path / "in.jsonl", 4)
    output = tmp_path / "out.jsonl"
    earlier = orjson.dumps(
        {"id": "batch_req_x", "custom_id": "r0", "error": None,
         "response": {"status_code": 200, "request_id": "a", "body": {}}}
    ) + b"\n"  # fmt: skip
    output.write_bytes(earlier)
    command = batch_command(
        source, output, server, "--ray-address", cluster, "--ray-runtime-env", runtime_env, *more
    )

    done = run(command)

    assert done.returncode == 2, done.stderr
    assert 'cli.py", line' not in done.stderr  # Ray prints tracebacks of its own
    assert output.read_bytes() == earlier
    assert server.requests == []
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_setup_hook_that_fails_ends_the_job_before_any_actor(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """A setup hook the workers cannot import makes Ray start actors again and again, and
    Ray Data wait for them forever: the job tries one worker first, and ends with one
    line, the output as it was."""
    runtime_env = '{"worker_process_setup_hook": "no_such_module.set_up"}'
    assert failed_job_line(runtime_env, cluster, background_server, tmp_path) == (
        "asyncchat: error: Ray workers with the runtime env die as they start: its "
        "worker_process_setup_hook fails (Ray's logs say why)"
    )


@pytest.mark.slow
def test_a_setup_hook_that_never_returns_ends_the_job_at_the_start_timeout(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """A worker whose setup hook never returns never takes a task: the job gives up after
    --ray-start-timeout with one line, the output as it was."""
    hook = tmp_path / "stuck_hook.py"
    hook.write_text("import time\n\n\ndef set_up():\n    time.sleep(3600)\n")
    runtime_env = {"py_modules": [str(hook)], "worker_process_setup_hook": "stuck_hook.set_up"}
    line = failed_job_line(
        orjson.dumps(runtime_env).decode(), cluster, background_server, tmp_path,
        "--ray-start-timeout", "5",
    )  # fmt: skip
    assert line == (
        "asyncchat: error: no Ray worker with the runtime env started within 5 s (Ray's "
        "logs say why)"
    )


@pytest.mark.slow
def test_a_local_cluster_runs_the_actors_it_has_room_for_and_says_so(
    background_server: MockServer, tmp_path: Path
) -> None:
    """A local cluster the command starts never grows: actors it has no CPUs for would
    never start, so only those it has room for run, with a note, and every request is
    answered."""
    source = write_input(tmp_path / "in.jsonl", 200)
    output = tmp_path / "out.jsonl"
    command = batch_command(source, output, background_server)
    command[command.index("--ray-actors") + 1] = "200"

    done = run(command)

    assert done.returncode == 0, done.stderr
    found = re.search(
        r"^note: the local Ray cluster has room for (\d+) actors \(0\.25 CPU each\), "
        r"not 200: (\d+) run$",
        done.stderr,
        flags=re.MULTILINE,
    )
    assert found is not None, done.stderr
    assert found.group(1) == found.group(2) and int(found.group(1)) < 200
    assert "200 requests, 200 succeeded" in done.stderr
    assert sorted(output_ids(output)) == sorted(f"r{i}" for i in range(200))


@pytest.mark.slow
def test_a_runtime_env_ray_cannot_set_up_ends_the_job_with_its_reason(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """Ray fails the actors at once when it cannot make their runtime env (here a conda
    environment, on a machine without it or without that environment): one line with
    Ray's reason, nothing sent."""
    runtime_env = '{"conda": "asyncchat-no-such-environment"}'
    line = failed_job_line(runtime_env, cluster, background_server, tmp_path)
    assert line.startswith("asyncchat: error: Ray could not set up the runtime env: ")
    assert "conda" in line.lower()


def test_run_batch_file_refuses_a_runtime_env_when_ray_runs_already(
    cluster: str, background_server: MockServer, tmp_path: Path
) -> None:
    """The runtime env goes to the ray.init that run_batch_file makes: with Ray already
    running here it could not apply, so it is refused, as a start_timeout of 0 is."""
    source = write_input(tmp_path / "in.jsonl", 2)
    output = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r"give it to your ray\.init instead"):
        run_batch_file(
            source, output, client_options=client_options(background_server),
            runtime_env={"env_vars": {"A": "1"}},
        )  # fmt: skip
    with pytest.raises(ValueError, match="start_timeout must be more than 0 seconds, got 0"):
        run_batch_file(
            source, output, client_options=client_options(background_server), start_timeout=0
        )
    assert not output.exists()  # refused before the output was touched
    assert background_server.requests == []


def test_the_command_refuses_a_ray_limit_without_redis(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", 1)
    result = run(
        [sys.executable, "-m", "asyncchat", "batch", str(source), "-o", str(tmp_path / "o"),
         "--engine", "ray", "--rpm", "60", "--base-url", "http://127.0.0.1:9/v1"]
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "asyncchat: error: --engine ray shares --rpm/--tpm between its actors through Redis: "
        "add --redis-url"
    )
    local = run(
        [sys.executable, "-m", "asyncchat", "batch", str(source), "-o", str(tmp_path / "o"),
         "--ray-address", "auto", "--base-url", "http://127.0.0.1:9/v1"]
    )  # fmt: skip
    assert local.returncode == 2
    assert local.stderr.strip() == "asyncchat: error: --ray-address needs --engine ray"
    assert not (tmp_path / "o").exists()


def test_the_command_refuses_a_runtime_env_ray_refuses(tmp_path: Path) -> None:
    """Ray's own checks of the runtime env, as one line, before the output is made."""
    source = write_input(tmp_path / "in.jsonl", 1)
    result = run(
        [sys.executable, "-m", "asyncchat", "batch", str(source), "-o", str(tmp_path / "o"),
         "--engine", "ray", "--base-url", "http://127.0.0.1:9/v1",
         "--ray-runtime-env", '{"env_vars": {"OTEL_BSP_SCHEDULE_DELAY": 100}}']
    )  # fmt: skip
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncchat: error: Ray refused the runtime env: ")
    assert "env_vars" in message
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-runtime-env", "{}"], "asyncchat: error: --ray-runtime-env needs --engine ray"),
        (["--ray-start-timeout", "5"], "asyncchat: error: --ray-start-timeout needs --engine ray"),
        (
            ["--engine", "ray", "--ray-runtime-env", '["py_modules"]'],
            "asyncchat batch: error: argument --ray-runtime-env: expected a JSON object, "
            "got '[\"py_modules\"]'",
        ),
        (
            ["--engine", "ray", "--ray-start-timeout", "5"],
            "asyncchat: error: --ray-start-timeout needs --ray-runtime-env",
        ),
        (
            ["--engine", "ray", "--ray-start-timeout", "0"],
            "asyncchat batch: error: argument --ray-start-timeout: must be positive, got 0",
        ),
    ],
)
def test_the_command_refuses_ray_options_that_cannot_apply(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    source = write_input(tmp_path / "in.jsonl", 1)
    result = run(
        [sys.executable, "-m", "asyncchat", "batch", str(source), "-o", str(tmp_path / "o"),
         "--base-url", "http://127.0.0.1:9/v1", *flags]
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "o").exists()
