"""How long a streamed request took: to its first chunk, per chunk, to its end.

A `StreamTiming` is given to a stream only when something reads it (telemetry,
or the log line of `ASYNCCHAT_LOG=info`). It wraps the stream's read function
until the first chunk has come, then takes itself out: from there on a stream
reads as an untimed one does. The time per chunk after the first is the mean
over the rest of the stream, taken at its end.

Made with `each_chunk=True` (telemetry's `ASYNCCHAT_OTEL_TIME_PER_CHUNK=each`), it
stays on every read instead, noting when each read returned and how many chunks it
completed, so that each chunk's own time can be told at the end: the time from the
previous chunk's arrival to its own, zero for the second and later chunks of a read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from asyncchat.accumulate import ChatCompletionAccumulator

__all__ = ["StreamTiming"]

# Called once at the stream's end: the timing, what was assembled, and the error
# that ended it (None for a normal end, or a stream closed early by its reader).
EndListener = Callable[["StreamTiming", ChatCompletionAccumulator, "BaseException | None"], None]
Receive = Callable[[], Awaitable[bytes]]


class StreamTiming:
    """The times of one stream, measured from `started` (when the request was issued)."""

    __slots__ = (
        "_arrivals",
        "_counted",
        "_last_read",
        "_listeners",
        "chunks",
        "closed_early",
        "ended_at",
        "first_chunk",
        "started",
    )

    def __init__(
        self, started: float, listeners: list[EndListener], *, each_chunk: bool = False
    ) -> None:
        self.started = started  # time.perf_counter() values throughout
        self.first_chunk: float | None = None  # when the read that brought it returned
        self.ended_at: float | None = None
        self.chunks = 0
        self.closed_early = False  # its reader closed it before its end (no error)
        self._listeners = listeners
        self._last_read = started
        # With each_chunk: (when a read returned, how many chunks it completed), for
        # every read that completed one; and how many chunks those add up to.
        self._arrivals: list[tuple[float, int]] | None = [] if each_chunk else None
        self._counted = 0

    def listen(self, listener: EndListener) -> None:
        """Also tell `listener` how the stream ended."""
        self._listeners.append(listener)

    @property
    def time_to_first_chunk(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started

    @property
    def chunk_gaps(self) -> list[float] | None:
        """Once the stream ended, each chunk's time after the first: from the arrival
        of the chunk before it to its own. None unless made with `each_chunk`."""
        if self._arrivals is None:
            return None
        gaps: list[float] = []
        previous: float | None = None
        for arrived, count in self._arrivals:
            if previous is not None:
                gaps.append(arrived - previous)
            gaps += [0.0] * (count - 1)  # came in the same read as the one before
            previous = arrived
        return gaps

    @property
    def time_per_chunk(self) -> float | None:
        """The mean time each chunk after the first took, once the stream ended."""
        if self.first_chunk is None or self.ended_at is None or self.chunks < 2:
            return None
        return (self.ended_at - self.first_chunk) / (self.chunks - 1)

    def wrap(
        self,
        receive: Receive,
        accumulator: ChatCompletionAccumulator,
        unwrap: Callable[[], Callable[[Receive], None] | None],
    ) -> Receive:
        """The stream's read function, timed until the first chunk; `unwrap` (a weak
        reference) gives what puts the plain one back then (never, with `each_chunk`)."""
        if self._arrivals is not None:
            return self._wrap_every_read(receive, accumulator)

        async def timed_receive() -> bytes:
            if accumulator.chunk_count:  # the read before brought the first chunk
                self.first_chunk = self._last_read
                put_back = unwrap()
                if put_back is not None:
                    put_back(receive)
                return await receive()
            received = await receive()
            self._last_read = time.perf_counter()
            return received

        return timed_receive

    def _wrap_every_read(self, receive: Receive, accumulator: ChatCompletionAccumulator) -> Receive:
        """The read function timing every read: the stream asks for the next read
        only once it has handed out every chunk the last one completed."""

        async def timed_receive() -> bytes:
            self._note_arrivals(accumulator.chunk_count)
            received = await receive()
            self._last_read = time.perf_counter()
            return received

        return timed_receive

    def _note_arrivals(self, chunk_count: int) -> None:
        """The chunks counted since the last note arrived with the last read."""
        arrivals = self._arrivals
        if arrivals is not None and chunk_count != self._counted:
            arrivals.append((self._last_read, chunk_count - self._counted))
            self._counted = chunk_count
            if self.first_chunk is None:
                self.first_chunk = self._last_read

    def ended(self, accumulator: ChatCompletionAccumulator, error: BaseException | None) -> None:
        """The stream is over, however it ended: tell the listeners, once."""
        self.ended_at = time.perf_counter()
        self.chunks = accumulator.chunk_count
        self._note_arrivals(self.chunks)
        if self.first_chunk is None and self.chunks:
            self.first_chunk = self._last_read  # one read brought everything
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self, accumulator, error)
