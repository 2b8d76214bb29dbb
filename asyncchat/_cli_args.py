"""What the commands share: the connection flags, the client they make, and the types
of argument values (each refused with a one-line reason)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import orjson

from asyncchat._config import environment_api_key, is_loopback, resolve_base_url
from asyncchat.client import Client
from asyncchat.errors import ConfigurationError


def add_connection(command: argparse.ArgumentParser) -> None:
    """The flags of a command that talks to a server: where, with which key, and how
    to trust it."""
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


def client_from(args: argparse.Namespace) -> Client:
    """The client for --base-url / --api-key; a missing key's error names the flags."""
    return Client(**connection_from(args))


def connection_from(args: argparse.Namespace) -> dict[str, Any]:
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


# The `type=` of arguments: each a value, or argparse's error naming the flag.


def shard_spec(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/4, got {text!r}") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"K must be from 1 to N in K/N, got {text!r}")
    return shard


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
