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
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
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
        partial = self._partial_line
        if data[-1] == 0x0A and not partial:
            return self._process_lines(data.splitlines())  # whole lines, nothing pending
        last_lf = data.rfind(b"\n")
        last_cr = data.rfind(b"\r")
        cut = max(last_lf, last_cr)
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
        # Only a CR that ends the read may be the first half of a CRLF.
        self._skip_lf = last_cr == cut == len(data) - 1
        events = self._process_lines(complete.splitlines())
        self._check_size(len(partial))
        return events

    def take_data_events(self, data: bytes) -> list[bytes] | None:
        """The payloads of `data` if it is only whole single-line `data:` events, else None.

        A fast path for what chat servers send nearly always (`data: {...}` and a
        blank line, LF line ends): the payloads come back as bytes, undecoded,
        for a JSON parser that reads bytes. It applies only when nothing is
        pending; when it returns None, nothing was consumed and `feed` must be
        used.
        """
        # Indexing and `in` over method calls: bytes.startswith() and .endswith()
        # cost this path a third of its instructions, and an int needle is one
        # memchr where a one-byte bytes needle takes the general search.
        if (
            data[:6] != b"data: "
            or data[-1] != 10  # LF
            or data[-2] != 10
            or self._partial_line
            or self._data
            or self._event  # an `event:` line already read belongs to this event
            or self._retry is not None
            or self._skip_lf
            or len(data) > self.max_event_size
            or 13 in data  # CR
        ):
            return None
        payload = data[6:-2]
        if 10 not in payload:
            payloads = [payload]  # one event: the token-by-token case
        else:
            payloads = payload.split(b"\n\ndata: ")
            # A line end left in a payload is a line that is not a `data:` event
            # of its own. (Joining and one memchr beat counting line ends.)
            if 10 in b"".join(payloads):
                return None
        # (The event's name and retry are already unset: checked above.)
        self._first_line = False
        self._bytes_since_event = 0
        return payloads

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
        if self._data:
            events.append(self._dispatch())
        self._skip_lf = False
        return events

    def _process_lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        if self._first_line and lines:
            self._first_line = False
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
                if not lines[0]:
                    del lines[0]
        events: list[ServerSentEvent] = []
        data = self._data
        limit = self.max_event_size
        for raw in lines:
            if not raw:  # a blank line ends the block
                if data:
                    events.append(self._dispatch())
                    data = self._data
                else:
                    self._event = ""
                    self._retry = None
                continue
            self._bytes_since_event += len(raw) + 1
            if self._bytes_since_event > limit:
                self._check_size(0)
            if raw.startswith(b"data: "):  # the common case, first
                data.append(raw[6:].decode("utf-8", "replace"))
                continue
            line = raw.decode("utf-8", "replace")
            if line[0] == ":":
                continue  # a comment, such as a keep-alive
            field, colon, value = line.partition(":")
            if colon and value and value[0] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                self._event = value
            elif field == "id":
                if "\0" not in value:
                    self._last_event_id = value
            elif field == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)
            # Any other field is ignored, as the standard says.
        return events

    def _dispatch(self) -> ServerSentEvent:
        """The event the current block built (it has data); resets the block."""
        data = self._data
        event = ServerSentEvent(
            data[0] if len(data) == 1 else "\n".join(data),
            self._event or "message",
            self._last_event_id,
            self._retry,
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
