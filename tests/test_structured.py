"""Structured outputs: strict schemas, parse(), pydantic tools, the strategies, and
`parsed` on stream events, against the real MockServer."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

import asyncchat
from asyncchat.events import StreamEventBuilder
from asyncchat.partial_json import PartialJSONError
from asyncchat.structured import OutputFormat, StructuredRequest, to_strict_json_schema
from asyncchat.testing import MockServer, StreamStyle

from .conftest import run_python

USER = [{"role": "user", "content": "Tell me about Boston"}]


class Address(BaseModel):
    street: str
    zip_code: str | None = None


class City(BaseModel):
    """A city and what it is known for."""

    name: str
    population: int
    tags: list[str]
    address: Address = Field(description="the city hall")  # a $ref with a sibling
    mayor: Address | None = None


class Node(BaseModel):  # recursive
    label: str
    children: list[Node] = []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")


class Weather(BaseModel):
    """Get the weather in a city."""

    city: str
    unit: Literal["celsius", "fahrenheit"]


# What the MockServer answers for a City: each string the user's last word.
HALL = Address(street="Boston", zip_code="Boston")
BOSTON = City(name="Boston", population=1, tags=["Boston"], address=HALL, mayor=HALL)


# --- strict schemas -----------------------------------------------------------------


def objects_in(node: Any) -> list[dict[str, Any]]:
    """Every object schema inside a schema."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            found.append(node)
        for value in node.values():
            found += objects_in(value)
    elif isinstance(node, list):
        for value in node:
            found += objects_in(value)
    return found


@pytest.mark.parametrize("model", [City, Node, Pet, Weather])
def test_strict_schema_closes_every_object_and_requires_every_property(model: type) -> None:
    schema = to_strict_json_schema(model)
    objects = objects_in(schema)
    assert objects
    for node in objects:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node.get("properties", {}))
    text = json.dumps(schema)
    assert '"oneOf"' not in text and '"discriminator"' not in text
    assert '"default": null' not in text


def test_a_ref_with_siblings_is_inlined_and_a_bare_ref_kept() -> None:
    schema = to_strict_json_schema(City)
    address = schema["properties"]["address"]
    assert "$ref" not in address
    assert address["description"] == "the city hall"
    assert address["properties"]["street"] == {"title": "Street", "type": "string"}
    mayor = schema["properties"]["mayor"]
    assert {"$ref": "#/$defs/Address"} in mayor["anyOf"]


def test_a_recursive_model_keeps_its_reference() -> None:
    schema = to_strict_json_schema(Node)
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}


def test_the_input_schema_is_left_untouched() -> None:
    original = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"allOf": [{"type": "integer"}]}},
    }
    kept = copy.deepcopy(original)
    strict = to_strict_json_schema(original)
    assert original == kept
    assert strict["required"] == ["a", "b"]
    assert strict["properties"]["b"] == {"type": "integer"}


def test_a_ref_outside_the_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="local"):
        to_strict_json_schema({"properties": {"a": {"$ref": "http://x/y", "title": "A"}}})


def test_output_formats_from_each_argument() -> None:
    city = OutputFormat.of(City)
    assert city.name == "City" and city.strict and city.model is City
    assert city.wire["json_schema"]["strict"] is True
    given = {
        "type": "json_schema",
        "json_schema": {"name": "t", "strict": True, "schema": {"properties": {"x": {}}}},
    }
    kept = copy.deepcopy(given)
    made = OutputFormat.of(given)
    assert given == kept  # the caller's dict is not modified
    assert made.wire["json_schema"]["schema"]["additionalProperties"] is False
    loose = OutputFormat.of({"type": "json_schema", "json_schema": {"name": "t", "schema": {}}})
    assert loose.schema == {} and not loose.strict
    assert OutputFormat.of({"type": "json_object"}).schema is None


@pytest.mark.parametrize(
    ("response_format", "error", "match"),
    [
        ({"type": "text"}, ValueError, "'text'"),
        ({"type": "json_schema"}, ValueError, "needs"),
        ({"type": "json_schema", "json_schema": {"schema": {}}}, ValueError, "name"),
        (dict, TypeError, "pydantic model class"),
        ("City", TypeError, "pydantic model class"),
    ],
)
def test_output_format_errors_say_what_to_pass(
    response_format: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        OutputFormat.of(response_format)


def test_pydantic_function_tool_is_a_strict_tool() -> None:
    tool = asyncchat.pydantic_function_tool(Weather)
    assert tool.model is Weather
    sent = orjson.loads(orjson.dumps(tool))
    assert sent["type"] == "function"
    function = sent["function"]
    assert function["name"] == "Weather" and function["strict"] is True
    assert function["description"] == "Get the weather in a city."
    assert function["parameters"]["required"] == ["city", "unit"]
    renamed = asyncchat.pydantic_function_tool(Weather, name="get weather", description="d")
    assert renamed["function"]["name"] == "get_weather"
    assert renamed["function"]["description"] == "d"
    with pytest.raises(TypeError):
        asyncchat.pydantic_function_tool(dict)


def test_pydantic_is_imported_only_by_whoever_uses_it() -> None:
    code = (
        "import sys; sys.modules['pydantic'] = None\n"  # importing it would fail
        "import asyncchat, asyncchat.structured, asyncchat.testing\n"
        "from asyncchat.structured import OutputFormat\n"
        "f = OutputFormat.of({'type': 'json_schema', 'json_schema': {'name': 'n', 'schema': {}}})\n"
        "print(f.parse('[1]'))"
    )
    printed = run_python(code)
    assert printed.strip() == "[1]"


# --- parse() --------------------------------------------------------------------------


async def test_parse_into_a_model(client: asyncchat.Client, server: MockServer) -> None:
    messages = copy.deepcopy(USER)
    completion = await client.chat.completions.parse(
        model="m", messages=messages, response_format=City
    )
    assert messages == USER  # not modified
    city = completion.choices[0].message.parsed
    assert city == BOSTON
    assert completion.choices[0].message.content == city.model_dump_json()
    sent = server.requests[-1].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": to_strict_json_schema(City), "strict": True},
    }
    assert sent["messages"] == USER
    assert "parsed" not in completion.to_dict()["choices"][0]["message"]
    assert "parsed=City(" in repr(completion.choices[0].message)
    assert isinstance(completion, asyncchat.ChatCompletion)
    assert completion.request_id == "mock-req-1"


async def test_parse_with_a_schema_dict_gives_a_dict(client: asyncchat.Client) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "point",
            "schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    }
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=response_format
    )
    assert completion.choices[0].message.parsed == {"x": 1}
    json_mode = await client.chat.completions.parse(
        model="m", messages=USER, response_format={"type": "json_object"}
    )
    assert json_mode.choices[0].message.parsed == {"answer": "You said: Tell me about Boston"}


async def test_parse_without_a_format_parses_nothing(client: asyncchat.Client) -> None:
    completion = await client.chat.completions.parse(model="m", messages=USER)
    assert completion.choices[0].message.parsed is None
    assert completion.choices[0].message.content == "You said: Tell me about Boston"


async def test_json_object_strategy_puts_the_schema_in_the_system_message(
    client: asyncchat.Client, server: MockServer
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    kept = copy.deepcopy(messages)
    completion = await client.chat.completions.parse(
        model="m", messages=messages, response_format=City, strategy="json_object"
    )
    assert messages == kept
    assert completion.choices[0].message.parsed == BOSTON
    sent = server.requests[-1].body
    assert sent["response_format"] == {"type": "json_object"}
    system = sent["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n")
    assert orjson.dumps(to_strict_json_schema(City)).decode() in system["content"]
    assert sent["messages"][1:] == USER
    await client.chat.completions.parse(
        model="m", messages=USER, response_format=City, strategy="json_object"
    )
    assert server.requests[-1].body["messages"][0]["role"] == "system"
    assert server.requests[-1].body["messages"][1:] == USER


async def test_tool_strategy_forces_a_call_and_parses_its_arguments(
    client: asyncchat.Client, server: MockServer
) -> None:
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=Weather, strategy="tool"
    )
    message = completion.choices[0].message
    assert message.parsed == Weather(city="Boston", unit="celsius")
    assert message.content is None
    sent = server.requests[-1].body
    assert "response_format" not in sent
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}
    assert sent["tools"][0]["function"]["parameters"] == to_strict_json_schema(Weather)
    with pytest.raises(ValueError, match="tool of its own"):
        await client.chat.completions.parse(
            model="m",
            messages=USER,
            response_format=Weather,
            strategy="tool",
            tools=[asyncchat.pydantic_function_tool(City)],
        )


async def test_a_server_without_json_schema_gets_a_hint_and_the_fallbacks_work() -> None:
    async with (
        MockServer(response_formats=("text", "json_object")) as server,
        asyncchat.Client(base_url=server.base_url, api_key="k") as client,
    ):
        with pytest.raises(asyncchat.BadRequestError) as caught:
            await client.chat.completions.parse(model="m", messages=USER, response_format=Weather)
        text = str(caught.value)
        assert "This response_format type is unavailable now" in text
        assert "strategy='json_object'" in text
        for strategy in ("json_object", "tool"):
            completion = await client.chat.completions.parse(
                model="m",
                messages=USER,
                response_format=Weather,
                strategy=strategy,  # type: ignore[arg-type]
            )
            assert completion.choices[0].message.parsed == Weather(city="Boston", unit="celsius")
        # A 400 about something else, or about the schema itself, gets no such hint.
        for message in ("messages too long", "Invalid schema for response_format 'W'"):
            server.enqueue(400, json={"error": {"message": message}})
            with pytest.raises(asyncchat.BadRequestError) as other:
                await client.chat.completions.parse(
                    model="m", messages=USER, response_format=Weather
                )
            assert message in str(other.value)
            assert "strategy" not in str(other.value)


async def test_pydantic_tools_come_back_as_their_models(client: asyncchat.Client) -> None:
    plain = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"properties": {"q": {"type": "string"}}}},
    }
    completion = await client.chat.completions.parse(
        model="m",
        messages=[{"role": "user", "content": "Weather and lookup for Oslo"}],
        tools=[asyncchat.pydantic_function_tool(Weather), plain],
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 2
    assert calls[0].function.parsed_arguments() == Weather(city="Oslo", unit="celsius")
    assert calls[1].function.parsed_arguments() == {"q": "Oslo"}


def completion_json(content: str | None, finish_reason: str, **message: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
    }


@pytest.mark.parametrize(
    ("finish_reason", "error"),
    [
        ("length", asyncchat.LengthFinishReasonError),
        ("model_context_window_exceeded", asyncchat.LengthFinishReasonError),  # z.ai
        ("content_filter", asyncchat.ContentFilterFinishReasonError),
        ("sensitive", asyncchat.ContentFilterFinishReasonError),  # GLM's name for it
        # The server gave up mid-answer: DeepSeek, GLM, vLLM.
        ("insufficient_system_resource", asyncchat.StructuredOutputError),
        ("network_error", asyncchat.StructuredOutputError),
        ("abort", asyncchat.StructuredOutputError),
    ],
)
async def test_a_cut_or_filtered_answer_raises_with_the_completion(
    client: asyncchat.Client, server: MockServer, finish_reason: str, error: type[Exception]
) -> None:
    server.enqueue(json=completion_json('{"city": "Bos', finish_reason))
    with pytest.raises(error) as caught:
        await client.chat.completions.parse(model="m", messages=USER, response_format=Weather)
    assert isinstance(caught.value, asyncchat.StructuredOutputError)
    assert isinstance(caught.value, asyncchat.APIError)
    assert caught.value.completion.choices[0].message.content == '{"city": "Bos'
    message = str(caught.value)
    assert f"(finish_reason {finish_reason!r})" in message and "Weather" not in message
    if error is asyncchat.LengthFinishReasonError:
        assert "cut at the token limit" in message or "context window" in message
        assert "after 7 completion tokens" in message
    elif error is asyncchat.StructuredOutputError:
        assert message.startswith("the server stopped the answer before it was complete")


@pytest.mark.parametrize("finish_reason", ["abort", "insufficient_system_resource"])
async def test_an_answer_the_server_gave_up_on_raises_even_when_it_parses(
    client: asyncchat.Client, server: MockServer, finish_reason: str
) -> None:
    """vLLM ends a stream its engine aborted (a shutdown, a scale-in) as if it were
    whole: a 200, the finish_reason "abort", `[DONE]` (vllm-project/vllm#57082).
    JSON that happens to parse is still not the model's whole answer."""
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    choices = [
        {"index": 0, "delta": {"content": '{"city": "Oslo", "unit": "celsius"}'}},
        {"index": 0, "delta": {}, "finish_reason": finish_reason},
    ]
    sse = [f"data: {json.dumps({**head, 'choices': [choice]})}\n\n" for choice in choices]
    server.enqueue_stream("".join(sse) + "data: [DONE]\n\n")
    async with client.chat.stream(model="m", messages=USER, response_format=Weather) as stream:
        events = [e async for e in stream]
        assert events[0].parsed == {"city": "Oslo", "unit": "celsius"}
        with pytest.raises(asyncchat.StructuredOutputError, match="the server stopped") as caught:
            await stream.final_completion()
    assert caught.value.completion.choices[0].finish_reason == finish_reason


async def test_an_answer_not_in_the_format_raises_with_the_completion(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.enqueue(json=completion_json('{"city": "Oslo", "unit": "kelvin"}', "stop"))
    with pytest.raises(asyncchat.StructuredOutputError, match="not a valid Weather") as caught:
        await client.chat.completions.parse(model="m", messages=USER, response_format=Weather)
    assert "\n" not in str(caught.value)
    assert caught.value.completion.choices[0].finish_reason == "stop"
    server.enqueue(json=completion_json("Sure! Here it is", "stop"))
    with pytest.raises(asyncchat.StructuredOutputError, match="not JSON"):
        await client.chat.completions.parse(
            model="m", messages=USER, response_format={"type": "json_object"}
        )
    server.enqueue(json=completion_json(None, "stop"))
    with pytest.raises(asyncchat.StructuredOutputError, match="no Weather text"):
        await client.chat.completions.parse(model="m", messages=USER, response_format=Weather)


async def test_a_refusal_parses_to_none(client: asyncchat.Client, server: MockServer) -> None:
    server.enqueue(json=completion_json(None, "stop", refusal="I can't help with that."))
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=Weather
    )
    assert completion.choices[0].message.parsed is None
    assert completion.choices[0].message.refusal == "I can't help with that."


async def test_invalid_pydantic_tool_arguments_raise_naming_the_tool(
    client: asyncchat.Client, server: MockServer
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "Weather", "arguments": '{"city": "Oslo"}'},
    }
    server.enqueue(json=completion_json(None, "tool_calls", tool_calls=[call]))
    with pytest.raises(asyncchat.ToolArgumentsError, match="'Weather'") as caught:
        await client.chat.completions.parse(
            model="m", messages=USER, tools=[asyncchat.pydantic_function_tool(Weather)]
        )
    assert caught.value.arguments == '{"city": "Oslo"}'


class Ping(BaseModel):
    """Asks whether the service is up."""


async def test_a_call_without_arguments_as_groq_sends_it_parses(
    client: asyncchat.Client, server: MockServer
) -> None:
    """Groq sends `"null"` as the arguments of a call to a function without parameters:
    a pydantic tool's model reads it as none, as it reads Ollama's `""`."""
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "Ping", "arguments": text}}
        for i, text in enumerate(("null", "", "{}"))
    ]
    server.enqueue(json=completion_json(None, "tool_calls", tool_calls=calls))
    completion = await client.chat.completions.parse(
        model="m", messages=USER, tools=[asyncchat.pydantic_function_tool(Ping)]
    )
    parsed = completion.choices[0].message.tool_calls or []
    assert [call.function.parsed_arguments() for call in parsed] == [Ping()] * 3
    assert [call.function.arguments for call in parsed] == ["null", "", "{}"]  # as sent


async def test_misuse_is_refused_before_sending(
    client: asyncchat.Client, server: MockServer
) -> None:
    with pytest.raises(TypeError, match="parse"):
        await client.chat.completions.create(model="m", messages=USER, response_format=Weather)
    with pytest.raises(TypeError, match=r"chat\.stream"):
        await client.chat.completions.parse(
            model="m", messages=USER, response_format=Weather, stream=True
        )
    with pytest.raises(ValueError, match="strategy must be one of"):
        await client.chat.completions.parse(
            model="m",
            messages=USER,
            response_format=Weather,
            strategy="xml",  # type: ignore[call-overload]
        )
    array = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}
    with pytest.raises(ValueError, match="object"):
        await client.chat.completions.parse(
            model="m", messages=USER, response_format=array, strategy="tool"
        )
    assert server.requests == []


# --- streaming --------------------------------------------------------------------------


def extends(later: Any, earlier: Any) -> bool:
    """Whether a partial JSON value grew out of an earlier one (strings may grow,
    containers may gain members, nothing changes or disappears)."""
    if isinstance(earlier, dict):
        return isinstance(later, dict) and all(
            key in later and extends(later[key], value) for key, value in earlier.items()
        )
    if isinstance(earlier, list):
        return (
            isinstance(later, list)
            and len(later) >= len(earlier)
            and all(extends(a, b) for a, b in zip(later, earlier, strict=False))
        )
    if isinstance(earlier, str):
        return isinstance(later, str) and later.startswith(earlier)
    return earlier is None or later == earlier


async def test_stream_with_a_model_parses_as_it_goes(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.style = StreamStyle(argument_fragment_size=3)
    async with client.chat.stream(model="m", messages=USER, response_format=City) as stream:
        snapshots = []
        async for event in stream:
            if isinstance(event, asyncchat.ContentDelta):
                assert isinstance(event, asyncchat.JSONContentDelta)
                snapshots.append(copy.deepcopy(event.parsed))
        final = await stream.final_completion()
    assert snapshots[0] == {}
    assert len(snapshots) > 20
    for earlier, later in itertools.pairwise(snapshots):
        assert extends(later, earlier), (earlier, later)
    city = final.choices[0].message.parsed
    assert isinstance(city, City)
    assert snapshots[-1] == json.loads(final.choices[0].message.content or "")
    assert city == BOSTON and snapshots[-1] == BOSTON.model_dump()
    assert await stream.final_completion() is final
    assert server.requests[-1].body["response_format"]["json_schema"]["name"] == "City"


async def test_stream_json_object_strategy_and_tool_strategy(client: asyncchat.Client) -> None:
    async with client.chat.stream(
        model="m", messages=USER, response_format=Weather, strategy="json_object"
    ) as stream:
        texts = [
            e.parsed for e in [e async for e in stream] if isinstance(e, asyncchat.ContentDelta)
        ]
        final = await stream.final_completion()
    assert texts[-1] == {"city": "Boston", "unit": "celsius"}
    assert final.choices[0].message.parsed == Weather(city="Boston", unit="celsius")
    async with client.chat.stream(
        model="m", messages=USER, response_format=Weather, strategy="tool"
    ) as stream:
        deltas = [e async for e in stream if isinstance(e, asyncchat.ToolCallArgumentsDelta)]
        final = await stream.final_completion()
    assert deltas[-1].parsed == {"city": "Boston", "unit": "celsius"}
    assert final.choices[0].message.parsed == Weather(city="Boston", unit="celsius")


async def test_tool_argument_deltas_carry_parsed_for_any_tool(client: asyncchat.Client) -> None:
    plain = {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}
            },
        },
    }
    async with client.chat.stream(model="m", messages=USER, tools=[plain]) as stream:
        seen = [
            (e.arguments, copy.deepcopy(e.parsed))
            async for e in stream
            if isinstance(e, asyncchat.ToolCallArgumentsDelta)
        ]
        final = await stream.final_completion()
    assert seen[0] == ("", None)
    assert {"query": "Bo"} in [parsed for _, parsed in seen]
    assert seen[-1] == ('{"query":"Boston","limit":1}', {"query": "Boston", "limit": 1})
    assert final.choices[0].message.parsed is None
    assert final.choices[0].message.tool_calls is not None


async def test_stream_pydantic_tool_and_a_cut_answer(
    client: asyncchat.Client, server: MockServer
) -> None:
    async with client.chat.stream(
        model="m", messages=USER, tools=[asyncchat.pydantic_function_tool(Weather)]
    ) as stream:
        final = await stream.final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.parsed_arguments() == Weather(city="Boston", unit="celsius")
    server.enqueue_stream(
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"{\\"city\\": \\"Os"},'
        '"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    )
    async with client.chat.stream(model="m", messages=USER, response_format=Weather) as stream:
        events = [e async for e in stream]
        assert events[0].parsed == {"city": "Os"}
        with pytest.raises(asyncchat.LengthFinishReasonError):
            await stream.final_completion()


@pytest.mark.parametrize("wrapper", ["fence", "think"])
@pytest.mark.parametrize("strategy", ["json_schema", "json_object"])
async def test_json_wrapped_by_the_model_is_parsed_whole_and_as_it_streams(
    client: asyncchat.Client, server: MockServer, wrapper: Any, strategy: Any
) -> None:
    """Models that ignore the format wrap the JSON: in a code fence (Gemini at times,
    MiniMax, local servers), after a `<think>` block (DeepSeek-R1 served without a
    reasoning parser). The JSON inside is the answer, whole and while it streams."""
    server.style = StreamStyle(json_wrapper=wrapper, argument_fragment_size=3)
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=City, strategy=strategy
    )
    content = completion.choices[0].message.content or ""
    assert content.startswith("```json\n" if wrapper == "fence" else "<think>\n")
    assert completion.choices[0].message.parsed == BOSTON
    async with client.chat.stream(
        model="m", messages=USER, response_format=City, strategy=strategy
    ) as stream:
        deltas = [e async for e in stream if isinstance(e, asyncchat.JSONContentDelta)]
        final = await stream.final_completion()
    snapshots = [copy.deepcopy(delta.parsed) for delta in deltas]  # read on every event
    started = [value for value in snapshots if value is not None]
    assert snapshots[0] is None and started[0] == {}  # held back until the JSON starts
    for earlier, later in itertools.pairwise(started):
        assert extends(later, earlier), (earlier, later)
    assert started[-1] == BOSTON.model_dump()
    assert final.choices[0].message.parsed == BOSTON


def test_answer_json_start_and_text_over_every_split() -> None:
    """Where the JSON starts is told from any prefix of the answer, never too soon; a
    `{` in the thinking and backticks inside a JSON string are no JSON start or end."""
    from asyncchat.quirks import answer_json_start, answer_json_text

    value = {"code": "```python\nprint(1)\n```", "n": [1, {"x": None}]}
    body = json.dumps(value)
    answers = [
        body,
        f"  \n{body}",
        f"```json\n{body}\n```",
        f"```\n{body}```\n",
        f"<think>\nA {{guess}} first.\n</think>\n\n{body}",
        f"<think>x</think>```json\n{body}\n```",
        f"```json\n{body}\n```\n\nThe `code` field holds the snippet.",  # a remark after
        f"```json\n{body}``` Done.",
        f"<think>\n{'Let me think. ' * 200}\n</think>\n{body}",
    ]
    for answer in answers:
        assert json.loads(answer_json_text(answer)) == value, answer
        start = answer_json_start(answer)
        assert start is not None
        for cut in range(len(answer)):
            early = answer_json_start(answer[:cut])
            assert early is None or early == start, (answer, cut)
        # Streamed in pieces of every size, the live value ends as the JSON.
        for size in (1, 2, 5, 64):
            builder = asyncchat.StreamEventBuilder(json_content=True)
            events = []
            for at in range(0, len(answer), size):
                chunk = {"choices": [{"index": 0, "delta": {"content": answer[at : at + size]}}]}
                events += builder.add(chunk)
            values = [e.parsed for e in events if isinstance(e, asyncchat.JSONContentDelta)]
            assert values[-1] == value, (answer, size)
    assert answer_json_text("Sure! {not json}") == "Sure! {not json}"  # unwrapped: as it is
    # In a fence, JSON that does not parse is handed over whole, for the error to show.
    assert answer_json_text('```json\n{"a": tru}\n```\nok') == '{"a": tru}\n```\nok'


async def test_a_remark_after_the_fenced_json_is_not_parsed(
    client: asyncchat.Client, server: MockServer
) -> None:
    """A model that ignores the format may add a line after the code fence. The stream's
    live value ends with the JSON; `parse()` reads the same JSON, not the remark."""
    answer = '```json\n{"answer": "Paris"}\n```\nLet me know if you need more.'
    server.reply = answer
    json_object = {"type": "json_object"}
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=json_object
    )
    assert completion.choices[0].message.content == answer
    assert completion.choices[0].message.parsed == {"answer": "Paris"}
    async with client.chat.stream(model="m", messages=USER, response_format=json_object) as s:
        deltas = [e async for e in s if isinstance(e, asyncchat.JSONContentDelta)]
        final = await s.final_completion()
    assert deltas[-1].parsed == {"answer": "Paris"}
    assert final.choices[0].message.parsed == {"answer": "Paris"}


async def test_content_that_is_not_json_raises_when_parsed_is_read(
    client: asyncchat.Client, server: MockServer
) -> None:
    server.reply = "Sure! {not json}"
    async with client.chat.stream(
        model="m", messages=USER, response_format={"type": "json_object"}
    ) as stream:
        events = [e async for e in stream if isinstance(e, asyncchat.ContentDelta)]
        with pytest.raises(PartialJSONError, match="position 0"):
            _ = events[0].parsed
        with pytest.raises(PartialJSONError):  # and after: the error stays
            _ = events[-1].parsed
        with pytest.raises(asyncchat.StructuredOutputError):
            await stream.final_completion()


async def test_without_a_format_content_events_are_plain_and_parse_nothing(
    client: asyncchat.Client,
) -> None:
    async with client.chat.stream(model="m", messages=USER) as stream:
        events = [e async for e in stream if isinstance(e, asyncchat.ContentDelta)]
    assert {type(e) for e in events} == {asyncchat.ContentDelta}
    assert all(e.parsed is None for e in events)
    text_format = {"type": "text"}
    async with client.chat.stream(model="m", messages=USER, response_format=text_format) as s:
        final = await s.final_completion()
    assert final.choices[0].message.content == "You said: Tell me about Boston"


async def test_parsed_never_read_means_no_parser_at_all(client: asyncchat.Client) -> None:
    async with client.chat.stream(model="m", messages=USER, response_format=City) as stream:
        events = [e async for e in stream]
    partials = {id(e._partial) for e in events if isinstance(e, asyncchat.JSONContentDelta)}
    assert len(partials) == 1  # one per choice, shared by its events
    event = next(e for e in events if isinstance(e, asyncchat.JSONContentDelta))
    assert event._partial._parser is None


# --- the event builder, sans IO, at every split -----------------------------------------


def chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "model": "m", "created": 1, "choices": [{"index": 0, "delta": delta}]}


@settings(max_examples=150, deadline=None)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    read_every=st.integers(min_value=1, max_value=3),
)
def test_builder_parsed_extends_and_ends_as_json_loads(
    value: Any, cuts: list[int], read_every: int
) -> None:
    text = json.dumps({"v": value}, ensure_ascii=bool(read_every % 2))
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points) if b > a]
    for as_tool in (False, True):
        builder = StreamEventBuilder(json_content=True)
        previous: Any = None
        count = 0
        for piece in pieces:
            delta: dict[str, Any] = (
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                if as_tool
                else {"content": piece}
            )
            for event in builder.add(chunk(delta)):
                count += 1
                if count % read_every:
                    continue  # some events are never read: the next read catches up
                current = copy.deepcopy(event.parsed)  # type: ignore[union-attr]
                assert extends(current, previous)
                previous = current
        final = event.parsed  # type: ignore[union-attr]
        assert final == json.loads(text)


def test_a_structured_request_parses_nothing_when_asked_nothing() -> None:
    plan = StructuredRequest.of(None, "json_schema", None)
    assert not plan.parses and not plan.json_content
    params: dict[str, Any] = {}
    assert plan.shape(USER, params) is USER and params == {}
