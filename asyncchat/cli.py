"""The `asyncchat` command: `chat`, `batch`, `mock-server` and `demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shlex
import signal
import sys
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from asyncchat._batchfile import BatchFileError
from asyncchat._batchrun import BatchStop, BatchSummary, fatal_hint, run_batch_file
from asyncchat._config import environment_api_key, is_loopback, resolve_base_url
from asyncchat._serverwatch import DEFAULT_PATIENCE
from asyncchat._version import __version__
from asyncchat.batchapi import run_batch_api
from asyncchat.client import Client
from asyncchat.content import image_part, text_part
from asyncchat.errors import APIError, ConfigurationError, ConnectError, NotFoundError, TLSError
from asyncchat.events import ContentDelta, ReasoningDelta, ToolCallDone, ToolFinished, ToolStarted
from asyncchat.quirks import reasoning_text
from asyncchat.testing import BatchSettings, MockServer, StreamStyle
from asyncchat.types import ChatCompletion, Usage

__all__ = ["main"]

DEFAULT_MODEL = "gpt-4o-mini"
# Request parameters that have their own flag or that the command sets itself.
_RESERVED_OPTIONS = {"model": "-m/--model", "messages": "the prompt", "stream": "--no-stream"}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
SEED_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "The city and state, e.g. San Francisco, CA",
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncchat", description="OpenAI-compatible chat completions from the terminal."
    )
    parser.add_argument("--version", action="version", version=f"asyncchat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_chat(commands)
    _add_models(commands)
    _add_batch(commands)
    _add_mock_server(commands)
    commands.add_parser("demo", help="show asyncchat against the built-in mock server")
    return parser


def _add_connection(command: argparse.ArgumentParser) -> None:
    command.add_argument("--base-url", help="default: ASYNCCHAT_BASE_URL / OPENAI_BASE_URL")
    command.add_argument(
        "--api-key",
        help="default: ASYNCCHAT_API_KEY / OPENAI_API_KEY; not needed for a server on this machine",
    )
    tls = command.add_argument_group("TLS (https:// servers)")
    tls.add_argument(
        "--cacert",
        metavar="PATH",
        help="trust the CAs in this PEM file or directory (default: the system's, "
        "or SSL_CERT_FILE / SSL_CERT_DIR)",
    )
    tls.add_argument(
        "--cert", metavar="PATH", help="a client certificate (PEM), with its key unless --key"
    )
    tls.add_argument("--key", metavar="PATH", help="the client certificate's key (PEM)")
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (a development server only)",
    )


def _add_chat(commands: Any) -> None:
    model = os.environ.get("ASYNCCHAT_MODEL")
    chat = commands.add_parser(
        "chat",
        help="send one prompt and stream the answer",
        description="Send one prompt and stream the answer. Text piped on standard input "
        "is sent too, before the prompt.",
    )
    chat.add_argument(
        "prompt", nargs="?", help="the user message (- to read it all from standard input)"
    )
    chat.add_argument(
        "-m",
        "--model",
        help=f"default: ASYNCCHAT_MODEL ({model!r})"
        if model
        else f"default: ASYNCCHAT_MODEL if set, else {DEFAULT_MODEL}",
    )
    chat.add_argument("-s", "--system", help="a system message")
    chat.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH_OR_URL",
        help="attach an image: a file, an http(s) URL, or - for standard input (repeatable)",
    )
    chat.add_argument("--tools", metavar="FILE.json", help="a JSON list of tools to offer")
    chat.add_argument(
        "-o",
        "--option",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="any request parameter, VALUE read as JSON when it parses (-o seed 42 "
        "-o stop '[\"\\n\"]' -o user alice); repeatable",
    )
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=_positive_int)
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    chat.add_argument(
        "--json", action="store_true", help="print the raw chunks (or answer) as JSON"
    )
    chat.add_argument(
        "--hide-reasoning",
        action="store_true",
        help="do not print reasoning text (shown dim on a terminal, else on standard error)",
    )
    chat.add_argument(
        "-u", "--usage", action="store_true", help="print token usage on standard error"
    )
    _add_connection(chat)


def _add_models(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="list the models the server offers",
        description="List the models the server offers (GET /models), one name a line: "
        "what chat -m takes.",
    )
    models.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    _add_connection(models)


def _add_batch(commands: Any) -> None:
    batch = commands.add_parser(
        "batch", help="run an OpenAI Batch file (JSONL), resumably, writing results as they finish"
    )
    batch.add_argument("input", type=Path, help="requests, one JSON object a line")
    batch.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="results file; rerunning with it resumes where the last run stopped"
        " (- for standard output, without resume)",
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="most requests open at once (default: 64)",
    )
    batch.add_argument("--rpm", type=float, help="requests-per-minute ceiling")
    batch.add_argument("--tpm", type=float, help="tokens-per-minute ceiling (estimated)")
    batch.add_argument(
        "--redis-url",
        metavar="URL",
        help="share --rpm/--tpm through this Redis with every process using the same base URL "
        "and key (needs the redis extra)",
    )
    batch.add_argument(
        "--limit-name", help="with --redis-url: share the limit under this name instead"
    )
    batch.add_argument("-m", "--model", help="use this model for every request")
    batch.add_argument(
        "--shard",
        type=_shard,
        default=(1, 1),
        metavar="K/N",
        help="run only shard K of N (K from 1): a stable split by custom_id",
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the requests that failed in an earlier run",
    )
    batch.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long requests in flight may finish (default: 10);"
        " a second Ctrl-C cancels them at once",
    )
    batch.add_argument(
        "--server-wait",
        type=_non_negative_float,
        metavar="SECONDS",
        help="how long to wait for a server that answered and then takes no connection (a"
        f" restart) before stopping the job (default: {DEFAULT_PATIENCE:g}; a server that"
        " never answered stops it at once, unless --server-starting)",
    )
    batch.add_argument(
        "--server-starting",
        action="store_true",
        help="the server may still be starting (a script that starts it too): wait up to"
        " --server-wait seconds for its first answer instead of stopping the job at once,"
        " and take a 502 or 503 before it (a proxy with no server behind it yet) as not up"
        " (llama.cpp's 503 'Loading model' is waited for without it)",
    )
    batch.add_argument(
        "--via",
        choices=("requests", "batch-api"),
        default="requests",
        help="requests: send each request now (default); batch-api: submit the file to the "
        "provider's Batch API (OpenAI, GLM: half price, results within the completion window)",
    )
    batch.add_argument(
        "--completion-window",
        help="with --via batch-api: how long the provider may take (default: 24h)",
    )
    batch.add_argument(
        "--metadata",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="with --via batch-api: a label on each batch (repeatable)",
    )
    batch.add_argument(
        "--poll-interval",
        type=_positive_float,
        metavar="SECONDS",
        help="with --via batch-api: the first wait between looks at the batches; longer "
        "while nothing changes (default: 10)",
    )
    batch.add_argument(
        "--max-requests-per-batch",
        type=_positive_int,
        metavar="N",
        help="with --via batch-api: split into batches of at most N requests "
        "(default: the provider's limit, 50,000)",
    )
    batch.add_argument(
        "--cancel",
        action="store_true",
        help="with --via batch-api: cancel this job's running batches and keep what they finished",
    )
    batch.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: actors on a Ray cluster (needs the ray extra)",
    )
    batch.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)",
    )
    batch.add_argument(
        "--ray-actors",
        type=_positive_int,
        default=2,
        metavar="N",
        help="with --engine ray: actors sending requests, --concurrency split between them"
        " (default: 2)",
    )
    batch.add_argument(
        "--ray-runtime-env",
        type=_json_object,
        metavar="JSON",
        help="with --engine ray: the Ray runtime environment of the job's workers, as a JSON "
        "object (a worker_process_setup_hook there sets up telemetry in each actor)",
    )
    batch.add_argument(
        "--ray-start-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="with --ray-runtime-env: give up when no worker with it has started by then "
        "(default: 600)",
    )
    _add_connection(batch)


def _add_mock_server(commands: Any) -> None:
    mock = commands.add_parser(
        "mock-server",
        help="run the built-in mock server",
        description="An OpenAI-compatible server that answers 'You said: <your text>', "
        "with the stream styles and faults of asyncchat.testing.MockServer.",
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--api-key", help="require this key (401 otherwise)")
    mock.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    mock.add_argument(
        "--rpm",
        type=float,
        help="a provider's requests-per-minute limit: requests over it get a 429 with Retry-After",
    )
    mock.add_argument("--reply", help="answer with this text instead of the echo")
    mock.add_argument(
        "--loading",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="answer 503 'Loading model' for this long after starting, as llama.cpp's"
        " server does while it loads (a batch job waits for it)",
    )
    mock.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="a model listed by GET /v1/models (repeatable; default: mock-model)",
    )
    mock.add_argument(
        "--resolve-model",
        action="append",
        type=_key_value,
        default=[],
        metavar="ASKED=ANSWERED",
        help="answer requests for model ASKED as model ANSWERED, as a provider names a "
        "dated snapshot (repeatable)",
    )
    mock.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    mock.add_argument("--tokens", type=_positive_int, help="content chunks per stream")
    mock.add_argument("--line-ending", choices=("lf", "crlf", "cr"), default="lf")
    mock.add_argument("--keepalive", action="store_true", help="a comment before each chunk")
    mock.add_argument("--no-done", action="store_true", help="end streams without [DONE]")
    mock.add_argument(
        "--stream-always",
        action="store_true",
        help="stream every answer, asked to or not (as unsloth's server does)",
    )
    mock.add_argument(
        "--tool-calls",
        choices=("openai", "whole", "no_index", "repeat_name", "object_arguments"),
        default="openai",
        help="how streamed tool calls are cut (as OpenAI, GLM/vLLM, Gemini, ...)",
    )
    mock.add_argument(
        "--reasoning",
        choices=("reasoning_content", "reasoning"),
        help="stream reasoning text first, under this field",
    )
    mock.add_argument("--error-after", type=int, metavar="N", help="an error event after N chunks")
    mock.add_argument("--drop-after", type=int, metavar="N", help="cut the connection after N")
    mock.add_argument(
        "--batch-pace",
        type=_positive_float,
        default=500.0,
        metavar="N",
        help="Batch API: requests a batch answers a second (default: 500)",
    )
    mock.add_argument(
        "--batch-expire-after",
        type=_positive_float,
        metavar="SECONDS",
        help="Batch API: batches expire this long after creation, keeping what finished",
    )


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/4, got {text!r}") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"K must be from 1 to N in K/N, got {text!r}")
    return shard


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (1: API error, 2: bad input)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(arguments)
    args.argv = arguments
    with _warnings_as_lines():
        return _run(args)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Warnings as `asyncchat: warning: ...` lines, without Python's file, line and source."""

    def show(message: Warning | str, *_: object, file: TextIO | None = None, **__: object) -> None:
        text = str(message).removeprefix("asyncchat: ")
        print(f"asyncchat: warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _advice(error: APIError) -> str:
    """What to check, for an error whose message does not say so already."""
    if isinstance(error, ConnectError) and not isinstance(error, TLSError):
        return f"; {fatal_hint(error)}"
    return ""


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "chat":
            return asyncio.run(_chat(args, sys.stdout))
        if args.command == "models":
            return asyncio.run(_models(args, sys.stdout))
        if args.command == "batch":
            _check_batch_flags(args)
            if args.engine == "ray":
                return _batch_on_ray(args)
            return asyncio.run(_batch(args))
        if args.command == "mock-server":
            return asyncio.run(_mock_server(args))
        return asyncio.run(demo(sys.stdout))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (ConfigurationError, BatchFileError) as exc:
        print(f"asyncchat: error: {exc}", file=sys.stderr)
        return 2
    except APIError as exc:
        print(f"asyncchat: error: {exc}{_advice(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        # `cat`'s form, `NAME: reason`, rather than Python's `[Errno 2] ...: 'NAME'`.
        reason = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else exc
        print(f"asyncchat: error: {reason}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"asyncchat: error: {exc}", file=sys.stderr)
        return 2


def _client(args: argparse.Namespace) -> Client:
    """The client for --base-url / --api-key; a missing key's error names the flags."""
    return Client(**_connection(args))


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """`base_url` and `api_key` from the flags or the environment, checked, and the
    TLS flags' settings."""
    base_url, _ = resolve_base_url(args.base_url)
    api_key = environment_api_key(args.api_key)
    if not api_key and not is_loopback(base_url):
        raise ConfigurationError(
            f"no API key for {base_url}: pass --api-key KEY, or set ASYNCCHAT_API_KEY "
            "(or OPENAI_API_KEY)"
        )
    url = args.base_url or os.environ.get("ASYNCCHAT_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    return {"base_url": url, "api_key": api_key, **_tls_options(args)}


def _tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """`verify` and `cert` from --cacert, --insecure, --cert and --key, when given."""
    options: dict[str, Any] = {}
    if args.insecure and args.cacert:
        raise ConfigurationError("--insecure and --cacert contradict each other: pass one")
    if args.insecure:
        options["verify"] = False
    elif args.cacert:
        options["verify"] = args.cacert
    if args.key and not args.cert:
        raise ConfigurationError("--key needs --cert, the certificate it belongs to")
    if args.cert:
        options["cert"] = (args.cert, args.key) if args.key else args.cert
    return options


# --- chat ---------------------------------------------------------------------------


def _model(args: argparse.Namespace) -> str:
    if args.model is not None:
        model: str = args.model
        if not model.strip():
            raise ConfigurationError("--model must not be empty")
        return model
    return os.environ.get("ASYNCCHAT_MODEL") or DEFAULT_MODEL


def _piped_stdin() -> str | None:
    """Standard input when it is a pipe or a file, not a terminal."""
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        return None
    return stdin.read()


def _prompt(args: argparse.Namespace) -> str:
    """The prompt argument, with text piped on standard input before it."""
    if args.prompt == "-":
        return sys.stdin.read()
    piped = None if "-" in args.image else _piped_stdin()
    parts = []
    if piped and piped.strip():
        parts.append(piped.rstrip("\n"))
    if args.prompt and args.prompt.strip():
        parts.append(args.prompt)
    if not parts:
        raise ConfigurationError(
            "no prompt: give one as an argument, or pipe it: echo hi | asyncchat chat"
        )
    return "\n\n".join(parts)


def _image(source: str) -> dict[str, Any]:
    if source == "-":
        return image_part(sys.stdin.buffer.read())
    return image_part(source)


def _messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.image.count("-") + (args.prompt == "-") > 1:
        raise ConfigurationError(
            "standard input can be read once: give either the prompt or one image as -"
        )
    prompt = _prompt(args)
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    if args.image:
        content = [text_part(prompt), *(_image(source) for source in args.image)]
        messages.append({"role": "user", "content": content})
    else:
        messages.append({"role": "user", "content": prompt})
    return messages


def _load_tools(path: str) -> list[Any]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigurationError(f"--tools {path}: cannot read it ({exc.strerror})") from None
    try:
        tools = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"--tools {path}: not valid JSON ({exc})") from None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise ConfigurationError(f"--tools {path}: expected a JSON list of tool objects")
    return tools


def _option_value(text: str) -> Any:
    """A -o value: JSON when it parses (numbers, true, lists, objects), else the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"model": _model(args)}
    if args.tools:
        params["tools"] = _load_tools(args.tools)
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    for key, value in args.option:
        if key in _RESERVED_OPTIONS:
            raise ConfigurationError(f"-o {key}: set it with {_RESERVED_OPTIONS[key]}")
        params[key] = _option_value(value)
    if args.usage and not args.no_stream:
        params.setdefault("stream_options", {"include_usage": True})
    params["messages"] = _messages(args)
    return params


class _Printer:
    """Writes an answer: content on `out`, reasoning apart from it, tool calls as JSON."""

    def __init__(self, out: TextIO, err: TextIO, hide_reasoning: bool) -> None:
        self.out, self.err = out, err
        self.hide_reasoning = hide_reasoning
        self.terminal = out.isatty()
        self.in_reasoning = False
        self.wrote = False

    def reasoning(self, text: str) -> None:
        if self.hide_reasoning:
            return
        if not self.in_reasoning:
            self.in_reasoning = True
            if self.terminal:
                self.out.write(_DIM)
        stream = self.out if self.terminal else self.err
        stream.write(text)
        stream.flush()

    def _end_reasoning(self) -> None:
        if not self.in_reasoning:
            return
        self.in_reasoning = False
        if self.terminal:
            self.out.write(_RESET + "\n\n")
        else:
            self.err.write("\n")
            self.err.flush()

    def content(self, text: str) -> None:
        self._end_reasoning()
        self.out.write(text)
        self.out.flush()
        self.wrote = True

    def tool_call(self, name: str | None, arguments: Any) -> None:
        """`[tool call] NAME {"json": "arguments"}`; invalid arguments shown as sent, warned of."""
        self._end_reasoning()
        if self.wrote:
            self.out.write("\n")
        if not isinstance(arguments, str):  # a server that sent an object, not JSON text
            arguments = json.dumps(arguments, ensure_ascii=False)
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            arguments = json.dumps(parsed, ensure_ascii=False)
        else:
            self.err.write(
                f"asyncchat: warning: the arguments of tool call {name} are not a JSON object\n"
            )
        self.out.write(f"[tool call] {name} {arguments}")
        self.wrote = True

    def finish(self) -> None:
        self._end_reasoning()
        self.out.write("\n")
        self.out.flush()


def _print_usage(usage: Usage | None, err: TextIO) -> None:
    if usage is None:
        err.write("usage: the server reported none\n")
        return
    err.write(
        f"usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
        f" = {usage.total_tokens} tokens\n"
    )


async def _chat(args: argparse.Namespace, out: TextIO) -> int:
    params = _params(args)
    try:
        async with _client(args) as client:
            return await _converse(client, args, params, out)
    except NotFoundError as exc:
        exc.message += (
            f" (is {params['model']!r} a model of this server? `asyncchat models` lists "
            "them; choose one with -m/--model or ASYNCCHAT_MODEL)"
        )
        exc.args = (exc.message,)
        raise


async def _converse(
    client: Client, args: argparse.Namespace, params: dict[str, Any], out: TextIO
) -> int:
    printer = _Printer(out, sys.stderr, args.hide_reasoning)
    if args.no_stream:
        completion = await client.chat.completions.create(**params)
        if args.json:
            out.write(completion.to_json() + "\n")
        else:
            _print_message(completion, printer)
        if args.usage:
            _print_usage(completion.usage, sys.stderr)
        return 0
    if args.json:
        stream = await client.chat.completions.create(stream=True, **params)
        async with stream:
            async for chunk in stream:
                out.write(chunk.to_json() + "\n")
        if args.usage:
            _print_usage(stream.completion.usage, sys.stderr)
        return 0
    async with client.chat.stream(**params) as events:
        async for event in events:
            if isinstance(event, ContentDelta):
                printer.content(event.text)
            elif isinstance(event, ReasoningDelta):
                printer.reasoning(event.text)
            elif isinstance(event, ToolCallDone):
                printer.tool_call(event.name, event.arguments)
        final = await events.final_completion()
    printer.finish()
    if args.usage:
        _print_usage(final.usage, sys.stderr)
    return 0


def _print_message(completion: ChatCompletion, printer: _Printer) -> None:
    message = completion.choices[0].message
    data = message.to_dict()
    reasoning = reasoning_text(data)
    if reasoning:
        printer.reasoning(reasoning)
    if message.content:
        printer.content(message.content)
    for call in message.tool_calls or ():
        printer.tool_call(call.function.name, call.function.arguments or "")
    printer.finish()


# --- models -------------------------------------------------------------------------


async def _models(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        listing = await client.models.list()
    if args.json:
        out.write(listing.to_json(indent=True) + "\n")
    else:
        out.writelines(f"{model.id}\n" for model in listing.data if model.id)
    return 0


# --- batch --------------------------------------------------------------------------


def _check_batch_flags(args: argparse.Namespace) -> None:
    """Flags that do not go together, refused before anything runs."""
    for flag, given in (
        ("--ray-address", args.ray_address),
        ("--ray-runtime-env", args.ray_runtime_env is not None),
        ("--ray-start-timeout", args.ray_start_timeout),
    ):
        if given and args.engine != "ray":
            raise ConfigurationError(f"{flag} needs --engine ray")
    if args.ray_start_timeout and args.ray_runtime_env is None:
        raise ConfigurationError("--ray-start-timeout needs --ray-runtime-env")
    if args.via == "batch-api":
        clashing = [
            flag
            for flag, given in (
                ("--engine ray", args.engine == "ray"),
                ("--rpm", args.rpm),
                ("--tpm", args.tpm),
                ("--redis-url", args.redis_url),
            )
            if given
        ]
        if clashing:
            raise ConfigurationError(
                f"--via batch-api leaves the pace to the provider: drop {', '.join(clashing)}"
            )
        for flag, given in (
            ("--server-wait", args.server_wait is not None),
            ("--server-starting", args.server_starting),
        ):
            if given:
                raise ConfigurationError(
                    f"{flag} is for requests sent one by one: drop it with --via batch-api"
                )
    else:
        batch_api_only = (
            ("--cancel", args.cancel),
            ("--metadata", args.metadata),
            ("--max-requests-per-batch", args.max_requests_per_batch),
            ("--completion-window", args.completion_window),
            ("--poll-interval", args.poll_interval),
        )
        for flag, given in batch_api_only:
            if given:
                raise ConfigurationError(f"{flag} needs --via batch-api")


async def _batch(args: argparse.Namespace) -> int:
    stop = BatchStop(grace=args.grace)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(number, stop.request, number.name)
    try:
        if args.via == "batch-api":
            async with _client(args) as client:
                summary = await run_batch_api(
                    client,
                    args.input,
                    args.output,
                    model=args.model,
                    shard=args.shard,
                    retry_failed=args.retry_failed,
                    completion_window=args.completion_window or "24h",
                    metadata=dict(args.metadata) or None,
                    poll_interval=args.poll_interval or 10.0,
                    max_requests_per_batch=args.max_requests_per_batch,
                    cancel=args.cancel,
                    stop=stop,
                )
            return _report_batch(args, summary)
        async with _client(args) as client, _shared_limit(args, client) as shared:
            summary = await run_batch_file(
                client,
                **_job(args),
                requests_per_minute=None if shared else args.rpm,
                tokens_per_minute=None if shared else args.tpm,
                rate_limit=shared,
                stop=stop,
            )
    finally:
        for number in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(number)
    return _report_batch(args, summary)


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """What both engines take alike: the files, and which requests to run how."""
    return {
        "input_path": args.input,
        "output_path": args.output,
        "concurrency": args.concurrency,
        "model": args.model,
        "shard": args.shard,
        "retry_failed": args.retry_failed,
        "server_wait": DEFAULT_PATIENCE if args.server_wait is None else args.server_wait,
        "server_starting": args.server_starting,
    }


def _batch_on_ray(args: argparse.Namespace) -> int:
    """`--engine ray`: the same job on Ray actors; the driver writes the output."""
    if (args.rpm or args.tpm) and not args.redis_url:
        raise ConfigurationError(
            "--engine ray shares --rpm/--tpm between its actors through Redis: add --redis-url"
        )
    if args.limit_name and not args.redis_url:
        raise ConfigurationError("--limit-name needs --redis-url")
    connection = _connection(args)  # the actors get these: a remote one has not our environment
    try:
        from asyncchat import ray as ray_engine
    except ImportError as exc:
        raise ConfigurationError(
            f"--engine ray needs Ray Data ({exc}): pip install 'asyncchat[ray]'"
        ) from None
    stop = BatchStop()
    summary = ray_engine.run_batch_file(
        **_job(args),
        address=args.ray_address,
        actors=args.ray_actors,
        client_options=connection,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        redis_url=args.redis_url,
        limit_name=args.limit_name,
        stop=stop,
        handle_signals=True,
        runtime_env=args.ray_runtime_env,
        start_timeout=args.ray_start_timeout or ray_engine.WORKER_START_SECONDS,
    )
    return _report_batch(args, summary)


@contextlib.asynccontextmanager
async def _shared_limit(args: argparse.Namespace, client: Client) -> AsyncIterator[Any]:
    """The Redis-shared limit `--redis-url` asks for, or None."""
    if not args.redis_url:
        yield None
        return
    if not (args.rpm or args.tpm):
        raise ConfigurationError("--redis-url shares a limit: give --rpm, --tpm or both")
    try:
        from asyncchat.redislimit import RedisRateLimit
    except ImportError:  # pragma: no cover - the redis package is missing
        raise ConfigurationError(
            "--redis-url needs the redis package: pip install 'asyncchat[redis]'"
        ) from None
    limit = RedisRateLimit(
        args.redis_url,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        client=None if args.limit_name else client,
        name=args.limit_name,
    )
    async with limit:
        yield limit


def _report_batch(args: argparse.Namespace, summary: BatchSummary) -> int:
    """The summary on stderr; the exit status."""
    rerun = f"run the same command again to resume: {_command_line(args.argv)}"
    if summary.fatal is not None:
        hint = fatal_hint(summary.fatal)
        if _refused_from_the_start(args, summary):
            hint = f"{hint} (--server-starting waits for a server still starting)"
        print(
            f"asyncchat: error: batch stopped, every request would fail: {summary.fatal}; "
            f"{hint}. {summary.succeeded + summary.failed} of "
            f"{summary.total} results are in {args.output}, {summary.not_run} still to run; "
            "fix this and run the same command again",
            file=sys.stderr,
        )
        return 1
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard[1] > 1 else ""
    print(
        f"batch{shard}: {summary.total} requests, {summary.succeeded} succeeded, "
        f"{summary.failed} failed, {summary.skipped} already done before this run; "
        f"{summary.tokens} tokens in {summary.seconds:.1f}s; results in {args.output}",
        file=sys.stderr,
    )
    if summary.stopped_by is not None:
        print(
            f"stopped by {summary.stopped_by}: {summary.not_run} requests not run; {rerun}",
            file=sys.stderr,
        )
        return 128 + int(getattr(signal, summary.stopped_by, signal.SIGINT))
    if summary.failed:
        print("rerun with --retry-failed to try the failed requests again", file=sys.stderr)
    return 0 if summary.ok else 1


def _refused_from_the_start(args: argparse.Namespace, summary: BatchSummary) -> bool:
    """The job stopped as its server took no connection and had not answered: it may
    have been started with the job, and not be up yet."""
    fatal = summary.fatal
    return (
        isinstance(fatal, ConnectError)
        and not isinstance(fatal, TLSError)
        and summary.succeeded + summary.failed == summary.skipped  # nothing written this run
        and not args.server_starting
    )


def _command_line(argv: Sequence[str]) -> str:
    """The command as typed, the API key masked."""
    shown, hide_next = ["asyncchat"], False
    for word in argv:
        if hide_next:
            word, hide_next = "***", False
        elif word == "--api-key":
            hide_next = True
        elif word.startswith("--api-key="):
            word = "--api-key=***"
        shown.append(word)
    return shlex.join(shown).replace("'***'", "***")


async def _mock_server(args: argparse.Namespace) -> int:
    line_ending = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}[args.line_ending]
    style = StreamStyle(
        tokens=args.tokens,
        chunk_delay=args.chunk_delay,
        line_ending=line_ending,
        keepalive=args.keepalive,
        send_done=not args.no_done,
        stream_always=args.stream_always,
        tool_calls=args.tool_calls,
        reasoning=args.reasoning,
        error_after=args.error_after,
        drop_after=args.drop_after,
    )
    server = MockServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        delay=args.delay,
        reply=args.reply,
        style=style,
        models=args.models or ("mock-model",),
        resolved_models=dict(args.resolve_model),
        requests_per_minute=args.rpm,
        loading=args.loading,
        batch=BatchSettings(pace=args.batch_pace, expire_after=args.batch_expire_after),
    )
    async with server:
        print(f"mock server listening on {server.base_url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()
    return 0


async def demo(out: TextIO) -> int:
    """The seed's calls, made with asyncchat against an in-process mock server."""
    async with (
        MockServer() as server,
        Client(base_url=server.base_url, api_key="demo-key") as client,
    ):
        out.write(f"mock server at {server.base_url}\n\n1. A completion:\n")
        completion = await client.chat.completions.create(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Say this is a test"}],
        )
        out.write(f"   {completion.choices[0].message.content}\n")
        out.write(
            f"   usage: {completion.usage.total_tokens if completion.usage else None} tokens,"
            f" request id {completion.request_id}\n\n"
        )

        out.write("2. Streaming, token by token:\n   ")
        server.style = StreamStyle(chunk_delay=0.05)  # slow enough to watch
        async for text in client.chat.stream_text(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Stream these words one at a time please"}],
        ):
            out.write(text)
            out.flush()
        out.write("\n\n3. A streamed tool call, assembled:\n")
        server.style = StreamStyle()
        async with client.chat.stream(
            model="glm-4-air",
            messages=[{"role": "user", "content": "What's the weather like in Boston?"}],
            tools=[SEED_TOOL],
        ) as events:
            async for event in events:
                if isinstance(event, ToolCallDone):
                    arguments = json.dumps(event.parsed_arguments, ensure_ascii=False)
                    out.write(f"   {event.name} {arguments}\n")
            final = await events.final_completion()
        out.write(f"   finish_reason: {final.choices[0].finish_reason}\n")

        out.write("\n4. A JSON answer, parsed as it streams:\n")
        async with client.chat.stream(
            model="glm-4-air",
            messages=[{"role": "user", "content": "Describe Boston"}],
            response_format=CITY_FORMAT,
        ) as events:
            shown = None
            async for event in events:
                if isinstance(event, ContentDelta) and event.parsed != shown:
                    shown = copy.deepcopy(event.parsed)
                    out.write(f"   {json.dumps(shown)}\n")
            final = await events.final_completion()
        out.write(f"   parsed: {final.choices[0].message.parsed}\n")

        out.write("\n5. A Python function as a tool, in the tool-calling loop:\n")
        runner = client.chat.run_tools(
            model="glm-4-air",
            messages=[{"role": "user", "content": "What's the weather like in Boston?"}],
            tools=[get_current_weather],
        )
        async for step in runner:
            if isinstance(step, ToolStarted):
                out.write(f"   -> {step.name}({json.dumps(step.arguments)})\n")
            elif isinstance(step, ToolFinished):
                out.write(f"   <- {step.result}\n")
        answer = await runner.final_completion()
        out.write(f"   answer: {answer.choices[0].message.content}\n")
    return 0


CITY_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        },
    },
}


def get_current_weather(location: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather in a given location.

    Args:
        location: The city and state, such as "San Francisco, CA".
    """
    return f"21 degrees {unit} and sunny in {location}"
