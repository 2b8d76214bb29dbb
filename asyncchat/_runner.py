"""`client.chat.run_tools(...)`: the tool-calling loop every agent writes by hand.

Each turn streams the model's answer (its events are handed out as they come);
when it asks for tools, the calls run concurrently (a sync function in a worker
thread), and their results go back in call order, as `tool` messages, for the
next turn. The loop ends when the model answers without calling a tool, so a
`tool_choice` that forces a call is relaxed after the first turn that calls
tools. A custom tool's call (free-form input, not JSON) runs its function with
that text. The model's turn goes back with its reasoning and its calls' provider
fields: thinking models refuse the next request without them.

Whatever goes wrong in a call (arguments that are not JSON or do not fit the
function, a call cut off at the token limit or by the server, an unknown tool, an
exception, a timeout, a veto) becomes the text of that call's `tool` message, so
the model can correct itself; `on_error="raise"` ends the run instead.

With telemetry on, the run is an `invoke_agent` span and each call an
`execute_tool` span (`_runnertelemetry`); off, a run costs one check.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

from asyncchat.errors import (
    APIError,
    MaxTurnsError,
    ToolArgumentsError,
    ToolCallError,
    one_line,
)
from asyncchat.events import StreamEvent, ToolFinished, ToolStarted
from asyncchat.quirks import LIMIT_REASONS, REASONING_KEYS, cut_short_at
from asyncchat.structured import is_pydantic_model
from asyncchat.tools import Tool, as_tool
from asyncchat.types import TOOL_CALL_FIELDS, ChatCompletion, ChatCompletionMessage, ToolCall

if TYPE_CHECKING:
    from asyncchat._chat import Chat
    from asyncchat._runnertelemetry import RunSpan

__all__ = ["RunnerEvent", "ToolRunner"]

RunnerEvent = StreamEvent | ToolStarted | ToolFinished
Approve = Callable[[ToolStarted], "bool | str | Awaitable[bool | str]"]
OnResult = Callable[[ToolFinished], Any]
_M = TypeVar("_M")


class ToolRunner:
    """The loop of one `run_tools` call: `await runner.final_completion()` runs it;
    `async for event in runner` runs it and hands out every event; `runner.messages`
    is the conversation so far, as plain dicts ready to send again."""

    def __init__(
        self,
        chat: Chat,
        messages: Iterable[Any],
        tools: Sequence[Any],
        params: dict[str, Any],
        *,
        max_turns: int,
        max_concurrency: int,
        tool_timeout: float | None,
        on_error: Literal["tell", "raise"],
        approve: Approve | None,
        on_result: OnResult | None,
        reset_tool_choice: bool = True,
    ) -> None:
        if max_turns < 1 or max_concurrency < 1:
            raise ValueError("max_turns and max_concurrency must be at least 1")
        if on_error not in ("tell", "raise"):
            raise ValueError(f"on_error must be 'tell' or 'raise', not {on_error!r}")
        if params.get("n", 1) != 1:
            raise ValueError("run_tools follows one answer: leave out n")
        if isinstance(messages, (str, bytes, dict)):
            raise TypeError("messages must be a list of message dicts")
        self.messages: list[dict[str, Any]] = list(messages)  # yours is not modified
        self.completions: list[ChatCompletion] = []  # one a turn
        self._chat = chat
        self._params = params
        self._functions, self._wire = _read_tools(tools)
        # Tools given as dicts, with no function to run: a call to one ends the run.
        self._wire_only = {_tool_name(t) for t in self._wire} - set(self._functions)
        self._max_turns = max_turns
        self._limit = asyncio.Semaphore(max_concurrency)
        self._tool_timeout = tool_timeout
        self._on_error = on_error
        self._approve = approve
        self._on_result = on_result
        self._reset_tool_choice = reset_tool_choice
        self._stopped = False
        self._trace: RunSpan | _Untraced = _UNTRACED  # the run's span, once it starts
        self._events = self._run()

    def __aiter__(self) -> ToolRunner:
        return self

    async def __anext__(self) -> RunnerEvent:
        return await self._events.__anext__()

    async def final_completion(self) -> ChatCompletion:
        """Run the loop to its end (or what is left of it); the last completion."""
        async for _ in self._events:
            pass
        if not self.completions:
            raise APIError("the tool runner was closed before its first answer")
        return self.completions[-1]

    def stop(self) -> None:
        """End the run after the current turn: its tool calls still get their results,
        then no further request is made."""
        self._stopped = True

    async def close(self) -> None:
        """End the run now: running tools are cancelled, the stream is released."""
        await self._events.aclose()

    async def __aenter__(self) -> ToolRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[RunnerEvent, None]:
        run = self._trace = self._run_span()
        error: BaseException | None = None
        try:
            for turn in range(1, self._max_turns + 1):
                async with run.entered(
                    self._chat.stream(messages=self.messages, tools=self._wire, **self._params)
                ) as stream:
                    async for streamed in stream:
                        yield streamed
                    completion = await stream.final_completion()
                self.completions.append(completion)
                if not completion.choices:
                    raise APIError(
                        "the server answered with no choices", request_id=completion.request_id
                    )
                message = completion.choices[0].message
                calls: list[ToolCall] = _with_ids(message.tool_calls or [], turn)
                self.messages.append(_assistant_message(message, calls))
                if not calls or self._stopped:
                    return
                if any(_called(call)[0] in self._wire_only for call in calls):
                    return  # a tool without a function: its call is yours to handle
                # In an answer cut short (the token limit, the server giving up), the
                # call being written when the cut came is incomplete.
                refusal = _cut_call_refusal(completion.choices[0].finish_reason)
                cut = calls[-1] if refusal else None
                async for event in self._run_calls(calls, turn, cut, refusal):
                    yield event
                if self._stopped:
                    return
                if self._reset_tool_choice and "tool_choice" in self._params:
                    # A forced call each turn would never let the model answer.
                    choice = _unforced(self._params["tool_choice"])
                    self._params = {**self._params, "tool_choice": choice}
            raise MaxTurnsError(
                f"the model still called tools after max_turns={self._max_turns} turns; "
                "runner.messages (and this error's .messages) hold the conversation to go on "
                "from",
                messages=self.messages,
                completion=self.completions[-1],
            )
        except BaseException as exc:  # GeneratorExit too: the run was closed early
            error = exc
            raise
        finally:
            run.ended(error)

    async def _run_calls(
        self, calls: list[ToolCall], turn: int, cut: ToolCall | None, refusal: str | None
    ) -> AsyncGenerator[RunnerEvent, None]:
        """Run a turn's calls concurrently, handing out their events as they happen;
        then append their results, in call order. The `cut` call is not run: its
        result is the `refusal`."""
        events: asyncio.Queue[RunnerEvent | _Done] = asyncio.Queue()
        with self._trace.current():  # each task copies the context: the calls are the run's
            tasks = [
                asyncio.ensure_future(
                    self._reported(call, turn, events, refusal if call is cut else None)
                )
                for call in calls
            ]
        try:
            remaining = len(tasks)
            while remaining:
                item = await events.get()
                if not isinstance(item, _Done):
                    yield item
                    continue
                remaining -= 1
                if item.error is not None:
                    raise item.error  # on_error="raise": the run ends now
            for call, task in zip(calls, tasks, strict=True):
                self.messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": task.result()}
                )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reported(
        self,
        call: ToolCall,
        turn: int,
        events: asyncio.Queue[RunnerEvent | _Done],
        refusal: str | None,
    ) -> str:
        """`_call`, then a `_Done` in the queue, however it ended."""
        try:
            result = await self._call(call, turn, events, refusal)
        except asyncio.CancelledError:
            events.put_nowait(_Done(None))
            raise
        except Exception as exc:
            events.put_nowait(_Done(exc))
            raise
        events.put_nowait(_Done(None))
        return result

    async def _call(
        self,
        call: ToolCall,
        turn: int,
        events: asyncio.Queue[RunnerEvent | _Done],
        refusal: str | None,
    ) -> str:
        """Run one call; the text of its `tool` message. A call with a `refusal` (its
        answer was cut short while it was written) is refused: half a command is not
        run."""
        name, raw = _called(call)
        call_id = call.id or ""
        arguments: dict[str, Any] | None = None
        value: Any = None
        started_at = time.perf_counter()
        tool = self._functions.get(name)
        description = tool.description if tool is not None else ""
        with self._trace.call(call_id, name, description, raw) as span:
            try:
                if tool is None:
                    known = ", ".join(sorted(self._functions)) or "none"
                    raise LookupError(f"there is no tool named {name!r}; the tools are: {known}")
                if refusal:
                    raise ToolArgumentsError(refusal, arguments=raw or "")
                arguments = tool.arguments(raw)
                started = ToolStarted(call_id, name, arguments, turn)
                verdict = await _maybe_await(self._approve(started)) if self._approve else True
                if verdict is not True:
                    raise PermissionError(
                        verdict if isinstance(verdict, str) else "the call was not allowed"
                    )
                events.put_nowait(started)
                started_at = time.perf_counter()
                async with self._limit:
                    value = await self._invoke(tool, arguments)
                result = tool_result_text(value)
                error: BaseException | None = None
                span.returned(result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                span.failed(exc)
                if self._on_error == "raise":
                    raise ToolCallError(
                        f"tool call {name!r} failed: {_describe(exc)}",
                        name=name,
                        arguments=raw or "",
                        messages=self.messages,
                    ) from exc
                result, error = f"Error: {_describe(exc)}", exc
        finished = ToolFinished(
            call_id, name, arguments, result, error, time.perf_counter() - started_at, turn, value
        )
        if self._on_result is not None:
            replaced = await _maybe_await(self._on_result(finished))
            if replaced is not None:
                result = tool_result_text(replaced)
                finished = ToolFinished(
                    call_id, name, arguments, result, error, finished.seconds, turn, value
                )
        events.put_nowait(finished)
        return result

    def _run_span(self) -> RunSpan | _Untraced:
        """The run's `invoke_agent` span; a stand-in that records nothing when
        telemetry is off."""
        client = self._chat._client
        telemetry = client._active_telemetry()
        if telemetry is None:
            return _UNTRACED
        from asyncchat._runnertelemetry import run_span  # needs opentelemetry: only when on

        given = (self.messages, self._wire)  # read at once, before the run adds to them
        run = run_span(telemetry, client.base_url, self._params, given, self.completions)
        return run or _UNTRACED

    async def _invoke(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        timeout = tool.timeout if tool.timeout is not None else self._tool_timeout
        if tool.is_async:
            work: Awaitable[Any] = tool.function(**arguments)
        else:  # a worker thread: it cannot be stopped, only no longer waited for
            work = asyncio.to_thread(tool.function, **arguments)
        try:
            value = await asyncio.wait_for(work, timeout)
            return await value if inspect.isawaitable(value) else value
        except asyncio.TimeoutError:
            raise TimeoutError(f"the tool did not finish within {timeout:g} s") from None


class _Untraced:
    """The span of a run or of a call when telemetry is off: it records nothing."""

    def __enter__(self) -> _Untraced:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def current(self) -> _Untraced:
        return self

    def entered(self, manager: _M) -> _M:
        return manager

    def ended(self, error: BaseException | None) -> None:
        pass

    def call(self, call_id: str, name: str, description: str, arguments: str | None) -> _Untraced:
        return self

    def returned(self, result: str) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass


_UNTRACED = _Untraced()


class _Done:
    """A call's end, in the events queue; `error` when it is to end the run."""

    __slots__ = ("error",)

    def __init__(self, error: Exception | None) -> None:
        self.error = error


def _read_tools(tools: Sequence[Any]) -> tuple[dict[str, Tool], list[dict[str, Any]]]:
    """The runnable tools by name, and every tool as the request sends it."""
    if isinstance(tools, (str, bytes, dict)) or callable(tools):
        raise TypeError("tools must be a list of functions, tools or tool dicts")
    functions: dict[str, Tool] = {}
    wire: list[dict[str, Any]] = []
    for given in tools:
        item = as_tool(given)
        if isinstance(item, dict):
            wire.append(item)
            continue
        if item.name in functions:
            raise ValueError(f"two tools are named {item.name!r}")
        functions[item.name] = item
        wire.append(item.to_dict())
    return functions, wire


def _tool_name(tool: dict[str, Any]) -> Any:
    """The name of a tool dict: a function's, or a custom tool's."""
    spec = tool.get("custom" if tool.get("type") == "custom" else "function")
    return spec.get("name") if isinstance(spec, dict) else None


def _is_custom(call: ToolCall) -> bool:
    """Whether a call is a custom tool's: its type says so, or it has only `custom`."""
    return call.type == "custom" or (call.custom is not None and not call.function.name)


def _called(call: ToolCall) -> tuple[str, str | None]:
    """The name of the tool a call calls, and what it sends: a function's arguments
    (JSON text), or a custom tool's input."""
    if _is_custom(call):
        custom = call.custom
        return (custom.name or "", custom.input) if custom is not None else ("", None)
    return call.function.name or "", call.function.arguments


def _cut_call_refusal(finish_reason: Any) -> str | None:
    """What the model hears for the last call of an answer cut short (None for an
    answer the model ended): why it was not run, and what to do."""
    where = cut_short_at(finish_reason)
    if where is None:
        return None
    if finish_reason in LIMIT_REASONS:
        fix = "make it again, shorter, or as smaller calls"
    else:  # the server gave up: the same call may well go through next time
        fix = "make it again"
    return (
        f"the call was cut off {where} (finish_reason {finish_reason!r}) before it was "
        f"complete, so it was not run: {fix}"
    )


def _unforced(choice: Any) -> Any:
    """A `tool_choice` that lets the model answer instead of calling a tool: "auto"
    for "required" or a named tool, "auto" mode for allowed tools."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice == "required" or kind in ("function", "custom"):
        return "auto"
    allowed = choice.get("allowed_tools") if kind == "allowed_tools" else None
    if isinstance(allowed, dict):
        return {**choice, "allowed_tools": {**allowed, "mode": "auto"}}
    return choice  # "auto", "none", or a shape only its server knows


def _with_ids(calls: Sequence[ToolCall], turn: int) -> list[ToolCall]:
    """The calls, each with an id of its own, so that each result names its call: a
    call that comes without one, or with one an earlier call of the turn has (Azure
    OpenAI at times gives parallel calls one id), gets one made up."""
    taken: set[str] = set()
    for index, call in enumerate(calls):
        if not call.id or call.id in taken:
            made, again = f"call_{turn}_{index}", 0
            while made in taken:  # a server's own id may look like ours
                again += 1
                made = f"call_{turn}_{index}_{again}"
            call.id = made
        taken.add(call.id)
    return list(calls)


def _assistant_message(message: ChatCompletionMessage, calls: list[ToolCall]) -> dict[str, Any]:
    """The model's turn as a message to send back, its reasoning with it, under the
    name the server sent it by: DeepSeek's thinking mode refuses the next request
    without the reasoning of a turn that called tools, and Groq refuses a name it
    does not use, so none is added where the server sent none. OpenRouter's
    `reasoning_details` (signed thoughts) go back as they came, and so does an empty
    text: Ollama refuses null, Bedrock refuses `""`."""
    answer = message.to_dict()  # a copy: the completion's own lists stay its own
    sent: dict[str, Any] = {"role": "assistant", "content": answer.get("content")}
    for key, value in answer.items():
        if key in REASONING_KEYS and isinstance(value, str):
            sent[key] = value
            break  # the same text again under the other name (StepFun) goes once
    if isinstance(answer.get("reasoning_details"), list):
        sent["reasoning_details"] = answer["reasoning_details"]
    if calls:
        sent["tool_calls"] = [_call_message(call) for call in calls]
    return sent


def _call_message(call: ToolCall) -> dict[str, Any]:
    """A tool call as the assistant message sends it back, with the provider's own
    fields of the call as they came (Gemini refuses a call without its thought
    signature, in `extra_content`)."""
    name, sent = _called(call)
    own = {key: value for key, value in call.to_dict().items() if key not in TOOL_CALL_FIELDS}
    if _is_custom(call):
        custom = {"name": name, "input": sent or ""}
        return {"id": call.id, "type": "custom", "custom": custom, **own}
    function = {"name": name, "arguments": sent or "{}"}
    return {"id": call.id, "type": call.type or "function", "function": function, **own}


def tool_result_text(value: Any) -> str:
    """A tool's return value as the text of its `tool` message: a str as it is, a
    pydantic model dumped, anything else as JSON."""
    if isinstance(value, str):
        return value
    if is_pydantic_model(type(value)):
        return str(value.model_dump_json())
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except orjson.JSONEncodeError as exc:
        reason = str(exc)  # orjson's, naming the part: "Type is not JSON serializable: bytes"
        raise TypeError(
            f"the tool returned a {type(value).__name__}, which has no JSON form "
            f"({reason[:1].lower() + reason[1:]}): return a str, or data made of dicts, "
            "lists, numbers and strings"
        ) from None


def _json_default(value: Any) -> Any:
    if is_pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def _describe(error: BaseException) -> str:
    """An error as the model reads it: its type and message, no traceback."""
    if isinstance(error, ToolArgumentsError):
        return str(error)
    text = one_line(error, limit=2000)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
