"""The provider Batch API of `MockServer`: files, and batches that run at a set pace.

A batch goes validating -> in_progress -> finalizing -> completed as the real
ones do, only in seconds: `pace` requests a second are answered by the server's
own chat completion logic. It can fail validation (with `errors` naming the
line), expire part way (`expire_after`: the finished lines are in the output
file, the rest in the error file as `batch_expired`), or be cancelled (what
finished is kept). The ids in `fail_ids` answer 400, into the error file.

Under `/v1` it is OpenAI's API; under `/api/paas/v4` it is GLM's, whose lines
and batches name the endpoint `/v4/chat/completions`, whose batches take no
completion window, and whose result lines carry no `error` field.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

__all__ = ["BatchSettings", "MockBatches"]

GLM_PREFIX = "/api/paas/v4"
_ENDPOINTS = {"/v1": "/v1/chat/completions", GLM_PREFIX: "/v4/chat/completions"}
_TICK = 0.01


@dataclass
class BatchSettings:
    """How the mock's batches behave; `MockServer(batch=BatchSettings(...))`."""

    pace: float = 500.0  # requests answered a second
    validating_seconds: float = 0.05
    expire_after: float | None = None  # seconds from creation; None: never
    fail_ids: frozenset[str] = frozenset()  # custom_ids that answer 400
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Batch:
    data: dict[str, Any]
    glm: bool
    lines: list[dict[str, Any]] = field(default_factory=list)
    output: list[bytes] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class MockBatches:
    """The files and batches a `MockServer` holds, and their routes."""

    def __init__(
        self,
        settings: BatchSettings,
        answer: Callable[[dict[str, Any], str], dict[str, Any]],
        authorized: Callable[[web.Request], web.Response | None],
    ) -> None:
        self.settings = settings
        self._answer = answer  # body, request id -> a chat completion
        self._authorized = authorized
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.uploads = 0  # files created, for tests that count what a resume re-sent
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application, prefix: str) -> None:
        router = app.router
        router.add_post(f"{prefix}/files", self._upload)
        router.add_get(f"{prefix}/files", self._list_files)
        router.add_get(f"{prefix}/files/{{id}}", self._file)
        router.add_delete(f"{prefix}/files/{{id}}", self._delete_file)
        router.add_get(f"{prefix}/files/{{id}}/content", self._content)
        router.add_post(f"{prefix}/batches", self._create)
        router.add_get(f"{prefix}/batches", self._list_batches)
        router.add_get(f"{prefix}/batches/{{id}}", self._retrieve)
        router.add_post(f"{prefix}/batches/{{id}}/cancel", self._cancel)

    async def stop(self) -> None:
        tasks = [batch.task for batch in self.batches.values() if batch.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _new_id(self, kind: str) -> str:
        return f"{kind}-mock{next(self._ids)}"

    # --- files ---------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        if not request.content_type.startswith("multipart/"):
            return _error(400, "the body must be multipart/form-data", param="file")
        purpose, filename, content = None, None, None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read()).decode()
            elif part.name == "file":
                filename, content = part.filename or "file", bytes(await part.read())
        if content is None:
            return _error(400, "a 'file' part is required", param="file")
        if purpose != "batch":
            return _error(400, f"purpose must be 'batch', got {purpose!r}", param="purpose")
        if len(content) > self.settings.max_bytes:
            return _error(400, f"the file is larger than {self.settings.max_bytes} bytes")
        uploaded = _File(
            self._new_id("file"), filename or "file", purpose, content, int(time.time())
        )
        self.files[uploaded.id] = uploaded
        self.uploads += 1
        return web.json_response(uploaded.to_dict())

    def _found(self, request: web.Request) -> _File | web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        found = self.files.get(request.match_info["id"])
        if found is None:
            return _error(404, f"No such File object: {request.match_info['id']}")
        return found

    async def _file(self, request: web.Request) -> web.Response:
        found = self._found(request)
        return found if isinstance(found, web.Response) else web.json_response(found.to_dict())

    async def _list_files(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        purpose = request.query.get("purpose")
        data = [f.to_dict() for f in self.files.values() if purpose in (None, f.purpose)]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def _delete_file(self, request: web.Request) -> web.Response:
        found = self._found(request)
        if isinstance(found, web.Response):
            return found
        del self.files[found.id]
        return web.json_response({"id": found.id, "object": "file", "deleted": True})

    async def _content(self, request: web.Request) -> web.Response:
        found = self._found(request)
        if isinstance(found, web.Response):
            return found
        return web.Response(body=found.content, content_type="application/octet-stream")

    # --- batches -------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        glm = request.path.startswith(GLM_PREFIX)
        endpoint = _ENDPOINTS[GLM_PREFIX if glm else "/v1"]
        if body.get("endpoint") != endpoint:
            return _error(400, f"endpoint must be {endpoint!r}", param="endpoint")
        if not glm and body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'", param="completion_window")
        source = self.files.get(body.get("input_file_id") or "")
        if source is None:
            return _error(404, f"No such File object: {body.get('input_file_id')}")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
        ):
            return _error(400, "metadata: at most 16 string values", param="metadata")
        now = int(time.time())
        batch = _Batch(
            {
                "id": self._new_id("batch"),
                "object": "batch",
                "endpoint": endpoint,
                "errors": None,
                "input_file_id": source.id,
                "completion_window": body.get("completion_window", "24h"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + 86400,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": metadata,
            },
            glm,
        )
        self.batches[batch.data["id"]] = batch
        batch.task = asyncio.ensure_future(self._run(batch, source.content, time.monotonic()))
        return web.json_response(batch.data)

    def _batch(self, request: web.Request) -> _Batch | web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No batch found with id '{request.match_info['id']}'")
        return batch

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.data)

    async def _list_batches(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        newest_first = [b.data for b in reversed(self.batches.values())]
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = newest_first[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest_first) > limit,
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.data["status"] in ("completed", "failed", "expired", "cancelled"):
            return _error(409, f"Cannot cancel a batch with status '{batch.data['status']}'.")
        if batch.data["status"] != "cancelling":
            batch.data["status"] = "cancelling"
            batch.data["cancelling_at"] = int(time.time())
        return web.json_response(batch.data)

    # --- running a batch -----------------------------------------------------------

    def _validate(self, batch: _Batch, content: bytes) -> list[dict[str, Any]]:
        """The problems of an input file, as a batch's `errors.data`; its lines kept."""
        problems: list[dict[str, Any]] = []
        seen: set[Any] = set()
        models: set[Any] = set()
        endpoint = batch.data["endpoint"]
        lines = [line for line in content.splitlines() if line.strip()]
        if len(lines) > self.settings.max_requests:
            return [
                {
                    "code": "too_many_requests",
                    "message": f"at most {self.settings.max_requests} requests a batch",
                    "param": None,
                    "line": None,
                }
            ]
        for number, line in enumerate(lines, 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                problems.append(_problem("invalid_json_line", "not valid JSON", number))
                continue
            if not isinstance(record, dict) or not isinstance(record.get("body"), dict):
                problems.append(_problem("invalid_request", "no body", number))
                continue
            if record.get("url") != endpoint:
                problems.append(
                    _problem(
                        "invalid_url", f"url must be {endpoint}, not {record.get('url')}", number
                    )
                )
            if record.get("custom_id") in seen:
                problems.append(_problem("duplicate_custom_id", "custom_id repeated", number))
            seen.add(record.get("custom_id"))
            models.add(record["body"].get("model"))
            batch.lines.append(record)
        if len(models) > 1:
            problems.append(_problem("mixed_models", "every line must use the same model", None))
        return problems

    async def _run(self, batch: _Batch, content: bytes, started: float) -> None:
        data = batch.data
        await asyncio.sleep(self.settings.validating_seconds)
        problems = self._validate(batch, content)
        if problems:
            data.update(
                status="failed",
                failed_at=int(time.time()),
                errors={"object": "list", "data": problems},
            )
            return
        if data["status"] == "validating":
            data.update(status="in_progress", in_progress_at=int(time.time()))
        data["request_counts"]["total"] = len(batch.lines)
        begun, done = time.monotonic(), 0
        while done < len(batch.lines):
            if data["status"] == "cancelling":
                data.update(status="cancelled", cancelled_at=int(time.time()))
                self._finish(batch, None)
                return
            expire_after = self.settings.expire_after
            if expire_after is not None and time.monotonic() - started >= expire_after:
                self._finish(batch, done)
                data.update(status="expired", expired_at=int(time.time()))
                return
            due = min(len(batch.lines), int((time.monotonic() - begun) * self.settings.pace) + 1)
            for record in batch.lines[done:due]:
                self._process(batch, record)
            done = due
            await asyncio.sleep(_TICK)
        data.update(status="finalizing", finalizing_at=int(time.time()))
        await asyncio.sleep(_TICK)
        self._finish(batch, None)
        data.update(status="completed", completed_at=int(time.time()))

    def _process(self, batch: _Batch, record: dict[str, Any]) -> None:
        counts = batch.data["request_counts"]
        request_id = self._new_id("req")
        custom_id = record.get("custom_id")
        line: dict[str, Any] = {"id": self._new_id("batch_req"), "custom_id": custom_id}
        if custom_id in self.settings.fail_ids:
            error = {"message": "mock failure for this request", "type": "invalid_request_error"}
            self._failed(batch, line, 400, request_id, error)
            return
        try:
            body = self._answer(record["body"], request_id)
        except Exception as exc:  # a bug of the mock's: this line fails, the batch goes on
            error = {"message": f"the mock server failed: {exc!r}", "type": "server_error"}
            self._failed(batch, line, 500, request_id, error)
            return
        line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
        if batch.glm:
            del line["response"]["request_id"]  # GLM's lines carry neither of these
        else:
            line["error"] = None
        batch.output.append(orjson.dumps(line))
        counts["completed"] += 1

    @staticmethod
    def _failed(
        batch: _Batch, line: dict[str, Any], status: int, request_id: str, error: dict[str, Any]
    ) -> None:
        """A line answered with an error status, into the error file."""
        line["response"] = {
            "status_code": status,
            "request_id": request_id,
            "body": {"error": error},
        }
        line["error"] = None
        batch.errors.append(orjson.dumps(line))
        batch.data["request_counts"]["failed"] += 1

    def _finish(self, batch: _Batch, expired_from: int | None) -> None:
        """Write the output and error files; lines from `expired_from` on never ran."""
        if expired_from is not None:
            for record in batch.lines[expired_from:]:
                line = {
                    "id": self._new_id("batch_req"),
                    "custom_id": record.get("custom_id"),
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the "
                        "completion window expired.",
                    },
                }
                batch.errors.append(orjson.dumps(line))
        for name, lines in (("output_file_id", batch.output), ("error_file_id", batch.errors)):
            if lines:
                result = _File(
                    self._new_id("file"),
                    f"{batch.data['id']}_{name[:-8]}.jsonl",
                    "batch_output",
                    b"\n".join(lines) + b"\n",
                    int(time.time()),
                )
                self.files[result.id] = result
                batch.data[name] = result.id


def _problem(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return web.json_response(body, status=status)
