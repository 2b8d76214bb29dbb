"""TLS: a private CA, a client certificate, and the errors when a certificate fails.

A real MockServer serves HTTPS on loopback with certificates trustme issues; the
client's `verify=` and `cert=` and `SSL_CERT_FILE` / `SSL_CERT_DIR` are checked
against it over real handshakes.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import asyncchat
from asyncchat.cli import main
from asyncchat.testing import MockServer, MockTransport

from .conftest import API_KEY, served_in_a_thread, server_context

USER = [{"role": "user", "content": "Say this is a test"}]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def https_server(ca: trustme.CA) -> AsyncIterator[MockServer]:
    async with MockServer(ssl_context=server_context(ca.issue_cert("127.0.0.1"))) as server:
        yield server


def client_for(server: MockServer, **options: Any) -> asyncchat.Client:
    return asyncchat.Client(base_url=server.base_url, api_key=API_KEY, **options)


async def ask(client: asyncchat.Client) -> str | None:
    completion = await client.chat.completions.create(model="m", messages=USER)
    return completion.choices[0].message.content


# --- trusting a private CA --------------------------------------------------------------


async def test_the_mock_server_serves_https(https_server: MockServer) -> None:
    assert https_server.base_url.startswith("https://127.0.0.1:")
    assert https_server.glm_base_url.startswith("https://127.0.0.1:")


async def test_a_private_ca_fails_clearly_and_is_not_retried(https_server: MockServer) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with client_for(https_server, max_retries=2, sleep=sleep) as client:
        with pytest.raises(asyncchat.TLSError) as info:
            await ask(client)
    message = str(info.value)
    assert f"the certificate of {https_server.base_url}/chat/completions" in message
    assert "failed verification: unable to get local issuer certificate" in message
    assert "trust that CA: verify='/path/to/ca.pem' (--cacert) or SSL_CERT_FILE" in message
    assert isinstance(info.value, asyncchat.APIConnectionError)  # caught where it was before
    assert slept == []  # another try would meet the same certificate
    assert https_server.requests == []


async def test_verify_a_ca_file(https_server: MockServer, ca_file: Path) -> None:
    for verify in (str(ca_file), ca_file):  # a str or any os.PathLike
        async with client_for(https_server, verify=verify) as client:
            assert await ask(client) == "You said: Say this is a test"


async def test_verify_a_ca_directory(
    https_server: MockServer, ca_file: Path, tmp_path: Path
) -> None:
    # A CA directory holds each certificate under its subject hash, as OpenSSL looks it up.
    shutil.copy(ca_file, tmp_path / "ca.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    async with client_for(https_server, verify=tmp_path) as client:
        assert await ask(client) == "You said: Say this is a test"


async def test_ssl_cert_file_is_read_when_the_client_is_made(
    https_server: MockServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set after aiohttp was imported (as a .env loaded at startup would be): still honoured.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    async with client_for(https_server) as client:
        assert await ask(client) == "You said: Say this is a test"


async def test_ssl_cert_dir_is_read_when_the_client_is_made(
    https_server: MockServer, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ca_file, tmp_path / "ca.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    async with client_for(https_server) as client:
        assert await ask(client) == "You said: Say this is a test"


async def test_verify_false_skips_the_check(https_server: MockServer) -> None:
    async with client_for(https_server, verify=False) as client:
        assert await ask(client) == "You said: Say this is a test"


async def test_verify_an_ssl_context(https_server: MockServer, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with client_for(https_server, verify=context) as client:
        assert await ask(client) == "You said: Say this is a test"


async def test_streams_and_pooled_connections_over_tls(
    https_server: MockServer, ca_file: Path
) -> None:
    async with client_for(https_server, verify=ca_file) as client:
        for _ in range(3):
            texts = [text async for text in client.chat.stream_text(model="m", messages=USER)]
            assert "".join(texts) == "You said: Say this is a test"
        assert await client.models.list()
    assert https_server.connection_count == 1  # one handshake, then the pooled connection


# --- certificates that fail ------------------------------------------------------------


async def test_a_certificate_for_another_name(ca: trustme.CA, ca_file: Path) -> None:
    context = server_context(ca.issue_cert("api.example.test"))
    async with MockServer(ssl_context=context) as server, client_for(server, verify=ca_file) as c:
        with pytest.raises(asyncchat.TLSError) as info:
            await ask(c)
    assert "IP address mismatch" in str(info.value)
    assert "address the server by a name its certificate names" in str(info.value)


async def test_an_expired_certificate(ca: trustme.CA, ca_file: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = ca.issue_cert(
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    async with (
        MockServer(ssl_context=server_context(leaf)) as server,
        client_for(server, verify=ca_file) as client,
    ):
        with pytest.raises(asyncchat.TLSError, match="certificate has expired; the server must"):
            await ask(client)


async def test_https_to_a_plain_http_server() -> None:
    async with MockServer() as server:
        base_url = server.base_url.replace("http://", "https://")
        async with asyncchat.Client(base_url=base_url, api_key=API_KEY) as client:
            with pytest.raises(asyncchat.TLSError, match=r"did not answer in TLS.*use http://$"):
                await ask(client)


# --- a client certificate (mutual TLS) -------------------------------------------------


@pytest.fixture
async def mtls_server(ca: trustme.CA) -> AsyncIterator[MockServer]:
    context = server_context(ca.issue_cert("127.0.0.1"))
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)  # the same CA signs the clients' certificates
    async with MockServer(ssl_context=context) as server:
        yield server


@pytest.fixture
def client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(certificate, key, both in one file) of a client certificate."""
    leaf = ca.issue_cert("client@example.test")
    paths = tmp_path / "client.crt", tmp_path / "client.key", tmp_path / "client.pem"
    leaf.cert_chain_pems[0].write_to_path(str(paths[0]))
    leaf.private_key_pem.write_to_path(str(paths[1]))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(paths[2]))
    return paths


async def test_a_client_certificate(
    mtls_server: MockServer, ca_file: Path, client_cert: tuple[Path, Path, Path]
) -> None:
    certificate, key, both = client_cert
    for cert in ((certificate, key), both, str(both)):
        async with client_for(mtls_server, verify=ca_file, cert=cert) as client:  # type: ignore[arg-type]
            assert await ask(client) == "You said: Say this is a test"
    # With verification off, the certificate is still shown.
    async with client_for(mtls_server, verify=False, cert=both) as client:
        assert await ask(client) == "You said: Say this is a test"


# Python 3.10's TLS transport is not marked closed when the peer resets it (3.11
# rewrote asyncio's sslproto): its socket is closed (the test counts them), yet
# collecting the transport warns that it is unclosed.
_PY310_RESET_TLS = pytest.mark.filterwarnings(
    r"ignore:unclosed transport <asyncio\.sslproto\._SSLProtocolTransport:ResourceWarning"
)


async def test_no_client_certificate_where_one_is_required(
    mtls_server: MockServer, ca_file: Path
) -> None:
    sockets = len(os.listdir("/proc/self/fd"))
    async with client_for(mtls_server, verify=ca_file, max_retries=0) as client:
        for _ in range(10):
            with pytest.raises(asyncchat.APIConnectionError):
                await ask(client)
    assert mtls_server.requests == []
    assert len(os.listdir("/proc/self/fd")) <= sockets  # each refused connection closed


if sys.version_info < (3, 11):
    test_no_client_certificate_where_one_is_required = _PY310_RESET_TLS(
        test_no_client_certificate_where_one_is_required
    )


async def test_an_encrypted_client_key(
    mtls_server: MockServer, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    leaf = ca.issue_cert("client@example.test")
    certificate, key = tmp_path / "client.crt", tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(certificate))
    private_key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"open sesame"),
        )
    )
    # Never a prompt on the terminal: a clear error, before any request.
    with pytest.raises(asyncchat.ConfigurationError, match="encrypted: pass cert=\\(cert, key"):
        client_for(mtls_server, verify=ca_file, cert=(certificate, key))
    with pytest.raises(asyncchat.ConfigurationError, match="password is wrong"):
        client_for(mtls_server, verify=ca_file, cert=(certificate, key, "wrong"))
    async with client_for(mtls_server, verify=ca_file, cert=(certificate, key, "open sesame")) as c:
        assert await ask(c) == "You said: Say this is a test"


# --- settings that cannot work are refused when the client is made ----------------------


def test_settings_that_cannot_work(ca_file: Path, tmp_path: Path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"verify": str(tmp_path / "missing.pem")}, r"verify='.*missing.pem': no such file"),
        ({"verify": not_pem}, r"verify='.*notes.txt': not a PEM bundle of CA certificates"),
        ({"verify": 1}, "verify= takes True, False, a CA bundle path or an ssl.SSLContext"),
        ({"cert": tmp_path / "missing.pem"}, r"cert='.*missing.pem': no such file"),
        ({"cert": not_pem}, r"cert='.*notes.txt': not a PEM certificate with its key"),
        (
            {"verify": ssl.create_default_context(), "cert": ca_file},
            r"cannot be added to a verify= SSLContext: call its load_cert_chain\(\)",
        ),
        (
            {"verify": False, "transport": MockTransport(lambda request: None)},
            "verify= and cert= set up the default transport",
        ),
    ]
    for options, message in cases:
        with pytest.raises(asyncchat.ConfigurationError, match=message):
            asyncchat.Client(base_url="https://api.example.test/v1", api_key=API_KEY, **options)


# --- the command line -------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_command_line_s_tls_flags(
    ca: trustme.CA,
    ca_file: Path,
    client_cert: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal())  # nothing piped, as at a shell
    certificate, key, both = client_cert
    with served_in_a_thread(
        MockServer(ssl_context=server_context(ca.issue_cert("127.0.0.1")))
    ) as s:
        chat = ["chat", "hi", "--no-stream", "--base-url", s.base_url, "--api-key", API_KEY]
        assert main(chat) == 1
        err = capsys.readouterr().err
        assert "failed verification" in err and "--cacert" in err
        assert len(err.strip().splitlines()) == 1
        for flags in (["--cacert", str(ca_file)], ["--insecure"]):
            assert main([*chat, *flags]) == 0
            assert capsys.readouterr().out == "You said: hi\n"
        assert main([*chat, "--insecure", "--cacert", str(ca_file)]) == 2
        assert "--insecure and --cacert contradict each other" in capsys.readouterr().err
        assert main([*chat, "--key", str(key)]) == 2
        assert "--key needs --cert" in capsys.readouterr().err
        assert len(s.requests) == 2  # those of --cacert and --insecure
    mutual = server_context(ca.issue_cert("127.0.0.1"))
    mutual.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(mutual)
    with served_in_a_thread(MockServer(ssl_context=mutual)) as s:
        chat = ["chat", "hi", "--no-stream", "--base-url", s.base_url, "--api-key", API_KEY]
        for flags in (["--cert", str(certificate), "--key", str(key)], ["--cert", str(both)]):
            assert main([*chat, "--cacert", str(ca_file), *flags]) == 0
            assert capsys.readouterr().out == "You said: hi\n"


def test_a_batch_job_stops_at_a_certificate_that_fails_and_a_rerun_completes_it(
    ca: trustme.CA, ca_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        "".join(
            f'{{"custom_id": "r{i}", "method": "POST", "url": "/v1/chat/completions", '
            f'"body": {{"model": "m", "messages": [{{"role": "user", "content": "hi {i}"}}]}}}}\n'
            for i in range(50)
        )
    )
    server = MockServer(ssl_context=server_context(ca.issue_cert("127.0.0.1")))
    with served_in_a_thread(server) as s:
        batch = ["batch", str(source), "-o", str(output), "--base-url", s.base_url]
        batch += ["--api-key", API_KEY, "--concurrency", "4"]
        assert main(batch) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert err.startswith("asyncchat: error: batch stopped, every request would fail: ")
        assert "failed verification" in err and "fix the TLS settings first" in err
        assert "0 of 50 results are in" in err and "50 still to run" in err
        assert output.read_bytes() == b""  # no error records: the rerun sends them all
        assert main([*batch, "--cacert", str(ca_file)]) == 0
        assert len(s.requests) == 50  # the first run's reached no server
        records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["custom_id"] for record in records) == sorted(f"r{i}" for i in range(50))
    assert all(record["response"]["status_code"] == 200 for record in records)
