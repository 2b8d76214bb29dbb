"""The TLS settings of the default transport: which certificates a client trusts,
and which one it shows a server that asks (mutual TLS).

`verify` takes what requests and httpx users know: True (the system's CAs, or
`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), a CA bundle file or directory, False
(no check: a development server's self-signed certificate), or an
`ssl.SSLContext` used as it is. `cert` is a client certificate: one PEM file with
the key in it, or (certificate, key), or (certificate, key, password).

No asyncio or aiohttp here. The files are read once, when a client is made, so a
wrong path or a file that is not PEM is a `ConfigurationError` then, not a failed
request later.
"""

from __future__ import annotations

import functools
import os
import ssl

from asyncchat.errors import ConfigurationError

__all__ = ["CertTypes", "VerifyTypes", "tls_context"]

StrPath = str | os.PathLike[str]
VerifyTypes = bool | StrPath | ssl.SSLContext
CertTypes = StrPath | tuple[StrPath, StrPath] | tuple[StrPath, StrPath, str]


def tls_context(verify: VerifyTypes = True, cert: CertTypes | None = None) -> ssl.SSLContext | bool:
    """What the transport hands aiohttp as `ssl`.

    True means aiohttp's own default context, built once when it was imported;
    False, no verification. A context is built only when something differs from
    those: a CA path, a client certificate, or `SSL_CERT_FILE` / `SSL_CERT_DIR`
    set, which are read as they are now rather than when aiohttp was imported (a
    `.env` loaded at startup counts).
    """
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ConfigurationError(
                "cert= cannot be added to a verify= SSLContext: call its load_cert_chain() instead"
            )
        return verify
    if verify is False:
        if cert is None:
            return False
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        if cert is not None:
            context = ssl.create_default_context()  # its own: the certificate goes into it
        else:
            ca_file = os.environ.get("SSL_CERT_FILE") or None
            ca_dir = os.environ.get("SSL_CERT_DIR") or None
            if ca_file is None and ca_dir is None:
                return True
            return _system_context(ca_file, ca_dir)
    elif isinstance(verify, (str, os.PathLike)):
        context = _trusting(os.fspath(verify))
    else:
        raise ConfigurationError(
            f"verify= takes True, False, a CA bundle path or an ssl.SSLContext, "
            f"not {type(verify).__name__}"
        )
    if cert is not None:
        _load_client_certificate(context, cert)
    return context


# Building a context reads the system's CA bundle: some 50 ms, paid once per setting.
@functools.lru_cache(maxsize=4)
def _system_context(ca_file: str | None, ca_dir: str | None) -> ssl.SSLContext:
    """The default client context. OpenSSL reads SSL_CERT_FILE and SSL_CERT_DIR
    itself, as they are now; their values are the arguments only to key the cache."""
    return ssl.create_default_context()


def _trusting(path: str) -> ssl.SSLContext:
    """A client context that trusts only the CAs at `path`: a PEM bundle, or a
    directory of certificates named by their subject hash (`openssl rehash`)."""
    if not os.path.exists(path):
        raise ConfigurationError(f"verify={path!r}: no such file or directory")
    try:
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"verify={path!r}: not a PEM bundle of CA certificates ({_reason(exc)})"
        ) from None


def _load_client_certificate(context: ssl.SSLContext, cert: CertTypes) -> None:
    if isinstance(cert, tuple):
        certfile, keyfile = os.fspath(cert[0]), os.fspath(cert[1])
        password = cert[2] if len(cert) == 3 else None
    else:
        certfile, keyfile, password = os.fspath(cert), None, None
    for path in (certfile, keyfile):
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"cert={path!r}: no such file")
    try:
        # A password, or a callback that refuses: without one, OpenSSL would prompt
        # on the terminal for an encrypted key and block the program.
        context.load_cert_chain(certfile, keyfile, password or _no_password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"cert={certfile!r}: not a PEM certificate with its key, or the key's "
            f"password is wrong or missing ({_reason(exc)})"
        ) from None


def _no_password() -> str:
    raise ConfigurationError("the client key is encrypted: pass cert=(cert, key, password)")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)
