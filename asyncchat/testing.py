"""`MockServer`: a real OpenAI-compatible HTTP server on 127.0.0.1, for tests and demos.

    async with MockServer() as server:
        client = asyncchat.Client(base_url=server.base_url, api_key="test")

`POST /chat/completions` answers deterministically from the request: the reply
is "You said: <last user text>". With `stream: true` it streams one chunk per
word (then a chunk with `finish_reason`, a usage chunk when
`stream_options.include_usage` is set, then `[DONE]`; `StreamStyle(usage=...)`
puts usage where Moonshot and Groq do).

Tool calls: when the request has `tools`, `tool_choice` is not "none" and the
last message is the user's (or, whatever the last message, when `tool_choice`
requires a call: "required", a named tool, `allowed_tools` in "required" mode),
the reply is a tool call to the tool `tool_choice` names, else to each tool
(of the allowed ones) whose name appears in the user's text (the first tool
when none is named; only the first with `parallel_tool_calls: false`). The
arguments follow the tool's schema: each string is the last word of the user's
text, an enum its first value, a number 1, an array one item. A custom tool
(`"type": "custom"`) is called with the user's text as its input, streamed in
pieces as arguments are. A `tool_choice` without `tools`, or naming a tool not
in them, gets a 400.

Token limit: with `max_completion_tokens` (or `max_tokens`) the answer stops
there, with `finish_reason` "length", counting a word a token and a tool call
`TOOL_CALL_TOKENS`: the call being written then comes with part of its arguments.

Structured outputs: with a `json_schema` response format the reply is a JSON
object made the same way from its schema; with `json_object`, from a JSON schema
written on a line of its own in a system message (as `parse(strategy=
"json_object")` writes it), else `{"answer": <the reply text>}`. A streamed
JSON reply comes `argument_fragment_size` characters a chunk. `response_formats`
lists the format types the server takes; `MockServer(response_formats=("text",
"json_object"))` refuses `json_schema` with a 400, as DeepSeek does;
`StreamStyle(json_wrapper=...)` wraps the JSON as models that ignore the format do.

Every request is recorded in `server.requests`. `server.enqueue(...)` scripts
the next answers (status, body, headers, delay) ahead of the default one, and
`server.style` (a `StreamStyle`) makes streams look like other servers' or
break in chosen ways.

Log probabilities: with `logprobs: true`, each token of a text answer comes with
a made-up log probability and the `top_logprobs` likeliest tokens in its place
(itself first, then `<alt1>`, `<alt2>`, ...), as OpenAI sends them; a
`top_logprobs` without `logprobs: true`, or outside 0 to 20, gets a 400.

Moderated completions: with `moderation: {"model": ...}`, the answer reports a
made-up moderation of the user's text (`input`) and of the answer (`output`),
flagged under each of `MODERATION_CATEGORIES` that the text names; streamed, in a
chunk of its own with no choices, after the last choice's `finish_reason`.

`MockServer(turns=[Turn(...), ...])` plays a scripted model instead, for testing
an agent: each request gets the next turn (tool calls, or a final answer), and
is checked against what the script expects (see `Turn`).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from asyncchat._http import Request
from asyncchat._mockbatch import GLM_PREFIX, BatchSettings, MockBatches
from asyncchat._mockscript import Turn, TurnScript, offered_tools, tool_spec
from asyncchat._mockthinking import REASONING, Thinking, refusal, signed
from asyncchat._mocktransport import MockResponse, MockTransport

__all__ = [
    "BatchSettings",
    "MockResponse",
    "MockServer",
    "MockTransport",
    "RecordedRequest",
    "Request",
    "StreamStyle",
    "ToolCallStyle",
    "Turn",
    "TurnScript",
    "UsageStyle",
    "mock_embedding",
]

# How a stream's tool calls are cut: as OpenAI does; each call whole in one chunk
# (GLM, Ollama); without `index` (Gemini); id, type and name in every fragment (some
# vLLM builds); arguments as a JSON object; each fragment with all the arguments so
# far (Baidu Qianfan); the arguments but their closing brace, then the whole
# arguments again, re-serialized (vLLM's GLM tool parser); or every call at index 0
# (Ollama, proxies from other APIs); or the name in two pieces (Gemini at times); or
# every later fragment with an empty id and the name "null" (LiteLLM at times).
ToolCallStyle = Literal[
    "openai",
    "whole",
    "no_index",
    "repeat_name",
    "object_arguments",
    "cumulative",
    "restated",
    "index_zero",
    "split_name",
    "null_name",
]
# Where a stream's usage goes: in a last chunk with no choices when
# `stream_options.include_usage` asks (OpenAI); inside the finishing choice, always
# (Moonshot); in the finishing chunk's `x_groq`, always, and in a last chunk when
# asked too (Groq).
UsageStyle = Literal["openai", "in_choice", "x_groq"]
CREATED = 1718421897


@dataclass
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    body: Any  # the decoded JSON, or None
    peer: tuple[str, int] | None  # the client's address and port: one per connection


@dataclass
class StreamStyle:
    """How streams look, to imitate a given server or a broken one."""

    tokens: int | None = None  # content chunks to send; None: one per word of the reply
    chunk_delay: float = 0.0  # seconds between chunks
    line_ending: str = "\n"  # "\r\n" or "\r" like some servers
    keepalive: bool = False  # a ": keep-alive" comment before each chunk
    send_done: bool = True  # end with data: [DONE]
    send_finish_reason: bool = True
    tool_calls: ToolCallStyle = "openai"
    argument_fragment_size: int = 4  # characters of arguments per fragment
    # Stream thinking first: under this key, or as `thinking` content parts (Mistral).
    reasoning: Literal["reasoning_content", "reasoning", "thinking"] | None = None
    # Wrap a JSON answer as models that ignore the format do, streamed or not: in a
    # Markdown code fence (Gemini at times, MiniMax), or after a `<think>` block
    # (DeepSeek-R1 served without a reasoning parser).
    json_wrapper: Literal["fence", "think"] | None = None
    usage: UsageStyle = "openai"
    # `finish_reason: "stop"` on every chunk before the real finish, as proxies send it
    # (gcli2api on all, OpenWebUI on those without content): the answer goes on after.
    finish_every_chunk: bool = False
    # Azure's content-filter annotations: the prompt's results in a first chunk with no
    # choices, the answer's in a chunk after the finish, both with an empty id and model.
    filter_annotations: bool = False
    error_after: int | None = None  # send an error event after this many chunks, then end
    drop_after: int | None = None  # cut the connection after this many chunks
    events_per_write: int = 1  # how many SSE events go into one socket write
    stream_always: bool = False  # stream even when not asked to (unsloth's server, mini-sglang)


@dataclass
class _Answer:
    """What the server answers a request with."""

    tool_calls: list[dict[str, Any]]
    tokens: list[str]
    cut_at: int | None = None  # the request's token limit, when the answer stopped at it

    @property
    def completion_tokens(self) -> int:
        """What it costs: a token a word, `TOOL_CALL_TOKENS` a tool call."""
        if self.cut_at is not None:
            return self.cut_at
        return len(self.tokens) + TOOL_CALL_TOKENS * len(self.tool_calls)

    @property
    def finish_reason(self) -> str:
        if self.cut_at is not None:
            return "length"
        return "tool_calls" if self.tool_calls else "stop"

    def within(self, limit: int | None) -> _Answer:
        """The answer of a model stopped after `limit` completion tokens: the words
        that fit, or the calls that fit and the next one cut short, as it was being
        written (its arguments or input in proportion)."""
        if limit is None or self.completion_tokens <= limit:
            return self
        if not self.tool_calls:
            return _Answer([], self.tokens[:limit], cut_at=limit)
        whole, part = divmod(limit, TOOL_CALL_TOKENS)
        calls = self.tool_calls[:whole]
        calls.append(_cut_call(self.tool_calls[whole], part / TOOL_CALL_TOKENS))
        return _Answer(calls, [], cut_at=limit)


def _cut_call(call: dict[str, Any], share: float) -> dict[str, Any]:
    """A tool call whose arguments (or custom input) stop `share` of the way through."""
    kind = call["type"]
    key = "input" if kind == "custom" else "arguments"
    text = call[kind][key]
    return {**call, kind: {**call[kind], key: text[: int(len(text) * share)]}}


def _token_limit(body: dict[str, Any]) -> int | None:
    """The completion tokens a request allows: `max_completion_tokens`, else the older
    `max_tokens`; None for no limit (or one that is not a positive integer, which a
    request to the server is refused for)."""
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    return limit if type(limit) is int and limit >= 1 else None


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


def _error(status: int, message: str, request_id: str | None = None, **fields: Any) -> web.Response:
    """An OpenAI-shaped error answer: `{"error": {"message", "type", ...fields}}`."""
    error = {"message": message, "type": "invalid_request_error", **fields}
    headers = {"x-request-id": request_id} if request_id else None
    return web.json_response({"error": error}, status=status, headers=headers)


def mock_embedding(text: str, size: int = 8) -> list[float]:
    """The mock server's vector for a text: the same every time, exact in float32."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(size)]


def _thinking_part(text: str) -> list[dict[str, Any]]:
    """Thinking as Mistral streams it: a content part."""
    return [{"type": "thinking", "thinking": [{"type": "text", "text": text}]}]


def _words(text: str) -> list[str]:
    """Split text into tokens that join back to it exactly (each keeps its leading space)."""
    return re.findall(r"\s*\S+", text) or [text]


# What Azure's content filter finds in a harmless text.
_SAFE = {
    category: {"filtered": False, "severity": "safe"}
    for category in ("hate", "self_harm", "sexual", "violence")
}
# The fields of an annotation chunk that name no answer: Azure leaves them empty.
_UNNAMED = {"id": "", "object": "", "created": 0, "model": ""}


def _prompt_annotation() -> dict[str, Any]:
    """The chunk that opens an Azure stream: the filter's results on the prompt."""
    results = [{"prompt_index": 0, "content_filter_results": _SAFE}]
    return {**_UNNAMED, "prompt_filter_results": results, "choices": [], "usage": None}


def _answer_annotation(answer: _Answer) -> dict[str, Any]:
    """An Azure annotation chunk: the filter's results on the text already sent, with
    no delta (its asynchronous filter sends one after the finish)."""
    end = len("".join(answer.tokens))
    offsets = {"check_offset": end, "start_offset": 0, "end_offset": end}
    choice = {
        "index": 0,
        "finish_reason": None,
        "content_filter_results": _SAFE,
        "content_filter_offsets": offsets,
    }
    return {**_UNNAMED, "choices": [choice], "usage": None}


MAX_TOP_LOGPROBS = 20  # OpenAI's limit
TOOL_CALL_TOKENS = 10  # what the mock counts a tool call as, in usage and against max_tokens


def _top_logprobs_asked(body: dict[str, Any]) -> int | None:
    """How many likeliest tokens each token's log probability comes with; None
    when the request does not ask for log probabilities."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if type(top) is int else 0


def _token_logprob(token: str, position: int, top: int) -> dict[str, Any]:
    """A token's made-up log probability, and `top` likeliest tokens in its place
    (the token itself first), the same for the same answer every time."""
    logprob = round(-0.05 * (1 + position % 7), 2)
    alternatives = [(token, logprob)] + [
        (f"<alt{k}>", round(logprob - k, 2)) for k in range(1, top)
    ]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": text, "logprob": value, "bytes": list(text.encode())}
            for text, value in alternatives[:top]
        ],
    }


MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def _moderation_side(model: str, text: str) -> dict[str, Any]:
    """A made-up moderation of a text: flagged under each category the text names."""
    lowered = text.lower()
    flags = {category: category in lowered for category in MODERATION_CATEGORIES}
    result = {
        "type": "moderation_result",
        "model": model,
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": {name: 0.9 if flag else 0.01 for name, flag in flags.items()},
        "category_applied_input_types": {name: ["text"] for name in flags},
    }
    return {"type": "moderation_results", "model": model, "results": [result]}


def _tools_to_call(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The tools the answer calls, each as its kind and its spec. A model left to
    choose calls tools only in answer to the user; one made to call a tool
    (`tool_choice` "required", a named tool, or allowed tools in "required" mode)
    calls one whatever the conversation's last message, as a real model does."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or choice == "none":
        return []
    if _tool_choice_problem(choice, tools) is not None:
        return []  # refused with a 400 before this, but not in a batch file's line
    specs = [spec for spec in map(tool_spec, tools) if spec is not None]
    required = choice == "required"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = offered_tools(choice["allowed_tools"]["tools"])
        specs = [(kind, spec) for kind, spec in specs if (kind, spec.get("name")) in allowed]
        required = choice["allowed_tools"]["mode"] == "required"
    else:
        forced = tool_spec(choice)
        if forced is not None:
            kind, name = forced[0], forced[1].get("name")
            return [(k, spec) for k, spec in specs if k == kind and spec.get("name") == name]
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not required and not (isinstance(last, dict) and last.get("role") == "user"):
        return []
    text = _last_user_text(messages)
    named = [(kind, spec) for kind, spec in specs if str(spec.get("name", "")) in text]
    calls = named or specs[:1]
    return calls[:1] if body.get("parallel_tool_calls") is False else calls


def _tool_choice_problem(choice: Any, tools: Any) -> str | None:
    """Why OpenAI would refuse this `tool_choice` with a 400; None when it is fine."""
    if choice is None or choice == "none":
        return None
    if not isinstance(tools, list) or not tools:
        return "tool_choice is only allowed when tools are given"
    if choice in ("auto", "required"):
        return None
    offered = offered_tools(tools)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if (
            not isinstance(allowed, dict)
            or allowed.get("mode") not in ("auto", "required")
            or not isinstance(allowed.get("tools"), list)
        ):
            return "tool_choice.allowed_tools needs a mode ('auto' or 'required') and tools"
        named = allowed["tools"]
    else:
        named = [choice]
    for item in named:
        spec = tool_spec(item)
        if spec is None or not isinstance(spec[1].get("name"), str):
            return (
                "tool_choice must be 'none', 'auto', 'required', a tool to call, "
                f"or allowed_tools, not {orjson.dumps(item).decode()[:80]}"
            )
        kind, name = spec[0], spec[1]["name"]
        if (kind, name) not in offered:
            return f"tool_choice names the {kind} tool {name!r}, which is not in tools"
    return None


def _example_arguments(function: dict[str, Any], text: str) -> dict[str, Any]:
    """Arguments that satisfy the function's JSON schema, taken from the user's text."""
    parameters = function.get("parameters")
    value = _example(parameters if isinstance(parameters, dict) else {}, text)
    return value if isinstance(value, dict) else {}


def _example(schema: dict[str, Any], text: str) -> Any:
    """A value that satisfies a JSON schema: strings are the last word of `text`."""
    last_word = re.sub(r"\W", "", text.split()[-1]) if text.split() else "value"
    return _example_of(schema, schema, last_word, 0)


def _example_of(schema: Any, root: dict[str, Any], word: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 8:  # a recursive schema stops here
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _example_of(target, root, word, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            real = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            return _example_of((real or branches)[0], root, word, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        return {
            name: _example_of(sub, root, word, depth + 1)
            for name, sub in (properties.items() if isinstance(properties, dict) else ())
        }
    if kind == "array":
        return [_example_of(schema.get("items", {}), root, word, depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return word


def _schema_in_system_message(messages: Any) -> dict[str, Any] | None:
    """A JSON schema written on a line of its own in a system message."""
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            continue
        content = message.get("content")
        for line in content.splitlines() if isinstance(content, str) else ():
            if line.startswith("{"):
                try:
                    schema = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(schema, dict) and ("properties" in schema or "type" in schema):
                    return schema
    return None


class MockServer:
    """An OpenAI-compatible server on a free loopback port.

    `api_key`: when given, requests must carry `Authorization: Bearer <api_key>`
    or get a 401. `reply`: the text to answer with (or a function of the request
    body) instead of the echo. `delay`: seconds to wait before each default
    answer (to hold requests in flight). `models`: the ids `GET /v1/models` lists.
    `resolved_models`: the model an answer names for a requested one, as OpenAI
    answers a request for `gpt-4o` from `gpt-4o-2024-08-06` (others answer as asked).
    `response_formats`: the `response_format` types it takes; others get a 400.
    `turns`: play a scripted model instead (see `Turn`); `server.turns.errors`
    lists what the client sent that the script did not expect.
    `requests_per_minute`: a provider's limit, a second's worth at once: requests
    over it get a 429 with `Retry-After`, counted in `rate_limited`.
    `batch`: how its Batch API behaves (`BatchSettings`: pace, expiry, failing
    ids, limits); `server.batch` holds its files and batches. The same server
    answers as GLM under `server.glm_base_url`.
    `ssl_context`: serve HTTPS with this server-side context (its `base_url` is
    then `https://`), to test a client's `verify=` and `cert=` settings.
    `loading`: for its first seconds after `start()`, chat completions and
    embeddings get a 503 "Loading model", as llama.cpp's server answers while it
    loads one (`GET /v1/models` answers, as there); counted in `unavailable`.
    `thinking`: a thinking model whose thought must come back with its tool calls
    ("deepseek": its reasoning; "gemini": its calls' thought signatures), or the
    next request gets that provider's 400 (see `_mockthinking`).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        reply: str | Callable[[dict[str, Any]], str] | None = None,
        style: StreamStyle | None = None,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("mock-model",),
        response_formats: Sequence[str] = ("text", "json_object", "json_schema"),
        turns: Sequence[Turn] | None = None,
        requests_per_minute: float | None = None,
        batch: BatchSettings | None = None,
        resolved_models: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        loading: float = 0.0,
        thinking: Thinking | None = None,
    ) -> None:
        self.api_key = api_key
        self.thinking = thinking
        self.ssl_context = ssl_context
        self.resolved_models = dict(resolved_models or {})
        self.batch = MockBatches(
            batch or BatchSettings(),
            lambda body, request_id: self._completion(body, request_id, self._plan(body)),
            lambda request: self._unauthorized(request, "mock-batch"),
        )
        self.requests_per_minute = requests_per_minute
        self.rate_limited = 0  # the 429s the limit gave
        self.loading = loading
        self.unavailable = 0  # the 503s given while loading
        self._loaded_at = 0.0  # time.monotonic() from which it serves
        self._bucket = (0.0, float("-inf"))  # requests left of a second's worth, as of when
        self.turns = None if turns is None else TurnScript(turns)
        self.response_formats = tuple(response_formats)
        self.models = list(models)
        self.delay = delay  # seconds before every default answer
        self.reply = reply
        self.style = style or StreamStyle()
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[MockResponse] = deque()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._counter = 0

    @property
    def base_url(self) -> str:
        return f"{self._origin}/v1"

    @property
    def glm_base_url(self) -> str:
        """The base URL under which it speaks GLM's dialect (`/api/paas/v4`)."""
        return f"{self._origin}{GLM_PREFIX}"

    @property
    def _origin(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connection_count(self) -> int:
        """How many distinct client connections the recorded requests came over."""
        return len({request.peer for request in self.requests})

    def enqueue(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        *,
        json: Any = None,
        sse: list[dict[str, Any] | str] | None = None,
    ) -> None:
        """Answer the next request with this instead of the default (see `MockResponse`).

        A 200 with no body keeps the default answer, adding `delay` before it and
        `headers` to it (a slow server, or rate-limit headers).
        """
        self._script.append(MockResponse(status, body, headers or {}, delay, json=json, sse=sse))

    def enqueue_stream(self, events: str | bytes) -> None:
        """Answer the next request with these raw event-stream bytes (a recorded transcript)."""
        self.enqueue(200, events, headers={"Content-Type": "text/event-stream"})

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/embeddings", self._embeddings)
        app.router.add_post(f"{GLM_PREFIX}/chat/completions", self._handle)
        self.batch.add_routes(app, "/v1")
        self.batch.add_routes(app, GLM_PREFIX)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        # The runner's public list of bound addresses: any event loop (uvloop too).
        self.port = self._runner.addresses[0][1]
        self._loaded_at = time.monotonic() + self.loading

    async def stop(self) -> None:
        """Stop serving. Handlers still running (a delayed answer, a slow stream) are
        cancelled rather than waited for, so a test's teardown takes no time."""
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.batch.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- request handling --------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, f"no route for {request.method} {request.path}", code="not_found")

    def _record(self, request: web.Request, raw: bytes, body: Any) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                raw_body=raw,
                body=body,
                peer=request.transport.get_extra_info("peername") if request.transport else None,
            )
        )

    def _unauthorized(self, request: web.Request, request_id: str) -> web.Response | None:
        """A 401 unless the request carries the key this server requires."""
        authorization = request.headers.get("Authorization")
        if self.api_key is None or authorization == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", request_id, code="invalid_api_key")

    def _still_loading(self, request_id: str) -> web.Response | None:
        """llama.cpp's answer while it loads its model, until `loading` is over."""
        if time.monotonic() >= self._loaded_at:
            return None
        self.unavailable += 1
        return _error(503, "Loading model", request_id, type="unavailable_error", code=503)

    def _over_limit(self, request_id: str) -> web.Response | None:
        """A 429 once `requests_per_minute` is spent: a bucket that holds a second's
        worth of requests and refills evenly, as providers meter."""
        if not self.requests_per_minute:
            return None
        per_second = self.requests_per_minute / 60
        capacity = max(1.0, per_second)
        left, as_of = self._bucket
        now = time.monotonic()
        left = min(capacity, left + (now - as_of) * per_second)
        if left >= 1:
            self._bucket = (left - 1, now)
            return None
        self._bucket = (left, now)
        self.rate_limited += 1
        wait = (1 - left) / per_second
        response = _error(
            429, "Rate limit reached for requests", request_id, code="rate_limit_exceeded"
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        response.headers["x-ratelimit-limit-requests"] = f"{self.requests_per_minute:g}"
        response.headers["x-ratelimit-remaining-requests"] = "0"
        response.headers["x-ratelimit-reset-requests"] = f"{wait:.3f}s"
        return response

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, await request.read(), None)
        denied = self._unauthorized(request, "mock-models")
        if denied is not None:
            return denied
        models = [
            {"id": model, "object": "model", "created": CREATED, "owned_by": "asyncchat"}
            for model in self.models
        ]
        return web.json_response({"object": "list", "data": models})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """A deterministic vector per input (`dimensions` floats, 8 by default),
        base64 float32 when `encoding_format` asks for it."""
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self._record(request, raw, body)
        denied = self._still_loading("mock-embeddings")
        if denied is None:
            denied = self._unauthorized(request, "mock-embeddings")
        if denied is not None:
            return denied
        inputs = body.get("input") if isinstance(body, dict) else None
        if not inputs:
            return _error(400, "'input' is required")
        assert isinstance(body, dict)
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else 8
        data = []
        for index, text in enumerate(inputs):
            vector = mock_embedding(str(text), size)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(array.array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(str(text).split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "model": self._answering_model(body),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _answering_model(self, body: dict[str, Any]) -> Any:
        model = body.get("model")
        return self.resolved_models.get(model, model) if isinstance(model, str) else model

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._handle_request(request)
        finally:
            self._handlers.discard(task)

    async def _handle_request(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self._record(request, raw, body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        self._counter += 1
        request_id = f"mock-req-{self._counter}"
        extra_headers: dict[str, str] = {}
        if self._script:
            scripted = self._script.popleft()
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            if scripted.status != 200 or scripted.has_body:
                return self._scripted(scripted, request_id)
            extra_headers = scripted.headers
        loading = self._still_loading(request_id)  # at once: the model is not there to wait for
        if loading is not None:
            return loading
        if self.delay:
            await asyncio.sleep(self.delay)
        denied = self._unauthorized(request, request_id)
        if denied is None:
            denied = self._over_limit(request_id)
        if denied is not None:
            return denied
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(
                400, "the body must be a JSON object with 'messages'", request_id, param="messages"
            )
        refused = (
            self._refused_format(body, request_id)
            or self._refused_logprobs(body, request_id)
            or self._refused_moderation(body, request_id)
            or self._refused_tool_choice(body, request_id)
            or self._refused_token_limit(body, request_id)
            or self._refused_thinking(body, request_id)
        )
        if refused is not None:
            return refused
        if self.turns is None:
            answer = self._plan(body)
        else:
            played = self.turns.play(body)
            if isinstance(played, str):
                return _error(400, played, request_id, code="script")  # why, for the test
            words = _words(played.content) if played.content else []
            answer = self._signed(_Answer(played.tool_calls, words)).within(_token_limit(body))
        if body.get("stream") or self.style.stream_always:
            return await self._stream(request, body, request_id, answer, extra_headers)
        return web.Response(
            body=orjson.dumps(self._completion(body, request_id, answer)),
            content_type="application/json",
            headers={"x-request-id": request_id, **extra_headers},
        )

    def _refused_format(self, body: dict[str, Any], request_id: str) -> web.Response | None:
        """DeepSeek's answer to a response format it does not take."""
        response_format = body.get("response_format")
        if not isinstance(response_format, dict):
            return None
        if response_format.get("type") in self.response_formats:
            return None
        return _error(
            400,
            "This response_format type is unavailable now",
            request_id,
            param=None,
            code="invalid_request_error",
        )

    @staticmethod
    def _refused_logprobs(body: dict[str, Any], request_id: str) -> web.Response | None:
        """OpenAI's answer to `top_logprobs` it cannot give."""
        top = body.get("top_logprobs")
        if top is None:
            return None
        if type(top) is not int or not 0 <= top <= MAX_TOP_LOGPROBS:
            message = f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}"
        elif body.get("logprobs") is not True:
            message = "top_logprobs needs logprobs set to true"
        else:
            return None
        return _error(400, message, request_id, param="top_logprobs")

    @staticmethod
    def _refused_moderation(body: dict[str, Any], request_id: str) -> web.Response | None:
        """OpenAI's answer to a `moderation` with no moderation model."""
        moderation = body.get("moderation")
        if moderation is None:
            return None
        if isinstance(moderation, dict) and isinstance(moderation.get("model"), str):
            return None
        return _error(400, "moderation.model must be a string", request_id, param="moderation")

    @staticmethod
    def _refused_tool_choice(body: dict[str, Any], request_id: str) -> web.Response | None:
        """OpenAI's answer to a `tool_choice` the request's tools cannot meet."""
        problem = _tool_choice_problem(body.get("tool_choice"), body.get("tools"))
        if problem is None:
            return None
        return _error(400, problem, request_id, param="tool_choice")

    @staticmethod
    def _refused_token_limit(body: dict[str, Any], request_id: str) -> web.Response | None:
        """OpenAI's answer to a token limit that is not a positive integer."""
        for name in ("max_completion_tokens", "max_tokens"):
            limit = body.get(name)
            if limit is not None and (type(limit) is not int or limit < 1):
                return _error(
                    400, f"{name} must be an integer of at least 1", request_id, param=name
                )
        return None

    def _refused_thinking(self, body: dict[str, Any], request_id: str) -> web.Response | None:
        """A thinking model's answer to a conversation that dropped its thought."""
        if self.thinking is None:
            return None
        error = refusal(self.thinking, body["messages"])
        if error is None:
            return None
        headers = {"x-request-id": request_id}
        return web.json_response(error, status=400, headers=headers)

    def _signed(self, answer: _Answer) -> _Answer:
        """The answer with its first call signed, when the model signs its calls."""
        if self.thinking != "gemini" or not answer.tool_calls:
            return answer
        return _Answer(signed(answer.tool_calls), answer.tokens, answer.cut_at)

    @staticmethod
    def _moderation(body: dict[str, Any], answer: _Answer) -> dict[str, Any] | None:
        """What moderated completions report, when the request asks for them."""
        moderation = body.get("moderation")
        if not isinstance(moderation, dict):
            return None
        model = moderation["model"]
        said = _last_user_text(body.get("messages"))
        return {
            "input": _moderation_side(model, said),
            "output": _moderation_side(model, "".join(answer.tokens)),
        }

    def _scripted(self, scripted: MockResponse, request_id: str) -> web.Response:
        headers, pieces = scripted.render()
        headers = {"x-request-id": request_id, **headers}
        return web.Response(status=scripted.status, body=b"".join(pieces), headers=headers)

    def _reply_text(self, body: dict[str, Any]) -> str:
        if callable(self.reply):
            return self.reply(body)
        if self.reply is not None:
            return self.reply
        echo = f"You said: {_last_user_text(body.get('messages'))}"
        answer = self._structured_answer(body, echo)
        if answer is None:
            return echo
        text = orjson.dumps(answer).decode()
        wrapper = self.style.json_wrapper
        if wrapper == "fence":
            return f"```json\n{text}\n```"
        if wrapper == "think":
            return f"<think>\nThe user wants {{JSON}}.\n</think>\n\n{text}"
        return text

    @staticmethod
    def _structured_answer(body: dict[str, Any], echo: str) -> Any:
        """The JSON a structured-output request asks for; None for a text answer."""
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        text = _last_user_text(body.get("messages"))
        if kind == "json_schema":
            spec = response_format.get("json_schema")  # type: ignore[union-attr]
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return _example(schema if isinstance(schema, dict) else {}, text)
        if kind == "json_object":
            schema = _schema_in_system_message(body.get("messages"))
            return {"answer": echo} if schema is None else _example(schema, text)
        return None

    def _tokens(self, body: dict[str, Any]) -> list[str]:
        reply = self._reply_text(body)
        if reply.startswith(("{", "```", "<think>")):  # JSON: in pieces, as arguments come
            size = max(1, self.style.argument_fragment_size)
            words = [reply[start : start + size] for start in range(0, len(reply), size)]
        else:
            words = _words(reply)
        count = self.style.tokens
        if count is None:
            return words
        return [words[i % len(words)] for i in range(count)]

    def _tool_calls(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        text = _last_user_text(body.get("messages"))
        calls: list[dict[str, Any]] = []
        for index, (kind, spec) in enumerate(_tools_to_call(body)):
            call: dict[str, Any] = {"id": f"call_mock_{self._counter}_{index}", "type": kind}
            if kind == "custom":
                call["custom"] = {"name": spec.get("name"), "input": text}
            else:
                arguments = orjson.dumps(_example_arguments(spec, text)).decode()
                call["function"] = {"name": spec.get("name"), "arguments": arguments}
            calls.append(call)
        return calls

    @staticmethod
    def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
        prompt_tokens = len(orjson.dumps(body.get("messages")).split())
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _plan(self, body: dict[str, Any]) -> _Answer:
        """What to answer `body` with: tool calls, or else the text's tokens, within
        the request's token limit."""
        tool_calls = self._tool_calls(body)
        answer = _Answer(tool_calls, [] if tool_calls else self._tokens(body))
        return self._signed(answer).within(_token_limit(body))

    def _completion(self, body: dict[str, Any], request_id: str, answer: _Answer) -> dict[str, Any]:
        tool_calls = answer.tool_calls
        if tool_calls:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": tool_calls,
            }
        else:
            message = {"role": "assistant", "content": "".join(answer.tokens)}
        if self.thinking == "deepseek":
            message["reasoning_content"] = REASONING
        top = _top_logprobs_asked(body)
        logprobs = None
        if top is not None and not tool_calls:
            content = [_token_logprob(token, i, top) for i, token in enumerate(answer.tokens)]
            logprobs = {"content": content, "refusal": None}
        n = body["n"] if isinstance(body.get("n"), int) else 1
        completion = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": CREATED,
            "model": self._answering_model(body),
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "finish_reason": answer.finish_reason,
                    "logprobs": logprobs,
                }
                for i in range(n)
            ],
            "usage": self._usage(body, answer.completion_tokens * n),
        }
        moderation = self._moderation(body, answer)
        if moderation is not None:
            completion["moderation"] = moderation
        return completion

    # --- streaming -----------------------------------------------------------------

    def _chunks(
        self, body: dict[str, Any], request_id: str, answer: _Answer
    ) -> list[dict[str, Any]]:
        """Every chunk of the stream, before the style's breakage is applied."""
        style = self.style
        base = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self._answering_model(body),
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        reasoning = style.reasoning
        if reasoning is None and self.thinking == "deepseek":
            reasoning = "reasoning_content"
        if reasoning == "thinking":
            chunks += [chunk({"content": _thinking_part(word)}) for word in _words(REASONING)]
        elif reasoning:
            chunks += [chunk({reasoning: word}) for word in _words(REASONING)]
        tool_calls = answer.tool_calls
        if tool_calls:
            chunks[0]["choices"][0]["delta"]["content"] = None
            chunks += [chunk({"tool_calls": fragment}) for fragment in self._fragments(tool_calls)]
        else:
            tokens = answer.tokens
            top = _top_logprobs_asked(body)
            for position, token in enumerate(tokens):
                chunks.append(chunk({"content": token}))
                if top is not None:
                    logprob = _token_logprob(token, position, top)
                    chunks[-1]["choices"][0]["logprobs"] = {"content": [logprob], "refusal": None}
        if style.send_finish_reason:
            chunks.append(chunk({}, answer.finish_reason))
            if style.usage == "in_choice":
                usage = self._usage(body, answer.completion_tokens)
                chunks[-1]["choices"][0]["usage"] = usage
            elif style.usage == "x_groq":
                usage = self._usage(body, answer.completion_tokens)
                chunks[-1]["x_groq"] = {"id": f"req_{request_id}", "usage": usage}
        if style.finish_every_chunk:
            for early in chunks:
                choice = early["choices"][0]
                choice["finish_reason"] = choice["finish_reason"] or "stop"
        if style.filter_annotations:
            chunks = [_prompt_annotation(), *chunks, _answer_annotation(answer)]
        moderation = self._moderation(body, answer)
        if moderation is not None:
            chunks.append({**base, "choices": [], "moderation": moderation})
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage")
        if asked and style.usage != "in_choice":
            usage = self._usage(body, answer.completion_tokens)
            chunks.append({**base, "choices": [], "usage": usage})
        return chunks

    def _fragments(self, tool_calls: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Tool calls cut into `tool_calls` deltas in the style's manner. A custom
        tool's call streams its input as a function's call streams its arguments
        (`object_arguments` sends it whole: it is not JSON; `cumulative` and `restated`
        cut it as `openai` does)."""
        style = self.style.tool_calls
        if style == "whole":
            return [[{"index": i, **call}] for i, call in enumerate(tool_calls)]
        size = max(1, self.style.argument_fragment_size)
        fragments: list[list[dict[str, Any]]] = []
        for i, call in enumerate(tool_calls):
            kind = call["type"]
            key = "input" if kind == "custom" else "arguments"
            name, text = call[kind]["name"], call[kind][key]
            if style == "object_arguments":
                if kind == "function":  # the arguments as a JSON object, not as text
                    call = {**call, "function": {"name": name, "arguments": orjson.loads(text)}}
                fragments.append([{"index": i, **call}])
                continue
            head: dict[str, Any] = {"id": call["id"], "type": kind, kind: {"name": name, key: ""}}
            head.update((field, call[field]) for field in call.keys() - head.keys())
            index = 0 if style == "index_zero" else i
            if style != "no_index":
                head["index"] = index
            if style == "split_name":  # the name's first half, then the rest
                head[kind]["name"] = name[: len(name) // 2]
                fragments.append([head])
                head = {"index": index, kind: {"name": name[len(name) // 2 :], key: ""}}
            fragments.append([head])
            again = kind == "function" and style in ("cumulative", "restated")
            sent = text[:-1] if again and style == "restated" else text
            for start in range(0, len(sent), size):
                end = start + size
                piece = sent[:end] if again and style == "cumulative" else sent[start:end]
                fragment: dict[str, Any] = {kind: {key: piece}}
                if style != "no_index":
                    fragment["index"] = index
                if style == "repeat_name":
                    fragment.update(id=call["id"], type=kind)
                    fragment[kind]["name"] = name
                elif style == "null_name":
                    fragment.update(id="", type=kind)
                    fragment[kind]["name"] = "null"
                fragments.append([fragment])
            if again and style == "restated":
                whole = json.dumps(orjson.loads(text), ensure_ascii=False)  # ", " and ": "
                restated = {"name": None, "arguments": whole}
                fragments.append([{"index": i, "id": None, "type": None, "function": restated}])
        return fragments

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        request_id: str,
        answer: _Answer,
        extra_headers: dict[str, str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": request_id,
                **extra_headers,
            }
        )
        await response.prepare(request)
        # A client that goes away mid-stream is nothing to report.
        with contextlib.suppress(ConnectionResetError):
            await self._write_events(request, response, body, request_id, answer)
        return response

    async def _write_events(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: dict[str, Any],
        request_id: str,
        answer: _Answer,
    ) -> None:
        style = self.style
        end = style.line_ending
        events: list[bytes] = []
        for sent, chunk in enumerate(self._chunks(body, request_id, answer)):
            if style.drop_after is not None and sent >= style.drop_after:
                await self._flush(response, events)
                assert request.transport is not None
                request.transport.close()
                return
            if style.error_after is not None and sent >= style.error_after:
                error = {
                    "error": {
                        "message": "mock server error mid-stream",
                        "type": "server_error",
                        "code": None,
                    }
                }
                events.append(b"data: " + orjson.dumps(error) + (end * 2).encode())
                break
            text = f": keep-alive{end}{end}" if style.keepalive else ""
            events.append(text.encode() + b"data: " + orjson.dumps(chunk) + (end * 2).encode())
            if len(events) >= style.events_per_write:
                await self._flush(response, events)
                if style.chunk_delay:
                    await asyncio.sleep(style.chunk_delay)
        else:
            if style.send_done:
                events.append(f"data: [DONE]{end}{end}".encode())
        await self._flush(response, events)
        await response.write_eof()

    @staticmethod
    async def _flush(response: web.StreamResponse, events: list[bytes]) -> None:
        if events:
            await response.write(b"".join(events))
            events.clear()
