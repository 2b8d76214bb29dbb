"""The `asyncchat` command: `chat`, `models`, `batch`, `mock-server` and `demo`.

Each command's flags and work are in its own module (`_cli_chat`, `_cli_batch`,
`_cli_demo`; `_cli_args` holds what they share). Here: the parser, and every
error a command ends with turned into one line and an exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

from asyncchat._batchfile import BatchFileError
from asyncchat._batchrun import fatal_hint
from asyncchat._cli_batch import add_batch, batch
from asyncchat._cli_chat import add_chat, add_models, chat, models
from asyncchat._cli_demo import add_mock_server, demo, mock_server
from asyncchat._version import __version__
from asyncchat.errors import APIError, ConfigurationError, ConnectError, TLSError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncchat", description="OpenAI-compatible chat completions from the terminal."
    )
    parser.add_argument("--version", action="version", version=f"asyncchat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_chat(commands)
    add_models(commands)
    add_batch(commands)
    add_mock_server(commands)
    commands.add_parser("demo", help="show asyncchat against the built-in mock server")
    return parser


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
            return asyncio.run(chat(args, sys.stdout))
        if args.command == "models":
            return asyncio.run(models(args, sys.stdout))
        if args.command == "batch":
            return batch(args)
        if args.command == "mock-server":
            return asyncio.run(mock_server(args))
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
