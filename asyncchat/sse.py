"""An incremental Server-Sent Events decoder that does no IO.

Feed it bytes as they arrive, in pieces of any size; it returns the events that
became complete. It follows the WHATWG event-stream rules and survives what
real servers send: CR, LF and CRLF line ends (a CRLF split between two reads
is one line end), UTF-8 characters split between reads (lines are split on
bytes and decoded whole), a leading BOM, comments, fields without a colon.

Its cost is linear in the input however it is split: bytes are scanned once,
and a line still in progress is only appended to, never rescanned.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncchat.errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEDecoder", "ServerSentEvent"]

DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. `id` is the last event id seen so far in the stream."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns an event-stream byte stream into `ServerSentEvent`s.

    `max_event_size` caps the bytes that may arrive between two dispatched events
    (one huge line, or an endless run of comments); past it `feed` raises
    `EventTooLargeError` instead of buffering without bound.
    """

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size <= 0:
            raise ValueError(f"max_event_size must be positive, got {max_event_size}")
        self.max_event_size = max_event_size
        self._partial_line = bytearray()  # bytes after the last line end
        self._skip_lf = False  # the last line ended in CR: a following LF belongs to it
        self._first_line = True  # a BOM may only start the very first line
        self._bytes_since_event = 0
        # The event being built.
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        self._last_event_id: str | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode a piece of the stream; returns the events it completed."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        last_lf = data.rfind(b"\n")
        last_cr = data.rfind(b"\r")
        cut = max(last_lf, last_cr)
        partial = self._partial_line
        if cut < 0:
            partial += data
            self._check_size(len(partial))
            return []
        if partial:
            complete = bytes(partial) + data[: cut + 1]
            partial.clear()
        else:
            complete = data[: cut + 1]
        rest = data[cut + 1 :]
        if rest:
            partial += rest
        self._skip_lf = last_cr == cut
        events = self._process_lines(complete.splitlines())
        self._check_size(len(partial))
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of input: a last line without a line end still counts.

        An event whose blank line never came is dispatched too: servers that omit
        the final blank line (or the `[DONE]` after it) are common.
        """
        events: list[ServerSentEvent] = []
        if self._partial_line:
            line = bytes(self._partial_line)
            self._partial_line.clear()
            events = self._process_lines([line])
        event = self._dispatch()
        if event is not None:
            events.append(event)
        self._skip_lf = False
        return events

    def _process_lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for raw in lines:
            if not raw:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
                continue
            self._bytes_since_event += len(raw) + 1
            if self._bytes_since_event > self.max_event_size:
                self._check_size(0)
            line = raw.decode("utf-8", "replace")
            if self._first_line:
                self._first_line = False
                if line.startswith(_BOM):
                    line = line[1:]
                    if not line:
                        continue
            if line[0] == ":":
                continue  # a comment, such as a keep-alive
            field, colon, value = line.partition(":")
            if colon and value and value[0] == " ":
                value = value[1:]
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._event = value
            elif field == "id":
                if "\0" not in value:
                    self._last_event_id = value
            elif field == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)
            # Any other field is ignored, as the standard says.
        self._first_line = False
        return events

    def _dispatch(self) -> ServerSentEvent | None:
        """End of a block: an event if it had data; the block's state is reset either way."""
        if not self._data:
            self._event = ""
            self._retry = None
            return None
        event = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._last_event_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        self._retry = None
        self._bytes_since_event = 0
        return event

    def _check_size(self, pending: int) -> None:
        size = self._bytes_since_event + pending
        if size > self.max_event_size:
            raise EventTooLargeError(
                f"the server sent more than {self.max_event_size} bytes without completing "
                f"an event ({size} bytes so far); raise max_event_size if this is expected"
            )
