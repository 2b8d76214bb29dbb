"""`client.chat`: `completions.create` and `parse`, the streams, the fan-out
(`batch`, `as_completed`) and the tool-calling loop (`run_tools`).

Every request goes through `Client._request`, which owns retries, errors,
logging and telemetry; here the chat bodies are built and the answers wrapped.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from asyncchat._config import Timeout
from asyncchat._decode import decode_object
from asyncchat._events import ChatStreamManager
from asyncchat._fanout import Pacer, Requests, fan_out
from asyncchat._http import Response
from asyncchat._ratelimit import RateLimit, RateLimiter, estimate_tokens
from asyncchat._runner import Approve, OnResult, ToolRunner
from asyncchat._stream import (
    ChatCompletionStream,
    completion_from_event_stream,
    looks_like_sse,
)
from asyncchat._timing import StreamTiming
from asyncchat.errors import BadRequestError, MalformedStreamError
from asyncchat.quirks import content_text
from asyncchat.structured import (
    Strategy,
    StructuredRequest,
    is_pydantic_model,
    json_schema_refused,
)
from asyncchat.tools import wire_tools
from asyncchat.types import ChatCompletion, ParsedChatCompletion

if TYPE_CHECKING:
    from asyncchat.client import Client

__all__ = ["Chat", "Completions", "build_body", "reported_tokens", "tokens_reported_in"]

M = TypeVar("M")

_JSON_TYPES = ("application/json", "text/json")
# Keyword arguments of create() that are not part of the JSON body.
_CALL_OPTIONS = ("timeout", "extra_headers", "extra_query", "extra_body")
_PENDING: Any = None


def build_body(
    model: str,
    messages: Iterable[Any],
    stream: bool,
    params: Mapping[str, Any],
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON body of a chat-completions request, checked for the usual mistakes."""
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a non-empty string, got {model!r}")
    if isinstance(messages, (str, bytes, dict)):
        raise TypeError("messages must be a list of message dicts, not a single str or dict")
    messages = list(messages)
    if not messages:
        raise ValueError("messages must not be empty")
    if "response_format" in params and is_pydantic_model(params["response_format"]):
        raise TypeError(
            "create() sends response_format as JSON: to parse the answer into a "
            "pydantic model, call parse() (or chat.stream()) with it"
        )
    body: dict[str, Any] = {"model": model, "messages": messages, **params}
    if "tools" in body:
        body["tools"] = wire_tools(body["tools"])  # functions and `Tool`s as their dicts
    if stream:
        body["stream"] = True
    if extra_body:
        body.update(extra_body)
    return body


class Completions:
    """`client.chat.completions`: the OpenAI-compatible `create` call."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        stream: Literal[False] = False,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        stream: Literal[True],
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletionStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        stream: bool,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion | ChatCompletionStream: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        stream: bool = False,
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChatCompletion | ChatCompletionStream:
        """Create a chat completion; with `stream=True`, a `ChatCompletionStream` of chunks.

        Takes the official SDK's argument names (`tools`, `tool_choice`,
        `temperature`, `max_tokens`, `response_format`, `stream_options`, ...);
        any keyword not named here goes into the JSON body as is. `tools` may
        hold Python functions and `@asyncchat.tool` functions too, sent as their
        tool dicts. `extra_body` is merged into the body last, `extra_headers`
        and `extra_query` into the request, `timeout` overrides the client's for
        this call.
        """
        body = build_body(model, messages, stream, params, extra_body)
        return await self._send(body, stream, timeout, extra_headers, extra_query)

    @overload
    async def parse(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        response_format: type[M],
        strategy: Strategy = "json_schema",
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ParsedChatCompletion[M]: ...

    @overload
    async def parse(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        response_format: Mapping[str, Any] | None = None,
        strategy: Strategy = "json_schema",
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ParsedChatCompletion[Any]: ...

    async def parse(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        response_format: Any = None,
        strategy: Strategy = "json_schema",
        timeout: float | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ParsedChatCompletion[Any]:
        """A completion whose answer is parsed: `choices[0].message.parsed`.

        `response_format` is a pydantic model class (the answer comes as an
        instance) or a `json_schema` / `json_object` response-format dict (the
        answer comes as decoded JSON). A model's schema is made strict as
        OpenAI requires. `strategy` says how the format is asked for:
        "json_schema" (the default), "json_object" (JSON mode, the schema in
        the system message), or "tool" (a forced tool call); see
        `asyncchat.structured`. Tools made with `pydantic_function_tool` have
        their calls' arguments validated into their models.

        Raises `LengthFinishReasonError` or `ContentFilterFinishReasonError`
        when the answer was cut or filtered, `StructuredOutputError` when it is
        not in the format.
        """
        if params.pop("stream", False):
            raise TypeError(
                "parse() returns a whole completion: to stream one, use "
                "client.chat.stream(..., response_format=...)"
            )
        structured = StructuredRequest.of(response_format, strategy, params.get("tools"))
        body = build_body(model, messages, False, params, extra_body)
        body["messages"] = structured.shape(body["messages"], body)
        try:
            completion = await self._send(body, False, timeout, extra_headers, extra_query)
        except BadRequestError as exc:
            _hint_other_strategy(exc, structured)
            raise
        assert isinstance(completion, ChatCompletion)
        return structured.parse(completion)

    async def _send(
        self,
        body: dict[str, Any],
        stream: bool,
        timeout: float | Timeout | None,
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, Any] | None,
        pacer: Pacer | None = None,
    ) -> ChatCompletion | ChatCompletionStream:
        client = self._client
        tokens = estimate_tokens(body) if pacer is not None and pacer.counts_tokens else 0
        sent = await client._request(
            "POST",
            "/chat/completions",
            body,
            stream=stream,
            timeout=timeout,
            extra_headers=extra_headers,
            extra_query=extra_query,
            pacer=pacer,
            tokens=tokens,
        )
        response = sent.response
        if not stream:
            assert sent.content is not None
            try:
                if looks_like_sse(sent.content):  # a server that streams regardless
                    data = await completion_from_event_stream(
                        response,
                        sent.content,
                        url=sent.url,
                        timeout=sent.timeout,
                        max_event_size=client.max_event_size,
                        request_id=sent.request_id,
                    )
                else:
                    data = decode_object(sent.content, response.status, sent.url)
            except BaseException as exc:
                sent.failed(exc)
                raise
            completion = ChatCompletion(data, sent.request_id, response.headers)
            if sent.operation is not None:
                sent.operation.succeeded(data)
            if tokens and pacer is not None:
                pacer.limiter.correct_tokens(tokens, reported_tokens(completion) or tokens)
            return completion
        try:
            chunks = await _open_stream(
                response,
                url=sent.url,
                timeout=sent.timeout,
                max_event_size=client.max_event_size,
                request_id=sent.request_id,
                timing=sent.stream_timing(),
            )
        except BaseException as exc:
            sent.failed(exc)
            raise
        client._open_streams.add(chunks)
        return chunks


class Chat:
    """`client.chat`: completions, and the streaming helpers."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.completions = Completions(client)

    async def stream_text(self, **params: Any) -> AsyncIterator[str]:
        """The text of the first choice, piece by piece, as it streams.

        Takes the arguments of `completions.create`; the request is closed when
        the loop ends, however it ends.
        """
        params.pop("stream", None)
        stream: ChatCompletionStream = await self.completions.create(stream=True, **params)
        async with stream:
            async for data in stream.json_chunks():
                choices = data.get("choices")
                for choice in choices if type(choices) is list else ():
                    if type(choice) is dict and choice.get("index", 0) == 0:
                        delta = choice.get("delta")
                        text = delta.get("content") if type(delta) is dict else None
                        if type(text) is list:  # parts (Mistral): their text
                            text = content_text(text)
                        if text and type(text) is str:
                            yield text

    async def batch(
        self,
        requests: Requests,
        *,
        concurrency: int = 64,
        return_exceptions: bool = True,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limit: RateLimit | None = None,
    ) -> list[ChatCompletion | Exception]:
        """Run many `completions.create` calls; the results in input order.

        `requests` is an iterable (or async iterable, read lazily) of keyword
        dicts for `create`. At most `concurrency` run at once, each with its own
        retries. A failed item holds its exception in place of a result; with
        `return_exceptions=False` the first failure cancels the rest and is raised.
        """
        results: list[ChatCompletion | Exception] = []
        finished = self.as_completed(
            requests,
            concurrency=concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            rate_limit=rate_limit,
        )
        async with aclosing(finished):  # a raise below cancels the rest at once
            async for index, result in finished:
                if not return_exceptions and isinstance(result, Exception):
                    raise result
                if index >= len(results):
                    results.extend([_PENDING] * (index + 1 - len(results)))
                results[index] = result
        return results

    async def as_completed(
        self,
        requests: Requests,
        *,
        concurrency: int = 64,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limit: RateLimit | None = None,
    ) -> AsyncGenerator[tuple[int, ChatCompletion | Exception], None]:
        """`(index, result)` for each request as it finishes; an exception object for a
        failure. Leaving the loop early cancels the requests still in flight.

        `requests_per_minute` and `tokens_per_minute` (estimated before sending,
        corrected from `usage`) set a rate limit shared by all the requests; a 429
        with `Retry-After`, or `x-ratelimit-remaining-*: 0`, pauses them all.
        """
        run_one = self._request_runner(requests_per_minute, tokens_per_minute, rate_limit)
        # Closing this generator early must close the fan-out (and cancel its workers)
        # now, not when the garbage collector gets to it.
        async with aclosing(fan_out(run_one, requests, concurrency=concurrency)) as items:
            async for item in items:
                yield item

    def _request_runner(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        rate_limit: RateLimit | None = None,
    ) -> Callable[[Mapping[str, Any]], Awaitable[ChatCompletion]]:
        """One fan-out's `run_one`: a dict of `create()` arguments -> its completion,
        every call paced by one shared rate limit (`rate_limit`, or an in-process
        `RateLimiter` under the per-minute ceilings)."""
        if rate_limit is not None and (requests_per_minute or tokens_per_minute):
            raise ValueError(
                "give the ceilings to your rate_limit, or requests_per_minute / "
                "tokens_per_minute without one, not both"
            )
        limiter = rate_limit or RateLimiter(
            requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute
        )
        pacer = Pacer(limiter, clock=self._client._clock, sleep=self._client._sleep)
        completions = self.completions

        async def run_one(request: Mapping[str, Any]) -> ChatCompletion:
            if not isinstance(request, Mapping):
                raise TypeError(
                    f"each request must be a dict of create() arguments, not {request!r}"
                )
            params = dict(request)
            if params.pop("stream", False):
                raise ValueError(
                    "batch and as_completed collect whole completions: drop stream=True"
                )
            try:
                model, messages = params.pop("model"), params.pop("messages")
            except KeyError as exc:
                raise TypeError(f"a request needs {exc.args[0]!r}") from None
            options = {name: params.pop(name, None) for name in _CALL_OPTIONS}
            body = build_body(model, messages, False, params, options["extra_body"])
            result = await completions._send(
                body,
                False,
                options["timeout"],
                options["extra_headers"],
                options["extra_query"],
                pacer,
            )
            assert isinstance(result, ChatCompletion)
            return result

        return run_one

    def run_tools(
        self,
        *,
        model: str,
        messages: Iterable[Any],
        tools: Sequence[Any],
        max_turns: int = 10,
        max_concurrency: int = 8,
        tool_timeout: float | None = None,
        on_error: Literal["tell", "raise"] = "tell",
        approve: Approve | None = None,
        on_result: OnResult | None = None,
        reset_tool_choice: bool = True,
        **params: Any,
    ) -> ToolRunner:
        """Run the tool-calling loop: stream an answer, run the tools it calls, send the
        results back, until the model answers without calling one.

        `tools` holds functions (sync or async; the schema comes from their type
        hints and docstring), `@asyncchat.tool` functions, `@asyncchat.custom_tool`
        functions (called with the model's free-form text), and tool dicts (a call
        to one, having no function, ends the run for you to handle). Calls of one
        turn run concurrently, at most `max_concurrency` at once, each within
        `tool_timeout` seconds (or its own `@tool(timeout=)`). An error in a call
        is sent to the model as that call's result, or raised as `ToolCallError`
        with `on_error="raise"`. `approve(call)` (sync or async) runs before each
        call: True runs it, False or a text vetoes it (the text is sent back);
        `on_result(finished)` may return a replacement for the result.
        `runner.stop()` ends the run after the current turn. More than
        `max_turns` requests raise `MaxTurnsError`. A `tool_choice` that makes the
        model call a tool holds for the first turn only, unless
        `reset_tool_choice=False`: then "auto" (or allowed tools in "auto" mode),
        so the model can answer. Other keywords go to each request, as in
        `chat.stream()`.

            runner = client.chat.run_tools(model=..., messages=..., tools=[get_weather])
            final = await runner.final_completion()      # or: async for event in runner
            runner.messages                              # the whole conversation
        """
        params.pop("stream", None)
        return ToolRunner(
            self,
            messages,
            tools,
            {"model": model, **params},
            max_turns=max_turns,
            max_concurrency=max_concurrency,
            tool_timeout=tool_timeout,
            on_error=on_error,
            approve=approve,
            on_result=on_result,
            reset_tool_choice=reset_tool_choice,
        )

    @overload
    def stream(
        self, *, response_format: type[M], strategy: Strategy = "json_schema", **params: Any
    ) -> ChatStreamManager[M]: ...

    @overload
    def stream(
        self,
        *,
        response_format: Mapping[str, Any] | None = None,
        strategy: Strategy = "json_schema",
        **params: Any,
    ) -> ChatStreamManager[Any]: ...

    def stream(
        self, *, response_format: Any = None, strategy: Strategy = "json_schema", **params: Any
    ) -> ChatStreamManager[Any]:
        """`async with client.chat.stream(...) as s:` iterate typed events, then
        `await s.final_completion()`.

        Takes the arguments of `completions.create`, and `response_format` and
        `strategy` as `completions.parse` does: the answer's text deltas then
        carry `parsed` (the JSON value so far), and the final completion
        `message.parsed`. Tool-argument deltas carry `parsed` in any case.
        """
        params.pop("stream", None)
        if isinstance(response_format, Mapping) and response_format.get("type") not in (
            "json_schema",
            "json_object",
        ):
            params["response_format"] = response_format  # "text", or a provider's own: sent as is
            response_format = None
        structured = StructuredRequest.of(response_format, strategy, params.get("tools"))
        completions = self.completions

        async def open_stream() -> ChatCompletionStream:
            fields = dict(params)
            model, messages = fields.pop("model", None), fields.pop("messages", None)
            options = {name: fields.pop(name, None) for name in _CALL_OPTIONS}
            body = build_body(model, messages, True, fields, options["extra_body"])
            body["messages"] = structured.shape(body["messages"], body)
            try:
                stream = await completions._send(
                    body, True, options["timeout"], options["extra_headers"], options["extra_query"]
                )
            except BadRequestError as exc:
                _hint_other_strategy(exc, structured)
                raise
            assert isinstance(stream, ChatCompletionStream)
            return stream

        extra_body = params.get("extra_body") or {}
        logprobs = bool(params.get("logprobs") or extra_body.get("logprobs"))
        return ChatStreamManager(open_stream, structured, logprobs=logprobs)


def _hint_other_strategy(error: BadRequestError, structured: StructuredRequest) -> None:
    """Add to a 400 that refuses the `json_schema` format what to do instead."""
    if (
        structured.output is not None
        and structured.strategy == "json_schema"
        and json_schema_refused(error.status_code, error.message)
    ):
        error.message += (
            " (this server does not take a json_schema response_format: "
            "pass strategy='json_object', or strategy='tool')"
        )
        error.args = (error.message,)


async def _open_stream(
    response: Response,
    *,
    url: str,
    timeout: Timeout,
    max_event_size: int,
    request_id: str | None,
    timing: StreamTiming | None,
) -> ChatCompletionStream:
    """Wrap a 2xx response as a stream, after checking it is an event stream."""
    content_type = response.headers.get("Content-Type", "").lower()
    if "text/html" in content_type:
        try:
            preview = (await response.receive())[:200].decode("utf-8", "replace")
        finally:
            response.close()
        raise MalformedStreamError(
            f"POST {url} answered with an HTML page instead of an event stream "
            f"(a proxy or login page?): {preview!r}",
            request_id=request_id,
        )
    return ChatCompletionStream(
        response,
        url=url,
        timeout=timeout,
        max_event_size=max_event_size,
        request_id=request_id,
        json_body=content_type.startswith(_JSON_TYPES),
        timing=timing,
    )


def reported_tokens(completion: ChatCompletion) -> int | None:
    """`usage.total_tokens` when the server sent a usable count; None for a missing
    or odd one (a string, a negative number), which is then ignored."""
    return tokens_reported_in(completion._data)


def tokens_reported_in(answer: Mapping[str, Any]) -> int | None:
    """`reported_tokens` of a completion's JSON, as a batch result file holds it."""
    usage = answer.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return None
