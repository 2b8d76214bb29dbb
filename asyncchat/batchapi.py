"""`asyncchat batch --via batch-api`: the same JSONL job, run by the provider's Batch API.

OpenAI and GLM run batch files server-side at half the price, on a quota of
their own. This module does the round trip users otherwise write by hand:

1. the requests of this input (and shard) not yet in the output are split into
   parts the provider takes: one model a part, at most `max_requests` lines and
   `max_bytes` bytes (50,000 and 200 MB at OpenAI, 100 MB at GLM);
2. each part is uploaded (`files.create`) and submitted (`batches.create`);
3. the batches are polled, the first wait `poll_interval`, longer while nothing
   changes, with a progress line from their `request_counts`;
4. a batch that ends has its output and error files read and merged into the
   results file by `custom_id`, in the local runner's record format: what an
   expired or cancelled batch finished is kept; what it did not run becomes an
   error record (`batch_expired`, `batch_cancelled`) that `--retry-failed`
   submits again.

The batch and file ids live in a state file beside the output
(`<output>.batches.json`), written before and after every step, so a run killed
at any point (even by `kill -9`) is picked up by the next one: running batches
are polled, not paid for twice. A batch created but not yet recorded is found
again by its input file id.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from asyncchat._batchfile import BatchFileError, ResultsFile, check_input, input_requests
from asyncchat._batchrun import BatchStop, BatchSummary, RunTally, fatal_hint
from asyncchat._batchstate import BatchState, Part, state_path
from asyncchat.client import Client
from asyncchat.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    StreamError,
)
from asyncchat.types import Batch

__all__ = [
    "GLM",
    "OPENAI",
    "BatchAPIUnavailableError",
    "Provider",
    "provider_for",
    "run_batch_api",
    "split_requests",
    "state_path",
]

_MAX_WAIT = 600.0  # the longest wait between polls, however long a batch takes
_LOOKUP_PAGES = 10  # pages of 100 batches searched for one created but not recorded
_LOG_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal
# What polling outlives: the provider unreachable, busy, or a download cut short.
_PASSING = (APIConnectionError, InternalServerError, RateLimitError, StreamError)


class BatchAPIUnavailableError(APIError):
    """The server has no Batch API (its `/files` or `/batches` answered 404)."""


@dataclass(frozen=True)
class Provider:
    """What a provider's Batch API takes."""

    name: str
    endpoint: str  # each line's `url`, and the batch's `endpoint`
    max_requests: int
    max_bytes: int
    completion_window: bool  # whether `batches.create` takes one


OPENAI = Provider("openai", "/v1/chat/completions", 50_000, 200 * 1024 * 1024, True)
GLM = Provider("glm", "/v4/chat/completions", 50_000, 100 * 1024 * 1024, False)
_GLM_HOSTS = ("open.bigmodel.cn", "api.z.ai")


def provider_for(base_url: str) -> Provider:
    """GLM for its hosts and any `/paas/v4` base URL; OpenAI's API for the rest."""
    parts = urllib.parse.urlsplit(base_url)
    if (parts.hostname or "") in _GLM_HOSTS or parts.path.rstrip("/").endswith("/paas/v4"):
        return GLM
    return OPENAI


# --- splitting ------------------------------------------------------------------------


def split_requests(
    requests: Iterator[tuple[str, dict[str, Any]]],
    provider: Provider,
    max_requests: int,
    max_bytes: int,
) -> Generator[tuple[list[str], IO[bytes]], None, None]:
    """Parts as `(ids, file)`: one model each, within both limits, in input order.

    Each part is written to an unnamed temporary file as it fills (gone when
    closed, or when the process dies), so no part is held in memory; the file is
    handed over at its start, and the caller closes it.
    """
    open_parts: dict[Any, tuple[list[str], IO[bytes], int]] = {}
    try:
        for custom_id, body in requests:
            line = (
                orjson.dumps(
                    {
                        "custom_id": custom_id,
                        "method": "POST",
                        "url": provider.endpoint,
                        "body": body,
                    }
                )
                + b"\n"
            )
            if len(line) > max_bytes:
                raise BatchFileError(
                    f"request {custom_id!r} alone is {len(line)} bytes, over the "
                    f"{max_bytes}-byte limit of a batch file"
                )
            model = body.get("model")
            ids, file, size = open_parts.get(model) or ([], None, 0)
            if file is not None and (len(ids) == max_requests or size + len(line) > max_bytes):
                del open_parts[model]
                file.seek(0)
                yield ids, file
                file = None
            if file is None:
                ids, file, size = [], tempfile.TemporaryFile(), 0  # noqa: SIM115  (see above)
            ids.append(custom_id)
            file.write(line)
            open_parts[model] = (ids, file, size + len(line))
        while open_parts:
            ids, file, _ = open_parts.pop(next(iter(open_parts)))
            file.seek(0)
            yield ids, file
    finally:  # stopped early: the parts not handed over go
        for _, file, _ in open_parts.values():
            file.close()


# --- the run --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """How one run submits and polls."""

    completion_window: str | None  # None for a provider that takes none
    metadata: Mapping[str, str] | None
    poll_interval: float
    max_requests: int
    max_bytes: int
    cancel: bool


async def run_batch_api(
    client: Client,
    input_path: Path,
    output_path: Path,
    *,
    model: str | None = None,
    shard: tuple[int, int] = (1, 1),
    retry_failed: bool = False,
    completion_window: str = "24h",
    metadata: Mapping[str, str] | None = None,
    poll_interval: float = 10.0,
    max_requests_per_batch: int | None = None,
    max_bytes_per_batch: int | None = None,
    cancel: bool = False,
    progress: TextIO | None = None,  # stderr as it is when called
    stop: BatchStop | None = None,
) -> BatchSummary:
    """Run the input file through the provider's Batch API into the output file.

    Returns when every batch this job has at the provider has ended and been
    merged, or when `stop` is requested (the batches go on at the provider; the
    next run collects them). `cancel=True` cancels the running batches instead of
    submitting more, and merges what they finished. Raises `BatchFileError` for
    unusable files (nothing sent) and `BatchAPIUnavailableError` for a server
    without a Batch API.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    _check_metadata(metadata)
    provider = provider_for(client.base_url)
    ids = check_input(input_path, model, shard)
    results = ResultsFile.open(
        output_path, input_path=input_path, ids=ids, retry_failed=retry_failed
    )
    try:
        if results.path is None:
            raise BatchFileError(
                "--via batch-api keeps its state beside the output: -o must be a file"
            )
        state = BatchState.load(state_path(output_path), client.base_url)
        options = _Options(
            completion_window=completion_window if provider.completion_window else None,
            metadata=metadata,
            poll_interval=poll_interval,
            max_requests=max_requests_per_batch or provider.max_requests,
            max_bytes=max_bytes_per_batch or provider.max_bytes,
            cancel=cancel,
        )
        job = _Job(client, provider, options, results, ids, state, stop or BatchStop(), progress)
        await job.run(input_requests(input_path, model))
    finally:
        results.close()
    return job.summary()


def _check_metadata(metadata: Mapping[str, str] | None) -> None:
    """The providers' limits on batch metadata, checked before anything is uploaded."""
    if not metadata:
        return
    if len(metadata) > 16:
        raise ConfigurationError(f"at most 16 metadata pairs a batch, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise ConfigurationError(
                f"metadata {key[:70]!r}: keys are at most 64 characters, values strings "
                "of at most 512"
            )


class _Job(RunTally):
    """One run: submits what is pending, then polls and merges until nothing runs."""

    def __init__(
        self,
        client: Client,
        provider: Provider,
        options: _Options,
        results: ResultsFile,
        ids: set[str],
        state: BatchState,
        stop: BatchStop,
        progress: TextIO | None,
    ) -> None:
        super().__init__(results, ids, stop, progress, counts_in_flight=False)
        self.client = client
        self.provider = provider
        self.options = options
        self.state = state
        self.recorded = set(self.done_before)  # ids with a record in the output
        self.seen: dict[str, Batch] = {}  # the latest look at each batch, by id
        self.last_logged = float("-inf")

    def say(self, text: str) -> None:
        """One line about the job (a batch submitted, a status changed, results merged)."""
        if self.status.live:
            self.status.stream.write("\r\x1b[K")
        self.status.stream.write(f"batch-api: {text}\n")
        self.status.stream.flush()

    async def run(self, requests: Iterator[tuple[str, dict[str, Any]]]) -> None:
        """Submit and poll until done or stopped. A stop ends the polling at once; an
        upload under way gets the stop's grace period, or ends at a second stop."""
        work = asyncio.ensure_future(self._work(requests))

        def abort() -> None:
            work.cancel()

        self.stop._attach(abort)
        try:
            # wait(), unlike await, is not cancelled with the work: a stop that
            # cancels it returns here, a cancelled run still ends it.
            await asyncio.wait((work,))
        except asyncio.CancelledError:
            work.cancel()
            await asyncio.wait((work,))
            raise
        finally:
            self.stop._detach()
            self.state.save()
            self.state.finish()
            if self.status.live:
                self.status.stream.write("\n")
        if not work.cancelled():
            try:
                work.result()
            except APIStatusError as exc:
                if isinstance(exc, NotFoundError) and not self.state.parts:
                    raise BatchAPIUnavailableError(
                        f"{self.client.base_url} has no Batch API ({exc}); run without "
                        "--via batch-api to send the requests one by one"
                    ) from None
                if fatal_hint(exc) is None or exc.status_code == 404:
                    raise
                self.fatal = exc
        running = [p for p in self.state.active if p.batch_id is not None]
        if running:
            self.notes.append(
                f"{len(running)} batch(es) are still running at the provider, their ids in "
                f"{self.state.path}: run the same command again to collect their results "
                "(nothing is submitted twice), or add --cancel to stop them"
            )

    async def _work(self, requests: Iterator[tuple[str, dict[str, Any]]]) -> None:
        options = self.options
        await self._resume_creates()
        if options.cancel:
            await self._cancel_all()
        else:
            submitted = {i for part in self.state.active for i in part.ids}
            pending = (
                (custom_id, body)
                for custom_id, body in requests
                if custom_id in self.ids
                and custom_id not in self.recorded
                and custom_id not in submitted
            )
            parts = split_requests(pending, self.provider, options.max_requests, options.max_bytes)
            try:
                for part_ids, file in parts:
                    with file:
                        if self.stop.requested:
                            break
                        await self._submit(part_ids, file)
            finally:
                parts.close()  # the parts not submitted after a stop: their files go
        await self._poll()

    # --- submitting ---------------------------------------------------------------

    async def _submit(self, ids: list[str], file: IO[bytes]) -> None:
        """Upload one part and create its batch, recording each id as soon as it exists."""
        uploaded = await self._upload(f"batch-part-{len(self.state.parts) + 1}.jsonl", file)
        part = Part(ids, uploaded)
        self.state.parts.append(part)
        self.state.save()
        await self._create(part)

    async def _upload(self, name: str, file: IO[bytes]) -> str:
        uploaded = await self.client.files.create(file=(name, file), purpose="batch")
        if not uploaded.id:
            raise APIError(f"the server accepted {name} but gave it no id")
        return uploaded.id

    async def _create(self, part: Part) -> None:
        assert part.file_id is not None
        for attempt in range(self.client.max_retries + 1):
            try:
                batch = await self.client.batches.create(
                    input_file_id=part.file_id,
                    endpoint=self.provider.endpoint,
                    completion_window=self.options.completion_window,
                    metadata=self.options.metadata,
                    max_retries=0,  # a lost answer may still have created it: look first
                )
                break
            except APIConnectionError:
                found = await self._find_batch(part.file_id)
                if found is not None:
                    batch = found
                    break
                if attempt == self.client.max_retries:
                    raise
                await self.client._sleep(min(2.0**attempt, 30.0))
        self._recorded_batch(part, batch)
        self.say(
            f"submitted {batch.id}: {len(part.ids)} requests "
            f"(file {part.file_id}, {self.provider.name} Batch API)"
        )

    def _recorded_batch(self, part: Part, batch: Batch) -> None:
        if not batch.id:
            raise APIError(f"the server created a batch for {part.file_id} but gave it no id")
        part.batch_id, part.status = batch.id, batch.status
        self.seen[batch.id] = batch
        self.state.save()

    async def _find_batch(self, file_id: str) -> Batch | None:
        """The batch made from `file_id`, if a create whose answer was lost made one."""
        after = None
        for _ in range(_LOOKUP_PAGES):
            page = await self.client.batches.list(limit=100, after=after)
            for batch in page.data:
                if batch.input_file_id == file_id:
                    return batch
            if not page.has_more or not page.data:
                return None
            after = page.last_id or page.data[-1].id
        return None

    async def _resume_creates(self) -> None:
        """Parts a killed run uploaded but did not see a batch made for."""
        for part in self.state.active:
            if part.batch_id is None and part.file_id is not None:
                if self.options.cancel:  # uploaded, never submitted: nothing to stop
                    self.state.parts.remove(part)
                    continue
                found = await self._find_batch(part.file_id)
                if found is not None:
                    self._recorded_batch(part, found)
                    self.say(f"found {found.id}, created by an earlier run for {part.file_id}")
                else:
                    await self._create(part)

    async def _cancel_all(self) -> None:
        for part in self.state.active:
            if part.batch_id is not None and part.status not in Batch.TERMINAL:
                try:
                    batch = await self.client.batches.cancel(part.batch_id)
                except ConflictError:  # it ended since the last look: polling merges it
                    self.say(f"{part.batch_id} had already ended")
                    continue
                part.status = batch.status
                self.say(f"cancelling {part.batch_id}")
        self.state.save()

    # --- polling and merging ------------------------------------------------------

    async def _poll(self) -> None:
        poll_interval = wait = self.options.poll_interval
        while not self.stop.requested:
            problem: APIError | None = None
            try:
                changed = await self._look()
            except _PASSING as exc:  # batches run for hours: a network blip is no reason to stop
                changed, problem = False, exc
            if not self.state.active or self.stop.requested:
                return
            wait = poll_interval if changed else min(wait * 1.5, max(poll_interval, _MAX_WAIT))
            if problem is not None:
                self.say(f"could not reach the provider ({problem}); looking again in {wait:.3g}s")
            else:
                self._show(changed)
            await self._sleep(wait)

    async def _look(self) -> bool:
        """Look at each running batch once, merging those that ended; whether any changed."""
        changed = False
        for part in self.state.active:
            assert part.batch_id is not None
            batch = await self.client.batches.retrieve(part.batch_id)
            before = self.seen.get(part.batch_id)
            if before is None or _progress_of(before) != _progress_of(batch):
                changed = True
            if part.status != batch.status:
                self.say(f"{part.batch_id} {batch.status}{_counts_text(batch)}")
                part.status = batch.status
                self.state.save()
            self.seen[part.batch_id] = batch
            if batch.done:
                await self._merge(part, batch)
            if self.stop.requested:
                break
        return changed

    async def _sleep(self, seconds: float) -> None:
        """Wait, waking early for a stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.requested and (left := deadline - time.monotonic()) > 0:
            await self.client._sleep(min(left, 0.2))

    def _show(self, changed: bool) -> None:
        """The progress at the provider: a live line on a terminal; in a log, a line
        when it changed, at most one a minute."""
        now = time.monotonic()
        if not self.status.live and not (changed and now - self.last_logged >= _LOG_EVERY):
            return
        total = completed = failed = 0
        for part in self.state.active:
            batch = self.seen.get(part.batch_id or "")
            counts = _counts(batch) if batch is not None else (len(part.ids), 0, 0)
            total += counts[0] or len(part.ids)
            completed += counts[1]
            failed += counts[2]
        text = (
            f"{len(self.recorded & self.ids)}/{len(self.ids)} in the output; "
            f"{len(self.state.active)} batch(es) running: {completed}/{total} done at the "
            f"provider, {failed} failed"
        )
        if self.status.live:
            self.status.stream.write(f"\r{text}  ")
            self.status.stream.flush()
        else:
            self.last_logged = now
            self.say(text)

    async def _merge(self, part: Part, batch: Batch) -> None:
        """Write the results of an ended batch; mark its part merged."""
        assert part.batch_id is not None
        wanted = set(part.ids)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                await self._merge_file(file_id, wanted)
        missing = [i for i in part.ids if i not in self.recorded]
        if batch.status in ("expired", "cancelled"):
            for custom_id in missing:
                self._write(
                    {
                        "id": f"{part.batch_id}-{custom_id}",
                        "custom_id": custom_id,
                        "response": None,
                        "error": {
                            "code": f"batch_{batch.status}",
                            "message": f"batch {part.batch_id} {batch.status} before this "
                            "request ran; --retry-failed submits it again",
                        },
                    }
                )
        elif batch.status == "failed":
            self._failed_batch(part, batch, missing)
        elif missing:
            self.notes.append(
                f"batch {part.batch_id} completed without a result for {len(missing)} "
                "request(s): a rerun submits them again"
            )
        part.merged = True
        self.state.save()
        await self._delete_upload(part)
        with_record = sum(1 for custom_id in part.ids if custom_id in self.recorded)
        self.say(
            f"{part.batch_id} merged into {self.results.path} "
            f"({with_record} of {len(part.ids)} requests have a record)"
        )

    async def _delete_upload(self, part: Part) -> None:
        """The part we uploaded has served: delete it, as providers keep (and count
        against a storage quota) an input file until it is deleted. The result files
        are left at the provider. GLM deletes inputs itself: a 404 is that."""
        if part.file_id is None:
            return
        try:
            await self.client.files.delete(part.file_id)
        except NotFoundError:
            pass
        except APIError as exc:
            self.notes.append(f"the uploaded part {part.file_id} could not be deleted: {exc}")

    def _failed_batch(self, part: Part, batch: Batch, missing: list[str]) -> None:
        """A batch that failed validation: the lines it names get their error as a
        record; the rest never ran and stay pending for a rerun."""
        errors = batch.errors.data if batch.errors is not None else []
        reasons = []
        for error in errors:
            line = error.line
            if isinstance(line, int) and 1 <= line <= len(part.ids):
                custom_id = part.ids[line - 1]
                if custom_id not in self.recorded:
                    self._write(
                        {
                            "id": f"{part.batch_id}-{custom_id}",
                            "custom_id": custom_id,
                            "response": None,
                            "error": {"code": error.code, "message": error.message},
                        }
                    )
            else:
                reasons.append(f"{error.code}: {error.message}")
        left = len([i for i in missing if i not in self.recorded])
        self.notes.append(
            f"batch {part.batch_id} failed validation"
            + (f" ({'; '.join(reasons)})" if reasons else "")
            + (f"; {left} request(s) did not run and a rerun submits them" if left else "")
        )

    async def _merge_file(self, file_id: str, wanted: set[str]) -> None:
        """Stream one result file into the output, line by line, as it downloads.

        A line already in the output (a merge cut short by a crash, done again) or
        of another batch is skipped, so merging twice writes each result once.
        """
        content = await self.client.files.content(file_id)
        partial = bytearray()  # the start of a line whose end has not come yet
        async for piece in content.iter_bytes():
            end = piece.rfind(b"\n")
            if end < 0:
                partial += piece
                continue
            partial += piece[:end]
            for line in partial.split(b"\n"):
                self._merge_line(line, wanted)
            partial = bytearray(piece[end + 1 :])
        self._merge_line(partial, wanted)

    def _merge_line(self, line: bytes | bytearray, wanted: set[str]) -> None:
        if not line.strip():
            return
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.notes.append(f"a result line that is not JSON was skipped: {bytes(line[:80])!r}")
            return
        if not isinstance(record, dict):
            return
        custom_id = record.get("custom_id")
        if custom_id not in wanted or custom_id in self.recorded:
            return
        # GLM's lines have no `error`, and no `request_id` in `response`.
        record.setdefault("id", None)
        record.setdefault("response", None)
        record.setdefault("error", None)
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        response = record["response"]
        succeeded = (
            record["error"] is None
            and isinstance(response, dict)
            and response.get("status_code") == 200
        )
        self.results.write(orjson.dumps(record) + b"\n")
        self.recorded.add(record["custom_id"])
        if record["custom_id"] not in self.ids:
            return  # submitted for another input (or shard) into this output: not counted
        answer = response.get("body") if succeeded else None
        self.count(succeeded, answer if isinstance(answer, dict) else None)


def _counts(batch: Batch) -> tuple[int, int, int]:
    """(total, completed, failed); GLM has sent them beside `request_counts`, not in it."""
    counts = batch.request_counts
    if counts is not None:
        return counts.total or 0, counts.completed or 0, counts.failed or 0
    data = batch.to_dict()
    return tuple(  # type: ignore[return-value]
        value if isinstance(value := data.get(key), int) else 0
        for key in ("total", "completed", "failed")
    )


def _progress_of(batch: Batch) -> tuple[Any, ...]:
    return (batch.status, *_counts(batch))


def _counts_text(batch: Batch) -> str:
    total, completed, failed = _counts(batch)
    return f" ({completed}/{total} done, {failed} failed)" if total else ""
