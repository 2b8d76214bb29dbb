"""Client settings: timeouts, and the API key and base URL taken from the environment."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass

from asyncchat.errors import ConfigurationError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "Secret",
    "Timeout",
    "bypasses_proxy",
    "environment_api_key",
    "is_loopback",
    "proxy_from_environment",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds; None means no limit.

    `connect`: opening a TCP (and TLS) connection. `read`: the longest silence
    while waiting for response bytes, between stream chunks included; a slow
    model thinking before its first token must not trip it (a stream's body is
    looked at every quarter of `read`, so a stall ends it within 1.25x `read`).
    `idle`: the longest a stream may go on receiving bytes that bring no chunk
    (keep-alive comments, empty `data:` lines, a line trickling in byte by byte),
    counted from the first such read; silence is `read`'s business. `total`: the
    whole request, stream included.
    """

    connect: float | None = 10.0
    read: float | None = 600.0
    total: float | None = None
    idle: float | None = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total", "idle"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"Timeout.{name} must be a positive number, got {value!r}")

    @classmethod
    def coerce(cls, value: float | Timeout | None) -> Timeout:
        """A float sets the connect, read and idle timeouts alike (connect and read as
        the official SDK does)."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None, total=None, idle=None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(
                f"timeout must be a number of seconds or an asyncchat.Timeout, got {value!r}"
            )
        return cls(connect=float(value), read=float(value), total=None, idle=float(value))


DEFAULT_TIMEOUT = Timeout()


class Secret(str):
    """A string that does not show itself: `repr` gives `'***'`.

    The API key and the Authorization header are kept as `Secret`s, so that
    `vars(client)`, debuggers and error trackers that record local variables
    never print them. `str(secret)` and f-strings still give the value.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def is_loopback(url: str) -> bool:
    """True for a URL on this machine: localhost, 127.0.0.0/8, ::1, and the 0.0.0.0 or
    :: a server prints when it listens on every address (vLLM's `http://0.0.0.0:8000`),
    which a connection reaches on this machine."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def environment_api_key(api_key: str | None) -> str | None:
    """The key passed in, else ASYNCCHAT_API_KEY, else OPENAI_API_KEY, else None.

    Surrounding whitespace is dropped (a key read with `open(path).read()` ends in
    a newline); a key with a control character inside is refused, naming where it
    came from and never showing it.
    """
    for source, key in (
        ("api_key", api_key),
        ("ASYNCCHAT_API_KEY", os.environ.get("ASYNCCHAT_API_KEY")),
        ("OPENAI_API_KEY", os.environ.get("OPENAI_API_KEY")),
    ):
        key = key.strip() if key else key
        if not key:
            continue
        if any(ord(character) < 32 or ord(character) == 127 for character in key):
            raise ConfigurationError(
                f"the API key from {source} contains a control character (a line break or "
                "a tab inside it?); it cannot be sent in a header"
            )
        return key
    return None


def resolve_api_key(api_key: str | None, base_url: str) -> Secret | None:
    """The key to send; None (no Authorization header) only for a server on this
    machine, since local servers (llama.cpp, Ollama, vLLM) usually need none."""
    key = environment_api_key(api_key)
    if key:
        return Secret(key)
    if is_loopback(base_url):
        return None
    raise ConfigurationError(
        "no API key: pass api_key=... to asyncchat.Client, or set ASYNCCHAT_API_KEY "
        "(or OPENAI_API_KEY) in the environment"
    )


def resolve_base_url(base_url: str | None) -> tuple[str, dict[str, str]]:
    """The URL passed in, else ASYNCCHAT_BASE_URL, else OPENAI_BASE_URL, else OpenAI's.

    Returns the URL that request paths are appended to, and the query it carried
    (Azure's `?api-version=...`), which is sent with every request.
    """
    url = (
        base_url
        or os.environ.get("ASYNCCHAT_BASE_URL")
        or os.environ.get("OPENAI_BASE_URL")
        or DEFAULT_BASE_URL
    ).strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit(parts._replace(query="", fragment="")).rstrip("/"), query


def proxy_from_environment(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for `url`, unless NO_PROXY exempts it.

    Read once per client rather than letting aiohttp's `trust_env` look it up
    in a thread on every request (and apply ~/.netrc credentials, which would
    clash with the API key's Authorization header).
    """
    proxies = urllib.request.getproxies_environment()
    parsed = urllib.parse.urlsplit(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or not parsed.hostname:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if bypasses_proxy(parsed.hostname, port, proxies.get("no", "")):
        return None
    return proxy


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts `host:port`, by the rules curl, Go and requests share.

    Entries are separated by commas or spaces: `*` (everything), a host or a
    domain (`example.com` and `.example.com` both cover its subdomains, `*.` too),
    `host:port`, an IP address or a CIDR block (`10.0.0.0/8`, `::1`).
    """
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in re.split(r"[,\s]+", no_proxy.lower()):
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port = None
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", entry)
        if bracketed:
            entry, entry_port = bracketed.group(1), bracketed.group(2)
        elif entry.count(":") == 1:
            entry, _, entry_port = entry.partition(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.removeprefix("*").lstrip(".").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False
