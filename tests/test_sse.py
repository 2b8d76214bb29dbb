"""The SSE decoder, fed every input whole, byte by byte, and split at every offset."""

from __future__ import annotations

import random
import time

import pytest

from asyncchat.errors import EventTooLargeError
from asyncchat.sse import ServerSentEvent, SSEDecoder


def decode(pieces: list[bytes], **options: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**options)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def all_splits(data: bytes) -> list[list[bytes]]:
    """The input whole, byte by byte, cut once at every offset, cut twice at random."""
    splits = [[data], [data[i : i + 1] for i in range(len(data))]]
    splits += [[data[:i], data[i:]] for i in range(1, len(data))]
    rng = random.Random(len(data))
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
        splits.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])
    return splits


def assert_decodes(data: bytes, expected: list[ServerSentEvent]) -> None:
    for pieces in all_splits(data):
        assert decode(pieces) == expected, pieces


def test_basic_events() -> None:
    assert_decodes(
        b'data: {"a": 1}\n\ndata: [DONE]\n\n',
        [ServerSentEvent('{"a": 1}'), ServerSentEvent("[DONE]")],
    )


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(end: bytes) -> None:
    data = b"event: add" + end + b"data: one" + end + b"data: two" + end + end + b"data: x" + end
    data += end
    assert_decodes(data, [ServerSentEvent("one\ntwo", event="add"), ServerSentEvent("x")])


def test_mixed_line_endings_and_crlf_split_across_reads() -> None:
    data = b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"
    assert_decodes(data, [ServerSentEvent("a"), ServerSentEvent("b"), ServerSentEvent("c")])
    # A CRLF cut between two reads is one line end, not a line end and a blank line.
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [ServerSentEvent("a\nb")]


def test_cr_inside_a_read_is_not_half_of_a_crlf() -> None:
    # Found by the fuzzer: a read holding "...\r\x00" then one starting with "\n".
    data = b"data: a\rb\ndata: c\n\n"
    assert_decodes(data, [ServerSentEvent("a\nc")])


def test_utf8_character_split_across_reads() -> None:
    text = "héllo 世界 🎉"
    assert_decodes(f"data: {text}\n\n".encode(), [ServerSentEvent(text)])


def test_leading_bom_dropped_once() -> None:
    assert_decodes(b"\xef\xbb\xbfdata: x\n\n", [ServerSentEvent("x")])
    # Only a leading BOM is dropped; one later is data.
    assert_decodes(b"data: x\n\n\xef\xbb\xbfdata: y\n\n", [ServerSentEvent("x")])
    assert_decodes(b"\xef\xbb\xbf\ndata: x\n\n", [ServerSentEvent("x")])


def test_comments_are_ignored() -> None:
    data = b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n: mid-event\ndata: y\n\n"
    assert_decodes(data, [ServerSentEvent("x\ny")])


def test_field_without_colon_and_space_rules() -> None:
    # "data" alone is a data field with an empty value; only one space is stripped.
    data = b"data\ndata:  two spaces\ndata:none\n\n"
    assert_decodes(data, [ServerSentEvent("\n two spaces\nnone")])


def test_data_only_line_with_empty_value_still_dispatches() -> None:
    assert_decodes(b"data:\n\n", [ServerSentEvent("")])


def test_block_without_data_dispatches_nothing() -> None:
    data = b"id: 7\n\nevent: ping\n\n: ping\n\nretry: 10\n\ndata: x\n\n"
    assert_decodes(data, [ServerSentEvent("x", id="7")])


def test_event_type_resets_after_each_event() -> None:
    data = b"event: error\ndata: a\n\ndata: b\n\n"
    assert_decodes(data, [ServerSentEvent("a", event="error"), ServerSentEvent("b")])


def test_id_persists_and_ignores_nul() -> None:
    data = b"id: 1\ndata: a\n\ndata: b\n\nid: bad\x00id\ndata: c\n\nid\ndata: d\n\n"
    assert_decodes(
        data,
        [
            ServerSentEvent("a", id="1"),
            ServerSentEvent("b", id="1"),
            ServerSentEvent("c", id="1"),
            ServerSentEvent("d", id=""),
        ],
    )


def test_retry_only_when_all_digits() -> None:
    data = b"retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\nretry: \xc2\xb2\ndata: c\n\n"
    assert_decodes(
        data,
        [ServerSentEvent("a", retry=1500), ServerSentEvent("b"), ServerSentEvent("c")],
    )


def test_unknown_fields_ignored() -> None:
    assert_decodes(b"foo: bar\ndata: x\n\n", [ServerSentEvent("x")])


def test_last_event_without_blank_line_is_dispatched_at_close() -> None:
    assert_decodes(b"data: a\n\ndata: [DONE]", [ServerSentEvent("a"), ServerSentEvent("[DONE]")])
    assert_decodes(b"data: a\n\ndata: [DONE]\n", [ServerSentEvent("a"), ServerSentEvent("[DONE]")])


def test_close_on_empty_input() -> None:
    assert decode([]) == []
    assert SSEDecoder().feed(b"") == []


def test_event_size_cap_on_one_long_line() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(EventTooLargeError, match="1000 bytes"):
        decoder.feed(b"x" * 200)


def test_event_size_cap_on_a_whole_event_in_one_read() -> None:
    with pytest.raises(EventTooLargeError):
        SSEDecoder(max_event_size=1000).feed(b"data: " + b"x" * 2000 + b"\n\n")


def test_event_size_cap_on_many_data_lines() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"data: xxxxxxxxxx\n" * 100)


def test_event_size_cap_on_endless_comments() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    with pytest.raises(EventTooLargeError):
        for _ in range(200):
            decoder.feed(b": keep-alive\n\n")


def test_cap_counts_from_the_last_event() -> None:
    decoder = SSEDecoder(max_event_size=100)
    for _ in range(1000):
        assert decoder.feed(b"data: " + b"x" * 60 + b"\n\n") == [ServerSentEvent("x" * 60)]


def test_invalid_cap_rejected() -> None:
    with pytest.raises(ValueError, match="max_event_size"):
        SSEDecoder(max_event_size=0)


def _cpu_seconds_byte_by_byte(size: int, repeat: int) -> float:
    """CPU time to decode one event of `size` bytes fed in 1-byte reads (best of `repeat`)."""
    payload = b"data: " + b"y" * size + b"\n\n"
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    best = float("inf")
    for _ in range(repeat):
        decoder = SSEDecoder()
        events: list[ServerSentEvent] = []
        start = time.process_time()
        for piece in pieces:
            events += decoder.feed(piece)
        best = min(best, time.process_time() - start)
        assert len(events) == 1
        assert len(events[0].data) == size
    return best


@pytest.mark.slow
def test_ten_mib_event_in_one_byte_reads_is_linear() -> None:
    """Ten times the input costs about ten times the work; a rescanning decoder, 100 times."""
    small = _cpu_seconds_byte_by_byte(1024 * 1024, repeat=3)
    large = _cpu_seconds_byte_by_byte(10 * 1024 * 1024, repeat=1)
    assert large / small < 30, (small, large)


FAST_PATH_SAMPLES = [
    b'data: {"a": 1}\n\n',
    b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n',
    b"data: x\n\n",
    # Not eligible: each must fall back to feed() and decode the same.
    b"data: a\ndata: b\n\n",
    b"data: a\r\n\r\n",
    b"event: error\ndata: x\n\n",
    b": keep-alive\n\ndata: x\n\n",
    b"data: x\n",
    b"data:x\n\n",
    b"data: x\n\nid: 3\n\n",
    b"\xef\xbb\xbfdata: x\n\n",
]


@pytest.mark.parametrize("data", FAST_PATH_SAMPLES)
def test_data_event_fast_path_agrees_with_feed(data: bytes) -> None:
    reference = SSEDecoder()
    expected = [event.data.encode() for event in reference.feed(data)]
    decoder = SSEDecoder()
    payloads = decoder.take_data_events(data)
    if payloads is None:
        payloads = [event.data.encode() for event in decoder.feed(data)]
    assert payloads == expected
    # The decoder is left as feed() leaves it: what follows decodes the same.
    after = b"data: next\n\n"
    assert decoder.feed(after) + decoder.close() == reference.feed(after) + reference.close()


def test_fast_path_declines_while_something_is_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first half") == []
    assert decoder.take_data_events(b"data: x\n\n") is None
    assert decoder.feed(b"\n\n") == [ServerSentEvent("first half")]
    # An `event:` line in an earlier read names the event the next read completes.
    assert decoder.feed(b"event: error\n") == []
    assert decoder.take_data_events(b"data: x\n\n") is None
    assert decoder.feed(b"data: x\n\n") == [ServerSentEvent("x", event="error")]
    assert SSEDecoder(max_event_size=10).take_data_events(b"data: " + b"x" * 20 + b"\n\n") is None
