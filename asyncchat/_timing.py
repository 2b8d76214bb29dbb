"""How long a streamed request took: to its first chunk, between chunks, to its end.

A `StreamTiming` is given to a stream only when something reads it (telemetry,
or the log line of `ASYNCCHAT_LOG=info`); then it wraps the stream's read
function, and at each read looks at how many chunks the one before brought. A
stream without one reads as before: nothing is timed, nothing runs per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncchat.accumulate import ChatCompletionAccumulator

__all__ = ["StreamTiming"]

# Called once at the stream's end: the timing, what was assembled, and the error
# that ended it (None for a normal end, or a stream closed early by its reader).
EndListener = Callable[["StreamTiming", ChatCompletionAccumulator, "BaseException | None"], None]


class StreamTiming:
    """The times of one stream, measured from `started` (when the request was issued)."""

    __slots__ = (
        "_counted",
        "_last_read",
        "_listeners",
        "_per_chunk",
        "_previous",
        "closed_early",
        "first_chunk",
        "started",
    )

    def __init__(
        self,
        started: float,
        listeners: list[EndListener],
        per_chunk: Callable[[float], Any] | None = None,
    ) -> None:
        self.started = started  # time.perf_counter() values throughout
        self.first_chunk: float | None = None  # when the read that brought it returned
        self.closed_early = False  # its reader closed it before its end (no error)
        self._listeners = listeners
        self._per_chunk = per_chunk  # given the seconds each chunk after the first took
        self._counted = 0  # chunks accounted for
        self._last_read = started
        self._previous = started

    def listen(self, listener: EndListener) -> None:
        """Also tell `listener` how the stream ended."""
        self._listeners.append(listener)

    @property
    def time_to_first_chunk(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started

    def wrap(
        self, receive: Callable[[], Awaitable[bytes]], accumulator: ChatCompletionAccumulator
    ) -> Callable[[], Awaitable[bytes]]:
        """The stream's read function, timed."""

        async def timed_receive() -> bytes:
            self._account(accumulator)
            received = await receive()
            self._last_read = time.perf_counter()
            return received

        return timed_receive

    def _account(self, accumulator: ChatCompletionAccumulator) -> None:
        """Credit the chunks the last read brought to the time it returned."""
        count = accumulator.chunk_count
        new = count - self._counted
        if new <= 0:
            return
        arrived = self._last_read
        if self.first_chunk is None:
            self.first_chunk = arrived
            new -= 1
        per_chunk = self._per_chunk
        if per_chunk is not None and new > 0:
            share = (arrived - self._previous) / new  # chunks of one read share its wait
            for _ in range(new):
                per_chunk(share)
        self._counted, self._previous = count, arrived

    def ended(self, accumulator: ChatCompletionAccumulator, error: BaseException | None) -> None:
        """The stream is over, however it ended: tell the listeners, once."""
        self._account(accumulator)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self, accumulator, error)
