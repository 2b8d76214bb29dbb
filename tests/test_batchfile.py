"""`asyncchat batch`: the OpenAI Batch file runner, its checks, resume, shards and retries."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import asyncchat
from asyncchat._batchfile import batch_record, shard_of
from asyncchat.cli import main
from asyncchat.testing import MockServer

from .conftest import API_KEY, completion_json, free_port

ROOT = Path(__file__).resolve().parent.parent


def write_requests(path: Path, count: int, **body: Any) -> list[str]:
    ids = [f"request-{i}" for i in range(count)]
    with path.open("w") as file:
        for i, custom_id in enumerate(ids):
            line = {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "glm-4-air",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    **body,
                },
            }
            file.write(json.dumps(line) + "\n")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(server: MockServer, *args: str) -> int:
    return main(["batch", *args, "--base-url", server.base_url, "--api-key", API_KEY])


def test_output_matches_the_openai_batch_format(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 5)
    assert run(background_server, str(requests), "-o", str(output), "--concurrency", "2") == 0
    records = read_output(output)
    assert sorted(r["custom_id"] for r in records) == sorted(ids)
    for record in records:
        assert set(record) == {"id", "custom_id", "response", "error"}
        assert record["id"].startswith("batch_req_")
        assert record["error"] is None
        response = record["response"]
        assert set(response) == {"status_code", "request_id", "body"}
        assert response["status_code"] == 200
        assert response["request_id"].startswith("mock-req-")
        index = int(record["custom_id"].split("-")[1])
        assert response["body"]["choices"][0]["message"]["content"] == f"You said: q{index}"
        assert response["body"]["object"] == "chat.completion"
    err = capsys.readouterr().err
    assert "5 requests, 5 succeeded, 0 failed" in err


def test_the_summary_says_how_many_answers_the_token_limit_cut(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 5, max_tokens=2)
    assert run(background_server, str(requests), "-o", str(output)) == 0  # still answers
    answers = [r["response"]["body"]["choices"][0] for r in read_output(output)]
    assert {(a["message"]["content"], a["finish_reason"]) for a in answers} == {
        ("You said:", "length")
    }
    err = capsys.readouterr().err
    assert (
        "note: 5 answers of this run stopped at the token limit (finish_reason 'length'): "
        "their records hold what came; a larger max_tokens gets them whole\n"
    ) in err
    assert "5 requests, 5 succeeded, 0 failed" in err
    assert run(background_server, str(requests), "-o", str(output)) == 0
    assert "note:" not in capsys.readouterr().err  # a rerun got no answer: nothing to say
    write_requests(requests, 5, max_tokens=3)
    assert run(background_server, str(requests), "-o", str(tmp_path / "whole.jsonl")) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_summary_says_how_many_answers_the_server_cut(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DeepSeek under load ends answers with finish_reason "insufficient_system_resource"
    in a 200: they are written as they came, and the summary says how many were cut."""
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 3)
    cut = completion_json("The answer is")
    cut["choices"][0]["finish_reason"] = "insufficient_system_resource"
    for _ in range(2):
        background_server.enqueue(200, cut, headers={"content-type": "application/json"})
    assert run(background_server, str(requests), "-o", str(output), "--concurrency", "1") == 0
    answers = [r["response"]["body"]["choices"][0] for r in read_output(output)]
    assert Counter(a["finish_reason"] for a in answers) == {
        "insufficient_system_resource": 2,
        "stop": 1,
    }
    err = capsys.readouterr().err
    assert (
        "note: 2 answers of this run were cut when the server stopped it "
        "(finish_reason 'insufficient_system_resource'): their records hold what came\n"
    ) in err
    assert "3 requests, 3 succeeded, 0 failed" in err


def test_bad_lines_are_all_reported_and_nothing_runs(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 3)
    with requests.open("a") as file:
        file.write("{not json\n")
        file.write(
            json.dumps(
                {
                    "custom_id": "request-0",
                    "url": "/v1/chat/completions",
                    "body": {"model": "m", "messages": [{"role": "user"}]},
                }
            )
            + "\n"
        )
        file.write(
            json.dumps(
                {
                    "custom_id": "x",
                    "url": "/v1/embeddings",
                    "body": {"model": "m", "messages": [{}]},
                }
            )
            + "\n"
        )
        file.write(
            json.dumps(
                {"custom_id": "y", "url": "/v1/chat/completions", "body": {"messages": [{}]}}
            )
            + "\n"
        )
        file.write("\n")
        file.write(json.dumps({"url": "/v1/chat/completions"}) + "\n")
    assert run(background_server, str(requests), "-o", str(output)) == 2
    err = capsys.readouterr().err
    assert "5 bad line(s), nothing was run" in err
    for expected in (
        "line 4: not valid JSON",
        "line 5: custom_id 'request-0' is used more",
        "line 6: url must be /v1/chat/completions",
        "line 7: body.model is missing",
        "line 9: missing custom_id",
    ):
        assert expected in err
    assert background_server.requests == []
    assert not output.exists()


def test_failures_are_written_counted_and_retried(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 4)
    background_server.enqueue(400, {"error": {"message": "bad", "code": "E1"}})  # not retried
    assert run(background_server, str(requests), "-o", str(output), "--concurrency", "1") == 1
    records = read_output(output)
    failed = [r for r in records if r["response"]["status_code"] != 200]
    assert len(failed) == 1
    assert failed[0]["response"]["body"] == {"error": {"message": "bad", "code": "E1"}}
    assert "1 failed" in capsys.readouterr().err
    # A rerun without --retry-failed runs nothing; with it, only the failure again.
    before = len(background_server.requests)
    assert run(background_server, str(requests), "-o", str(output)) == 1
    assert len(background_server.requests) == before
    assert run(background_server, str(requests), "-o", str(output), "--retry-failed") == 0
    assert len(background_server.requests) == before + 1
    records = read_output(output)
    assert Counter(r["custom_id"] for r in records) == Counter(ids)
    assert all(r["response"]["status_code"] == 200 for r in records)


def test_partial_last_line_is_repaired(
    background_server: MockServer,
    tmp_path: Path,
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 6)
    assert run(background_server, str(requests), "-o", str(output)) == 0
    lines = output.read_text().splitlines()
    # As if a crash cut the file after three and a half lines.
    output.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    asked = len(background_server.requests)
    assert run(background_server, str(requests), "-o", str(output)) == 0
    assert len(background_server.requests) == asked + 3
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


def test_shards_are_disjoint_and_cover_the_file(
    background_server: MockServer,
    tmp_path: Path,
) -> None:
    requests = tmp_path / "in.jsonl"
    ids = write_requests(requests, 40, max_tokens=5)
    outputs = []
    for k in (1, 2, 3):
        output = tmp_path / f"out-{k}.jsonl"
        assert run(background_server, str(requests), "-o", str(output), "--shard", f"{k}/3") == 0
        outputs.append({r["custom_id"] for r in read_output(output)})
    assert all(outputs)  # 40 ids spread over 3 shards: none empty
    assert not (outputs[0] & outputs[1] or outputs[1] & outputs[2] or outputs[0] & outputs[2])
    assert outputs[0] | outputs[1] | outputs[2] == set(ids)
    assert all(shard_of(i, 3) == k for k, part in enumerate(outputs, 1) for i in part)


def test_bad_shard_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["batch", "in.jsonl", "-o", "out.jsonl", "--shard", "4/3"])
    assert info.value.code == 2
    assert "K must be from 1 to N" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_midway_and_rerun_writes_each_id_once(tmp_path: Path) -> None:
    """SIGKILL the runner mid-batch, rerun it: every custom_id exactly once."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio\n"
            "from asyncchat.testing import MockServer\n"
            "async def main():\n"
            f"    async with MockServer(port={port}, delay=0.05):\n"
            "        print('ready', flush=True)\n"
            "        await asyncio.Event().wait()\n"
            "asyncio.run(main())\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        ids = write_requests(requests, 200)
        command = [
            sys.executable,
            "-m",
            "asyncchat",
            "batch",
            str(requests),
            "-o",
            str(output),
            "--concurrency",
            "8",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--api-key",
            "k",
        ]
        runner = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if output.exists() and output.read_text().count("\n") >= 40:
                break
            time.sleep(0.02)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        first_run = output.read_text().count("\n")
        assert 40 <= first_run < 200
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        assert f"{first_run} already done before this run" in finished.stderr
        assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)
    finally:
        server.kill()
        server.communicate()


def test_progress_line_on_a_terminal() -> None:
    from asyncchat._batchrun import _Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = _Progress(terminal, total=10, done_before=0)
    progress.done, progress.failed, progress.in_flight, progress.tokens = 4, 1, 3, 120
    progress.show(force=True)
    line = terminal.getvalue()
    assert line.startswith("\r4/10 done, 1 failed, 3 in flight,")
    assert "120 tokens" in line and "ETA" in line
    quiet = io.StringIO()
    _Progress(quiet, total=10, done_before=0).show(force=True)
    assert quiet.getvalue() == ""


def test_example_file_runs(background_server: MockServer, tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    assert run(background_server, str(ROOT / "examples" / "requests.jsonl"), "-o", str(output)) == 0
    assert len(read_output(output)) == 8


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (asyncchat.APIConnectionError("dropped after sending"), "connection_error"),
        (asyncchat.APITimeoutError("read timeout"), "timeout"),
        (asyncchat.ConnectError("refused"), "unreachable"),
        (asyncchat.ConnectTimeoutError("connect timeout"), "unreachable"),  # not "timeout"
        (asyncchat.TLSError("certificate verify failed"), "tls_error"),
        (ValueError("odd"), "invalid_response"),
    ],
)
def test_each_network_failure_has_its_error_code(error: Exception, code: str) -> None:
    record = batch_record("r1", error)
    assert record["response"] is None
    assert record["error"] == {"code": code, "message": str(error)}
