"""`client.files` and `client.batches` against the MockServer's Batch API (real
multipart uploads, real batch lifecycles over loopback), and the upload body itself."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

import asyncchat
from asyncchat._multipart import PIECE_SIZE, FileUpload
from asyncchat.testing import BatchSettings, MockResponse, MockServer, MockTransport
from asyncchat.types import Batch

from .conftest import API_KEY


def request_lines(
    ids: str | list[str], url: str = "/v1/chat/completions", model: str = "m"
) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": url,
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": f"hi {custom_id}"}],
                },
            }
        )
        + b"\n"
        for custom_id in ids
    )


async def finished(client: asyncchat.Client, batch_id: str) -> Batch:
    for _ in range(1000):
        batch = await client.batches.retrieve(batch_id)
        if batch.done:
            return batch
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not finish")


async def jsonl(client: asyncchat.Client, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [orjson.loads(line) for line in (await content.read()).splitlines()]


# --- the upload body ------------------------------------------------------------------


def test_a_file_upload_is_a_form_of_the_exact_bytes_read_in_pieces(tmp_path: Path) -> None:
    data = bytes(range(256)) * (PIECE_SIZE // 256 * 2 + 3)  # over two pieces
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    upload = FileUpload(path, {"purpose": "batch"})
    pieces = list(upload.pieces())
    assert len(pieces) == 1 + 3 + 1 and max(map(len, pieces[1:-1])) == PIECE_SIZE
    body = b"".join(pieces)
    assert len(body) == upload.length and upload.read() == body  # again, from the start
    boundary = upload.content_type.split("boundary=")[1].encode()
    assert body.startswith(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"')
    assert b'name="file"; filename="in.jsonl"' in body and data in body
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")


def test_a_file_upload_from_an_open_file_starts_where_it_stands() -> None:
    file = io.BytesIO(b"skip me|the content")
    file.seek(8)
    upload = FileUpload(("x.jsonl", file), {})
    assert upload.file_size == 11 and b"skip me" not in upload.read()
    assert upload.read().count(b"the content") == 1


def test_a_file_that_changes_size_during_its_upload_fails(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"12345")
    upload = FileUpload(path, {})
    path.write_bytes(b"123")
    with pytest.raises(OSError, match="changed size while it was being uploaded"):
        upload.read()


def test_a_file_upload_refuses_what_is_not_a_file() -> None:
    with pytest.raises(TypeError, match="file must be a path, bytes or an open binary file"):
        FileUpload(123, {})  # type: ignore[arg-type]


# --- files ----------------------------------------------------------------------------


async def test_files_create_streams_a_path_and_the_server_gets_it_whole(
    server: MockServer, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(request_lines([f"r{i}" for i in range(20_000)]))  # ~2.4 MB
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        uploaded = await client.files.create(file=path, purpose="batch")
        assert uploaded.filename == "requests.jsonl" and uploaded.bytes == path.stat().st_size
        assert server.batch.files[uploaded.id].content == path.read_bytes()
        assert (await client.files.retrieve(uploaded.id)).id == uploaded.id
        listed = await client.files.list(purpose="batch")
        assert [f.id for f in listed.data] == [uploaded.id]
        target = tmp_path / "copy.jsonl"
        target.write_text("an older copy")
        target.chmod(0o640)
        content = await client.files.content(uploaded.id)
        written = await content.write_to_file(target)
        assert written == path.stat().st_size and target.read_bytes() == path.read_bytes()
        assert target.stat().st_mode & 0o777 == 0o640  # replaced, its permissions kept
        with pytest.raises(asyncchat.APIError, match="already read"):
            await content.read()
        assert (await client.files.delete(uploaded.id)).deleted is True
        with pytest.raises(asyncchat.NotFoundError, match="No such File object"):
            await client.files.retrieve(uploaded.id)
        assert client.transport.connections()[1] == 0  # nothing held


async def test_an_upload_retried_after_a_503_sends_the_whole_body_again() -> None:
    bodies: list[bytes] = []

    def handler(request: asyncchat.Request) -> MockResponse:
        assert isinstance(request.body, FileUpload)
        assert request.headers["Content-Type"] == request.body.content_type
        bodies.append(request.body.read())
        if len(bodies) == 1:
            return MockResponse(
                503, json={"error": {"message": "busy"}}, headers={"Retry-After": "0"}
            )
        return MockResponse(json={"id": "file-1", "object": "file", "purpose": "batch"})

    transport = MockTransport(handler)
    async with asyncchat.Client(
        base_url="https://x.example/v1", api_key="k", transport=transport
    ) as client:
        uploaded = await client.files.create(file=b'{"a": 1}\n', purpose="batch")
    assert uploaded.id == "file-1"
    assert len(bodies) == 2 and bodies[0] == bodies[1] and b'{"a": 1}\n' in bodies[0]


async def test_content_not_read_gives_its_connection_up(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        uploaded = await client.files.create(file=b"x" * 100_000, purpose="batch")
        async with await client.files.content(uploaded.id) as content:
            assert content.headers["Content-Type"] == "application/octet-stream"
        assert client.transport.connections()[1] == 0


class _CutResponse(asyncchat.Response):
    """A body that breaks off after its first piece, as a dropped connection does."""

    def __init__(self) -> None:
        super().__init__(200, {"Content-Length": "100"})
        self.pieces = [b"only part"]
        self.closed = False

    async def receive(self) -> bytes:
        if self.pieces:
            return self.pieces.pop()
        raise asyncchat.IncompleteStreamError("the response was cut off")

    def close(self) -> None:
        self.closed = True


class _CuttingTransport:
    def __init__(self) -> None:
        self.responses: list[_CutResponse] = []

    async def send(self, request: asyncchat.Request, timeout: Any) -> asyncchat.Response:
        self.responses.append(_CutResponse())
        return self.responses[-1]

    async def close(self) -> None:
        pass


async def test_a_cut_download_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text("what was there\n")
    transport = _CuttingTransport()
    async with asyncchat.Client(
        base_url="https://x.example/v1", api_key="k", transport=transport
    ) as client:
        content = await client.files.content("file-1")
        with pytest.raises(asyncchat.IncompleteStreamError):
            await content.write_to_file(target)
    assert target.read_text() == "what was there\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary left
    assert transport.responses[0].closed  # the broken connection is not reused


async def test_ids_are_one_path_segment(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        with pytest.raises(asyncchat.NotFoundError):
            await client.files.retrieve("../models")
        with pytest.raises(TypeError, match="batch_id must be a non-empty string"):
            await client.batches.retrieve("")
        with pytest.raises(ValueError, match=r"file_id '\.\.' is not an id"):
            await client.files.content("..")
    assert server.requests == []  # /v1/models was never reached


# --- batches --------------------------------------------------------------------------


async def test_a_batch_runs_validating_in_progress_completed() -> None:
    settings = BatchSettings(pace=20, validating_seconds=0.1, fail_ids=frozenset({"r3"}))
    async with (
        MockServer(batch=settings) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        uploaded = await client.files.create(
            file=("in.jsonl", request_lines([f"r{i}" for i in range(10)])), purpose="batch"
        )
        batch = await client.batches.create(input_file_id=uploaded.id, metadata={"job": "nightly"})
        assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
        seen = {batch.status}
        while not batch.done:
            await asyncio.sleep(0.02)
            batch = await client.batches.retrieve(batch.id)
            seen.add(batch.status)
        assert {"validating", "in_progress", "completed"} <= seen
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed) == (10, 9)
        assert batch.request_counts.failed == 1
        output = await jsonl(client, batch.output_file_id)
        errors = await jsonl(client, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(
        f"r{i}" for i in range(10) if i != 3
    )
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "You said: hi r0"
    assert [line["custom_id"] for line in errors] == ["r3"]
    assert errors[0]["response"]["status_code"] == 400


async def test_an_expired_batch_keeps_what_finished() -> None:
    settings = BatchSettings(pace=40, expire_after=0.3)
    async with (
        MockServer(batch=settings) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        uploaded = await client.files.create(
            file=request_lines([f"r{i}" for i in range(100)]), purpose="batch"
        )
        batch = await finished(client, (await client.batches.create(input_file_id=uploaded.id)).id)
        assert batch.status == "expired"
        output = await jsonl(client, batch.output_file_id)
        errors = await jsonl(client, batch.error_file_id)
    assert 0 < len(output) < 100 and len(output) + len(errors) == 100
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


async def test_a_cancelled_batch_keeps_what_finished() -> None:
    async with (
        MockServer(batch=BatchSettings(pace=40)) as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        uploaded = await client.files.create(
            file=request_lines([f"r{i}" for i in range(100)]), purpose="batch"
        )
        batch = await client.batches.create(input_file_id=uploaded.id)
        while (await client.batches.retrieve(batch.id)).status != "in_progress":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert (await client.batches.cancel(batch.id)).status == "cancelling"
        batch = await finished(client, batch.id)
        assert batch.status == "cancelled" and batch.error_file_id is None
        output = await jsonl(client, batch.output_file_id)
        assert 0 < len(output) < 100
        with pytest.raises(asyncchat.ConflictError, match="Cannot cancel a batch"):
            await client.batches.cancel(batch.id)


async def test_a_batch_that_fails_validation_names_its_lines() -> None:
    async with (
        MockServer() as server,
        asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client,
    ):
        lines = request_lines(["a", "b"]) + request_lines(["c"], url="/v1/embeddings")
        uploaded = await client.files.create(file=lines, purpose="batch")
        batch = await finished(client, (await client.batches.create(input_file_id=uploaded.id)).id)
        assert batch.status == "failed" and batch.output_file_id is None
        assert batch.errors is not None
        assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_url", 3)]
        with pytest.raises(asyncchat.BadRequestError, match="completion_window"):
            await client.batches.create(input_file_id=uploaded.id, completion_window="1h")


async def test_batches_list_pages_newest_first(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        uploaded = await client.files.create(file=request_lines(["a"]), purpose="batch")
        ids = [(await client.batches.create(input_file_id=uploaded.id)).id for _ in range(3)]
        first = await client.batches.list(limit=2)
        assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
        rest = await client.batches.list(limit=2, after=first.last_id)
        assert [b.id for b in rest.data] == [ids[0]] and not rest.has_more


async def test_a_glm_flavoured_batch() -> None:
    async with (
        MockServer() as server,
        asyncchat.Client(base_url=server.glm_base_url, api_key=API_KEY) as client,
    ):
        lines = request_lines(["a", "b"], url="/v4/chat/completions", model="glm-4-flash")
        uploaded = await client.files.create(file=lines, purpose="batch")
        with pytest.raises(asyncchat.BadRequestError, match="endpoint must be"):
            await client.batches.create(input_file_id=uploaded.id)
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v4/chat/completions", completion_window=None
        )
        batch = await finished(client, batch.id)
        output = await jsonl(client, batch.output_file_id)
    assert batch.status == "completed" and len(output) == 2
    assert "error" not in output[0] and "request_id" not in output[0]["response"]
