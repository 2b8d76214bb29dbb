"""OpenTelemetry spans and metrics for chat and embeddings requests, after the GenAI
semantic conventions.

On when `opentelemetry-api` is installed (the `otel` extra) and the application
has imported it (as setting up a provider does), unless the client was made with
`telemetry=False`. It records through the global tracer and meter providers, so
it goes wherever the application sends its telemetry, and nowhere until a
provider is set. Off, neither this module nor opentelemetry is imported, and
nothing runs per chunk.

One CLIENT span per logical request, named `chat {model}` (or `embeddings
{model}`), covering every retry (each an event on it); for a stream, it ends when
the stream does, however it ends, with the time to the first chunk. Names follow
the conventions of semantic-conventions v1.41 unless `OTEL_SEMCONV_STABILITY_OPT_IN`
holds `gen_ai_latest_experimental`, which switches to the newer ones (inference
metrics `gen_ai.client.inference.*`); a stream's span carries
`gen_ai.response.time_to_first_chunk` in both. A chat with a server that is `openai`
to the conventions (OpenAI, and any server they do not name) has their `openai.*`
attributes. The request carries the span's trace context to the server
(`traceparent`), and while it is sent the span is the current one, so an HTTP
instrumentation's spans are its children. Messages, and the tools offered, are
recorded only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`; never a
header, so never the API key. The time per output chunk is one mean a stream unless
`ASYNCCHAT_OTEL_TIME_PER_CHUNK=each` asks for a record per chunk, as the conventions
describe it (a record costs the SDK more than a chunk costs asyncchat). Measurements
are made in the request span's context, so the SDK's exemplars lead to that span.

Telemetry never fails a request: an error in recording one (a span processor of the
application's that raises, say) is logged, the span ends as it is, and the request
goes on. The tool runner's runs and calls have spans of their own
(`_runnertelemetry`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any, Concatenate, ParamSpec

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from asyncchat._genai import (
    error_type,
    input_messages,
    openai_request_attributes,
    openai_response_attributes,
    output_messages,
    provider_of,
    request_attributes,
    response_attributes,
    tool_definitions,
)
from asyncchat._http import Request
from asyncchat._logging import logger
from asyncchat._timing import EndListener, StreamTiming
from asyncchat._version import __version__
from asyncchat.accumulate import ChatCompletionAccumulator

__all__ = ["Operation", "Telemetry", "report_failure", "shared_telemetry"]

_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92]  # fmt: skip
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864]  # fmt: skip
_CHUNK_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5]
# How many (operation, server, model) shapes are kept built before starting over.
_TARGETS_KEPT = 256


# The environment settings a Telemetry is made from: a change in any makes another.
_SETTINGS = (
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "ASYNCCHAT_OTEL_TIME_PER_CHUNK",
)
_SHARED: dict[tuple[str, ...], Telemetry] = {}


def shared_telemetry() -> Telemetry:
    """The telemetry for the current settings, made once: instruments are registered
    with the meter once, however many clients there are."""
    key = tuple(os.environ.get(name, "") for name in _SETTINGS)
    telemetry = _SHARED.get(key)
    if telemetry is None:
        telemetry = _SHARED[key] = Telemetry()
    return telemetry


# The API's stand-ins until an SDK provider is set (the metrics one is private, so
# it is known by name: a rename would only make telemetry measure for nothing).
_PLACEHOLDERS = frozenset(
    {"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"}
)


def _configured() -> bool:
    """Whether the application set a tracer or a meter provider."""
    return (
        type(trace.get_tracer_provider()).__name__ not in _PLACEHOLDERS
        or type(metrics.get_meter_provider()).__name__ not in _PLACEHOLDERS
    )


def _injector() -> Callable[..., None] | None:
    """The global propagators' `inject`; None when OTEL_PROPAGATORS names one that
    cannot be loaded (a misspelling, or `none` before opentelemetry-api 1.33: the
    API raises on import), and then requests carry no trace context."""
    try:
        from opentelemetry import propagate
    except ValueError as error:
        logger.warning("asyncchat telemetry sends no trace context: %s", error)
        return None
    return propagate.inject


def _time_per_chunk_setting() -> str:
    """ASYNCCHAT_OTEL_TIME_PER_CHUNK: `mean` (the default: one record a stream) or
    `each` (one a chunk); any other value is warned of and read as `mean`."""
    value = os.environ.get("ASYNCCHAT_OTEL_TIME_PER_CHUNK", "").strip().lower()
    if value in ("", "mean", "each"):
        return value or "mean"
    logger.warning(
        "asyncchat telemetry ignores ASYNCCHAT_OTEL_TIME_PER_CHUNK=%r (it takes `mean` or "
        "`each`) and records the mean time per chunk",
        value,
    )
    return "mean"


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: list[Any]) -> Any:
    """A histogram with the conventions' bucket boundaries, where the API takes them."""
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # opentelemetry-api before 1.30: the SDK's default boundaries
        return meter.create_histogram(name, unit=unit, description=description)


class Telemetry:
    """The tracer, the meter's instruments, and the conventions' version in use."""

    def __init__(self) -> None:
        opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
        self.latest = "gen_ai_latest_experimental" in [v.strip() for v in opt_in.split(",")]
        capture = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
        self.capture_content = capture.strip().lower() == "true"
        self.each_chunk = _time_per_chunk_setting() == "each"
        self.tracer = trace.get_tracer("asyncchat", __version__)
        meter = metrics.get_meter("asyncchat", __version__)
        prefix = "gen_ai.client.inference" if self.latest else "gen_ai.client.operation"
        self.duration = _histogram(
            meter,
            "gen_ai.client.inference.duration"
            if self.latest
            else "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            _DURATION_BUCKETS,
        )
        self.time_to_first_chunk = _histogram(
            meter,
            f"{prefix}.time_to_first_chunk",
            "s",
            "Time to receive the first chunk of a streamed response",
            _CHUNK_BUCKETS,
        )
        self.time_per_output_chunk = _histogram(
            meter,
            f"{prefix}.time_per_output_chunk",
            "s",
            "Time per output chunk after the first one",
            _CHUNK_BUCKETS,
        )
        # The newer conventions count each kind of token in its own histogram; v1.41
        # in one, told apart by `gen_ai.token.type`.
        if self.latest:
            self.input_tokens = _histogram(
                meter, "gen_ai.client.inference.usage.input_tokens", "{token}",
                "Input tokens used", _TOKEN_BUCKETS,
            )  # fmt: skip
            self.output_tokens = _histogram(
                meter, "gen_ai.client.inference.usage.output_tokens", "{token}",
                "Output tokens used", _TOKEN_BUCKETS,
            )  # fmt: skip
        else:
            self.input_tokens = self.output_tokens = _histogram(
                meter, "gen_ai.client.token.usage", "{token}",
                "Number of input and output tokens used", _TOKEN_BUCKETS,
            )  # fmt: skip

        # opentelemetry-api 1.28 and later take the context a measurement is made in,
        # and the SDK samples a histogram's exemplars from its span.
        self.measures_in_context = (
            "context" in inspect.signature(metrics.Histogram.record).parameters
        )
        self.inject = _injector()
        self._provider_set = False
        self._targets: dict[tuple[str, str, str | None], _Target] = {}

    def start(self, request: Request, body: Mapping[str, Any] | None) -> Operation | None:
        """The span of a request (`body` is its JSON body as given), begun; None for
        what the conventions do not cover (listing models), while no SDK is
        configured (every span and measure would be dropped: nothing is timed for
        nothing), and if beginning it failed."""
        try:
            return self._start(request, body or {})
        except Exception as error:
            report_failure(error)
            return None

    def recording(self) -> bool:
        """Whether the application set a tracer or meter provider: until it does,
        every span and measure would be dropped, so nothing is begun or timed."""
        if not self._provider_set:
            if not _configured():
                return False
            self._provider_set = True  # a provider, once set, cannot be unset
        return True

    def _start(self, request: Request, body: Mapping[str, Any]) -> Operation | None:
        if not self.recording():
            return None
        url = request.url
        if url.endswith("/chat/completions"):
            operation = "chat"
        elif url.endswith("/embeddings"):
            operation = "embeddings"
        else:
            return None
        model = body.get("model")
        key = (operation, url, model if isinstance(model, str) else None)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()  # models named per request: keep memory bounded
            target = self._targets[key] = _Target(operation, url, key[2], self.latest)
        return Operation(self, target, body, request)


# The answer's span attributes its duration and token counts carry too.
_ANSWER_METRIC_ATTRIBUTES = (
    "gen_ai.response.model",
    "openai.response.service_tier",
    "openai.response.system_fingerprint",
)


class _Target:
    """What every request of one operation, server and model shares: the span's
    name and first attributes, the metrics' attributes, built once instead of per
    request (the SDK copies what it is given, so sharing them is safe). A chat with
    a server that is `openai` to the conventions gets their `openai.*` attributes."""

    __slots__ = ("_answered", "common", "name", "openai", "span_attributes", "span_name",
                 "stream_span_attributes", "typed_tokens")  # fmt: skip

    def __init__(self, name: str, url: str, model: str | None, latest: bool) -> None:
        self.name = name
        self.typed_tokens = not latest  # v1.41's one token histogram
        self.span_name = name if model is None else f"{name} {model}"
        parts = urllib.parse.urlsplit(url)
        common: dict[str, Any] = {
            "gen_ai.operation.name": name,
            "gen_ai.provider.name": provider_of(url),
        }
        if model is not None:
            common["gen_ai.request.model"] = model
        if parts.hostname:
            common["server.address"] = parts.hostname
            common["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        self.common = common
        self.openai = name == "chat" and common["gen_ai.provider.name"] == "openai"
        self.span_attributes = common
        if self.openai:
            self.span_attributes = {**common, "openai.api.type": "chat_completions"}
        # "If and only if the request is streaming", v1.41 says of gen_ai.request.stream.
        self.stream_span_attributes = {**self.span_attributes, "gen_ai.request.stream": True}
        self._answered: dict[tuple[Any, ...], _Answered] = {}

    def answered(self, response: Mapping[str, Any]) -> _Answered:
        """The metrics' attributes for an answer whose span attributes are `response`."""
        model, tier, fingerprint = _ANSWER_METRIC_ATTRIBUTES
        key = (response.get(model), response.get(tier), response.get(fingerprint))
        answered = self._answered.get(key)
        if answered is None:
            if len(self._answered) >= _TARGETS_KEPT:
                self._answered.clear()
            told = {n: v for n, v in zip(_ANSWER_METRIC_ATTRIBUTES, key, strict=True) if v}
            answered = self._answered[key] = _Answered(self.common, told, self.typed_tokens)
        return answered


class _Answered:
    """The attributes of an answer's duration and of its token counts (with their
    `gen_ai.token.type` when `typed_tokens`)."""

    __slots__ = ("attributes", "input_tokens", "output_tokens")

    def __init__(self, common: dict[str, Any], told: dict[str, Any], typed_tokens: bool) -> None:
        attributes = {**common, **told} if told else common
        self.attributes = self.input_tokens = self.output_tokens = attributes
        if typed_tokens:
            self.input_tokens = {**attributes, "gen_ai.token.type": "input"}
            self.output_tokens = {**attributes, "gen_ai.token.type": "output"}


_failures = 0  # of telemetry itself, in this process


def report_failure(error: Exception) -> None:
    """Log a failure of telemetry's own: the first as a warning with its traceback,
    the rest at debug (a broken exporter would otherwise write one per request or
    tool call)."""
    global _failures
    _failures += 1
    if _failures == 1:
        logger.warning(
            "asyncchat telemetry could not record a request or tool call, which went on "
            "unaffected (later failures are logged at debug): %s: %s",
            type(error).__name__,
            error,
            exc_info=error,
        )
    else:
        logger.debug("asyncchat telemetry failed again: %s: %s", type(error).__name__, error)


_P = ParamSpec("_P")


def _never_fails(
    step: Callable[Concatenate[Operation, _P], None],
) -> Callable[Concatenate[Operation, _P], None]:
    """An operation's step that cannot fail its request: on an error, report it
    (`report_failure`) and end the span as it is."""

    @functools.wraps(step)
    def guarded(operation: Operation, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            step(operation, *args, **kwargs)
        except Exception as error:
            report_failure(error)
            operation.abandon()

    return guarded


class Operation:
    """One logical request's span and measurements, from its start to its end."""

    __slots__ = ("_ended", "_token", "context", "name", "span", "started", "target", "telemetry")

    def __init__(
        self, telemetry: Telemetry, target: _Target, body: Mapping[str, Any], request: Request
    ) -> None:
        self.telemetry = telemetry
        self.target = target
        self.name = name = target.name
        self.started = time.perf_counter()
        streamed = name == "chat" and body.get("stream")
        attributes = target.stream_span_attributes if streamed else target.span_attributes
        requested = request_attributes(body)
        if target.openai and "service_tier" in body:
            requested.update(openai_request_attributes(body))
        if telemetry.capture_content and name == "chat":
            sent = request.json()
            requested["gen_ai.input.messages"] = input_messages(sent)
            definitions = tool_definitions(sent.get("tools") if isinstance(sent, dict) else None)
            if definitions is not None:
                requested["gen_ai.tool.definitions"] = definitions
        if requested:
            attributes = {**attributes, **requested}
        self.span = telemetry.tracer.start_span(
            target.span_name, kind=SpanKind.CLIENT, attributes=attributes
        )
        # The caller's context with this span in it: what the server is told, what
        # is current while the request is sent, and what its measurements are made in.
        self.context = trace.set_span_in_context(self.span)
        self._ended = False
        self._token: Token[Context] | None = None
        self._send_trace_context(request)

    @_never_fails
    def _send_trace_context(self, request: Request) -> None:
        """Give the request the span's trace context (W3C `traceparent`, or what
        OTEL_PROPAGATORS names), so that a server which traces, vLLM for one,
        continues the trace under this span. A header of the caller's is kept."""
        inject = self.telemetry.inject
        if inject is None:
            return
        carrier: dict[str, str] = {}
        inject(carrier, context=self.context)
        if carrier:
            given = {name.lower() for name in request.headers}
            added = {k: v for k, v in carrier.items() if k.lower() not in given}
            request.headers = {**request.headers, **added}

    def attach(self) -> None:
        """Make the request's span the current one until `detach`: while it is sent,
        so that a span begun under it is its child, not its sibling (aiohttp's
        instrumentation begins one for each HTTP request, an attempt)."""
        try:
            self._token = otel_context.attach(self.context)
        except Exception as error:
            report_failure(error)

    def detach(self) -> None:
        """The context from before `attach` current again."""
        token, self._token = self._token, None
        if token is not None:
            with contextlib.suppress(Exception):
                otel_context.detach(token)

    def in_context(self, listener: EndListener) -> EndListener:
        """`listener`, called with the request's span current: the stream's log line,
        written when the stream ends, is then tied to the request, as the log lines
        written while it is sent are, by a log handler that notes the current span
        (OpenTelemetry's does)."""

        def called(
            timing: StreamTiming,
            accumulator: ChatCompletionAccumulator,
            error: BaseException | None,
        ) -> None:
            self.attach()
            try:
                listener(timing, accumulator, error)
            finally:
                self.detach()

        return called

    def _measure(self, histogram: Any, value: float, attributes: Mapping[str, Any]) -> None:
        """Record `value` in this request's span, so that the histogram's exemplars
        (sampled by the SDK from 1.28 on) lead to it, not to whatever span is current."""
        if self.telemetry.measures_in_context:
            histogram.record(value, attributes, context=self.context)
        else:
            histogram.record(value, attributes)

    def abandon(self) -> None:
        """End the span as it is: recording the request failed (see `_never_fails`)."""
        if not self._ended:
            self._ended = True
            with contextlib.suppress(Exception):
                self.span.end()

    @_never_fails
    def retried(self, attempt: int, error: BaseException, delay: float) -> None:
        """An attempt failed and another follows in `delay` seconds."""
        self.span.add_event(
            "asyncchat.retry",
            {"retry.attempt": attempt + 1, "error.type": error_type(error), "retry.delay": delay},
        )

    @_never_fails
    def failed(self, error: BaseException) -> None:
        """The request ended in `error` (the last attempt's, or a cancellation)."""
        if self._ended:
            return
        self._ended = True
        kind = error_type(error)
        span = self.span
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, str(error)[:500] or kind))
        span.record_exception(error)
        span.end()
        self._measure(
            self.telemetry.duration,
            time.perf_counter() - self.started,
            {**self.target.common, "error.type": kind},
        )

    @_never_fails
    def succeeded(self, data: Mapping[str, Any]) -> None:
        """A whole answer arrived (not streamed): its response attributes, then the end."""
        self._finish(data, None)

    def timing(self) -> StreamTiming:
        """What times the stream this request's answer is; it ends the span."""
        return StreamTiming(
            self.started, [self._stream_ended], each_chunk=self.telemetry.each_chunk
        )

    @_never_fails
    def _stream_ended(
        self,
        timing: StreamTiming,
        accumulator: ChatCompletionAccumulator,
        error: BaseException | None,
    ) -> None:
        telemetry = self.telemetry
        common = self.target.common
        first = timing.time_to_first_chunk
        if first is not None:
            self._measure(telemetry.time_to_first_chunk, first, common)
        gaps = timing.chunk_gaps
        if gaps is not None:  # ASYNCCHAT_OTEL_TIME_PER_CHUNK=each
            for gap in gaps:
                self._measure(telemetry.time_per_output_chunk, gap, common)
        else:
            # Once a stream, the mean: a record per chunk would cost the SDK more
            # than the chunk itself (about 10 µs a record, against 20 µs a chunk).
            per_chunk = timing.time_per_chunk
            if per_chunk is not None:
                self._measure(telemetry.time_per_output_chunk, per_chunk, common)
        if timing.closed_early:
            self.span.add_event("asyncchat.stream_closed_early")
        if not accumulator.chunk_count:
            data: dict[str, Any] = {}
        elif telemetry.capture_content:
            data = accumulator.completion_dict()
        else:
            data = accumulator.response_fields()
        attributes = response_attributes(data)
        if first is not None:  # v1.41 has no name for it on the span: the newer one's
            attributes["gen_ai.response.time_to_first_chunk"] = first
        self._finish(data, error, attributes)

    def _finish(
        self,
        data: Mapping[str, Any],
        error: BaseException | None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        if self._ended:
            return
        if attributes is None:
            attributes = response_attributes(data)
        if self.target.openai:
            attributes.update(openai_response_attributes(data))
        if self.telemetry.capture_content and self.name == "chat" and data:
            attributes["gen_ai.output.messages"] = output_messages(data)
        self.span.set_attributes(attributes)
        answered = self.target.answered(attributes)
        if error is not None:
            self.failed(error)
        else:
            self._ended = True
            self.span.end()
            duration = time.perf_counter() - self.started
            self._measure(self.telemetry.duration, duration, answered.attributes)
        self._record_usage(attributes, answered)

    def _record_usage(self, attributes: dict[str, Any], answered: _Answered) -> None:
        """The token counts among the span's `attributes` (checked there), as metrics."""
        count = attributes.get("gen_ai.usage.input_tokens")
        if count is not None:
            self._measure(self.telemetry.input_tokens, count, answered.input_tokens)
        count = attributes.get("gen_ai.usage.output_tokens")
        if count is not None:
            self._measure(self.telemetry.output_tokens, count, answered.output_tokens)
