"""`asyncchat chat` and `asyncchat models`: one prompt, its answer streamed to the
terminal; the server's models."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any, TextIO

import orjson

from asyncchat._cli_args import add_connection, client_from, positive_int
from asyncchat._config import resolve_base_url
from asyncchat.client import Client
from asyncchat.content import image_part, text_part
from asyncchat.errors import ConfigurationError, NotFoundError
from asyncchat.events import ContentDelta, ReasoningDelta, ToolCallDone
from asyncchat.quirks import (
    CONTENT_FILTER_REASONS,
    content_text,
    cut_short_at,
    message_reasoning,
)
from asyncchat.types import ChatCompletion, Usage

DEFAULT_MODEL = "gpt-4o-mini"
# Request parameters that have their own flag or that the command sets itself.
_RESERVED_OPTIONS = {"model": "-m/--model", "messages": "the prompt", "stream": "--no-stream"}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


def add_chat(commands: Any) -> None:
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
    chat.add_argument(
        "--max-tokens",
        type=positive_int,
        help="the answer's token limit (max_completion_tokens for OpenAI and Azure, "
        "max_tokens elsewhere)",
    )
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
    add_connection(chat)


def add_models(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="list the models the server offers",
        description="List the models the server offers (GET /models), one name a line: "
        "what chat -m takes.",
    )
    models.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    add_connection(models)


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


def _host(base_url: str | None) -> str:
    """The host of the server the command talks to (the flag's, or the environment's)."""
    return urllib.parse.urlsplit(resolve_base_url(base_url)[0]).hostname or ""


def _token_limit_name(base_url: str | None) -> str:
    """The field --max-tokens sets. OpenAI's reasoning models (on Azure too) refuse
    `max_tokens` for `max_completion_tokens`, which all its chat models take; other
    servers know `max_tokens`, and some of them nothing else."""
    host = _host(base_url)
    if host == "api.openai.com" or host.endswith(".openai.azure.com"):
        return "max_completion_tokens"
    return "max_tokens"


def _streams_usage_unasked(base_url: str | None) -> bool:
    """Whether the server ends every stream with its usage, and refuses
    `stream_options` (Mistral: 422 "Extra inputs are not permitted")."""
    return _host(base_url) == "api.mistral.ai"


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
        params[_token_limit_name(args.base_url)] = args.max_tokens
    for key, value in args.option:
        if key in _RESERVED_OPTIONS:
            raise ConfigurationError(f"-o {key}: set it with {_RESERVED_OPTIONS[key]}")
        params[key] = _option_value(value)
    if args.usage and not args.no_stream and not _streams_usage_unasked(args.base_url):
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

    def tool_call(self, name: str | None, arguments: Any, *, custom: bool = False) -> None:
        """`[tool call] NAME {"json": "arguments"}`; invalid arguments shown as sent, warned
        of. A custom tool's input is free-form text: shown as a JSON string."""
        self._end_reasoning()
        if self.wrote:
            self.out.write("\n")
        if custom:
            shown = json.dumps(arguments or "", ensure_ascii=False)
        else:
            shown = self._arguments(name, arguments)
        self.out.write(f"[tool call] {name} {shown}")
        self.wrote = True

    def _arguments(self, name: str | None, arguments: Any) -> str:
        """A function's arguments as one line of JSON, or as sent (warned of) when
        they are not a JSON object."""
        if not isinstance(arguments, str):  # a server that sent an object, not JSON text
            return json.dumps(arguments, ensure_ascii=False)
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return json.dumps(parsed, ensure_ascii=False)
        self.err.write(
            f"asyncchat: warning: the arguments of tool call {name} are not a JSON object\n"
        )
        return arguments

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


async def chat(args: argparse.Namespace, out: TextIO) -> int:
    params = _params(args)
    try:
        async with client_from(args) as client:
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
            _warn_if_cut_short(completion, sys.stderr)
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
                printer.tool_call(event.name, event.arguments, custom=event.type == "custom")
        final = await events.final_completion()
    printer.finish()
    _warn_if_cut_short(final, sys.stderr)
    if args.usage:
        _print_usage(final.usage, sys.stderr)
    return 0


def _warn_if_cut_short(completion: ChatCompletion, err: TextIO) -> None:
    """Say on stderr when the answer printed is not the whole answer: a limit, the
    server, or the provider's content filter stopped it."""
    reason = completion.choices[0].finish_reason if completion.choices else None
    where = cut_short_at(reason)
    if reason == "length":
        why = "the answer was cut at the token limit (finish_reason 'length'): raise --max-tokens"
    elif where is not None:
        why = f"the answer was cut {where} (finish_reason {reason!r})"
    elif type(reason) is str and reason in CONTENT_FILTER_REASONS:
        why = f"the provider's content filter stopped the answer (finish_reason {reason!r})"
    else:
        return
    err.write(f"asyncchat: warning: {why}\n")


def _print_message(completion: ChatCompletion, printer: _Printer) -> None:
    message = completion.choices[0].message
    data = message.to_dict()
    reasoning = message_reasoning(data)
    if reasoning:
        printer.reasoning(reasoning)
    text = content_text(data.get("content"))
    if text:
        printer.content(text)
    for call in message.tool_calls or ():
        if call.type == "custom" and call.custom is not None:
            printer.tool_call(call.custom.name, call.custom.input, custom=True)
        else:
            printer.tool_call(call.function.name, call.function.arguments or "")
    printer.finish()


# --- models -------------------------------------------------------------------------


async def models(args: argparse.Namespace, out: TextIO) -> int:
    async with client_from(args) as client:
        listing = await client.models.list()
    if args.json:
        out.write(listing.to_json(indent=True) + "\n")
    else:
        out.writelines(f"{model.id}\n" for model in listing.data if model.id)
    return 0
