"""Property-based tests of the sans-IO core: random bytes, random splits, random chunks."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncchat.accumulate import ChatCompletionAccumulator
from asyncchat.errors import APIError
from asyncchat.ratelimits import RateLimits, read_budgets, spent_budgets
from asyncchat.sse import ServerSentEvent, SSEDecoder

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(pieces: list[bytes], max_event_size: int = 1 << 20) -> list[ServerSentEvent]:
    decoder = SSEDecoder(max_event_size=max_event_size)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# Lines drawn from the SSE grammar and its abuses, with every kind of line end.
sse_lines = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=30)),
    st.builds(lambda v: b"data:" + v, st.binary(max_size=10)),
    st.sampled_from(
        [
            b"",
            b":",
            b": keep-alive",
            b"event: error",
            b"event: ping",
            b"id: 7",
            b"id: a\x00b",
            b"retry: 100",
            b"retry: x1",
            b"data",
            b"\xef\xbb\xbfdata: x",
            b"data: [DONE]",
            b"foo: bar",
        ]
    ),
    st.binary(max_size=20),
)
sse_streams = st.lists(
    st.tuples(sse_lines, st.sampled_from([b"\n", b"\r", b"\r\n"])), max_size=30
).map(lambda parts: b"".join(line + end for line, end in parts))


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_never_crash_and_splits_never_matter(data: bytes, cuts: list[int]) -> None:
    try:
        whole = decode([data])
    except APIError:
        return
    assert decode(split(data, cuts)) == whole


@SETTINGS
@given(sse_streams, st.lists(st.integers(min_value=0), max_size=10))
def test_sse_like_streams_decode_the_same_however_split(data: bytes, cuts: list[int]) -> None:
    whole = decode([data])
    assert decode(split(data, cuts)) == whole
    if len(data) < 300:
        assert decode([data[i : i + 1] for i in range(len(data))]) == whole


def assert_fast_path_agrees_with_feed(data: bytes) -> None:
    payloads = SSEDecoder().take_data_events(data) if data else None
    if payloads is not None:
        events = SSEDecoder().feed(data)
        assert [event.event for event in events] == ["message"] * len(payloads)
        assert [p.decode("utf-8", "replace") for p in payloads] == [e.data for e in events]


@SETTINGS
@given(sse_streams)
def test_fast_path_agrees_with_feed(data: bytes) -> None:
    assert_fast_path_agrees_with_feed(data)


# Streams the fast path is built for, and near misses: LF line ends only, mostly
# `data: ` lines, with blank lines doubled or missing and payloads that look like fields.
fast_path_lines = st.one_of(
    st.builds(lambda v: b"data: " + v, st.sampled_from([b"", b"x", b"data: y", b"{}", b"\r"])),
    st.sampled_from([b"", b"data:z", b": ping", b"event: error"]),
)
fast_path_streams = st.lists(fast_path_lines, min_size=1, max_size=12).map(
    lambda lines: b"".join(line + b"\n" for line in lines)
)


@SETTINGS
@given(fast_path_streams)
def test_fast_path_takes_only_what_feed_agrees_with(data: bytes) -> None:
    assert_fast_path_agrees_with_feed(data)


@SETTINGS
@given(st.binary(min_size=1, max_size=3000), st.integers(min_value=1, max_value=500))
def test_the_size_cap_is_the_only_error(data: bytes, cap: int) -> None:
    try:
        decode([data], max_event_size=cap)
    except APIError as exc:
        assert "max_event_size" in str(exc)


# What orjson can produce: integers fit in 64 bits.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
fragment = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(0, 3), st.none(), st.text(max_size=2)),
        "id": st.one_of(st.sampled_from(["a", "b", "c"]), st.none(), st.just("")),
        "type": st.sampled_from(["function", ""]),
        "function": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.one_of(st.sampled_from(["f", "g"]), st.none()),
                    "arguments": st.one_of(st.text(max_size=8), json_values),
                },
            ),
            json_values,
        ),
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["assistant", None]),
        "content": st.one_of(st.text(max_size=8), st.none()),
        "reasoning_content": st.one_of(st.text(max_size=8), st.none()),
        "reasoning": st.text(max_size=4),
        "refusal": st.text(max_size=4),
        "tool_calls": st.one_of(st.lists(fragment, max_size=3), json_values),
        "extra": json_values,
    },
)
choice = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(0, 2), st.none(), st.text(max_size=1)),
        "delta": st.one_of(delta, json_values),
        "finish_reason": st.one_of(st.sampled_from(["stop", "length", "tool_calls"]), st.none()),
        "logprobs": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "content": st.lists(
                        st.dictionaries(st.text(max_size=3), st.integers(0, 9)), max_size=2
                    )
                }
            ),
        ),
        "usage": st.one_of(st.none(), st.fixed_dictionaries({"total_tokens": st.integers(0, 99)})),
    },
)
chunk = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["x", ""]), st.none()),
        "object": st.sampled_from(["chat.completion.chunk", ""]),
        "model": st.sampled_from(["m", ""]),
        "created": st.integers(0, 5),
        "choices": st.one_of(st.lists(st.one_of(choice, json_values), max_size=3), st.none()),
        "usage": st.one_of(st.none(), st.fixed_dictionaries({"total_tokens": st.integers(0, 99)})),
        "request_id": st.text(max_size=3),
    },
)


@SETTINGS
@given(st.lists(chunk, max_size=12))
def test_random_chunk_sequences_never_crash(chunks: list[dict[str, Any]]) -> None:
    accumulator = ChatCompletionAccumulator()
    for item in chunks:
        accumulator.add(item)
    completion = accumulator.completion()
    # The result is always JSON and always reads back.
    assert orjson.loads(completion.to_json()) == completion.to_dict()
    for result in completion.choices:
        for call in result.message.tool_calls or []:
            assert isinstance(call.function.arguments, str)


# Rate-limit header names from the families servers use and their abuses, with values
# that are counts, durations, moments, or not.
ratelimit_names = st.builds(
    lambda prefix, field, kind, window: prefix + field + kind + window,
    st.sampled_from(["x-ratelimit-", "X-RateLimit-", "x-tokenlimit-", "x-rate-limit-", ""]),
    st.sampled_from(["limit", "remaining", "reset", "used", ""]),
    st.sampled_from(["", "-requests", "-req", "-tokens", "-Tokens", "_tokens", "-"]),
    st.sampled_from(["", "-day", "-minute", "-10-second", "-1h", "-", "_usage_based"]),
)
ratelimit_values = st.one_of(
    st.sampled_from(["0", "0.0", ".5", "00", "-1", "1", "59000", "1m30s", "12ms", "inf"]),
    st.sampled_from(["nan", "1e9", "1e12", "1767225600", "soon", "", " 0 ", "0s", "+0"]),
    st.text(max_size=8),
)


@SETTINGS
@given(st.dictionaries(ratelimit_names, ratelimit_values, max_size=12))
def test_rate_limit_headers_never_crash_and_the_spent_shortcut_agrees(
    headers: dict[str, str],
) -> None:
    """`spent_budgets` skips the parse when no value could be a count of none: it must
    find what reading every budget finds."""
    budgets = read_budgets(headers, now=1_700_000_000.0)
    spent = [budget for budget in budgets if budget.remaining == 0]
    assert spent_budgets(headers, now=1_700_000_000.0) == spent
    limits = RateLimits.from_headers(headers, now=1_700_000_000.0)
    assert (limits is None) == (not budgets)
    for budget in budgets:
        assert budget.kind in ("requests", "tokens")
        assert budget.reset is None or budget.reset >= 0
