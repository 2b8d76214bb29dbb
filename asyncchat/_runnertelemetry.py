"""The spans of a `run_tools` run, after the GenAI semantic conventions: one
`invoke_agent` span (kind INTERNAL) for the run, the parent of its turns' `chat`
spans and of an `execute_tool` span (kind INTERNAL, named `execute_tool {tool
name}`) for each call, with the tool's name, description and call id, and
`error.type` when the call failed.

A call's span is current while the call runs (in its own task, and copied into a
sync tool's worker thread), so what the tool traces itself, a request of its own
included, is its child. The run's span is never current across a yield to the
runner's reader: it is made current only while a turn's request is opened and while
the calls' tasks are made, so the reader's own spans stay where they were. The
run's messages and tools, and a call's arguments and result, are recorded only with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, as a request's messages
are. Like a request's span, these never fail what they record.

Imported only when telemetry is on (it needs opentelemetry).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import Token
from types import TracebackType
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from asyncchat._genai import (
    error_type,
    input_messages,
    output_messages,
    provider_of,
    request_attributes,
    response_attributes,
    tool_definitions,
)
from asyncchat._telemetry import Telemetry, report_failure
from asyncchat.types import APIObject, ChatCompletion

__all__ = ["RunSpan", "ToolSpan", "run_span"]

T = TypeVar("T")


def run_span(
    telemetry: Telemetry,
    base_url: str,
    params: Mapping[str, Any],
    given: tuple[Sequence[Any], Sequence[Any]],
    completions: Sequence[ChatCompletion],
) -> RunSpan | None:
    """The span of one run, begun; None while no provider is set, or if beginning it
    failed. `given` is the messages and the tools the run begins with; `completions`
    is the run's list of answers, read when the run ends."""
    try:
        if not telemetry.recording():
            return None
        return RunSpan(telemetry, base_url, params, given, completions)
    except Exception as error:
        report_failure(error)
        return None


class RunSpan:
    """One run's `invoke_agent` span: `current()` makes it the parent of what starts
    inside, `entered(manager)` opens a turn's stream as its child, and `ended` ends
    it with the run's outcome."""

    __slots__ = ("_completions", "_context", "_span", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        base_url: str,
        params: Mapping[str, Any],
        given: tuple[Sequence[Any], Sequence[Any]],
        completions: Sequence[ChatCompletion],
    ) -> None:
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": provider_of(base_url),
        }
        model = params.get("model")
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        if telemetry.capture_content:
            attributes.update(_content_given(*given))
        self._span = telemetry.tracer.start_span(
            "invoke_agent",
            kind=SpanKind.INTERNAL,
            attributes={**attributes, **request_attributes(params)},
        )
        self._context = trace.set_span_in_context(self._span)
        self._completions = completions
        self._telemetry = telemetry

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """The run's span current in this block, which must not yield to the reader."""
        token = otel_context.attach(self._context)
        try:
            yield
        finally:
            otel_context.detach(token)

    def entered(self, manager: AbstractAsyncContextManager[T]) -> _EnteredInRun[T]:
        """`manager` (a turn's stream), entered with the run's span current."""
        return _EnteredInRun(self, manager)

    def call(self, call_id: str, name: str, description: str, arguments: str | None) -> ToolSpan:
        """The `execute_tool` span of one of the run's calls, made in a task that
        copied the run's context: the run's child."""
        return ToolSpan(self._telemetry, call_id, name, description, arguments)

    def ended(self, error: BaseException | None) -> None:
        """The run ended: with its last answer, after `error`, or closed early by its
        reader (GeneratorExit: not an error)."""
        span = self._span
        try:
            span.set_attributes(_outcome(self._completions, self._telemetry.capture_content))
            if isinstance(error, GeneratorExit):
                span.add_event("asyncchat.run_closed_early")
            elif error is not None:
                _mark_failed(span, error)
        except Exception as failure:
            report_failure(failure)
        try:
            span.end()
        except Exception as failure:
            report_failure(failure)


class _EnteredInRun(Generic[T]):
    """An async context manager entered with a run's span current: the request it
    opens is the run's child. Leaving it is as leaving `manager`."""

    __slots__ = ("_manager", "_run")

    def __init__(self, run: RunSpan, manager: AbstractAsyncContextManager[T]) -> None:
        self._run = run
        self._manager = manager

    async def __aenter__(self) -> T:
        with self._run.current():
            return await self._manager.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._manager.__aexit__(exc_type, exc, traceback)


class ToolSpan:
    """One tool call's span: `with span:` makes it current for the call and ends it
    with whatever escapes (a cancellation); `returned` and `failed` end it with the
    call's result or the error that became it."""

    __slots__ = ("_capture", "_ended", "_span", "_token")

    def __init__(
        self,
        telemetry: Telemetry,
        call_id: str,
        name: str,
        description: str,
        arguments: str | None,
    ) -> None:
        attributes: dict[str, str] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
        }
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        if description:
            attributes["gen_ai.tool.description"] = description
        self._capture = telemetry.capture_content
        if self._capture and arguments is not None:
            attributes["gen_ai.tool.call.arguments"] = arguments
        self._ended = False
        self._token: Token[Context] | None = None
        try:
            self._span = telemetry.tracer.start_span(
                f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attributes
            )
        except Exception as error:  # a span processor of the application's that raises
            report_failure(error)
            self._span, self._ended = trace.INVALID_SPAN, True  # the call goes on untraced

    def __enter__(self) -> ToolSpan:
        if not self._ended:
            try:
                self._token = otel_context.attach(trace.set_span_in_context(self._span))
            except Exception as error:
                report_failure(error)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.failed(exc)
        else:
            self._end()  # a call that ended neither way: not expected, but never left open
        if self._token is not None:
            with contextlib.suppress(Exception):
                otel_context.detach(self._token)

    def returned(self, result: str) -> None:
        """The call succeeded with `result`, the tool's value as text (sent back to
        the model unless `on_result` replaces it)."""
        if self._ended:
            return
        if self._capture:
            try:
                self._span.set_attribute("gen_ai.tool.call.result", result)
            except Exception as error:
                report_failure(error)
        self._end()

    def failed(self, error: BaseException) -> None:
        """The call failed with `error` (told to the model, raised, or a cancellation)."""
        if self._ended:
            return
        try:
            _mark_failed(self._span, error)
        except Exception as failure:
            report_failure(failure)
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._span.end()
        except Exception as error:
            report_failure(error)


def _mark_failed(span: trace.Span, error: BaseException) -> None:
    """Recording Errors, as the conventions ask: `error.type`, an ERROR status with
    the error's message, and the exception as an event."""
    kind = error_type(error)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500] or kind))
    span.record_exception(error)


# The token counts a run adds up over its turns: those v1.41 gives the invoke-agent span.
_RUN_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",  # an agent's turns resend a growing prefix
)


def _content_given(messages: Sequence[Any], tools: Sequence[Any]) -> dict[str, str]:
    """The run's opt-in content at its start: the messages it begins from, as its first
    turn sends them (a message of an earlier answer as its dict), and the tools it offers."""
    sent = [m.to_dict() if isinstance(m, APIObject) else m for m in messages]
    attributes = {"gen_ai.input.messages": input_messages({"messages": sent})}
    definitions = tool_definitions(tools)
    if definitions is not None:
        attributes["gen_ai.tool.definitions"] = definitions
    return attributes


def _outcome(completions: Sequence[ChatCompletion], capture_content: bool) -> dict[str, Any]:
    """The run's response attributes: its last answer's finish reasons (and, with
    content capture on, its messages), and each count of tokens added up over its
    turns when every turn reported it (a stream reports usage only when asked to, with
    `stream_options={"include_usage": True}`; cached tokens, only some servers)."""
    bodies = [completion.to_dict() for completion in completions]
    answers = [response_attributes(body) for body in bodies]
    attributes: dict[str, Any] = {}
    if answers and "gen_ai.response.finish_reasons" in answers[-1]:
        attributes["gen_ai.response.finish_reasons"] = answers[-1]["gen_ai.response.finish_reasons"]
    if capture_content and bodies:
        attributes["gen_ai.output.messages"] = output_messages(bodies[-1])
    for name in _RUN_TOKENS:
        counts = [answer.get(name) for answer in answers]
        if counts and None not in counts:
            attributes[name] = sum(counts)
    return attributes
