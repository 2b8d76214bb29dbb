"""The exception tree: everything asyncchat raises derives from `APIError`.

    APIError
    ├── ConfigurationError           (also a ValueError) no key, a bad base URL or timeout
    ├── ClientClosedError            (also a RuntimeError) closed, or in use by another loop
    ├── ResponseTooLargeError        an answer's body (not a stream) past max_response_size
    ├── ToolArgumentsError           (also a ValueError) tool arguments that are not an object
    ├── ToolCallError                a tool failed, with run_tools(on_error="raise")
    ├── MaxTurnsError                run_tools reached max_turns with tools still called
    ├── StructuredOutputError        (also a ValueError) an answer not in the format asked for
    │   ├── LengthFinishReasonError         cut at the token limit or context window
    │   └── ContentFilterFinishReasonError  stopped by the provider's content filter
    ├── APIConnectionError           could not connect, or the connection broke
    │   ├── APITimeoutError          a connect, read, idle or total timeout
    │   └── ConnectError             no connection opened: the request was never sent
    │       ├── ConnectTimeoutError  (also an APITimeoutError) the connect timeout
    │       └── TLSError             a certificate that failed, or no TLS (never retried)
    ├── APIStatusError               an HTTP error status (or an error event in a stream)
    │   ├── BadRequestError          400
    │   ├── AuthenticationError      401
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── ConflictError            409
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError           429
    │   └── InternalServerError      5xx
    │       └── ServerNotReadyError  only 502/503 for a batch job's whole server_wait
    └── StreamError                  a stream that broke or is not a stream
        ├── IncompleteStreamError    ended before it finished
        ├── MalformedStreamError     carried something that is not a chunk
        └── EventTooLargeError       an event past max_event_size

Messages are written for the person reading a traceback: what happened, the
provider's own words, and the request id to quote to support. The API key is
never part of any message, and URLs in them have their credentials redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asyncchat._headers import Headers
from asyncchat.quirks import cut_short_at, rate_limit_headers_in_body
from asyncchat.ratelimits import RateLimits

if TYPE_CHECKING:
    from asyncchat.types import ChatCompletion

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "ConnectTimeoutError",
    "ContentFilterFinishReasonError",
    "EventTooLargeError",
    "IncompleteStreamError",
    "InternalServerError",
    "LengthFinishReasonError",
    "MalformedStreamError",
    "MaxTurnsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseTooLargeError",
    "ServerNotReadyError",
    "StreamError",
    "StructuredOutputError",
    "TLSError",
    "ToolArgumentsError",
    "ToolCallError",
    "UnprocessableEntityError",
    "one_line",
]


class APIError(Exception):
    """Root of every asyncchat error.

    `partial` holds the `ChatCompletion` received before a stream failed (None
    when nothing was streamed), so no token already delivered is lost.
    """

    message: str
    request_id: str | None
    body: Any
    partial: ChatCompletion | None

    def __init__(self, message: str, *, request_id: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.body = body
        self.partial = None

    def __str__(self) -> str:
        if self.request_id and self.request_id not in self.message:
            return f"{self.message} (request id: {self.request_id})"
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole, so an error raised in a worker process (multiprocessing,
        # concurrent.futures, Ray) arrives as itself: the default rebuilds it as
        # `cls(*args)`, which the keyword-only fields make fail on the other side.
        # The transport's headers cannot be pickled: a plain copy of them goes.
        state = dict(self.__dict__)
        if state.get("headers") is not None:
            state["headers"] = Headers(state["headers"])
        return _unpickled_error, (type(self), self.args), state


def _unpickled_error(cls: type[APIError], args: tuple[Any, ...]) -> APIError:
    """An error made without its `__init__`; pickle then sets its attributes."""
    return cls.__new__(cls, *args)


class ConfigurationError(APIError, ValueError):
    """The client cannot be used as configured (for example, no API key)."""


class ClientClosedError(APIError, RuntimeError):
    """The client was closed, or is used from an event loop while another one that
    it serves is still open."""


class ResponseTooLargeError(APIError):
    """A response body (not a stream) was larger than the client's
    `max_response_size`: read no further, its connection closed."""


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before a response."""


class APITimeoutError(APIConnectionError):
    """A connect, read or total timeout expired."""


class ConnectError(APIConnectionError):
    """No connection to the server could be opened (refused, unknown host,
    unreachable, the connect timeout, a failed TLS handshake): the request was
    never sent, so nothing was done or charged."""


class ConnectTimeoutError(ConnectError, APITimeoutError):
    """The connect timeout expired before the server accepted the connection."""


class TLSError(ConnectError):
    """The TLS handshake failed: the server's certificate is not trusted, has
    expired or names another host, or the server does not speak TLS there. Not
    retried: another try meets the same certificate."""


class APIStatusError(APIError):
    """The server answered with an HTTP error status.

    Carries the provider's `code`, `type` and `param` when its error body has them,
    the decoded `body` (or the raw text when it was not JSON) and the response
    `headers`.
    """

    status_code: int
    code: str | None
    type: str | None
    param: str | None
    headers: Mapping[str, str]

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: Any = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, body=body)
        self.status_code = status_code
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers if headers is not None else {}

    @property
    def rate_limits(self) -> RateLimits | None:
        """The `x-ratelimit-*` headers of the error response, as values (a 429's
        say which budget ran out, and when it resets); OpenRouter's are in the
        body. A reset sent as a moment is counted from now."""
        limits = RateLimits.from_headers(self.headers)
        if limits is None:
            in_body = rate_limit_headers_in_body(self.body)
            limits = None if in_body is None else RateLimits.from_headers(in_body)
        return limits


class BadRequestError(APIStatusError):
    """HTTP 400."""


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""


class NotFoundError(APIStatusError):
    """HTTP 404: usually a wrong base URL or model name."""


class ConflictError(APIStatusError):
    """HTTP 409."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests or tokens, or the account is out of quota."""


class InternalServerError(APIStatusError):
    """HTTP 5xx."""


class ServerNotReadyError(InternalServerError):
    """A batch job waited its whole `server_wait` for a server that answered 502
    or 503 (still loading its model, or a proxy with no server behind it) and
    served no request: every request of the job would meet the same."""

    @classmethod
    def after(cls, last: APIStatusError, waited: float) -> ServerNotReadyError:
        """The error that ends the wait, `last` the server's latest answer."""
        return cls(
            f"{last.message}; the server has served no request for {waited:g}s",
            status_code=last.status_code,
            request_id=last.request_id,
            body=last.body,
            code=last.code,
            type=last.type,
            param=last.param,
            headers=last.headers,
        )


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_ERRORS.get(status_code, APIStatusError)


class StreamError(APIError):
    """A stream broke or could not be understood; `partial` keeps what arrived."""


class IncompleteStreamError(StreamError):
    """The server closed the stream before it finished."""


class MalformedStreamError(StreamError):
    """The stream carried something that is not a chat-completion chunk."""


class EventTooLargeError(StreamError):
    """More bytes arrived without a complete event than the configured cap allows."""


class ToolArgumentsError(APIError, ValueError):
    """A tool call's arguments are not valid JSON; `arguments` holds the raw text."""

    arguments: str

    def __init__(self, message: str, *, arguments: str) -> None:
        super().__init__(message)
        self.arguments = arguments


class ToolCallError(APIError):
    """A tool call failed in `run_tools(on_error="raise")`; the cause is chained.
    `messages` holds the conversation up to the call."""

    def __init__(
        self, message: str, *, name: str, arguments: str, messages: list[dict[str, Any]]
    ) -> None:
        super().__init__(message)
        self.name = name
        self.arguments = arguments
        self.messages = messages


class MaxTurnsError(APIError):
    """`run_tools` made `max_turns` requests and the model still called tools.
    `messages` (with the last calls' results) lets a new run go on; `completion`
    is the last answer."""

    def __init__(
        self, message: str, *, messages: list[dict[str, Any]], completion: ChatCompletion
    ) -> None:
        super().__init__(message, request_id=completion.request_id)
        self.messages = messages
        self.completion = completion


class StructuredOutputError(APIError, ValueError):
    """An answer that is not in the format `parse()` asked for (not JSON, or not
    valid for the model); `completion` holds the whole answer."""

    completion: ChatCompletion

    def __init__(self, message: str, *, completion: ChatCompletion) -> None:
        super().__init__(message, request_id=completion.request_id)
        self.completion = completion


class LengthFinishReasonError(StructuredOutputError):
    """The answer reached a limit before it was complete: the token limit (`finish_reason`
    "length"), or the context window (z.ai's "model_context_window_exceeded")."""

    def __init__(self, *, completion: ChatCompletion, finish_reason: str = "length") -> None:
        usage = completion.usage
        tokens = usage.completion_tokens if usage is not None else None
        spent = f" after {tokens} completion tokens" if tokens is not None else ""
        fix = (
            "raise max_tokens or max_completion_tokens"
            if finish_reason == "length"
            else "shorten the conversation"
        )
        super().__init__(
            f"the answer was cut {cut_short_at(finish_reason) or 'at a limit'}{spent} "
            f"(finish_reason {finish_reason!r}), so it cannot be parsed: {fix}",
            completion=completion,
        )


class ContentFilterFinishReasonError(StructuredOutputError):
    """The provider's content filter stopped the answer (`content_filter`, GLM's `sensitive`)."""

    def __init__(
        self, *, completion: ChatCompletion, finish_reason: str = "content_filter"
    ) -> None:
        super().__init__(
            f"the provider's content filter stopped the answer (finish_reason {finish_reason!r}), "
            "so it cannot be parsed",
            completion=completion,
        )


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An error's message folded onto one line and cut (pydantic's, a tool's, run
    over several), for a message that quotes it."""
    return " ".join(str(error).split())[:limit]


# --- building errors from what a server sent -----------------------------------

# Error types some servers name instead of an HTTP status (OpenAI, Anthropic-style gateways).
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "server_error": 500,
}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    checks = _validation_errors(value)
    return str(value) if checks is None else checks


def _validation_errors(value: Any) -> str | None:
    """A FastAPI server's validation errors, `[{"loc": [...], "msg": ...}, ...]`, or an
    object holding them as `detail` (Mistral's 422), as one line:
    `stream_options.include_usage: Extra inputs are not permitted`."""
    if isinstance(value, dict):
        value = value.get("detail")
    if not isinstance(value, list) or not value:
        return None
    said = []
    for error in value:
        if not isinstance(error, dict) or not isinstance(error.get("msg"), str):
            return None
        where = _location(error.get("loc"))
        said.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(said)


def _location(loc: Any) -> str:
    """A validation error's place in the request: `messages[6].tool_calls[0].name`
    (the body's fields without a leading "body", which all of them would have)."""
    if not isinstance(loc, list):
        return ""
    if loc[:1] == ["body"]:
        loc = loc[1:]
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
    return where


def error_fields(body: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, code, type, param) from an error body in any of the shapes servers use.

    `{"error": {...}}` (OpenAI, GLM), `{"error": "text"}`, `{"object": "error", ...}`
    (vLLM), `{"message": ...}` and `{"detail": ...}` (FastAPI-based servers, whose
    list of validation errors is read as one line), and any of these as the one item
    of a list (Gemini's OpenAI-compatible endpoint).
    """
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return None, None, None, None
    error = body.get("error")
    if isinstance(error, dict):
        source = error
    elif isinstance(error, str):
        return error, None, None, None
    else:
        source = body
    message = source.get("message")
    if message is None and "detail" in source:
        message = source["detail"]
    return (
        _text(message),
        _text(source.get("code")),
        _text(source.get("type")),
        _text(source.get("param")),
    )


def _short(text: str, limit: int = 300) -> str:
    """Whitespace folded and cut, for quoting a non-JSON body in a message."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[:limit] + "..."


def status_error(
    status_code: int,
    body: Any,
    *,
    reason: str | None = None,
    url: str | None = None,
    context: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> APIStatusError:
    """The `APIStatusError` subclass for an error response.

    `body` is the decoded JSON, or the raw text when the body was not JSON (an
    HTML page from a proxy); either way the message says what the server said.
    `context` replaces the default "HTTP <status> from <method> <url>" lead-in.
    """
    message, code, error_type, param = error_fields(body)
    if isinstance(body, dict) and isinstance(body.get("request_id"), str):
        request_id = body["request_id"]
    if message is None:
        if isinstance(body, str) and body.strip():
            message = f"the response was not a JSON error: {_short(body)}"
        else:
            message = "the response carried no error message"
    if context is None:
        status_text = f"{status_code} {reason}" if reason else str(status_code)
        context = f"HTTP {status_text} from {method} {url}" if url else f"HTTP {status_text}"
    hint = ""
    if status_code == 404 and not isinstance(body, dict):
        hint = " (check base_url: it should end where /chat/completions can be appended)"
    return status_error_class(status_code)(
        f"{context}: {message}{hint}",
        status_code=status_code,
        request_id=request_id,
        body=body,
        code=code,
        type=error_type,
        param=param,
        headers=headers,
    )


def stream_error_status(body: dict[str, Any]) -> int:
    """The HTTP status an error event inside a 200 stream stands for."""
    _, code, error_type, _ = error_fields(body)
    if code is not None and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return _STATUS_BY_ERROR_TYPE.get(error_type or "", 500)
