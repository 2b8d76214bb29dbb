"""client.chat.stream_text and client.chat.stream: typed events over the MockServer."""

from __future__ import annotations

import itertools
import json
from typing import Any, get_args

import pytest

import asyncchat
from asyncchat.testing import MockServer, StreamStyle, ToolCallStyle

from .conftest import tool_call_stream
from .test_stream import EXPECTED_CALLS, TIME_TOOL, TOOL_MESSAGES, USER, WEATHER_TOOL


async def test_stream_text(client: asyncchat.Client) -> None:
    pieces = [piece async for piece in client.chat.stream_text(model="m", messages=USER)]
    assert pieces == ["You", " said:", " one", " two", " three", " four", " five"]


async def test_stream_text_break_closes_the_request(
    client: asyncchat.Client, server: MockServer
) -> None:
    texts = client.chat.stream_text(model="m", messages=USER)
    async for _ in texts:
        break
    await texts.aclose()  # type: ignore[attr-defined]
    again = [p async for p in client.chat.stream_text(model="m", messages=USER)]
    assert again[:2] == ["You", " said:"]


async def test_azure_filter_annotations_add_no_events(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Azure's filter annotations carry no text: the events are a plain stream's, and
    the final completion is the answer's, not the annotation's empty model."""
    server.style = StreamStyle(filter_annotations=True)
    async with client.chat.stream(model="m", messages=USER) as stream:
        kinds = [type(event).__name__ async for event in stream]
        final = await stream.final_completion()
    assert kinds == ["ContentDelta"] * 7 + ["ChoiceFinished"]
    assert final.model == "m" and final.id.startswith("chatcmpl-")
    assert final.choices[0].message.content == "You said: one two three four five"


async def test_stream_events_for_text_and_usage(client: asyncchat.Client) -> None:
    async with client.chat.stream(
        model="m", messages=USER, stream_options={"include_usage": True}
    ) as stream:
        events = [event async for event in stream]
        final = await stream.final_completion()
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["ContentDelta"] * 7 + ["ChoiceFinished", "UsageReported"]
    assert "".join(e.text for e in events if isinstance(e, asyncchat.ContentDelta)) == (
        "You said: one two three four five"
    )
    finished = events[-2]
    assert isinstance(finished, asyncchat.ChoiceFinished)
    assert finished.finish_reason == "stop"
    usage = events[-1]
    assert isinstance(usage, asyncchat.UsageReported)
    assert usage.usage.completion_tokens == 7
    assert final.choices[0].message.content == "You said: one two three four five"


@pytest.mark.parametrize("asked", [False, True])
@pytest.mark.parametrize("style", ["in_choice", "x_groq"])
async def test_usage_reported_where_moonshot_and_groq_send_it(
    client: asyncchat.Client, server: MockServer, style: Any, asked: bool
) -> None:
    """Usage inside the finishing choice (Moonshot) or in the finishing chunk's
    `x_groq` (Groq) is reported right after the finish; Groq asked with
    `stream_options` reports it once more, in its usage chunk."""
    server.style = StreamStyle(usage=style)
    options = {"stream_options": {"include_usage": True}} if asked else {}
    async with client.chat.stream(model="m", messages=USER, **options) as stream:
        events = [event async for event in stream]
        final = await stream.final_completion()
    kinds = [type(event).__name__ for event in events]
    again = ["UsageReported"] if asked and style == "x_groq" else []
    assert kinds == ["ContentDelta"] * 7 + ["ChoiceFinished", "UsageReported", *again]
    reported = [e.usage for e in events if isinstance(e, asyncchat.UsageReported)]
    assert all(usage.completion_tokens == 7 for usage in reported)
    assert final.usage is not None and final.usage.completion_tokens == 7


async def test_stream_events_for_tool_calls(client: asyncchat.Client, server: MockServer) -> None:
    server.style = StreamStyle(reasoning="reasoning_content")
    async with client.chat.stream(
        model="m", messages=TOOL_MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL]
    ) as stream:
        events = [event async for event in stream]
    reasoning = "".join(e.text for e in events if isinstance(e, asyncchat.ReasoningDelta))
    assert reasoning == "Let me think."
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    assert {d.index for d in deltas} == {0, 1}
    assert all(type(d) is asyncchat.ToolCallArgumentsDelta and d.type == "function" for d in deltas)
    last_of_first = [d for d in deltas if d.index == 0][-1]
    assert last_of_first.name == "get_current_weather"
    assert last_of_first.id == "call_mock_1_0"
    assert last_of_first.arguments == '{"location":"Paris","unit":"celsius"}'
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [(d.name, d.parsed_arguments) for d in done] == EXPECTED_CALLS
    assert all(d.arguments_error is None for d in done)
    # The calls are done before their choice finishes.
    assert isinstance(events[-1], asyncchat.ChoiceFinished)
    assert events[-1].finish_reason == "tool_calls"


async def test_mistral_thinking_parts_are_reasoning_and_the_answer_keeps_them(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Mistral's reasoning models stream their thinking as content parts; the text is
    the answer, and the completion holds the parts as the answer itself would."""
    server.style = StreamStyle(reasoning="thinking")
    asked = [{"role": "user", "content": "one two"}]
    async with client.chat.stream(model="m", messages=asked) as stream:
        events = [event async for event in stream]
        final = await stream.final_completion()
    reasoning = "".join(e.text for e in events if isinstance(e, asyncchat.ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, asyncchat.ContentDelta))
    assert (reasoning, answer) == ("Let me think.", "You said: one two")
    message = final.choices[0].message
    assert message.content == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
        {"type": "text", "text": "You said: one two"},
    ]
    assert message.reasoning_content == "Let me think."
    texts = [text async for text in client.chat.stream_text(model="m", messages=asked)]
    assert "".join(texts) == "You said: one two"
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "Answer",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    async with client.chat.stream(model="m", messages=asked, response_format=schema) as stream:
        parsed = (await stream.final_completion()).choices[0].message.parsed
    assert parsed == {"city": "two"}


SQL_TOOL = {
    "type": "custom",
    "custom": {"name": "run_sql", "description": "Runs one SQL query on the shop's database."},
}
SQL_ASK = [{"role": "user", "content": "run_sql: SELECT name FROM users WHERE id = 7"}]


async def _events_and_final(
    client: asyncchat.Client, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> tuple[list[asyncchat.StreamEvent], asyncchat.ChatCompletion]:
    async with client.chat.stream(model="m", messages=messages, tools=tools) as stream:
        events = [event async for event in stream]
        return events, await stream.final_completion()


@pytest.mark.parametrize("style", ["cumulative", "restated"])
async def test_arguments_sent_again_come_as_events_of_one_call(
    client: asyncchat.Client, server: MockServer, style: str
) -> None:
    """A server that sends the arguments again (all so far in each piece, or whole at
    the end, re-serialized): each event's `arguments` and `parsed` are the call's so
    far, never doubled, and each `delta` is only what is new."""
    server.style = StreamStyle(tool_calls=style, argument_fragment_size=4)  # type: ignore[arg-type]
    events, final = await _events_and_final(client, TOOL_MESSAGES, [WEATHER_TOOL, TIME_TOOL])
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    for index, (_, expected) in enumerate(EXPECTED_CALLS):
        mine = [d for d in deltas if d.index == index]
        assert len(mine) > 5
        values = [d.parsed for d in mine]  # read on every event, as a live view would
        assert values[-1] == expected
        assert all(isinstance(value, dict) for value in values[1:])
        if style == "cumulative":
            assert "".join(d.delta for d in mine) == mine[-1].arguments
            assert all(b.arguments.startswith(a.arguments) for a, b in itertools.pairwise(mine))
        else:  # the last piece replaced the arguments: it adds no text of its own
            assert mine[-1].delta == ""
            assert mine[-1].arguments == json.dumps(expected)  # re-serialized, with spaces
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [(d.name, d.parsed_arguments) for d in done] == EXPECTED_CALLS
    calls = final.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == [d.arguments for d in done]


async def test_parallel_calls_all_at_index_0_come_as_events_of_their_own(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Ollama numbers every parallel call 0: the events number them 0 and 1, as the
    completion does, each with only its own arguments."""
    server.style = StreamStyle(tool_calls="index_zero", argument_fragment_size=4)
    events, final = await _events_and_final(client, TOOL_MESSAGES, [WEATHER_TOOL, TIME_TOOL])
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    assert {d.index for d in deltas} == {0, 1}
    for index, (name, expected) in enumerate(EXPECTED_CALLS):
        mine = [d for d in deltas if d.index == index]
        assert {(d.id, d.name) for d in mine} == {(f"call_mock_1_{index}", name)}
        assert "".join(d.delta for d in mine) == mine[-1].arguments
        assert mine[-1].parsed == expected
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [(d.index, d.name, d.parsed_arguments) for d in done] == [
        (index, name, arguments) for index, (name, arguments) in enumerate(EXPECTED_CALLS)
    ]
    calls = final.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == [d.arguments for d in done]


@pytest.mark.parametrize("style", get_args(ToolCallStyle))
async def test_stream_events_for_a_custom_tool_call(
    client: asyncchat.Client, server: MockServer, style: str
) -> None:
    server.style = StreamStyle(tool_calls=style, argument_fragment_size=5)  # type: ignore[arg-type]
    events, final = await _events_and_final(client, SQL_ASK, [SQL_TOOL, WEATHER_TOOL])
    text = SQL_ASK[0]["content"]
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    assert "".join(d.delta for d in deltas) == text
    assert all(type(d) is asyncchat.CustomToolInputDelta for d in deltas)
    assert all(d.type == "custom" and d.parsed is None for d in deltas)
    assert deltas[-1].arguments == text
    if style not in ("whole", "object_arguments"):
        assert len(deltas) > 3  # in pieces, each with the input so far
    [done] = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert type(done) is asyncchat.CustomToolCallDone
    assert (done.type, done.name, done.arguments) == ("custom", "run_sql", text)
    assert done.parsed_arguments is None and done.arguments_error is None  # free text is no error
    [call] = final.choices[0].message.tool_calls or []
    assert call.type == "custom" and call.custom is not None
    assert (call.id, call.custom.name, call.custom.input) == ("call_mock_1_0", "run_sql", text)
    sent = server.requests[-1].body["tools"]
    assert sent[0] == SQL_TOOL


async def test_a_custom_tool_call_not_streamed_and_forced(client: asyncchat.Client) -> None:
    completion = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather in Oslo"}],
        tools=[WEATHER_TOOL, SQL_TOOL],
        tool_choice={"type": "custom", "custom": {"name": "run_sql"}},
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert call.type == "custom"
    assert call.custom is not None and (call.custom.name, call.custom.input) == (
        "run_sql",
        "weather in Oslo",
    )
    assert completion.choices[0].message.to_dict()["tool_calls"][0]["custom"]["input"] == (
        "weather in Oslo"
    )


async def test_tool_calls_done_even_without_finish_reason(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(send_finish_reason=False, tool_calls="whole")
    async with client.chat.stream(
        model="m", messages=TOOL_MESSAGES, tools=[WEATHER_TOOL]
    ) as stream:
        # No finish_reason: the stream ends with [DONE] and the calls are still reported.
        events = [event async for event in stream]
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [d.name for d in done] == ["get_current_weather"]


async def test_invalid_arguments_reported_not_raised(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue_stream(
        'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, '
        '"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}, '
        '"finish_reason": "tool_calls"}]}\n\ndata: [DONE]\n\n'
    )
    async with client.chat.stream(model="m", messages=USER) as stream:
        events = [event async for event in stream]
    [done] = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert done.parsed_arguments is None
    assert done.arguments_error is not None
    assert done.arguments_error.arguments == "{oops"


async def test_a_second_call_at_the_firsts_index_without_an_id_has_its_own_events(
    client: asyncchat.Client, server: MockServer
) -> None:
    """A proxy of Gemini 3 sends a second call at the first's index, with no id and an
    empty name: each call's arguments are its own, and each is reported done."""
    calls = [
        {"index": 0, "id": "toolu_1", "function": {"name": "glob", "arguments": ""}},
        {"index": 0, "function": {"name": "", "arguments": '{"pattern": "*"}'}},
        {"index": 0, "function": {"name": "", "arguments": '{"path": "wiki"}'}},
    ]
    server.enqueue_stream(tool_call_stream(calls))
    async with client.chat.stream(model="m", messages=USER) as stream:
        events = [event async for event in stream]
    deltas = [e for e in events if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
    pieces = [(e.index, e.arguments) for e in deltas]
    assert pieces == [(0, ""), (0, '{"pattern": "*"}'), (1, '{"path": "wiki"}')]
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [(d.index, d.id, d.name, d.parsed_arguments) for d in done] == [
        (0, "toolu_1", "glob", {"pattern": "*"}),
        (1, None, "glob", {"path": "wiki"}),
    ]
    assert isinstance(events[-1], asyncchat.ChoiceFinished)


async def test_a_call_without_arguments_as_groq_sends_it_is_done_with_none(
    client: asyncchat.Client, server: MockServer
) -> None:
    call = {"index": 0, "id": "call_g", "function": {"name": "ping", "arguments": "null"}}
    server.enqueue_stream(tool_call_stream([call]))
    async with client.chat.stream(model="m", messages=USER) as stream:
        [done] = [e async for e in stream if isinstance(e, asyncchat.ToolCallDone)]
    assert (done.arguments, done.parsed_arguments, done.arguments_error) == ("null", {}, None)


async def test_log_probabilities_come_as_an_event_after_their_text(
    client: asyncchat.Client,
) -> None:
    async with client.chat.stream(
        model="m", messages=USER, logprobs=True, top_logprobs=2
    ) as stream:
        events = [event async for event in stream]
        final = await stream.final_completion()
    texts = [e for e in events if isinstance(e, asyncchat.ContentDelta)]
    logprobs = [e for e in events if isinstance(e, asyncchat.LogprobsDelta)]
    assert len(logprobs) == len(texts) == 7
    for text, delta in zip(texts, logprobs, strict=True):
        assert events.index(delta) == events.index(text) + 1  # its text's event, then it
        [token] = delta.content
        assert token.token == text.text and token.top_logprobs[0].token == text.text
        assert delta.refusal == [] and delta.choice_index == 0
    whole = final.choices[0].logprobs
    assert whole is not None and whole.content is not None
    assert [t.to_dict() for t in whole.content] == [d.content[0].to_dict() for d in logprobs]
    # Asked for in extra_body, they come too; not asked for, they are not looked for.
    async with client.chat.stream(model="m", messages=USER, extra_body={"logprobs": True}) as extra:
        assert len([e async for e in extra if isinstance(e, asyncchat.LogprobsDelta)]) == 7
    async with client.chat.stream(model="m", messages=USER) as plain:
        assert not [e async for e in plain if isinstance(e, asyncchat.LogprobsDelta)]
    chunk = {"choices": [{"index": 0, "delta": {}, "logprobs": {"content": [{"token": "a"}]}}]}
    assert asyncchat.StreamEventBuilder(logprobs=False).add(chunk) == []
    [found] = asyncchat.StreamEventBuilder().add(chunk)
    assert isinstance(found, asyncchat.LogprobsDelta) and found.content[0].token == "a"


def test_a_refusal_s_log_probabilities_and_odd_shapes() -> None:
    token = {"token": "No", "logprob": -0.1, "bytes": [78, 111], "top_logprobs": []}

    def chunk(logprobs: object) -> dict[str, object]:
        return {"choices": [{"index": 1, "delta": {"refusal": "No"}, "logprobs": logprobs}]}

    builder = asyncchat.StreamEventBuilder()
    [refused, delta] = builder.add(chunk({"content": None, "refusal": [token]}))
    assert isinstance(refused, asyncchat.RefusalDelta)
    assert isinstance(delta, asyncchat.LogprobsDelta)
    assert delta.content == [] and delta.choice_index == 1
    assert [(t.token, t.logprob) for t in delta.refusal] == [("No", -0.1)]
    for odd in ({"content": []}, {"content": "x"}, [token], "x", None):
        assert [type(e).__name__ for e in builder.add(chunk(odd))] == ["RefusalDelta"]


async def test_a_stop_on_every_chunk_reports_each_call_done_once_and_whole(
    client: asyncchat.Client, server: MockServer
) -> None:
    """gcli2api marks every chunk `stop`: a call is done only once its arguments are
    whole, never with a piece of them (or none) while the rest is still coming."""
    server.style = StreamStyle(finish_every_chunk=True, argument_fragment_size=3)
    events, final = await _events_and_final(client, TOOL_MESSAGES, [WEATHER_TOOL, TIME_TOOL])
    done = [e for e in events if isinstance(e, asyncchat.ToolCallDone)]
    assert [(d.index, d.name, d.parsed_arguments) for d in done] == [
        (index, name, arguments) for index, (name, arguments) in enumerate(EXPECTED_CALLS)
    ]
    assert all(d.arguments_error is None for d in done)
    finishes = [e.finish_reason for e in events if isinstance(e, asyncchat.ChoiceFinished)]
    assert len(finishes) > 10 and set(finishes[:-1]) == {"stop"}  # reported as sent
    assert finishes[-1] == "tool_calls" == final.choices[0].finish_reason
    calls = final.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == [d.arguments for d in done]
    events, final = await _events_and_final(client, USER, [])
    text = "".join(e.text for e in events if isinstance(e, asyncchat.ContentDelta))
    assert text == final.choices[0].message.content == "You said: one two three four five"


def test_a_stop_between_a_calls_pieces_does_not_end_it() -> None:
    """OpenWebUI marks each chunk without content `stop`: one can come between a
    call's pieces. Its arguments are empty or not whole there, so it is not done; a
    call cut by `length`, or one still unwhole at the end, is reported as before."""
    from asyncchat import StreamEventBuilder, ToolCallDone

    def chunk(*pieces: str, head: bool = False, finish: str | None = None) -> dict[str, Any]:
        fragments: list[dict[str, Any]] = [
            {"index": 0, "function": {"arguments": piece}} for piece in pieces
        ]
        if head:
            fragments = [{"index": 0, "id": "c1", "type": "function",
                          "function": {"name": "ls", "arguments": ""}}]  # fmt: skip
        delta = {"tool_calls": fragments} if fragments else {}
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    builder = StreamEventBuilder()
    stream = [
        chunk(head=True), chunk(finish="stop"), chunk('{"path":'), chunk(finish="stop"),
        chunk(' "src"}'), chunk(finish="stop"), chunk(finish="stop"),
    ]  # fmt: skip
    events = [event for item in stream for event in builder.add(item)]
    done = [(i, e) for i, e in enumerate(events) if isinstance(e, ToolCallDone)]
    [(position, once)] = done
    assert once.parsed_arguments == {"path": "src"} and once.arguments_error is None
    assert isinstance(events[position + 1], asyncchat.ChoiceFinished)  # the next stop
    assert builder.end() == []
    cut = StreamEventBuilder()
    cut.add(chunk(head=True))
    cut.add(chunk('{"path": "s'))
    [early, finished] = cut.add(chunk(finish="length"))
    assert isinstance(early, ToolCallDone) and early.arguments_error is not None
    assert isinstance(finished, asyncchat.ChoiceFinished)
    unwhole = StreamEventBuilder()
    unwhole.add(chunk(head=True))
    unwhole.add(chunk('{"path": "s', finish="stop"))
    [late] = unwhole.end()
    assert isinstance(late, ToolCallDone) and late.arguments_error is not None


async def test_final_completion_reads_the_rest(client: asyncchat.Client) -> None:
    async with client.chat.stream(model="m", messages=USER) as stream:
        async for event in stream:
            assert isinstance(event, asyncchat.ContentDelta)
            break
        final = await stream.final_completion()
    assert final.choices[0].message.content == "You said: one two three four five"


async def test_leaving_the_block_early_closes_the_stream(
    client: asyncchat.Client, server: MockServer
) -> None:
    for _ in range(5):
        async with client.chat.stream(model="m", messages=USER) as stream:
            async for _ in stream:
                break
    final = await client.chat.completions.create(model="m", messages=USER)
    assert final.choices[0].finish_reason == "stop"


def test_the_event_builder_needs_no_stream() -> None:
    """The typed events are built sans-IO: any chunks in, events out."""
    from asyncchat import (
        ChoiceFinished,
        ContentDelta,
        StreamEventBuilder,
        ToolCallArgumentsDelta,
        ToolCallDone,
    )

    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]},
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                }
            ]
        },
    ]
    builder = StreamEventBuilder()
    events = [event for chunk in chunks for event in builder.add(chunk)]
    assert events[0] == ContentDelta("Hi")
    assert [e.arguments for e in events if isinstance(e, ToolCallArgumentsDelta)] == [
        "",
        '{"a"',
        '{"a": 1}',
    ]
    # No finish_reason came: end() reports the call done, once.
    [done] = builder.end()
    assert isinstance(done, ToolCallDone) and done.parsed_arguments == {"a": 1}
    assert builder.end() == []
    assert builder.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) == [
        ChoiceFinished("stop")
    ]
    assert builder.accumulator.completion().choices[0].message.content == "Hi"
