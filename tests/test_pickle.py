"""Answers and errors leave the process whole: pickled (multiprocessing, concurrent.futures,
Ray, a disk cache) and deep-copied (an agent's history), over the loopback MockServer and
through real worker processes. A client and a stream are live connections: pickling
either is one clear TypeError."""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pydantic
import pytest

import asyncchat
from asyncchat import errors
from asyncchat.errors import APIError
from asyncchat.testing import MockServer
from asyncchat.types import ChatCompletion, Function

from .conftest import API_KEY

USER = [{"role": "user", "content": "hello there"}]
LIMITS = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "7"}


class Answer(pydantic.BaseModel):
    city: str
    days: int


def round_trips(value: Any) -> list[Any]:
    """`value` pickled (protocol 2, the first with slots, and the newest) and deep-copied."""
    pickled = [pickle.loads(pickle.dumps(value, protocol=p)) for p in (2, pickle.HIGHEST_PROTOCOL)]
    return [*pickled, copy.deepcopy(value)]


def assert_same_answer(copied: ChatCompletion, original: ChatCompletion) -> None:
    assert type(copied) is type(original)
    assert copied == original and copied.to_dict() == original.to_dict()
    assert copied.request_id == original.request_id
    assert {key.lower(): copied.headers[key] for key in copied.headers} == {
        key.lower(): original.headers[key] for key in original.headers
    }
    assert copied.rate_limits == original.rate_limits


# --- answers -----------------------------------------------------------------


async def test_a_completion_keeps_its_json_headers_request_id_and_rate_limits(
    server: MockServer, client: asyncchat.Client
) -> None:
    server.enqueue(
        200,
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "web_search": [{"title": "a provider's extra field"}],
        },
        headers={"X-Request-Id": "req-7", **LIMITS},  # the mock sends its own first
    )
    completion = await client.chat.completions.create(model="m", messages=USER)
    completion.choices[0].message.tool_calls  # noqa: B018  nested views built before the copy
    assert completion.rate_limits is not None and completion.rate_limits.remaining_requests == 7

    for copied in round_trips(completion):
        assert_same_answer(copied, completion)
        assert copied.request_id == completion.request_id == "mock-req-1"
        assert copied.headers["X-REQUEST-ID"] == "mock-req-1"  # in any case, the first sent
        assert copied.rate_limits.remaining_requests == 7
        assert copied.choices[0].message.content == "hi" and copied.usage.total_tokens == 4
        assert copied.web_search == [{"title": "a provider's extra field"}]


async def test_a_copy_is_its_own_and_its_views_write_into_its_json(
    client: asyncchat.Client,
) -> None:
    completion = await client.chat.completions.create(model="m", messages=USER)
    completion.choices[0].message  # noqa: B018  the views copied with it, not built anew

    for copied in round_trips(completion):
        copied.choices[0].message.content = "changed in the copy"
        assert copied.to_dict()["choices"][0]["message"]["content"] == "changed in the copy"
    shallow = copy.copy(completion)
    shallow.id = "changed too"
    assert shallow.choices[0] is completion.choices[0]  # shallow: nested objects shared
    assert shallow.headers is completion.headers

    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.id != "changed too" and shallow.id == "changed too"
    assert shallow.to_dict()["id"] == "changed too"


async def test_chunks_and_the_assembled_completion_of_a_stream(
    server: MockServer, client: asyncchat.Client
) -> None:
    server.enqueue(
        sse=[
            {"choices": [{"index": 0, "delta": {"content": "You said: hello there"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ],
        headers=LIMITS,
    )
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        chunks = [chunk async for chunk in stream]
    # The assembled completion carries the stream's headers, as a non-streamed one does.
    assert stream.completion.headers["Content-Type"].startswith("text/event-stream")
    assert stream.completion.rate_limits == stream.rate_limits
    assert stream.rate_limits is not None and stream.rate_limits.remaining_requests == 7

    for copied in round_trips(chunks):
        assert copied == chunks
        assert "".join(c.choices[0].delta.content or "" for c in copied if c.choices) == (
            "You said: hello there"
        )
    for completion in round_trips(stream.completion):
        assert_same_answer(completion, stream.completion)
        assert completion.choices[0].message.content == "You said: hello there"


async def test_a_parsed_answer_keeps_its_model_instance(client: asyncchat.Client) -> None:
    completion = await client.chat.completions.parse(
        model="m", messages=USER, response_format=Answer
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)

    for copied in round_trips(completion):
        assert_same_answer(copied, completion)
        assert copied.choices[0].message.parsed == parsed


async def test_models_and_embeddings(client: asyncchat.Client) -> None:
    models = await client.models.list()
    embeddings = await client.embeddings.create(model="e", input=["one", "two"])

    for copied in round_trips(models):
        assert copied == models and [m.id for m in copied.data] == ["mock-model"]
    for copied in round_trips(embeddings):
        assert copied == embeddings and copied.data[1].embedding == embeddings.data[1].embedding


# --- errors ------------------------------------------------------------------

ANSWER = ChatCompletion(
    {"id": "c1", "choices": [{"finish_reason": "length", "message": {"content": "{"}}]},
    request_id="req-1",
)
HISTORY = [{"role": "user", "content": "hi"}]
STATUS = {"status_code": 429, "code": "rate_limited", "headers": {"Retry-After": "1"}}

# One of each error class, built as asyncchat builds it.
ERRORS: dict[type[APIError], Callable[[], APIError]] = {
    APIError: lambda: APIError("failed", request_id="req-1", body={"error": "x"}),
    errors.ConfigurationError: lambda: errors.ConfigurationError("no key"),
    errors.ClientClosedError: lambda: errors.ClientClosedError("closed"),
    errors.ResponseTooLargeError: lambda: errors.ResponseTooLargeError("too large"),
    errors.APIConnectionError: lambda: errors.APIConnectionError("refused"),
    errors.APITimeoutError: lambda: errors.APITimeoutError("timed out"),
    errors.ConnectError: lambda: errors.ConnectError("could not connect"),
    errors.ConnectTimeoutError: lambda: errors.ConnectTimeoutError("connect timeout"),
    errors.TLSError: lambda: errors.TLSError("certificate verify failed"),
    errors.APIStatusError: lambda: errors.APIStatusError("HTTP 418", status_code=418),
    **{
        cls: (lambda cls=cls: cls("HTTP error", request_id="req-2", **STATUS))  # type: ignore[misc]
        for cls in (
            errors.BadRequestError,
            errors.AuthenticationError,
            errors.PermissionDeniedError,
            errors.NotFoundError,
            errors.ConflictError,
            errors.UnprocessableEntityError,
            errors.RateLimitError,
            errors.InternalServerError,
        )
    },
    errors.ServerNotReadyError: lambda: errors.ServerNotReadyError.after(
        errors.InternalServerError("HTTP 503: Loading model", status_code=503, request_id="r-3"),
        300,
    ),
    errors.StreamError: lambda: errors.StreamError("broken"),
    errors.IncompleteStreamError: lambda: errors.IncompleteStreamError("cut off"),
    errors.MalformedStreamError: lambda: errors.MalformedStreamError("not a chunk"),
    errors.EventTooLargeError: lambda: errors.EventTooLargeError("too big"),
    errors.ToolArgumentsError: lambda: errors.ToolArgumentsError("not JSON", arguments="{"),
    errors.ToolCallError: lambda: errors.ToolCallError(
        "the tool failed", name="f", arguments="{}", messages=HISTORY
    ),
    errors.MaxTurnsError: lambda: errors.MaxTurnsError(
        "too many turns", messages=HISTORY, completion=ANSWER
    ),
    errors.StructuredOutputError: lambda: errors.StructuredOutputError(
        "not the format", completion=ANSWER
    ),
    errors.LengthFinishReasonError: lambda: errors.LengthFinishReasonError(completion=ANSWER),
    errors.ContentFilterFinishReasonError: lambda: errors.ContentFilterFinishReasonError(
        completion=ANSWER, finish_reason="sensitive"
    ),
}


def test_every_error_class_is_in_the_table() -> None:
    tree = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, APIError)
    }
    assert set(ERRORS) == tree


@pytest.mark.parametrize("cls", list(ERRORS), ids=lambda cls: cls.__name__)
def test_an_error_arrives_as_itself(cls: type[APIError]) -> None:
    error = ERRORS[cls]()
    assert type(error) is cls
    error.partial = ANSWER

    for copied in round_trips(error):
        assert type(copied) is cls
        assert str(copied) == str(error) and copied.args == error.args
        attributes = vars(copied)
        assert attributes.keys() == vars(error).keys()
        for name, value in vars(error).items():
            if name == "headers":
                assert dict(attributes[name]) == dict(value)
            else:
                assert attributes[name] == value, name


async def test_a_status_error_keeps_the_servers_headers(
    server: MockServer, client: asyncchat.Client
) -> None:
    server.enqueue(
        429,
        {"error": {"message": "slow down", "code": "rate_limited"}},
        headers={"Retry-After": "1", **LIMITS},
    )
    with pytest.raises(asyncchat.RateLimitError) as raised:
        await client.with_options(max_retries=0).chat.completions.create(model="m", messages=USER)
    error = raised.value

    for copied in round_trips(error):
        assert type(copied) is asyncchat.RateLimitError and str(copied) == str(error)
        assert copied.status_code == 429 and copied.code == "rate_limited"
        assert copied.request_id == error.request_id == "mock-req-1"
        assert copied.headers["retry-after"] == "1"
        assert copied.rate_limits == error.rate_limits
        assert copied.rate_limits is not None and copied.rate_limits.remaining_requests == 7


async def test_a_broken_streams_error_keeps_what_arrived(
    server: MockServer, client: asyncchat.Client
) -> None:
    server.style = asyncchat.testing.StreamStyle(drop_after=2)
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    with pytest.raises(asyncchat.IncompleteStreamError) as raised:
        async with stream:
            async for _ in stream:
                pass
    assert raised.value.partial is not None
    assert raised.value.partial.headers["content-type"].startswith("text/event-stream")

    for copied in round_trips(raised.value):
        assert str(copied) == str(raised.value)
        assert copied.partial == raised.value.partial
        assert copied.partial.choices[0].message.content == "You"  # the 2 chunks sent


# --- what cannot leave the process ---------------------------------------------


async def test_a_client_or_a_stream_cannot_be_pickled_or_copied(
    client: asyncchat.Client,
) -> None:
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="Client cannot be pickled or copied: its conn"):
            attempt(client)
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    async with stream:
        with pytest.raises(TypeError, match=r"pickle its chunks or stream\.completion instead"):
            pickle.dumps(stream)
        async with client.chat.stream(model="m", messages=USER) as events:
            with pytest.raises(TypeError, match="ChatCompletionStream cannot be pickled"):
                copy.deepcopy(events)
    assert (await client.with_options(max_retries=1).models.list()).data  # still derived


# --- through worker processes ----------------------------------------------------
# Run in a spawned worker: a fresh interpreter, as on macOS and Windows, and never a
# forked copy of the test's threads.


def ask(base_url: str) -> ChatCompletion:
    async def main() -> ChatCompletion:
        async with asyncchat.Client(base_url=base_url, api_key=API_KEY, max_retries=0) as client:
            return await client.chat.completions.create(model="m", messages=USER)

    return asyncio.run(main())


def spawn() -> Any:
    return multiprocessing.get_context("spawn")


def test_a_process_pool_gets_answers_and_errors_and_stays_usable(
    background_server: MockServer,
) -> None:
    url = background_server.base_url
    with ProcessPoolExecutor(1, mp_context=spawn()) as pool:
        completion = pool.submit(ask, url).result(timeout=60)
        assert completion.choices[0].message.content == "You said: hello there"
        assert completion.headers["content-type"].startswith("application/json")

        background_server.enqueue(429, {"error": {"message": "slow down"}}, headers=LIMITS)
        with pytest.raises(asyncchat.RateLimitError, match="slow down") as raised:
            pool.submit(ask, url).result(timeout=60)
        assert raised.value.status_code == 429
        assert raised.value.rate_limits is not None
        assert raised.value.rate_limits.remaining_requests == 7

        # Before errors pickled whole, the parent failed to rebuild this one and the
        # pool broke: every later call raised BrokenProcessPool.
        assert pool.submit(ask, url).result(timeout=60).choices[0].message.content


def parse_arguments(arguments: str) -> Any:
    return Function({"name": "f", "arguments": arguments}).parsed_arguments()


def test_a_multiprocessing_pool_gets_errors_rather_than_hanging(
    background_server: MockServer,
) -> None:
    background_server.enqueue(401, {"error": {"message": "bad key"}})
    with spawn().Pool(1) as pool:
        with pytest.raises(asyncchat.AuthenticationError, match="bad key"):
            pool.apply_async(ask, (background_server.base_url,)).get(timeout=60)
        # Before errors pickled whole, this one (without headers, so it could be sent)
        # killed the pool's result thread as it was rebuilt: the call never returned.
        # The timeout turns such a hang into a failure.
        with pytest.raises(asyncchat.ToolArgumentsError) as raised:
            pool.apply_async(parse_arguments, ("{not json",)).get(timeout=60)
        assert raised.value.arguments == "{not json"
        assert pool.apply_async(ask, (background_server.base_url,)).get(timeout=60).choices
