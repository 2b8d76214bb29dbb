"""`asyncchat batch --via batch-api`: the whole round trip against MockServer's Batch
API over loopback, in-process and as a subprocess (kill -9 and resume)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import asyncchat
from asyncchat._batchfile import BatchFileError
from asyncchat._batchrun import BatchStop, BatchSummary
from asyncchat.batchapi import (
    GLM,
    OPENAI,
    BatchAPIUnavailableError,
    provider_for,
    run_batch_api,
    split_requests,
    state_path,
)
from asyncchat.cli import main
from asyncchat.testing import BatchSettings, MockResponse, MockServer, MockTransport

from .conftest import API_KEY, served_in_a_thread

ROOT = Path(__file__).resolve().parent.parent


def write_requests(path: Path, count: int, models: tuple[str, ...] = ("m",)) -> list[str]:
    ids = [f"r{i}" for i in range(count)]
    with path.open("w") as file:
        for i, custom_id in enumerate(ids):
            body = {
                "model": models[i % len(models)],
                "messages": [{"role": "user", "content": f"hi {custom_id}"}],
            }
            record = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            file.write(json.dumps({**record, "body": body}) + "\n")
    return ids


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    found = records(path)
    counts = Counter(record["custom_id"] for record in found)
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]  # never twice
    return {record["custom_id"]: record for record in found}


@pytest.fixture
async def batch_server() -> AsyncIterator[MockServer]:
    async with MockServer(api_key=API_KEY, batch=BatchSettings(pace=2000)) as server:
        yield server


async def run(server: MockServer, base_url: str | None = None, **options: Any) -> BatchSummary:
    input_path, output_path = options.pop("input_path"), options.pop("output_path")
    options.setdefault("poll_interval", 0.02)
    async with asyncchat.Client(base_url=base_url or server.base_url, api_key=API_KEY) as client:
        return await run_batch_api(client, input_path, output_path, **options)


# --- splitting ------------------------------------------------------------------------


def body(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_parts_hold_one_model_each_within_both_limits() -> None:
    requests = [(f"a{i}", body("a")) for i in range(5)] + [(f"b{i}", body("b")) for i in range(3)]
    requests.insert(2, ("b-early", body("b")))
    parts = list(split_requests(iter(requests), OPENAI, max_requests=2, max_bytes=10_000))
    assert [ids for ids, _ in parts] == [
        ["a0", "a1"],
        ["a2", "a3"],
        ["b-early", "b0"],
        ["a4"],
        ["b1", "b2"],
    ]
    line = orjson.loads(parts[0][1].readline())
    assert line == {
        "custom_id": "a0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body("a"),
    }
    assert parts[0][1].read().count(b"\n") == 1  # the second of the two lines
    size = len(orjson.dumps(line)) + 1
    by_bytes = list(split_requests(iter(requests[:2]), GLM, max_requests=100, max_bytes=size + 5))
    assert [ids for ids, _ in by_bytes] == [["a0"], ["a1"]]
    assert orjson.loads(by_bytes[0][1].read())["url"] == "/v4/chat/completions"
    for _, file in parts + by_bytes:
        file.close()


def test_a_request_over_the_byte_limit_alone_is_refused() -> None:
    with pytest.raises(BatchFileError, match=r"request 'big' alone is \d+ bytes"):
        list(split_requests(iter([("big", body("a", "x" * 500))]), OPENAI, 10, 300))


def test_state_of_batches_at_another_server_is_not_mixed_up(tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    part = {"file_id": "f", "batch_id": "b", "status": "in_progress", "merged": False}
    state = {
        "version": 1,
        "base_url": "https://api.openai.com/v1",
        "parts": [{**part, "ids": ["r0"]}],
    }
    state_path(out).write_bytes(orjson.dumps(state))
    argv = ["batch", str(tmp_path / "in.jsonl"), "-o", str(out), "--via", "batch-api"]
    with pytest.raises(BatchFileError, match=r"run with --base-url https://api\.openai\.com/v1"):
        asyncio.run(
            run_batch_api(
                asyncchat.Client(base_url="http://127.0.0.1:9/v1"), tmp_path / "in.jsonl", out
            )
        )
    for text in ("not json", '{"version": 1, "parts": [{"ids": 1}]}', "[]"):
        state_path(out).write_text(text)
        assert main([*argv, "--base-url", "http://127.0.0.1:9/v1"]) == 2
        assert state_path(out).read_text() == text  # left for the user to look at


def test_the_provider_is_known_by_its_base_url() -> None:
    assert provider_for("https://open.bigmodel.cn/api/paas/v4") is GLM
    assert provider_for("https://api.z.ai/api/paas/v4/") is GLM
    assert provider_for("http://127.0.0.1:9/api/paas/v4") is GLM
    assert provider_for("https://api.openai.com/v1") is OPENAI
    assert (GLM.max_bytes, OPENAI.max_bytes) == (100 * 1024 * 1024, 200 * 1024 * 1024)


# --- a whole run ----------------------------------------------------------------------


async def test_a_job_is_split_uploaded_polled_and_merged(
    batch_server: MockServer, tmp_path: Path
) -> None:
    batch_server.batch.settings.fail_ids = frozenset({"r7"})
    ids = write_requests(tmp_path / "in.jsonl", 250, models=("m", "m", "n"))
    out = tmp_path / "out.jsonl"
    summary = await run(
        batch_server,
        input_path=tmp_path / "in.jsonl",
        output_path=out,
        max_requests_per_batch=100,
        metadata={"job": "nightly"},
    )
    assert (summary.total, summary.succeeded, summary.failed) == (250, 249, 1)
    assert summary.tokens > 0 and summary.notes == []
    results = by_id(out)
    assert sorted(results) == sorted(ids)
    answer = results["r0"]
    assert set(answer) == {"id", "custom_id", "response", "error"} and answer["error"] is None
    assert answer["response"]["status_code"] == 200
    assert answer["response"]["body"]["choices"][0]["message"]["content"] == "You said: hi r0"
    assert results["r7"]["response"]["status_code"] == 400  # from the error file
    batches = [b.data for b in batch_server.batch.batches.values()]
    # 167 requests for "m" (100 + 67) and 83 for "n": three batches, one model each.
    assert sorted(b["request_counts"]["total"] for b in batches) == [67, 83, 100]
    assert {b["metadata"]["job"] for b in batches} == {"nightly"}
    assert not state_path(out).exists()  # nothing left to resume
    # The uploaded parts are deleted once merged; the provider's result files stay.
    assert {f.purpose for f in batch_server.batch.files.values()} == {"batch_output"}
    assert batch_server.batch.uploads == 3


async def test_the_summary_says_how_many_answers_the_token_limit_cut(
    batch_server: MockServer, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**body("m", "one two three"), "max_tokens": 2 if i % 2 else 9},
        }
        for i in range(6)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = await run(
        batch_server, input_path=tmp_path / "in.jsonl", output_path=tmp_path / "out.jsonl"
    )
    assert (summary.succeeded, summary.failed) == (6, 0)
    assert summary.notes == [
        "3 answers of this run stopped at the token limit (finish_reason 'length'): their "
        "records hold what came; a larger max_tokens gets them whole"
    ]
    results = by_id(tmp_path / "out.jsonl")
    reasons = {i: r["response"]["body"]["choices"][0]["finish_reason"] for i, r in results.items()}
    assert reasons == {f"r{i}": "length" if i % 2 else "stop" for i in range(6)}


async def test_a_line_whose_tool_choice_the_mock_cannot_follow_is_still_answered(
    batch_server: MockServer, tmp_path: Path
) -> None:
    """The mock's Batch API does not check bodies as its chat endpoint does (it answers
    400 there): such a line gets a text answer, and the others theirs."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    choices = [{"type": "allowed_tools"}, "required", {"type": "function", "function": {}}]
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**body("m", "call f"), "tools": tools, "tool_choice": choice},
        }
        for i, choice in enumerate(choices)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = await run(
        batch_server, input_path=tmp_path / "in.jsonl", output_path=tmp_path / "out.jsonl"
    )
    assert (summary.succeeded, summary.failed) == (3, 0)
    results = by_id(tmp_path / "out.jsonl")
    reasons = {i: r["response"]["body"]["choices"][0]["finish_reason"] for i, r in results.items()}
    assert reasons == {"r0": "stop", "r1": "tool_calls", "r2": "stop"}


async def test_an_expired_batch_keeps_its_finished_lines_and_retry_failed_resubmits(
    tmp_path: Path,
) -> None:
    settings = BatchSettings(pace=200, expire_after=0.3)
    ids = write_requests(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    async with MockServer(api_key=API_KEY, batch=settings) as server:
        first = await run(server, input_path=tmp_path / "in.jsonl", output_path=out)
        expired = {i for i, r in by_id(out).items() if r["error"]}
        assert 0 < first.succeeded < 200 and first.failed == len(expired) == 200 - first.succeeded
        assert {by_id(out)[i]["error"]["code"] for i in expired} == {"batch_expired"}
        finished_before = {i: r for i, r in by_id(out).items() if not r["error"]}

        settings.expire_after = None
        second = await run(
            server, input_path=tmp_path / "in.jsonl", output_path=out, retry_failed=True
        )
    assert (second.succeeded, second.failed) == (200, 0)
    results = by_id(out)
    assert sorted(results) == sorted(ids)
    for custom_id, record in finished_before.items():
        assert results[custom_id] == record  # paid for once, kept as it was
    resubmitted = server.batch.batches[list(server.batch.batches)[-1]].data
    assert resubmitted["request_counts"]["total"] == len(expired)


async def test_a_batch_cancelled_at_the_provider_keeps_what_finished(tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.jsonl"
    async with MockServer(api_key=API_KEY, batch=BatchSettings(pace=100)) as server:
        job = asyncio.ensure_future(run(server, input_path=tmp_path / "in.jsonl", output_path=out))
        while not any(b.data["status"] == "in_progress" for b in server.batch.batches.values()):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
            await client.batches.cancel(next(iter(server.batch.batches)))
        summary = await job
    results = by_id(out)
    done = [r for r in results.values() if r["error"] is None]
    cancelled = [r for r in results.values() if r["error"]]
    assert len(results) == 300 and 0 < len(done) < 300
    assert {r["error"]["code"] for r in cancelled} == {"batch_cancelled"}
    assert (summary.succeeded, summary.failed) == (len(done), len(cancelled))


async def test_a_stopped_run_leaves_its_batches_running_and_cancel_collects_them(
    tmp_path: Path,
) -> None:
    write_requests(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.jsonl"
    async with MockServer(api_key=API_KEY, batch=BatchSettings(pace=100)) as server:
        stop = BatchStop()
        job = asyncio.ensure_future(
            run(server, input_path=tmp_path / "in.jsonl", output_path=out, stop=stop)
        )
        while not any(b.data["status"] == "in_progress" for b in server.batch.batches.values()):
            await asyncio.sleep(0.01)
        stop.request("SIGINT")
        stopped = await job
        assert stopped.stopped_by == "SIGINT" and stopped.succeeded == 0
        assert "still running at the provider" in stopped.notes[0]
        state = orjson.loads(state_path(out).read_bytes())
        assert [part["batch_id"] for part in state["parts"]] == list(server.batch.batches)

        await asyncio.sleep(0.2)
        cancelled = await run(
            server, input_path=tmp_path / "in.jsonl", output_path=out, cancel=True
        )
    assert len(server.batch.batches) == 1 and server.batch.uploads == 1  # nothing new
    assert 0 < cancelled.succeeded < 300 and cancelled.succeeded + cancelled.failed == 300
    assert not state_path(out).exists()


async def test_cancel_after_the_batch_ended_merges_it(tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    async with MockServer(api_key=API_KEY, batch=BatchSettings(pace=100)) as server:
        stop = BatchStop()
        job = asyncio.ensure_future(
            run(server, input_path=tmp_path / "in.jsonl", output_path=out, stop=stop)
        )
        while not server.batch.batches:
            await asyncio.sleep(0.01)
        stop.request("SIGINT")
        await job
        (batch,) = server.batch.batches.values()
        while batch.data["status"] != "completed":  # it ends while no run looks
            await asyncio.sleep(0.02)
        summary = await run(server, input_path=tmp_path / "in.jsonl", output_path=out, cancel=True)
    assert summary.succeeded == 30 and summary.ok  # nothing to cancel: all merged


async def test_a_batch_created_but_not_recorded_is_found_not_paid_twice(
    batch_server: MockServer, tmp_path: Path
) -> None:
    ids = write_requests(tmp_path / "in.jsonl", 50)
    out = tmp_path / "out.jsonl"
    async with asyncchat.Client(base_url=batch_server.base_url, api_key=API_KEY) as client:
        # What a run killed between `batches.create` and saving its answer leaves behind.
        lines = b"".join(
            orjson.dumps(
                {"custom_id": i, "method": "POST", "url": "/v1/chat/completions", "body": body("m")}
            )
            + b"\n"
            for i in ids
        )
        uploaded = await client.files.create(file=lines, purpose="batch")
        await client.batches.create(input_file_id=uploaded.id)
    state = {
        "version": 1,
        "base_url": batch_server.base_url,
        "parts": [
            {"file_id": uploaded.id, "batch_id": None, "status": None, "merged": False, "ids": ids}
        ],
    }
    state_path(out).write_bytes(orjson.dumps(state))
    summary = await run(batch_server, input_path=tmp_path / "in.jsonl", output_path=out)
    assert summary.succeeded == 50
    assert len(batch_server.batch.batches) == 1 and batch_server.batch.uploads == 1


async def test_a_merge_cut_short_is_done_again_without_duplicates(
    batch_server: MockServer, tmp_path: Path
) -> None:
    ids = write_requests(tmp_path / "in.jsonl", 40)
    out = tmp_path / "out.jsonl"
    await run(batch_server, input_path=tmp_path / "in.jsonl", output_path=out)
    (batch_id,) = batch_server.batch.batches
    # A crash mid-merge: half the records written, the part not yet marked merged.
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:20]))
    state = {
        "version": 1,
        "base_url": batch_server.base_url,
        "parts": [
            {
                "file_id": "f",
                "batch_id": batch_id,
                "status": "completed",
                "merged": False,
                "ids": ids,
            }
        ],
    }
    state_path(out).write_bytes(orjson.dumps(state))
    summary = await run(batch_server, input_path=tmp_path / "in.jsonl", output_path=out)
    assert (summary.skipped, summary.succeeded) == (20, 40)
    assert sorted(by_id(out)) == sorted(ids) and len(batch_server.batch.batches) == 1


class _FlakyTransport:
    """The real transport, with chosen requests failing (an outage) or hanging."""

    def __init__(self, fail: Any, hang: Any = lambda request: False) -> None:
        self.inner = asyncchat.AiohttpTransport()
        self.fail, self.hang = fail, hang
        self.failed = 0

    async def send(self, request: asyncchat.Request, timeout: Any) -> asyncchat.Response:
        if self.fail(request):
            self.failed += 1
            raise asyncchat.APIConnectionError(f"could not connect to {request.url}: outage")
        if self.hang(request):
            await asyncio.sleep(3600)
        return await self.inner.send(request, timeout)

    async def close(self) -> None:
        await self.inner.close()


async def test_polling_outlives_an_outage(batch_server: MockServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    looks = iter(range(1000))

    def outage(request: asyncchat.Request) -> bool:  # the 2nd to 5th looks at a batch fail
        return request.method == "GET" and "/batches/" in request.url and 1 <= next(looks) <= 4

    transport = _FlakyTransport(outage)
    progress = io.StringIO()
    async with asyncchat.Client(
        base_url=batch_server.base_url, api_key=API_KEY, transport=transport, max_retries=0
    ) as client:
        summary = await run_batch_api(
            client, tmp_path / "in.jsonl", out, poll_interval=0.01, progress=progress
        )
    assert transport.failed == 4 and summary.succeeded == 20
    assert progress.getvalue().count("could not reach the provider") == 4


async def test_a_second_stop_ends_an_upload_under_way(
    batch_server: MockServer, tmp_path: Path
) -> None:
    write_requests(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    transport = _FlakyTransport(
        lambda request: False, hang=lambda request: request.url.endswith("/files")
    )
    stop = BatchStop(grace=3600)
    async with asyncchat.Client(
        base_url=batch_server.base_url, api_key=API_KEY, transport=transport
    ) as client:
        job = asyncio.ensure_future(run_batch_api(client, tmp_path / "in.jsonl", out, stop=stop))
        await asyncio.sleep(0.3)
        stop.request("SIGINT")
        await asyncio.sleep(0.3)
        assert not job.done()  # the upload has its grace period
        stop.request("SIGINT")
        summary = await asyncio.wait_for(job, 10)
    assert summary.stopped_by == "SIGINT" and summary.not_run == 20
    assert batch_server.batch.uploads == 0 and out.read_bytes() == b""
    assert not state_path(out).exists()  # nothing was submitted: nothing to resume


async def test_a_glm_flavoured_run(batch_server: MockServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 30, models=("glm-4-flash",))
    out = tmp_path / "out.jsonl"
    summary = await run(
        batch_server,
        base_url=batch_server.glm_base_url,
        input_path=tmp_path / "in.jsonl",
        output_path=out,
    )
    assert summary.succeeded == 30
    (batch,) = batch_server.batch.batches.values()
    assert batch.data["endpoint"] == "/v4/chat/completions"
    assert {line["url"] for line in batch.lines} == {"/v4/chat/completions"}
    for record in by_id(out).values():  # GLM's lines, given the fields every record has
        assert record["error"] is None and record["response"]["status_code"] == 200


async def test_a_batch_that_fails_validation_leaves_its_requests_to_a_rerun(
    tmp_path: Path,
) -> None:
    write_requests(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    settings = BatchSettings(pace=2000, max_requests=20)
    async with MockServer(api_key=API_KEY, batch=settings) as server:
        failed = await run(server, input_path=tmp_path / "in.jsonl", output_path=out)
        assert (failed.succeeded, failed.failed, failed.not_run) == (0, 0, 30)
        assert "failed validation (too_many_requests" in failed.notes[0]
        assert "30 request(s) did not run and a rerun submits them" in failed.notes[0]
        rerun = await run(
            server, input_path=tmp_path / "in.jsonl", output_path=out, max_requests_per_batch=20
        )
    assert rerun.succeeded == 30 and rerun.ok


async def test_a_server_without_a_batch_api_is_one_clear_error(tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 3)
    transport = MockTransport(
        lambda request: MockResponse(404, json={"error": {"message": "Not Found"}})
    )
    async with asyncchat.Client(
        base_url="http://127.0.0.1:9/v1", api_key="k", transport=transport
    ) as client:
        with pytest.raises(BatchAPIUnavailableError, match=r"has no Batch API .* run without"):
            await run_batch_api(client, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == b""


async def test_a_wrong_key_stops_the_job_before_anything_is_uploaded(
    batch_server: MockServer, tmp_path: Path
) -> None:
    write_requests(tmp_path / "in.jsonl", 3)
    async with asyncchat.Client(base_url=batch_server.base_url, api_key="wrong") as client:
        summary = await run_batch_api(client, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert summary.fatal is not None and summary.fatal.status_code == 401
    assert batch_server.batch.uploads == 0 and (tmp_path / "out.jsonl").read_bytes() == b""


# --- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cancel"], "--cancel needs --via batch-api"),
        (["--metadata", "a=b"], "--metadata needs --via batch-api"),
        (["--poll-interval", "5"], "--poll-interval needs --via batch-api"),
        (["--completion-window", "24h"], "--completion-window needs --via batch-api"),
        (["--via", "batch-api", "--rpm", "60"], "--via batch-api leaves the pace to the provider"),
        (["--via", "batch-api", "--engine", "ray"], "drop --engine ray"),
        (["--via", "batch-api", "-o", "-"], "-o must be a file"),
        (["--via", "batch-api", "--metadata", "k=" + "v" * 513], "values strings of at most 512"),
        (
            ["--via", "batch-api"] + [f"--metadata=k{i}=v" for i in range(17)],
            "at most 16 metadata pairs",
        ),
    ],
)
def test_flags_that_do_not_go_together_are_refused(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_requests(tmp_path / "in.jsonl", 1)
    argv = ["batch", str(tmp_path / "in.jsonl"), "--base-url", "http://127.0.0.1:9/v1"]
    if "-o" not in flags:
        argv += ["-o", str(tmp_path / "out.jsonl")]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def slow_batch_server() -> Iterator[MockServer]:
    """A MockServer whose batches take seconds (5 for 100 requests: a subprocess starts,
    is stopped and started again well within one), on its own loop in a thread."""
    with served_in_a_thread(MockServer(api_key=API_KEY, batch=BatchSettings(pace=20))) as server:
        yield server


def batch_api_command(server: MockServer, requests: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "asyncchat",
        "batch",
        str(requests),
        "-o",
        str(output),
        "--via",
        "batch-api",
        "--base-url",
        server.base_url,
        "--api-key",
        API_KEY,
        "--poll-interval",
        "0.05",
        "--max-requests-per-batch",
        "100",
    ]


@pytest.mark.slow
def test_kill_9_then_the_rerun_picks_up_the_running_batches(
    slow_batch_server: MockServer, tmp_path: Path
) -> None:
    ids = write_requests(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    command = batch_api_command(slow_batch_server, tmp_path / "in.jsonl", out)
    first = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not (
        state_path(out).exists()
        and sum(
            p["batch_id"] is not None for p in orjson.loads(state_path(out).read_bytes())["parts"]
        )
        == 2
    ):
        assert time.monotonic() < deadline and first.poll() is None, "no batches submitted"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert out.read_bytes() == b""  # killed long before the batches ended

    rerun = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "200 succeeded" in rerun.stderr
    assert sorted(by_id(out)) == sorted(ids)
    assert slow_batch_server.batch.uploads == 2 and len(slow_batch_server.batch.batches) == 2
    assert not state_path(out).exists()


@pytest.mark.slow
def test_ctrl_c_leaves_the_batches_running_and_says_how_to_collect_them(
    slow_batch_server: MockServer, tmp_path: Path
) -> None:
    write_requests(tmp_path / "in.jsonl", 100)
    out = tmp_path / "out.jsonl"
    command = batch_api_command(slow_batch_server, tmp_path / "in.jsonl", out)
    runner = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while not slow_batch_server.batch.batches:
        assert time.monotonic() < deadline, "no batch submitted"
        time.sleep(0.02)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, err
    assert "still running at the provider" in err and "--cancel" in err
    assert "run the same command again to resume" in err
    (batch,) = slow_batch_server.batch.batches.values()
    assert batch.data["status"] in ("validating", "in_progress")  # not cancelled by us

    cancelled = subprocess.run(
        [*command, "--cancel"], stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT
    )
    assert batch.data["status"] == "cancelled", cancelled.stderr
    assert cancelled.returncode == 1 and "rerun with --retry-failed" in cancelled.stderr
    assert len(records(out)) == 100
