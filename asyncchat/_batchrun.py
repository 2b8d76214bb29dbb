"""`asyncchat batch`: run a checked input file into its results file.

The requests of this input (and shard) that the output does not hold yet go
through one fan-out, at most `concurrency` open at a time, and each result is
written as it finishes. Two things stop a run early, and both leave the output
ready for a rerun of the same command, which then sends only what is missing:

- an error that no request of the job can get past (a wrong key, a model that
  does not exist, an account without quota, a rate limit spent for longer than a
  retry waits, a server that takes no connection: see `_serverwatch`): nothing
  more is sent, and such errors are not written, so the rerun sends those
  requests again;
- a `BatchStop` (Ctrl-C, SIGTERM): nothing more is sent, requests in flight get
  a grace period to finish, then are cancelled and not written.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from asyncchat._batchfile import ResultsFile, check_input, encode_record, input_requests
from asyncchat._chat import tokens_reported_in
from asyncchat._fanout import fan_out
from asyncchat._ratelimit import RateLimit
from asyncchat._retry import MAX_RETRY_DELAY, requested_pause
from asyncchat._serverwatch import (
    DEFAULT_PATIENCE,
    NOT_SERVING,
    ServerWatch,
    log_outages,
    send_patiently,
)
from asyncchat.client import Client
from asyncchat.errors import (
    APIError,
    APIStatusError,
    ConnectError,
    ServerNotReadyError,
    TLSError,
    error_fields,
)
from asyncchat.quirks import (
    CONTENT_FILTER_REASONS,
    cut_short_at,
    says_input_flagged,
    says_key_invalid,
    says_limit_is_zero,
    says_out_of_credits,
    says_request_too_large,
    says_unknown_model,
)
from asyncchat.types import ChatCompletion

__all__ = ["BatchStop", "BatchSummary", "RunTally", "fatal_hint", "run_batch_file"]

_Runner = Callable[[Mapping[str, Any]], Awaitable[ChatCompletion]]


def fatal_hint(error: Exception) -> str | None:
    """What to fix when `error` would fail every request of the job alike; None otherwise.

    A `ConnectError` comes this far only when `send_patiently` gave up on the server.
    """
    if isinstance(error, TLSError):
        return "every request meets the same certificate: fix the TLS settings first"
    if isinstance(error, ConnectError):
        return "check --base-url and that the server is up"
    if isinstance(error, ServerNotReadyError):
        return "the server never finished starting: its own log says why"
    if not isinstance(error, APIStatusError):
        return None
    message, _, error_type, _ = error_fields(error.body)  # the server's own words
    if error.status_code == 401 or says_key_invalid(message, error.body):
        return "check the API key (--api-key, or ASYNCCHAT_API_KEY / OPENAI_API_KEY)"
    # DeepSeek's 402 "Insufficient Balance", OpenRouter's; others' words for it, whatever
    # the status (OpenAI's and Zhipu's 429, Alibaba's 400, Volcengine's 403, ...)
    if error.status_code == 402 or says_out_of_credits(error.code, error_type, message):
        return "the account (or this key) has run out of credits or quota: add credits"
    if error.status_code == 403 and not says_input_flagged(error.body):
        return "this key may not use this model or endpoint: check its permissions"
    if error.status_code == 412:  # no request sends a condition of its own that could fail
        return (
            "the server says a precondition failed (Fireworks: a suspended account, or a "
            "model that failed to load): check the account and the model"
        )
    if error.status_code == 404 or says_unknown_model(error.code, error_type, message):
        return "check the model name (--model, or each line's body.model) and --base-url"
    if error.status_code == 429 and says_limit_is_zero(message, error.body):
        return (
            "the rate limit lets this key send no requests to this model at all (a limit "
            "of 0): get access to it, or use another model"
        )
    # A request too large for the budget fails alone: smaller ones still fit it.
    if error.status_code == 429 and not says_request_too_large(message):
        pause = requested_pause(429, error.headers, error.body, time.time())
        if pause == math.inf:  # a budget of hours or longer spent, no reset to wait for
            return (
                "the rate limit allows no more requests for hours or longer (a daily, "
                "weekly or monthly budget is spent): wait for it to reset, or raise it"
            )
        if pause is not None and pause > MAX_RETRY_DELAY:
            return f"the rate limit allows no requests for {_how_long(pause)}: wait that long"
    return None


def _how_long(seconds: float) -> str:
    """A pause in words, to the minute ("5h 12m"), or in seconds under two minutes."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


@dataclass
class BatchSummary:
    """A run's outcome, counted over this input's ids (and shard) only."""

    total: int  # requests of this input and shard
    skipped: int  # already in the output before this run
    succeeded: int  # in the output now, across runs
    failed: int
    seconds: float
    tokens: int  # reported by this run's answers
    stopped_by: str | None = None  # the signal that stopped the run early
    fatal: APIError | None = None  # the error that stopped the whole job
    notes: list[str] = field(default_factory=list)  # what else the user should know

    @property
    def not_run(self) -> int:
        """Requests with no record yet: a rerun of the same command sends them."""
        return self.total - self.succeeded - self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.succeeded == self.total


class BatchStop:
    """Asks a running batch to stop, as Ctrl-C does.

    The first `request()` stops new requests and gives those in flight `grace`
    seconds to finish; the second (or the end of the grace period) cancels them.
    Results that arrived are written; cancelled requests are not, so a rerun
    sends them.
    """

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace
        self.reason: str | None = None
        self._requests = 0
        self._abort: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = "stop") -> None:
        self._requests += 1
        if self.reason is None:
            self.reason = reason
        self._escalate()

    def _escalate(self) -> None:
        if self._abort is None or not self._requests:
            return
        if self._requests == 1 and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._abort)
        elif self._requests > 1:
            self._abort()

    def _attach(self, abort: Callable[[], None]) -> None:
        self._abort = abort
        self._escalate()

    def _detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._abort = self._timer = None


class _Progress:
    """A live status line on a terminal. Elsewhere (a log) only what a reader of
    the log must see: a line when the server stops taking connections, and one
    when it is back.

    Rate and ETA count this run's results only: results an earlier run left in
    the output took no time now.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        done_before: int,
        clock: Callable[[], float] = time.monotonic,
        counts_in_flight: bool = True,
    ) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.total = total
        self.done_before = done_before
        self.done = self.failed = self.in_flight = self.tokens = 0  # this run's
        self.quota = ""  # what the latest response said is left of the rate limits
        # The latest answer, its rate limits read only when the line is next shown.
        self.latest_answer: ChatCompletion | APIStatusError | None = None
        self.server: ServerWatch | None = None  # shown while it waits for the server
        self.clock = clock
        self.counts_in_flight = counts_in_flight  # False where requests are open elsewhere
        self.started = clock()
        self.last_shown = float("-inf")

    def show(self, force: bool = False) -> None:
        now = self.clock()
        if not self.live or (not force and now - self.last_shown < 0.2):
            return
        self.last_shown = now
        if self.latest_answer is not None:
            limits = self.latest_answer.rate_limits
            if limits is not None:
                self.quota = limits.describe()
            self.latest_answer = None
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done_before - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "-"
        self.stream.write(
            f"\r{self.done_before + self.done}/{self.total} done, {self.failed} failed, "
            + (f"{self.in_flight} in flight, " if self.counts_in_flight else "")
            + f"{rate:.1f} req/s, {self.tokens} tokens, ETA {eta}"
            + (f", {self.quota}" if self.quota else "")
            + self._server_down(now)
            + "  "
        )
        self.stream.flush()

    def watch_server(self, watch: ServerWatch) -> None:
        """Show `watch`'s waits: on the live line, or as lines in a log."""
        self.server = watch
        if self.live:
            watch.on_refusal = self.show
        else:
            log_outages(watch, self.stream)

    def _server_down(self, now: float) -> str:
        server = self.server
        if server is None or server.down_since is None:
            return ""
        trouble = "no connection" if server.down_status is None else f"HTTP {server.down_status}"
        return (
            f", {trouble} for {now - server.down_since:.0f}s (waiting up to {server.patience:g}s)"
        )


async def run_batch_file(
    client: Client,
    input_path: Path,
    output_path: Path,
    *,
    concurrency: int = 64,
    model: str | None = None,
    shard: tuple[int, int] = (1, 1),
    retry_failed: bool = False,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    rate_limit: RateLimit | None = None,
    progress: TextIO | None = None,  # stderr as it is when called
    stop: BatchStop | None = None,
    server_wait: float = DEFAULT_PATIENCE,
    server_starting: bool = False,
) -> BatchSummary:
    """Run every request of the input file (in this shard) not already in the output.

    A server that answered and then takes no connection is waited for up to
    `server_wait` seconds (it may be restarting) before the job stops; with
    `server_starting`, so is one that has not answered yet, or answers 502 or 503
    (a proxy before its server is up). A 503 "Loading model" is waited for either way.

    Raises `BatchFileError` (nothing sent, nothing written) for an input with bad
    lines, an output that is the input or not a results file, or one in use.
    """
    ids = check_input(input_path, model, shard)
    results = ResultsFile.open(
        output_path, input_path=input_path, ids=ids, retry_failed=retry_failed
    )
    try:
        run = _Run(client, results, ids, stop or BatchStop(), progress)
        pending = run.pending(input_requests(input_path, model))
        send = client.chat._request_runner(requests_per_minute, tokens_per_minute, rate_limit)
        watch = ServerWatch(server_wait, client._clock, starting=server_starting)
        run.status.watch_server(watch)
        await run.run(lambda body: send_patiently(send, body, watch), pending, concurrency)
    finally:
        results.close()
    run.note_downtime(watch)
    if not server_starting:
        run.note_never_served()
    return run.summary()


class RunTally:
    """What a run wrote, counted over this input's ids, shown and summed up; and why it
    stopped. The engines (this module's, and Ray's) keep theirs in one."""

    def __init__(
        self,
        results: ResultsFile,
        ids: set[str],
        stop: BatchStop,
        progress: TextIO | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        counts_in_flight: bool = True,
    ) -> None:
        self.results = results
        self.ids = ids
        self.stop = stop
        self.done_before = results.succeeded | results.failed
        self.succeeded = len(results.succeeded)
        self.failed = len(results.failed)
        self.status = _Progress(
            progress or sys.stderr, len(ids), len(self.done_before), clock, counts_in_flight
        )
        self.fatal: APIError | None = None
        self.notes: list[str] = []
        self.cut_short: Counter[str] = Counter()  # this run's answers not whole, by why
        self.started = time.monotonic()

    def count(self, succeeded: bool, answer: Mapping[str, Any] | None = None) -> None:
        """One record written; `answer` is a success's completion, as JSON: its tokens
        are counted, and whether it came whole."""
        self.status.done += 1
        if not succeeded:
            self.failed += 1
            self.status.failed += 1
            return
        self.succeeded += 1
        if answer is None:
            return
        self.status.tokens += tokens_reported_in(answer) or 0
        reason = _cut_short(answer)
        if reason is not None:
            self.cut_short[reason] += 1

    def summary(self) -> BatchSummary:
        notes = self.notes + [_cut_short_note(why, n) for why, n in sorted(self.cut_short.items())]
        return BatchSummary(
            total=len(self.ids),
            skipped=len(self.done_before),
            succeeded=self.succeeded,
            failed=self.failed,
            seconds=time.monotonic() - self.started,
            tokens=self.status.tokens,
            stopped_by=self.stop.reason,
            fatal=self.fatal,
            notes=notes,
        )


def _cut_short(answer: Mapping[str, Any]) -> str | None:
    """The `finish_reason` that says an answer is not whole (a limit, the server
    giving up, or a content filter), in any of its choices; None for a whole answer."""
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if type(reason) is str and (cut_short_at(reason) or reason in CONTENT_FILTER_REASONS):
            return str(reason)
    return None


def _cut_short_note(reason: str, count: int) -> str:
    answers = "1 answer" if count == 1 else f"{count} answers"
    if reason == "length":
        return (
            f"{answers} of this run stopped at the token limit (finish_reason 'length'): "
            "their records hold what came; a larger max_tokens gets them whole"
        )
    where = cut_short_at(reason)
    if where is not None:
        return (
            f"{answers} of this run were cut {where} (finish_reason {reason!r}): "
            "their records hold what came"
        )
    return f"{answers} of this run were stopped by a content filter (finish_reason {reason!r})"


class _Run(RunTally):
    """One run in this process: its requests in flight, and the tally."""

    def __init__(
        self,
        client: Client,
        results: ResultsFile,
        ids: set[str],
        stop: BatchStop,
        progress: TextIO | None,
    ) -> None:
        super().__init__(results, ids, stop, progress, clock=client._clock)
        self.in_flight: set[asyncio.Future[ChatCompletion]] = set()
        self.not_served: Counter[int] = Counter()  # the 502s and 503s this run wrote

    def pending(
        self, requests: Iterator[tuple[str, dict[str, Any]]]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """This run's requests, read lazily; none once the run is stopping."""
        for custom_id, body in requests:
            if self.fatal is not None or self.stop.requested:
                return
            if custom_id in self.ids and custom_id not in self.done_before:
                yield custom_id, body

    def note_downtime(self, watch: ServerWatch) -> None:
        """Say in the summary how long requests waited for a server that took no
        connection (or was not serving): a job that went on tells the reader of its
        log nothing else."""
        outages, seconds = watch.downtime()
        if not outages:
            return
        times = "once" if outages == 1 else f"{outages} times"
        met = ", ".join(
            "no connection" if status is None else f"HTTP {status}"
            for status in sorted(watch.seen_down, key=lambda status: status or 0)
        )
        self.notes.append(
            f"the server was not serving {times}, for {seconds:.0f}s in all ({met}); "
            "requests waited for it and were tried again (none had been run)"
        )

    def note_never_served(self) -> None:
        """Say so when every record of this run is a 502 or 503: a server not up yet
        behind a proxy answers so, as well as one overloaded."""
        if self.status.done and self.status.done == self.not_served.total():
            statuses = " or ".join(str(status) for status in sorted(self.not_served))
            self.notes.append(
                f"every request was answered {statuses} and none served: if the server is "
                "still starting (behind a proxy, say), --server-starting waits for it"
            )

    def abort(self) -> None:
        for request in list(self.in_flight):
            request.cancel()

    async def attempt(
        self,
        runner: _Runner,
        item: tuple[str, dict[str, Any]],
    ) -> tuple[str, ChatCompletion | Exception | None]:
        """One request, as `(custom_id, result)`; the result is None if `abort` cancelled it."""
        custom_id, body = item
        request: asyncio.Future[ChatCompletion] = asyncio.ensure_future(runner(body))
        self.in_flight.add(request)
        self.status.in_flight = len(self.in_flight)
        try:
            # wait(), unlike await, is not cancelled with the request: an abort
            # (the request cancelled) returns here, a cancelled run raises.
            await asyncio.wait((request,))
        except asyncio.CancelledError:
            request.cancel()
            await asyncio.wait((request,))
            raise
        finally:
            self.in_flight.discard(request)
            self.status.in_flight = len(self.in_flight)
        if request.cancelled():
            return custom_id, None
        try:
            return custom_id, request.result()
        except APIError as exc:
            if fatal_hint(exc) is not None:
                # Set here, before this worker takes the next request; not written,
                # so a rerun with the fix sends it.
                self.fatal = self.fatal or exc
                return custom_id, None
            return custom_id, exc
        except Exception as exc:
            return custom_id, exc

    async def run(
        self,
        runner: _Runner,
        pending: Iterator[tuple[str, dict[str, Any]]],
        concurrency: int,
    ) -> None:
        self.stop._attach(self.abort)
        try:
            finished = fan_out(
                lambda item: self.attempt(runner, item), pending, concurrency=concurrency
            )
            async with aclosing(finished):
                async for _, outcome in finished:
                    if isinstance(outcome, BaseException):
                        raise outcome  # a bug in attempt(), not a request's error
                    self.record(*outcome)
        finally:
            self.stop._detach()
            self.status.show(force=True)
            if self.status.live:
                self.status.stream.write("\n")

    def record(self, custom_id: str, result: ChatCompletion | Exception | None) -> None:
        if result is None:
            return  # cancelled by a stop, or a job-wide error: a rerun sends it
        line, succeeded = encode_record(custom_id, result)
        self.results.write(line)
        if isinstance(result, (ChatCompletion, APIStatusError)):
            self.status.latest_answer = result
        self.count(succeeded, result._data if isinstance(result, ChatCompletion) else None)
        if isinstance(result, APIStatusError) and result.status_code in NOT_SERVING:
            self.not_served[result.status_code] += 1
        self.status.show()
