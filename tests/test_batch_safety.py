"""`asyncchat batch` never destroys or miscounts what a user gives it.

Real files, a real loopback server, and the runner as a subprocess where
signals, locks and pipes are involved.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import asyncchat
from asyncchat._batchrun import _Progress, fatal_hint, run_batch_file
from asyncchat._serverwatch import ServerWatch
from asyncchat.cli import main
from asyncchat.errors import APIStatusError, status_error
from asyncchat.testing import MockServer

from .conftest import (
    API_KEY,
    RestartingServer,
    completion_json,
    free_port,
    openrouter_429,
    port_that_accepts_nothing,
    served_in_a_thread,
)
from .test_batchfile import read_output, run, write_requests
from .test_retry import gemini_quota_429

ROOT = Path(__file__).resolve().parent.parent


def record_line(custom_id: str, status: int = 200) -> str:
    """A result line as an earlier run (of any input) would have written it."""
    body: dict[str, Any] = {"choices": []} if status == 200 else {"error": {"message": "no"}}
    return json.dumps(
        {
            "id": f"batch_req_{custom_id}",
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": None, "body": body},
            "error": None,
        }
    )


# --- 1. the output is never the input ---------------------------------------------


@pytest.mark.parametrize("retry_failed", [False, True])
@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused(
    background_server: MockServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spelling: str,
    retry_failed: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    requests = Path("in.jsonl")
    write_requests(requests, 8)
    before = requests.read_bytes()
    output = {
        "same": "in.jsonl",
        "dot-slash": "./in.jsonl",
        "symlink": "link.jsonl",
        "hardlink": "hard.jsonl",
    }[spelling]
    if spelling == "symlink":
        os.symlink("in.jsonl", "link.jsonl")
    if spelling == "hardlink":
        os.link("in.jsonl", "hard.jsonl")
    args = ["in.jsonl", "-o", output, *(["--retry-failed"] if retry_failed else [])]
    assert run(background_server, *args) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and len(err.strip().splitlines()) == 1
    assert requests.read_bytes() == before
    assert background_server.requests == []


@pytest.mark.parametrize(
    "input_name, output_name, named",
    [
        ("missing.jsonl", "out.jsonl", "missing.jsonl: No such file or directory"),
        ("in.jsonl", "no-such-dir/out.jsonl", "no-such-dir/out.jsonl: No such file or directory"),
        ("in.jsonl", "a-dir", "a-dir: Is a directory"),
    ],
)
def test_a_file_that_cannot_be_opened_is_named_in_one_line(
    background_server: MockServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    input_name: str,
    output_name: str,
    named: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_requests(Path("in.jsonl"), 2)
    Path("a-dir").mkdir()
    assert run(background_server, input_name, "-o", output_name) == 2
    assert capsys.readouterr().err == f"asyncchat: error: {named}\n"
    assert background_server.requests == []


# --- 2. a file that is not ours is never changed ----------------------------------


NOT_RESULTS = {
    "notes with a newline": b"hello world\n",
    "notes without a newline": b"hello world",
    "a note after a record": (record_line("request-0") + "\nmy notes\n").encode(),
    "a note before a record": ("my notes\n" + record_line("request-0") + "\n").encode(),
    "a JSON object that is not a result": b'{"custom_id": "request-0"}\n',
    "a JSON list": b"[1, 2]\n",
}


@pytest.mark.parametrize("retry_failed", [False, True])
@pytest.mark.parametrize("name", list(NOT_RESULTS))
def test_an_output_that_is_not_a_results_file_is_left_alone(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    retry_failed: bool,
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "notes.txt"
    write_requests(requests, 3)
    output.write_bytes(NOT_RESULTS[name])
    args = [str(requests), "-o", str(output), *(["--retry-failed"] if retry_failed else [])]
    assert run(background_server, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(output) in err and "is not a result record" in err
    assert re.search(r"line \d+", err)
    assert output.read_bytes() == NOT_RESULTS[name]
    assert background_server.requests == []


def test_a_torn_last_line_after_a_record_is_cut_alone(
    background_server: MockServer, tmp_path: Path
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 4)
    kept = record_line("request-0") + "\n\n"  # a blank line is kept as it is
    output.write_text(kept + record_line("request-1")[:30])
    assert run(background_server, str(requests), "-o", str(output)) == 0
    text = output.read_text()
    assert text.startswith(kept + "{")  # the torn piece is gone, nothing before it moved
    records = [json.loads(line) for line in text.splitlines() if line]
    assert Counter(r["custom_id"] for r in records) == Counter(ids)
    assert len(background_server.requests) == 3


def test_a_last_record_without_its_newline_is_kept(
    background_server: MockServer, tmp_path: Path
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 3)
    output.write_text(record_line("request-0"))
    assert run(background_server, str(requests), "-o", str(output)) == 0
    lines = output.read_text().splitlines()
    assert lines[0] == record_line("request-0")
    assert Counter(json.loads(line)["custom_id"] for line in lines) == Counter(ids)
    assert len(background_server.requests) == 2


# --- 3. only this input's records count ---------------------------------------------


def test_records_of_another_input_are_neither_counted_nor_touched(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 1)  # request-0 only
    others = "".join(record_line(f"other-{i}") + "\n" for i in range(9))
    others += record_line("other-failed", status=500) + "\n"
    output.write_text(others)
    assert run(background_server, str(requests), "-o", str(output)) == 0
    err = capsys.readouterr().err
    assert "1 requests, 1 succeeded, 0 failed, 0 already done" in err
    # --retry-failed retries this input's failures only; the other input's stay.
    assert run(background_server, str(requests), "-o", str(output), "--retry-failed") == 0
    assert "1 requests, 1 succeeded, 0 failed, 1 already done" in capsys.readouterr().err
    text = output.read_text()
    assert text.startswith(others)
    assert [r["custom_id"] for r in read_output(output)][-1] == "request-0"
    assert len(background_server.requests) == 1


def test_a_failure_of_this_input_is_retried_and_replaced(
    background_server: MockServer, tmp_path: Path
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 2)
    others = record_line("other-failed", status=500) + "\n"
    output.write_text(others + record_line("request-0", status=500) + "\n")
    os.chmod(output, 0o640)
    assert run(background_server, str(requests), "-o", str(output)) == 1
    assert run(background_server, str(requests), "-o", str(output), "--retry-failed") == 0
    records = read_output(output)
    assert output.read_text().startswith(others)
    assert Counter(r["custom_id"] for r in records[1:]) == Counter(ids)
    assert all(r["response"]["status_code"] == 200 for r in records[1:])
    assert os.stat(output).st_mode & 0o777 == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- 4. an error every request would get stops the job ----------------------------

CREDITS = "has run out of credits or quota: add credits"  # the hint, not the server's words
XAI_NO_CREDITS = (
    "Your team 16f2151a-40f4-4a80-8ad0-cae00c27e8dd has either used all available credits "
    "or reached its monthly spending limit. To continue making API requests, please "
    "purchase more credits or raise your spending limit."
)


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (404, {"error": {"message": "The model `nope` does not exist",
                         "code": "model_not_found"}}, "model name"),
        # A model the server does not have, as a 400: DeepSeek, Mistral, Perplexity
        (400, {"error": {"message": "Model Not Exist", "type": "invalid_request_error",
                         "param": None, "code": "invalid_request_error"}}, "model name"),
        (400, {"object": "error", "message": "Invalid model: nope", "type": "invalid_model",
               "code": "1500"}, "model name"),
        (400, {"error": {"message": "Invalid model 'nope'.", "type": "invalid_model",
                         "code": 400}}, "model name"),
        # Groq's for a model it retired
        (400, {"error": {"message": "The model `llama3-8b-8192` has been decommissioned and "
                                    "is no longer supported.", "type": "invalid_request_error",
                         "code": "model_decommissioned"}}, "model name"),
        (403, {"error": {"message": "not allowed"}}, "permissions"),
        # Fireworks's for a suspended account, or a LoRA model that failed to load
        (412, {"error": {"object": "error", "type": "invalid_request_error",
                         "message": "Account suspended"}}, "a suspended account"),
        # Gemini's answer to a wrong key: a 400, as a list of one error
        (400, [{"error": {"code": 400, "status": "INVALID_ARGUMENT",
                          "message": "API key not valid. Please pass a valid API key.",
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                       "reason": "API_KEY_INVALID",
                                       "domain": "googleapis.com"}]}}], "check the API key"),
        # xAI's, a 400 too
        (400, {"code": "Client specified an invalid argument",
               "error": "Incorrect API key provided: xa***ey. You can obtain an API key from "
                        "https://console.x.ai."}, "check the API key"),
        (429, {"error": {"message": "You exceeded your quota",
                         "code": "insufficient_quota"}}, CREDITS),
        # OpenAI's for a model this account's tier may not use, Gemini's for one with no
        # free tier: a budget of nothing
        (429, {"error": {"code": "rate_limit_exceeded",
                         "message": "Rate limit reached for gpt-image-2 (for limit gpt-image) "
                                    "in organization org-x: Limit 0, Used 0, Requested 1."}},
         "a limit of 0"),
        (429, gemini_quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0"),
         "a limit of 0"),
        # Zhipu's (GLM): no balance or resource package left
        (429, {"error": {"code": "1113", "message": "余额不足或无可用资源包,请充值。"}}, CREDITS),
        # Zhipu's for a model it does not have: a 400 with a code of its own
        (400, {"error": {"code": "1211", "message": "Unknown Model, please check the model "
                                                   "code."}}, "model name"),
        # Moonshot's (Kimi) 429, Alibaba's (Qwen) 400, Volcengine Ark's (Doubao) 403,
        # SiliconFlow's 403 (its code a bare number): each an account out of money
        (429, {"error": {"message": "Your account is suspended due to insufficient balance, "
                                    "please recharge your account or check your plan and "
                                    "billing details",
                         "type": "exceeded_current_quota_error"}}, CREDITS),
        (400, {"error": {"message": "Access denied, please make sure your account is in good "
                                    "standing.", "type": "Arrearage", "param": None,
                         "code": "Arrearage"}}, CREDITS),
        (403, {"error": {"code": "AccountOverdueError", "message": "The request failed "
                         "because your account has an overdue balance."}}, CREDITS),
        (403, {"code": 30001, "message": "Sorry, your account balance is insufficient",
               "data": None}, CREDITS),
        # DeepSeek's and OpenRouter's account out of money
        (402, {"error": {"message": "Insufficient Balance", "type": "unknown_error"}}, CREDITS),
        (402, {"error": {"code": 402, "message": "Insufficient credits."}}, CREDITS),
        # xAI's: a 429 on chat completions, a 403 on its Responses API, the words in `error`
        (429, {"code": "Some resource has been exhausted", "error": XAI_NO_CREDITS}, CREDITS),
        (403, {"code": "The caller does not have permission to execute the specified "
                       "operation", "error": XAI_NO_CREDITS}, CREDITS),
    ],
)  # fmt: skip
def test_other_job_wide_errors_stop_the_job(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: Any,
    hint: str,
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 20)
    background_server.enqueue(200, None, delay=0)  # one success first
    background_server.enqueue(status, body)  # none of these is retried
    args = [str(requests), "-o", str(output), "--concurrency", "1"]
    assert run(background_server, *args) == 1
    err = capsys.readouterr().err
    assert f"HTTP {status}" in err and hint in err and "19 still to run" in err
    assert len(background_server.requests) == 2
    assert len(read_output(output)) == 1
    assert run(background_server, *args) == 0
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


# Errors of one request's own: OpenRouter's 403 when a model's moderation flags this
# request's input (not a key that may not use the model), a 429 for a request larger
# than the whole budget (sent once: no retry), and a 400 such as a context too long.
OWN_ERRORS = {
    "flagged-input": (403, {
        "code": 403,
        "message": "openai/gpt-4o requires moderation on OpenRouter. Your input was flagged",
        "metadata": {"reasons": ["violence"], "flagged_input": "the request's text...",
                     "provider_name": "OpenAI", "model_slug": "openai/gpt-4o"},
    }),
    # A request over the whole per-minute budget: no wait makes it fit, but smaller
    # ones do (OpenAI's words; Groq's too, with a Retry-After).
    "request-too-large": (429, {
        "message": "Request too large for gpt-4o in organization org-x on tokens per min "
                   "(TPM): Limit 30000, Requested 250011. The input or output tokens must be "
                   "reduced in order to run successfully. Visit "
                   "https://platform.openai.com/account/rate-limits to learn more.",
        "type": "tokens", "param": None, "code": "rate_limit_exceeded",
    }),
    "context-too-long": (400, {
        "message": "This model's maximum context length is 8192 tokens",
        "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded",
    }),
}  # fmt: skip


@pytest.mark.parametrize(("status", "error"), OWN_ERRORS.values(), ids=OWN_ERRORS)
def test_an_error_of_one_request_is_its_record_and_the_job_goes_on(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    error: dict[str, Any],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 20)
    background_server.enqueue(200, None, delay=0)
    background_server.enqueue(status, {"error": error})
    args = [str(requests), "-o", str(output), "--concurrency", "1"]
    assert run(background_server, *args) == 1  # one request failed
    err = capsys.readouterr().err
    assert "batch stopped" not in err and "20 requests, 19 succeeded, 1 failed" in err
    records = read_output(output)
    assert Counter(r["custom_id"] for r in records) == Counter(ids)
    assert [r["response"]["status_code"] for r in records].count(status) == 1


@pytest.mark.parametrize(
    ("body", "job_wide"),
    [
        ({"error": {"message": "not allowed"}}, True),
        ([{"error": {"message": "flagged", "metadata": {"flagged_input": "x"}}}], False),
        ({"error": {"message": "flagged", "metadata": {"reasons": []}}}, False),
        ({"error": {"message": "no", "metadata": ["reasons"]}}, True),
        ({"error": "forbidden"}, True),
        ("<html>403 Forbidden</html>", True),
        (None, True),
    ],
)
def test_a_403_is_job_wide_unless_its_body_says_the_input_was_flagged(
    body: Any, job_wide: bool
) -> None:
    assert (fatal_hint(status_error(403, body)) is not None) is job_wide


@pytest.mark.parametrize(
    ("retry_after", "hint"),
    [
        ("90", "allows no requests for 90s"),
        ("18720", "allows no requests for 5h 12m"),
        ("inf", "no more requests for hours"),  # once an OverflowError, in words
        ("nan", None),
        ("30", None),  # waited for, then retried
    ],
)
def test_a_429_s_pause_in_words(retry_after: str, hint: str | None) -> None:
    error = status_error(
        429, {"error": {"message": "slow down"}}, headers={"retry-after": retry_after}
    )
    said = fatal_hint(error)
    assert said is None if hint is None else said is not None and hint in said


@pytest.mark.parametrize(
    ("at_the_server", "key", "said"),
    [
        (True, "wrong", ["HTTP 401", "--api-key"]),
        # a wrong port, a server not started
        (
            False,
            API_KEY,
            ["could not connect to http://127.0.0.1:", "check --base-url", "--server-starting"],
        ),
    ],
)
def test_a_job_wide_error_stops_the_job_and_a_rerun_completes_it(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    at_the_server: bool,
    key: str,
    said: list[str],
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 300)
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    base_url = background_server.base_url if at_the_server else nobody
    batch = ["batch", str(requests), "-o", str(output), "--concurrency", "4"]
    assert main([*batch, "--base-url", base_url, "--api-key", key]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("asyncchat: error: batch stopped, every request would fail: ")
    assert all(words in err for words in said), err
    assert at_the_server != ("--server-starting" in err)  # a hint for a refusal alone
    assert "0 of 300 results are in" in err and "300 still to run" in err
    sent_before = len(background_server.requests)
    assert sent_before <= 8  # stopped after the first few
    assert read_output(output) == []  # nothing written for requests that could not succeed
    assert run(background_server, str(requests), "-o", str(output), "--concurrency", "16") == 0
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)
    assert all(r["response"]["status_code"] == 200 for r in read_output(output))
    assert len(background_server.requests) - sent_before == 300  # each once


# A 429 saying nothing is left for hours, the words its message has, and the hint.
FOR_5_HOURS = "the rate limit allows no requests for 5h 0m: wait that long"
NO_MORE_FOR_HOURS = (
    "the rate limit allows no more requests for hours or longer (a daily, weekly or monthly "
    "budget is spent): wait for it to reset, or raise it"
)
SPENT_FOR_HOURS = {
    # OpenRouter's daily cap on free models: the budget, spent, in the 429's body.
    "openrouter-body": (
        lambda: (openrouter_429(time.time() + 5 * 3600), {}),
        "free-models-per-day",
        FOR_5_HOURS,
    ),
    # Cerebras counts requests per day, in headers that name the window, and sends no
    # Retry-After (the body is its per-minute 429's, with the day's words).
    "cerebras-headers": (
        lambda: (
            {
                "message": "Requests per day limit exceeded - too many requests sent.",
                "type": "too_many_requests_error",
                "param": "quota",
                "code": "request_quota_exceeded",
            },
            {
                "x-ratelimit-limit-requests-day": "14400",
                "x-ratelimit-remaining-requests-day": "0",
                "x-ratelimit-reset-requests-day": "18000.4",
                "x-ratelimit-remaining-tokens-minute": "59000",
                "x-ratelimit-reset-tokens-minute": "11.38",
            },
        ),
        "Requests per day limit exceeded",
        FOR_5_HOURS,
    ),
    # Gemini's free tier, its requests for the day spent: a QuotaFailure says so, and
    # its RetryInfo asks for 51 s all the same.
    "gemini-day": (
        lambda: (gemini_quota_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), {}),
        "You exceeded your current quota",
        NO_MORE_FOR_HOURS,
    ),
    # Azure's free tier, its tokens for the day spent: the pause in the message's words
    # alone, where a proxy (LiteLLM) passes on no Retry-After.
    "azure-message": (
        lambda: (
            {
                "error": {
                    "code": "429",
                    "message": "Requests to the ChatCompletions_Create Operation under Azure "
                    "OpenAI API version 2024-10-21 have exceeded token rate limit of your "
                    "current OpenAI S0 pricing tier. Please retry after 18000 seconds. "
                    "Please go here: https://aka.ms/oai/quotaincrease if you would like to "
                    "further increase the default rate limit.",
                }
            },
            {},
        ),
        "Please retry after 18000 seconds",
        FOR_5_HOURS,
    ),
    # Zhipu's GLM Coding Plan, its five hours spent: a code of its own, the reset in
    # China's time in the message alone.
    "zhipu-5-hours": (
        lambda: (
            {
                "error": {
                    "code": "1308",
                    "message": "Usage limit reached for 5 hour. Your limit will reset at "
                    "2026-05-25 19:22:49",
                }
            },
            {},
        ),
        "Usage limit reached for 5 hour",
        NO_MORE_FOR_HOURS,
    ),
    # Cohere's trial key, its month of calls spent: the words alone say so.
    "cohere-trial-month": (
        lambda: (
            {
                "id": "24e32f6d-b372-4853-85f2-11e65134f032",
                "message": "You are using a Trial key, which is limited to 1000 API calls / month.",
            },
            {},
        ),
        "limited to 1000 API calls / month",
        NO_MORE_FOR_HOURS,
    ),
    # Mistral's monthly token budget, spent: its headers name no reset at all (the
    # body is of Mistral's error shape).
    "mistral-month": (
        lambda: (
            {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited"},
            {
                "x-ratelimit-limit-tokens-month": "1000000000",
                "x-ratelimit-remaining-tokens-month": "0",
                "x-ratelimit-limit-tokens-minute": "500000",
                "x-ratelimit-remaining-tokens-minute": "499000",
                "x-ratelimit-limit-req-minute": "60",
                "x-ratelimit-remaining-req-minute": "59",
            },
        ),
        "Rate limit exceeded",
        NO_MORE_FOR_HOURS,
    ),
}


@pytest.mark.parametrize("answer, said, hint", SPENT_FOR_HOURS.values(), ids=SPENT_FOR_HOURS)
def test_a_rate_limit_spent_for_hours_stops_the_job_and_a_rerun_completes_it(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    answer: Callable[[], tuple[Any, dict[str, str]]],
    said: str,
    hint: str,
) -> None:
    """The 429 says nothing is left until midnight, or the month's end. Every request
    would fail alike, so nothing more is sent."""
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 3)
    body, headers = answer()
    background_server.enqueue(429, body, headers)
    sent_before = len(background_server.requests)
    assert run(background_server, str(requests), "-o", str(output), "--concurrency", "1") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("asyncchat: error: batch stopped, every request would fail: ")
    assert said in err and hint in err
    assert "0 of 3 results are in" in err and "3 still to run" in err
    assert len(background_server.requests) - sent_before == 1  # not retried, nothing more sent
    assert read_output(output) == []
    assert run(background_server, str(requests), "-o", str(output)) == 0
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


async def test_a_connect_timeout_before_any_answer_stops_the_job(tmp_path: Path) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 20)
    with port_that_accepts_nothing() as port:
        client = asyncchat.Client(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0,
            timeout=asyncchat.Timeout(connect=0.2, read=5),
        )  # fmt: skip
        async with client:
            summary = await run_batch_file(
                client, requests, output, concurrency=2, progress=io.StringIO()
            )
    assert isinstance(summary.fatal, asyncchat.ConnectTimeoutError)
    assert (summary.succeeded, summary.failed, summary.not_run) == (0, 0, 20)
    assert read_output(output) == []


def client_without_retries(base_url: str) -> asyncchat.Client:
    return asyncchat.Client(base_url=base_url, api_key=API_KEY, max_retries=0)


@dataclass(frozen=True)
class Outage:
    """A way a server is down for a while, and what the batch log then says."""

    server: dict[str, Any]  # RestartingServer's arguments, down_for and loading aside
    loads: bool  # back (or up), it answers 503 for a while first
    starting: bool  # server_starting, as the job must say for a server not up yet
    does: str  # what the first log line says the server does
    met: str  # what the summary note says the server did

    @property
    def waits(self) -> str:
        return "wait for it to start" if self.server.get("starts_down") else "wait for it"

    @property
    def is_up(self) -> str:
        return "up" if self.server.get("starts_down") else "back"

    def note(self) -> str:
        return rf"the server was not serving once, for [0-9]+s in all \({self.met}\); .*"


OUTAGES = {
    "restarts": Outage({}, False, False, "takes no connection", "no connection"),
    "starts-late": Outage(
        {"starts_down": True}, False, True, "takes no connection", "no connection"
    ),
    # llama.cpp: refused while it restarts, then 503 "Loading model" while it loads.
    "restarts-and-loads": Outage({}, True, False, "takes no connection", "no connection, HTTP 503"),
    "starts-loading": Outage(
        {"starts_down": True, "at_once": True},
        True,
        True,
        "is not serving (HTTP 503)",
        "HTTP 503",
    ),
    # Its "Loading model" says the address is right: waited for without the flag.
    "loads-at-start": Outage(
        {"starts_down": True, "at_once": True},
        True,
        False,
        "is not serving (HTTP 503)",
        "HTTP 503",
    ),
}


def restarting_server(
    outage: Outage, down_for: float | None, loading: float | None
) -> RestartingServer:
    """The server of `outage`; `loading` is chosen so that the client's tries meet a
    503 and are not all over before it ends (or None: it loads for good)."""
    options = dict(outage.server)
    if options.pop("at_once", False):
        down_for = 0.0  # listening from the start, only loading
    return RestartingServer(down_for, loading=loading if outage.loads else 0.0, **options)


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES)
async def test_a_server_that_restarts_or_starts_late_is_waited_for_and_nothing_is_lost(
    tmp_path: Path, outage: Outage
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 4)
    progress = io.StringIO()
    # The client retries nothing itself: after the first refusal (or 503) the request
    # tries again at 1 s (back at 0.5 s, a 503 while it loads until 2 s), then at 3 s.
    server = restarting_server(outage, down_for=0.5, loading=1.5)
    async with server as base_url, client_without_retries(base_url) as client:
        summary = await run_batch_file(
            client, requests, output, concurrency=1, progress=progress,
            server_wait=30, server_starting=outage.starting,
        )  # fmt: skip
    assert summary.fatal is None
    assert (summary.succeeded, summary.failed, summary.not_run) == (4, 0, 0)
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)
    assert server.answered == 4  # a refused request was never sent, so never sent twice
    assert (server.unavailable > 0) == ("503" in outage.met)  # a 503 was sent again
    assert len(summary.notes) == 1 and re.fullmatch(outage.note(), summary.notes[0])
    log = progress.getvalue().splitlines()
    assert log[0] == f"batch: the server {outage.does}; requests {outage.waits} up to 30s"
    assert re.fullmatch(rf"batch: the server is {outage.is_up} after [0-9]+s", log[1])
    assert len(log) == 2


async def test_a_restart_seen_only_as_loading_503s_is_waited_for(tmp_path: Path) -> None:
    """llama-server is refused for a moment only: the client's own retries get past
    the refusal and meet its "Loading model", which says the server is back."""
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 4)
    progress = io.StringIO()
    async with (
        RestartingServer(down_for=0.1, loading=2.0) as base_url,
        asyncchat.Client(base_url=base_url, api_key=API_KEY) as client,  # 2 retries
    ):
        summary = await run_batch_file(
            client, requests, output, concurrency=1, progress=progress, server_wait=30
        )
    assert summary.fatal is None
    assert (summary.succeeded, summary.failed, summary.not_run) == (4, 0, 0)
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)
    log = progress.getvalue().splitlines()
    assert log[0] == "batch: the server is not serving (HTTP 503); requests wait for it up to 30s"
    assert re.fullmatch(r"batch: the server is back after [0-9]+s", log[1])
    assert len(log) == 2
    assert re.fullmatch(r"the server was not serving once, .* \(HTTP 503\); .*", summary.notes[0])


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES)
def test_a_batch_log_says_when_the_server_went_away_and_came_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], outage: Outage
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 4)
    flags = ["--server-starting"] if outage.starting else []
    # The client tries three times in 1.5 s each round: 503 for all of one round.
    with served_in_a_thread(restarting_server(outage, down_for=2.0, loading=2.5)) as server:
        base_url = f"http://127.0.0.1:{server.port}/v1"
        command = [str(requests), "-o", str(output), "--concurrency", "1", "--server-wait", "60"]
        status = main(["batch", *command, *flags, "--base-url", base_url, "--api-key", API_KEY])
    assert status == 0
    log = capsys.readouterr().err.splitlines()  # not a terminal: no live line, a log
    assert log[0] == f"batch: the server {outage.does}; requests {outage.waits} up to 60s"
    assert re.fullmatch(rf"batch: the server is {outage.is_up} after [0-9]+s", log[1])
    assert re.fullmatch("note: " + outage.note(), log[2])
    assert log[3].startswith("batch: 4 requests, 4 succeeded, 0 failed")
    assert len(log) == 4


NEVER_UP = {
    "goes-away": (OUTAGES["restarts"], 1, asyncchat.ConnectError, "has taken no connection"),
    "never-starts": (OUTAGES["starts-late"], 0, asyncchat.ConnectError, "has taken no connection"),
    "never-loads": (OUTAGES["loads-at-start"], 0, asyncchat.ServerNotReadyError, "Loading model"),
}


@pytest.mark.parametrize(("outage", "answered", "error", "says"), NEVER_UP.values(), ids=NEVER_UP)
async def test_a_server_that_never_comes_back_or_up_stops_the_job_after_server_wait(
    tmp_path: Path, outage: Outage, answered: int, error: type[Exception], says: str
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 4)
    server = restarting_server(outage, down_for=None, loading=None)
    progress = io.StringIO()
    async with server as base_url, client_without_retries(base_url) as client:
        summary = await run_batch_file(
            client, requests, output, concurrency=1, progress=progress,
            server_wait=0.5, server_starting=outage.starting,
        )  # fmt: skip
    assert type(summary.fatal) is error
    assert says in str(summary.fatal)
    # Said only once the watch has waited out its patience.
    waited = "taken no connection" if error is asyncchat.ConnectError else "served no request"
    assert f"the server has {waited} for 0.5s" in str(summary.fatal)
    assert (summary.succeeded, summary.failed, summary.not_run) == (answered, 0, 4 - answered)
    assert len(read_output(output)) == answered  # no record for what was never served
    assert progress.getvalue() == (
        f"batch: the server {outage.does}; requests {outage.waits} up to 0.5s\n"
    )


async def test_a_503_is_one_requests_error_unless_the_job_waits_for_its_server(
    server: MockServer, tmp_path: Path
) -> None:
    """Without `server_starting`, a 503 that does not say a model is loading may be a
    provider overloaded: each request keeps its own error, as after the server served."""
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 4)
    for _ in range(4):
        server.enqueue(503, "no healthy upstream")  # a proxy's text, its server not up
    progress = io.StringIO()
    async with client_without_retries(server.base_url) as client:
        summary = await run_batch_file(
            client, requests, output, concurrency=1, progress=progress, server_wait=30
        )
    assert summary.fatal is None
    assert (summary.succeeded, summary.failed, summary.not_run) == (0, 4, 0)
    assert [r["response"]["status_code"] for r in read_output(output)] == [503] * 4
    assert len(server.requests) == 4  # each sent once: not waited for
    assert progress.getvalue() == ""
    assert summary.notes == [  # but what it looks like is said
        "every request was answered 503 and none served: if the server is still starting "
        "(behind a proxy, say), --server-starting waits for it"
    ]


def test_the_watch_waits_longer_each_time_up_to_its_patience() -> None:
    now = [0.0]
    watch = ServerWatch(patience=40, clock=lambda: now[0])
    assert watch.wait_before_retry(0) is None  # never answered: a wrong address, stop now
    watch.saw_answer()
    waits: list[float] = []
    while (wait := watch.wait_before_retry(len(waits))) is not None:
        waits.append(wait)
        now[0] += wait
    assert waits == [1, 2, 4, 8, 15, 10]  # doubling, at most 15 s, ending at the patience
    assert now[0] == 40
    watch.saw_answer()  # back: the next refusal starts a new wait
    assert watch.downtime() == (1, 40)
    assert watch.wait_before_retry(0) == 1
    now[0] += 3
    assert watch.downtime() == (2, 43)  # the outage going on counts as far as it has gone
    watch.saw_answer()
    now[0] += 100
    assert watch.downtime() == (2, 43)
    starting = ServerWatch(patience=2, clock=lambda: now[0], starting=True)
    assert starting.wait_before_retry(0) == 1  # no answer yet, but it may be starting
    now[0] += 2
    assert starting.wait_before_retry(1) is None


def test_a_502_or_503_says_not_serving_only_while_the_server_is_waited_for() -> None:
    def answer(status: int, message: str = "upstream connect error") -> APIStatusError:
        return status_error(status, {"error": {"message": message}})

    watch = ServerWatch(patience=300)
    assert not watch.not_serving(answer(503))  # an answer before anything: it counts
    assert watch.not_serving(answer(503, "Loading model"))  # but this one says it is up
    watch.saw_answer()
    assert not watch.not_serving(answer(503))  # served before: an overloaded server's 503
    assert watch.not_serving(answer(503, "Loading model"))  # restarted, loading again
    assert not watch.not_serving(answer(500, "Loading model"))
    watch.wait_before_retry(0)  # a refusal: down, maybe restarting
    assert watch.not_serving(answer(503)) and watch.not_serving(answer(502))
    assert not watch.not_serving(answer(500)) and not watch.not_serving(answer(504))
    watch.saw_answer()
    assert not watch.not_serving(answer(503))
    starting = ServerWatch(patience=300, starting=True)
    assert starting.not_serving(answer(502))  # may still be starting behind its proxy
    starting.saw_answer()
    assert not starting.not_serving(answer(502))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--server-wait", "-1"], "--server-wait: must be 0 or more"),
        (["--server-wait", "nan"], "--server-wait: must be 0 or more"),
        (["--server-wait", "5", "--via", "batch-api"], "drop it with --via batch-api"),
        (["--server-starting", "--via", "batch-api"], "--server-starting is for requests"),
    ],
)
def test_server_wait_flags_that_cannot_work_are_refused(
    background_server: MockServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 2)
    try:
        status = run(background_server, str(requests), "-o", str(output), *flags)
    except SystemExit as exc:  # argparse's own refusal
        status = exc.code  # type: ignore[assignment]
    assert status == 2
    assert message in capsys.readouterr().err
    assert not background_server.requests


# --- 5. progress: this run's rate, in flight never above the concurrency -----------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rate_and_eta_count_this_runs_results_only() -> None:
    now = [100.0]
    terminal = Terminal()
    progress = _Progress(terminal, total=1000, done_before=900, clock=lambda: now[0])
    now[0] += 10.0
    progress.done = 20  # 2 a second in this run
    progress.show(force=True)
    line = terminal.getvalue()
    assert "920/1000 done" in line
    assert "2.0 req/s" in line and "ETA 40s" in line


def test_progress_shows_how_long_the_server_has_been_down() -> None:
    now = [100.0]
    terminal = Terminal()
    progress = _Progress(terminal, total=10, done_before=0, clock=lambda: now[0])
    watch = ServerWatch(patience=300, clock=lambda: now[0], on_refusal=progress.show)
    progress.server = watch
    watch.saw_answer()
    watch.wait_before_retry(0)  # the first refusal
    now[0] += 42
    watch.wait_before_retry(1)
    assert (
        terminal.getvalue()
        .rsplit("\r", 1)[-1]
        .endswith(", no connection for 42s (waiting up to 300s)  ")
    )
    now[0] += 3
    watch.wait_before_retry(2, status=503)  # listening again, still loading
    assert (
        terminal.getvalue()
        .rsplit("\r", 1)[-1]
        .endswith(", HTTP 503 for 45s (waiting up to 300s)  ")
    )
    watch.saw_answer()  # back
    progress.show(force=True)
    assert "waiting up to" not in terminal.getvalue().rsplit("\r", 1)[-1]


async def test_in_flight_is_never_above_the_concurrency(server: MockServer, tmp_path: Path) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 40)
    server.delay = 0.02
    terminal = Terminal()
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        ticks = iter(range(10**9))
        client._clock = lambda: float(next(ticks))  # a second per look: every result shows
        summary = await run_batch_file(client, requests, output, concurrency=4, progress=terminal)
    assert summary.ok and summary.succeeded == 40
    shown = [int(n) for n in re.findall(r"(\d+) in flight", terminal.getvalue())]
    assert len(shown) >= 40
    assert max(shown) <= 4 and max(shown) >= 2
    assert server.max_in_flight <= 4


# --- 6. one odd answer is that request's error, not the run's ----------------------


def test_odd_answers_become_records_and_the_run_goes_on(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 4)
    odd_usage = completion_json("fine")
    odd_usage["usage"] = {"prompt_tokens": "3", "completion_tokens": None, "total_tokens": "12"}
    # orjson reads 1024 levels of nesting but writes 254: this answer decodes, and
    # cannot be written back as it came.
    too_deep = json.dumps(completion_json("deep"))[:-1] + ', "extra": '
    too_deep += "[" * 400 + "]" * 400 + "}"
    background_server.enqueue(200, odd_usage)
    background_server.enqueue(200, too_deep, headers={"Content-Type": "application/json"})
    args = [str(requests), "-o", str(output), "--concurrency", "1"]
    assert run(background_server, *args) == 1
    assert "4 requests, 3 succeeded, 1 failed" in capsys.readouterr().err
    records = {r["custom_id"]: r for r in read_output(output)}
    assert set(records) == set(ids)
    assert records["request-0"]["response"]["body"]["usage"]["total_tokens"] == "12"
    assert records["request-1"]["response"] is None
    assert records["request-1"]["error"]["code"] == "invalid_response"
    assert run(background_server, *args, "--retry-failed") == 0
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


# --- 7-9: the runner as a subprocess ----------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[str]:
    """`asyncchat mock-server` in its own process, answering after 0.1 s."""
    yield from _mock_server_process("--delay", "0.1")


@pytest.fixture
def stalled_server() -> Iterator[MockServer]:
    """A server that holds every request for a minute, in a thread so that a test can see
    what is in flight."""
    with served_in_a_thread(MockServer(api_key="secret-key-123", delay=60)) as server:
        yield server


def _mock_server_process(*args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncchat", "mock-server", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.communicate()


def batch_command(requests: Path, output: str, base_url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "asyncchat",
        "batch",
        str(requests),
        "-o",
        output,
        "--base-url",
        base_url,
        "--api-key",
        "secret-key-123",
        *args,
    ]


@pytest.mark.slow
def test_a_job_started_with_its_server_waits_while_it_loads(tmp_path: Path) -> None:
    """`asyncchat mock-server --loading` answers 503 "Loading model" as llama-server
    does while it loads: the job needs no flag to wait for it."""
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 20)
    server = _mock_server_process("--loading", "4")  # the client's first round fits in it
    base_url = next(server)
    try:
        job = subprocess.run(
            batch_command(requests, str(output), base_url),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    finally:
        server.close()
    assert job.returncode == 0, job.stderr
    log = job.stderr.splitlines()
    assert log[0] == (
        "batch: the server is not serving (HTTP 503); requests wait for it to start up to 300s"
    )
    assert re.fullmatch(r"batch: the server is up after [0-9]+s", log[1])
    assert re.fullmatch(r"note: the server was not serving once, .* \(HTTP 503\); .*", log[2])
    assert log[3].startswith("batch: 20 requests, 20 succeeded, 0 failed")
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)
    assert all(r["response"]["status_code"] == 200 for r in read_output(output))


def wait_for_lines(path: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused(slow_server: str, tmp_path: Path) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 160)  # 4 seconds at 4 x 0.1 s: still running when
    command = batch_command(requests, str(output), slow_server, "--concurrency", "4")
    first = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    wait_for_lines(output, 4)  # the second run starts
    second = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert second.returncode == 2
    assert "being written by another asyncchat batch run" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


@pytest.mark.slow
def test_a_lock_left_by_kill_9_does_not_block_the_rerun(slow_server: str, tmp_path: Path) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 40)
    command = batch_command(requests, str(output), slow_server, "--concurrency", "4")
    first = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wait_for_lines(output, 4)
    first.kill()
    first.wait()
    rerun = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_results_to_standard_output_into_a_pipe(
    background_server: MockServer, tmp_path: Path, output: str
) -> None:
    requests = tmp_path / "in.jsonl"
    ids = write_requests(requests, 5)
    result = subprocess.run(
        [
            *batch_command(requests, output, background_server.base_url),
            "--api-key",
            API_KEY,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert Counter(r["custom_id"] for r in records) == Counter(ids)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_gracefully_and_the_rerun_resumes(
    slow_server: str, tmp_path: Path, name: str, status: int
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 120)
    command = batch_command(requests, str(output), slow_server, "--concurrency", "8")
    runner = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    wait_for_lines(output, 8)
    runner.send_signal(getattr(signal, name))
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == status, err
    assert "Traceback" not in err
    assert f"stopped by {name}" in err
    assert "run the same command again to resume: asyncchat batch" in err
    assert "--api-key ***" in err and "secret-key-123" not in err
    data = output.read_bytes()
    assert data.endswith(b"\n")
    first_run = read_output(output)  # every line whole
    assert 8 <= len(first_run) < 120
    assert len({r["custom_id"] for r in first_run}) == len(first_run)
    assert all(r["response"]["status_code"] == 200 for r in first_run)  # in flight finished
    rerun = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(first_run)} already done before this run" in rerun.stderr
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["grace runs out", "second signal"])
def test_requests_that_outlive_the_grace_period_are_cancelled(
    stalled_server: MockServer, tmp_path: Path, how: str
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 10)
    grace = "0.5" if how == "grace runs out" else "60"
    command = batch_command(requests, str(output), stalled_server.base_url, "--grace", grace)
    runner = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    # Signal only once all ten are in flight: on a busy machine the interpreter may still
    # be importing after a second, and a SIGINT then is not the one under test.
    deadline = time.monotonic() + 30
    while stalled_server.in_flight < 10:
        assert time.monotonic() < deadline, "the requests never reached the server"
        time.sleep(0.02)
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    if how == "second signal":
        time.sleep(0.3)
        runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=30)
    assert time.monotonic() - started < 20
    assert runner.returncode == 130, err
    assert "10 requests not run" in err
    assert output.read_bytes() == b""


# --- sloppy input files -----------------------------------------------------------------


def test_an_input_saved_with_a_bom_and_crlf_runs(
    background_server: MockServer, tmp_path: Path
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 3)
    requests.write_bytes(b"\xef\xbb\xbf" + requests.read_bytes().replace(b"\n", b"\r\n"))
    assert run(background_server, str(requests), "-o", str(output)) == 0
    assert Counter(r["custom_id"] for r in read_output(output)) == Counter(ids)


def test_an_input_that_is_not_utf8_names_the_line(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 3)
    lines = requests.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"q1", b"q\xff1")
    requests.write_bytes(b"".join(lines))
    assert run(background_server, str(requests), "-o", str(output)) == 2
    assert "line 2: not UTF-8 text" in capsys.readouterr().err
    assert background_server.requests == [] and not output.exists()
