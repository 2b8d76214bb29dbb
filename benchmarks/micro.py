"""Micro-benchmarks of the sans-IO pieces: SSE decoding and chunk accumulation.

The decoders get the same byte stream in the same pieces; the accumulators get
the same chunks. Peers that are not installed are reported as skipped.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from asyncchat.accumulate import ChatCompletionAccumulator
from asyncchat.sse import SSEDecoder
from benchmarks.scenarios import build, chunk_dict


def sse_stream(size: int) -> tuple[bytes, int]:
    """About `size` bytes of chat-completion chunk events, and how many events that is."""
    event = build("token").events[5]
    count = max(size // len(event), 1)
    return event * count, count


def _pieces(data: bytes, piece_size: int) -> list[bytes]:
    return [data[i : i + piece_size] for i in range(0, len(data), piece_size)]


def _best_seconds(function: Callable[[], int], expected: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count = function()
        best = min(best, time.perf_counter() - start)
        if count != expected:
            raise AssertionError(f"decoded {count} events, expected {expected}")
    return best


def _asyncchat_decoder(pieces: list[bytes]) -> int:
    decoder = SSEDecoder()
    count = 0
    for piece in pieces:
        count += len(decoder.feed(piece))
    return count + len(decoder.close())


def _openai_decoder(pieces: list[bytes]) -> int:
    from openai._streaming import SSEDecoder as OpenAIDecoder

    return sum(1 for _ in OpenAIDecoder().iter_bytes(iter(pieces)))


def _httpx_sse_decoder(pieces: list[bytes]) -> int:
    import httpx
    from httpx_sse import EventSource

    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(pieces)
    )
    return sum(1 for _ in EventSource(response).iter_sse())


DECODERS: dict[str, Callable[[list[bytes]], int]] = {
    "asyncchat.sse": _asyncchat_decoder,
    "openai SSEDecoder": _openai_decoder,
    "httpx-sse": _httpx_sse_decoder,
}


def decoder_benchmark(size: int, piece_sizes: tuple[int, ...], repeat: int) -> list[dict[str, Any]]:
    data, events = sse_stream(size)
    rows = []
    for piece_size in piece_sizes:
        pieces = _pieces(data, piece_size)
        for name, decode in DECODERS.items():
            row: dict[str, Any] = {"decoder": name, "piece_bytes": piece_size, "events": events}
            try:
                seconds = _best_seconds(functools.partial(decode, pieces), events, repeat)
            except ImportError as exc:
                row["skipped"] = f"not installed: {exc.name}"
            else:
                row["mb_per_second"] = len(data) / seconds / 1e6
                row["us_per_event"] = seconds / events * 1e6
            rows.append(row)
    return rows


def tool_call_chunks(fragments: int) -> list[dict[str, Any]]:
    """Chunks of one tool call whose arguments arrive in many small fragments."""
    head = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    chunks = [chunk_dict({"role": "assistant", "tool_calls": [head]})]
    for i in range(fragments):
        piece = {"index": 0, "function": {"arguments": f"{i % 10:04d}"}}
        chunks.append(chunk_dict({"tool_calls": [piece]}))
    return chunks


def _asyncchat_accumulate(chunks: list[dict[str, Any]]) -> Iterator[Callable[[], int]]:
    def run() -> int:
        accumulator = ChatCompletionAccumulator()
        for chunk in chunks:
            accumulator.add(chunk)
        return len(accumulator.completion().choices[0].message.tool_calls or [])

    yield run


def _openai_accumulate(chunks: list[dict[str, Any]]) -> Iterator[Callable[[], int]]:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    # The SDK's chunks are pydantic models; building them is not counted here.
    models = [ChatCompletionChunk.model_validate(chunk) for chunk in chunks]

    def run() -> int:
        state = ChatCompletionStreamState()
        for model in models:
            state.handle_chunk(model)
        return len(state.get_final_completion().choices[0].message.tool_calls or [])

    yield run


ACCUMULATORS = {
    "asyncchat ChatCompletionAccumulator": _asyncchat_accumulate,
    "openai ChatCompletionStreamState": _openai_accumulate,
}


def accumulator_benchmark(fragments: int, repeat: int) -> list[dict[str, Any]]:
    chunks = tool_call_chunks(fragments)
    # The chunks as parsed from the wire, so every run starts from fresh dicts.
    raw = [orjson.loads(orjson.dumps(chunk)) for chunk in chunks]
    rows = []
    for name, prepare in ACCUMULATORS.items():
        row: dict[str, Any] = {"accumulator": name, "chunks": len(raw)}
        try:
            run = next(prepare(raw))
            seconds = _best_seconds(run, 1, repeat)
        except ImportError as exc:
            row["skipped"] = f"not installed: {exc.name}"
        else:
            row["us_per_chunk"] = seconds / len(raw) * 1e6
        rows.append(row)
    return rows
