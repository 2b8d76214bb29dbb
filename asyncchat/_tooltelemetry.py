"""The `execute_tool` span of each call the tool runner makes, after the GenAI
semantic conventions: kind INTERNAL, named `execute_tool {tool name}`, with the
tool's name, description and call id, and `error.type` when the call failed.

The span is current while the call runs (in its own task, and copied into a sync
tool's worker thread), so what the tool traces itself, a request of its own
included, is its child. The model's arguments and the tool's result are recorded
only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, as message
content is. Like a request's span, this one never fails the call it records.

Imported only when telemetry is on (it needs opentelemetry).
"""

from __future__ import annotations

import contextlib
from contextvars import Token
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from asyncchat._genai import error_type
from asyncchat._telemetry import Telemetry, report_failure

__all__ = ["ToolSpan", "tool_span"]


def tool_span(
    telemetry: Telemetry, call_id: str, name: str, description: str, arguments: str | None
) -> ToolSpan | None:
    """The span of one call, begun; None while no provider is set, or if beginning
    it failed."""
    try:
        if not telemetry.recording():
            return None
        return ToolSpan(telemetry, call_id, name, description, arguments)
    except Exception as error:
        report_failure(error)
        return None


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
        self._span = telemetry.tracer.start_span(
            f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self._ended = False
        self._token: Token[Context] | None = None

    def __enter__(self) -> ToolSpan:
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
        """The call succeeded with `result`, the text sent back to the model."""
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
            kind = error_type(error)
            span = self._span
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, str(error)[:500] or kind))
            span.record_exception(error)
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
