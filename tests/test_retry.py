"""Pure retry decisions, without a network or a clock."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from asyncchat._retry import (
    MAX_RETRY_DELAY,
    backoff_delay,
    requested_pause,
    retry_after,
    retry_delay,
    slows_the_pace,
)

from .conftest import openrouter_429

NOW = 1_700_000_000.0


def decide(
    status: int | None,
    headers: dict[str, str] | None = None,
    attempt: int = 0,
    max_retries: int = 2,
    body: object = None,
) -> float | None:
    return retry_delay(
        attempt=attempt,
        max_retries=max_retries,
        status=status,
        headers=headers or {},
        now=NOW,
        rng=random.Random(0),
        body=body,
    )


@pytest.mark.parametrize("status", [408, 409, 429, 498, 500, 502, 503, 504])  # 498: Groq flex
def test_retryable_statuses(status: int) -> None:
    assert decide(status) is not None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 424, 499])
def test_client_errors_are_not_retried(status: int) -> None:
    assert decide(status) is None


def test_connection_errors_are_retried() -> None:
    assert decide(None) is not None


def test_gives_up_after_max_retries() -> None:
    assert decide(500, attempt=1) is not None
    assert decide(500, attempt=2) is None
    assert decide(500, max_retries=0) is None


def test_x_should_retry_overrides_the_status() -> None:
    assert decide(400, {"x-should-retry": "true"}) is not None
    assert decide(503, {"x-should-retry": "false"}) is None


def test_retry_after_seconds_and_milliseconds() -> None:
    assert decide(429, {"retry-after": "3"}) == 3.0
    assert decide(429, {"retry-after": "1.5"}) == 1.5
    assert decide(429, {"retry-after-ms": "250"}) == 0.25
    # milliseconds win when both are sent
    assert decide(429, {"retry-after-ms": "250", "retry-after": "3"}) == 0.25


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 7, tz=timezone.utc)
    assert decide(503, {"retry-after": format_datetime(when, usegmt=True)}) == pytest.approx(7)
    past = datetime.fromtimestamp(NOW - 100, tz=timezone.utc)
    assert decide(503, {"retry-after": format_datetime(past, usegmt=True)}) == 0.0


def test_unparseable_retry_after_falls_back_to_backoff() -> None:
    delay = decide(429, {"retry-after": "soon"})
    assert delay is not None and 0.375 <= delay <= 0.5
    assert retry_after({"retry-after-ms": "x"}, NOW) is None


def test_retry_after_beyond_the_cap_gives_up() -> None:
    assert decide(429, {"retry-after": str(MAX_RETRY_DELAY + 1)}) is None
    assert decide(429, {"retry-after": str(MAX_RETRY_DELAY)}) == MAX_RETRY_DELAY


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(attempt, rng) for attempt in range(8)]
    for attempt, delay in enumerate(delays):
        base = min(0.5 * 2**attempt, 8.0)
        assert 0.75 * base <= delay <= base
    assert max(delays) <= 8.0


def test_a_429_body_that_says_nothing_is_left_asks_for_a_pause_until_the_reset() -> None:
    """OpenRouter names no Retry-After; its body's rate-limit headers say when the
    spent budget resets: a wait that long, or none when it is past the cap."""
    per_minute = openrouter_429(NOW + 30, limit=20, window="free-models-per-min")
    assert requested_pause(429, {}, per_minute, NOW) == 30.0
    assert decide(429, body=per_minute) == 30.0
    assert decide(429, body=openrouter_429(NOW + 5 * 3600)) is None  # a daily cap: give up
    assert decide(429, {"retry-after": "2"}, body=per_minute) == 2.0  # the header first
    backoff = decide(429)
    assert decide(429, body=openrouter_429(NOW + 30, remaining=3)) == backoff  # not spent
    assert requested_pause(503, {}, per_minute, NOW) is None  # only a 429's
    assert requested_pause(429, {}, {"error": {"metadata": {"headers": "x"}}}, NOW) is None
    assert requested_pause(429, {}, "<html>Too Many Requests</html>", NOW) is None


def gemini_429(delay: object) -> list[dict[str, object]]:
    """Gemini's 429 on its OpenAI-compatible endpoint: a list of one error, the pause
    in a `google.rpc.RetryInfo` detail (googleapis/python-genai#1875)."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    ]
    error = {"code": 429, "message": "You exceeded your current quota.", "details": details}
    return [{"error": {**error, "status": "RESOURCE_EXHAUSTED"}}]


def gemini_quota_429(quota_id: str, quota_value: str = "20") -> list[dict[str, object]]:
    """Gemini's 429 for a spent quota: a `QuotaFailure` names which, and `RetryInfo`
    asks for seconds whatever the quota (google-gemini/gemini-cli#8437)."""
    violation = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash-lite"},
        "quotaValue": quota_value,
    }
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "51s"},
    ]
    error = {"code": 429, "message": "You exceeded your current quota.", "details": details}
    return [{"error": {**error, "status": "RESOURCE_EXHAUSTED"}}]


def test_a_429_for_a_quota_spent_for_the_day_is_not_retried() -> None:
    """Its `retryDelay` (51 s) would only meet the same 429 again, all day."""
    per_day = gemini_quota_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    assert requested_pause(429, {}, per_day, NOW) == float("inf")
    assert decide(429, body=per_day) is None
    none_at_all = gemini_quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0")
    assert decide(429, body=none_at_all) is None  # a quota of nothing: no free tier
    per_minute = gemini_quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    assert decide(429, body=per_minute) == 51.0  # waited out, as its RetryInfo asks
    assert requested_pause(503, {}, per_day, NOW) is None  # only a 429's


def test_a_429_body_that_names_a_retry_delay_asks_for_that_pause() -> None:
    assert requested_pause(429, {}, gemini_429("38.601s"), NOW) == 38.601
    assert decide(429, body=gemini_429("26s")) == 26.0
    assert decide(429, body=gemini_429("3600s")) is None  # past the cap: give up
    assert decide(429, body=gemini_429("26s")[0]) == 26.0  # not in a list
    assert decide(429, {"retry-after": "2"}, body=gemini_429("26s")) == 2.0
    backoff = decide(429)
    assert decide(429, body=gemini_429(26)) == backoff  # not Google's text: no pause
    assert decide(429, body=gemini_429("soon")) == backoff
    assert requested_pause(503, {}, gemini_429("26s"), NOW) is None


def test_a_429_whose_headers_say_a_budget_is_spent_for_long_asks_for_that_pause() -> None:
    """Cerebras counts requests per day and sends no Retry-After: a 429 saying the day's
    budget is spent asks for a pause until its reset, and is not retried. A budget
    back within MAX_RESET_PAUSE (a token budget's, full again in a minute) is the
    pacer's to wait for: the 429 backs off as any other."""
    day_spent = {
        "x-ratelimit-remaining-requests-day": "0",
        "x-ratelimit-reset-requests-day": "33011.38",
        "x-ratelimit-remaining-tokens-minute": "0",
        "x-ratelimit-reset-tokens-minute": "11.38",
    }
    assert requested_pause(429, day_spent, None, NOW) == 33011.38
    assert decide(429, day_spent) is None  # past the cap: give up
    backoff = decide(429)
    minute_spent = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"}
    assert requested_pause(429, minute_spent, None, NOW) is None
    assert decide(429, minute_spent) == backoff
    not_spent = {**day_spent, "x-ratelimit-remaining-requests-day": "5"}
    assert requested_pause(429, not_spent, None, NOW) is None
    assert requested_pause(503, day_spent, None, NOW) is None  # only a 429's
    assert requested_pause(429, {**day_spent, "retry-after": "2"}, None, NOW) == 2.0
    # A month's budget spent, no reset named (Mistral): no wait mends it.
    month_spent = {"x-ratelimit-remaining-tokens-month": "0", "x-ratelimit-limit-tokens-month": "9"}
    assert requested_pause(429, month_spent, None, NOW) == float("inf")
    assert decide(429, month_spent) is None
    minute_spent = {"x-ratelimit-remaining-req-minute": "0"}  # no reset, a minute: back off
    assert requested_pause(429, minute_spent, None, NOW) is None
    # Unix seconds where a wait belongs: counted from now, as everywhere.
    moment = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": f"{NOW + 7200:.0f}"}
    assert requested_pause(429, moment, None, NOW) == 7200.0
    in_two_hours = datetime.fromtimestamp(NOW + 7200, timezone.utc).isoformat()
    dated = {
        "x-ratelimit-remaining-requests-day": "0",
        "x-ratelimit-reset-requests-day": in_two_hours,
    }
    assert requested_pause(429, dated, None, NOW) == 7200.0
    assert decide(429, dated) is None


def test_a_429_that_says_the_account_is_out_of_money_is_not_retried() -> None:
    """No wait mends it: OpenAI's `insufficient_quota`, xAI's spent credits, Moonshot's
    account suspended for its balance."""
    openai = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    xai = {"code": "Some resource has been exhausted", "error": "Your team t has either used "
           "all available credits or reached its monthly spending limit."}  # fmt: skip
    moonshot = {"error": {"message": "Your account is suspended due to insufficient balance, "
                          "please recharge your account or check your plan and billing "
                          "details", "type": "exceeded_current_quota_error"}}  # fmt: skip
    assert decide(429, body=openai) is None
    assert decide(429, body=xai) is None
    assert decide(429, body=moonshot) is None
    assert requested_pause(429, {}, moonshot, NOW) == float("inf")
    assert decide(429, body={"error": {"message": "Rate limit reached for requests"}}) is not None
    assert decide(503, body=openai) is not None  # only a 429 says so


def openai_429(message: str) -> dict[str, object]:
    """OpenAI's 429 for a rate limit: no Retry-After, the pause in the message's words."""
    return {"error": {"message": message, "type": "tokens", "param": None,
                      "code": "rate_limit_exceeded"}}  # fmt: skip


OPENAI_TPM = (
    "Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM): Limit "
    "30000, Used 22999, Requested 12528. Please try again in {}. Visit "
    "https://platform.openai.com/account/rate-limits to learn more."
)


@pytest.mark.parametrize(
    ("message", "pause"),
    [
        (OPENAI_TPM.format("11.054s"), 11.054),
        (OPENAI_TPM.format("201ms"), 0.201),
        # Groq's, in a Go duration (with a Retry-After, which a proxy may drop)
        (
            "Rate limit reached for model `openai/gpt-oss-120b` in organization `org_x` "
            "service tier `on_demand` on tokens per minute (TPM): Limit 8000, Used 7000, "
            "Requested 1500. Please try again in 1m2.639999999s. Need more tokens?",
            62.639999999,
        ),
        # Gemini's, where a proxy dropped its RetryInfo detail
        (
            "You exceeded your current quota, please check your plan and billing details.\n"
            "Please retry in 27.638094876s.",
            27.638094876,
        ),
        # Azure's (with a Retry-After, which a proxy may drop)
        (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-06-01 have exceeded call rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 8 seconds. Please go here: https://aka.ms/oai/quotaincrease",
            8.0,
        ),
        ("Please retry after 1 second.", 1.0),
        ("Please try again in 2h3m.", 7380.0),
    ],
)
def test_a_429_message_that_names_a_pause_asks_for_it(message: str, pause: float) -> None:
    assert requested_pause(429, {}, openai_429(message), NOW) == pytest.approx(pause)
    assert requested_pause(503, {}, openai_429(message), NOW) is None  # only a 429's


def test_a_pause_in_a_429_s_message_comes_after_the_headers_and_the_body_s_own() -> None:
    asks_11s = openai_429(OPENAI_TPM.format("11.054s"))
    assert decide(429, body=asks_11s) == 11.054  # not the backoff's 0.5 s
    assert decide(429, {"retry-after": "2"}, body=asks_11s) == 2.0
    gemini = gemini_429("26s")
    gemini[0]["error"]["message"] += "\nPlease retry in 25.9s."  # type: ignore[index]
    assert decide(429, body=gemini) == 26.0  # its RetryInfo first
    assert decide(429, body=openai_429(OPENAI_TPM.format("7m12s"))) is None  # past the cap
    backoff = decide(429)
    for vague in (
        "Please try again later.",
        "Please try again in a few minutes.",
        "Try again in 5 minutes",
        "try again in 5sec",
        "Please retry in 1 hour.",
    ):
        assert decide(429, body=openai_429(vague)) == backoff, vague


# OpenAI's 429 for a request larger than the whole per-minute budget.
OPENAI_TOO_LARGE = (
    "Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit "
    "30000, Requested 250011. The input or output tokens must be reduced in order to run "
    "successfully. Visit https://platform.openai.com/account/rate-limits to learn more."
)
# Groq's words for the same, a "Rate limit reached" that no wait gets past.
GROQ_TOO_LARGE = (
    "Rate limit reached for model `mixtral-8x7b-32768` in organization `org_x` on tokens "
    "per minute (TPM): Limit 18000, Used 0, Requested ~36313. Please try again in "
    "1m1.043333333s. Visit https://console.groq.com/docs/rate-limits for more information."
)


def test_a_429_for_a_request_too_large_for_the_budget_is_not_retried() -> None:
    """No wait makes it fit, whatever the server's Retry-After or x-should-retry say;
    and it says nothing of the pace: smaller requests still fit."""
    for message in (OPENAI_TOO_LARGE, GROQ_TOO_LARGE):
        body = openai_429(message)
        assert decide(429, body=body) is None
        assert decide(429, {"retry-after": "61", "x-should-retry": "true"}, body=body) is None
        assert not slows_the_pace(429, body)
    fits = openai_429(OPENAI_TPM.format("7.66s"))  # Used 22999 + Requested 12528 > 30000
    assert decide(429, body=fits) == 7.66 and slows_the_pace(429, fits)
    assert slows_the_pace(429, None) and not slows_the_pace(503, fits)
    assert decide(500, body=openai_429(OPENAI_TOO_LARGE)) is not None  # only a 429 says so


def test_a_429_for_a_budget_of_nothing_is_not_retried() -> None:
    """OpenAI's "Limit 0" (a model this account's tier may not use) lets no request
    through, ever: an endless pause, as Gemini's `quotaValue` "0" is, not a request
    too large for its budget."""
    zero = openai_429(
        "Rate limit reached for gpt-image-2 (for limit gpt-image) in organization org-x: "
        "Limit 0, Used 0, Requested 1."
    )
    assert requested_pause(429, {}, zero, NOW) == float("inf")
    assert decide(429, body=zero) is None
    assert slows_the_pace(429, zero)  # not the request's own size
    tpm_zero = openai_429(OPENAI_TPM.format("1s").replace("Limit 30000", "Limit 0"))
    assert requested_pause(429, {}, tpm_zero, NOW) == float("inf")
    assert requested_pause(429, {}, openai_429(OPENAI_TPM.format("1s")), NOW) == 1.0


def zhipu_error(code: str, message: str) -> dict[str, object]:
    """Zhipu's (GLM's) error: a code of its own, as text, and a message in Chinese or
    English."""
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("1113", "余额不足或无可用资源包,请充值。"),  # no balance or resource package
        ("1309", "Your GLM Coding Plan package has expired and is temporarily unavailable."),
        ("1304", "该API的今日调用次数已达上限"),  # the day's calls
        ("1308", "Usage limit reached for 5 hour. Your limit will reset at 2026-05-25 19:22:49"),
        ("1310", "Weekly/Monthly Limit Exhausted. Your limit will reset at 2026-07-31 18:31:06"),
    ],
)
def test_zhipu_s_429s_that_no_wait_mends_are_not_retried(code: str, message: str) -> None:
    assert requested_pause(429, {}, zhipu_error(code, message), NOW) == float("inf")
    assert decide(429, body=zhipu_error(code, message)) is None
    assert requested_pause(429, {}, zhipu_error(int(code), message), NOW) == float("inf")  # type: ignore[arg-type]


def test_zhipu_s_429s_for_the_pace_are_retried() -> None:
    backoff = decide(429)
    for code, message in [
        ("1302", "High concurrency usage of this API, please reduce concurrency"),
        ("1305", "The service may be temporarily overloaded, please try again later"),
    ]:
        assert decide(429, body=zhipu_error(code, message)) == backoff


def test_cohere_s_trial_key_spent_for_the_month_is_not_retried() -> None:
    """Its per-minute limit passes with a short wait; its monthly one does not."""
    words = "You are using a Trial key, which is limited to {}. You can continue to use the "
    month = {"message": words.format("1000 API calls / month")}
    minute = {"message": words.format("10 API calls / minute")}
    assert requested_pause(429, {}, month, NOW) == float("inf")
    assert decide(429, body=month) is None
    assert decide(429, body=minute) == decide(429)
