"""What the load server streams and what every client must get back, byte for byte."""

from __future__ import annotations

import os
from dataclasses import dataclass

import orjson

# `token`: 50 content chunks, an event a socket write, as fast as the server can;
# `bulk`: the same body in one write; `tools`: a tool call's arguments in
# 4-character fragments, an event a write; `paced`: the token stream at a model's
# pace, PACE seconds between events, so a client that keeps up reads each alone.
SCENARIOS = ("token", "bulk", "tools", "paced")
# 0.05 s: 20 tokens a second, a large model's pace. `BENCH_PACE` changes it.
PACE = float(os.environ.get("BENCH_PACE", "0.05"))
# Every stream is this many times its usual length when the environment says so:
# `benchmarks.instructions --split` sets it to tell a cost per stream from a cost
# per chunk. The load server and the clients, separate processes, both read it.
STREAM_SCALE = int(os.environ.get("BENCH_STREAM_SCALE", "1"))
CONTENT_TOKENS = 50 * STREAM_SCALE  # content chunks per stream
TOOL_NAME = "lookup_weather"
FRAGMENT_SIZE = 4  # characters of tool arguments per fragment


def content_tokens() -> list[str]:
    return [f" tok{i}" for i in range(CONTENT_TOKENS)]


def tool_arguments() -> str:
    """About 300 characters of JSON arguments (times the stream scale)."""
    arguments = {
        "location": "San Francisco, CA",
        "unit": "celsius",
        "days": 7,
        "fields": ["temperature", "humidity", "wind_speed", "precipitation", "uv_index"],
        "notes": "Compare with the same week last year and flag anomalies. " * 2 * STREAM_SCALE,
        "detail": {"hourly": True, "alerts": True, "language": "en-US"},
    }
    return orjson.dumps(arguments).decode()


def chunk_dict(delta: dict[str, object], finish_reason: str | None = None) -> dict[str, object]:
    """One chat-completion chunk with a single choice, as OpenAI sends it."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1718421897,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _chunk(delta: dict[str, object], finish_reason: str | None = None) -> bytes:
    return b"data: " + orjson.dumps(chunk_dict(delta, finish_reason)) + b"\n\n"


@dataclass(frozen=True)
class Stream:
    """One scenario's stream: its SSE events and the expected result."""

    events: list[bytes]  # each a complete SSE event, `[DONE]` last
    chunk_count: int  # JSON chunks (everything but `[DONE]`)
    content: str
    arguments: str | None

    @property
    def body_size(self) -> int:
        return sum(len(event) for event in self.events)


def build(scenario: str) -> Stream:
    """`scenario`'s stream (`paced` is the `token` stream, sent slower)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    events = [_chunk({"role": "assistant", "content": ""})]
    if scenario == "tools":
        arguments = tool_arguments()
        events.append(
            _chunk(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_bench",
                            "type": "function",
                            "function": {"name": TOOL_NAME, "arguments": ""},
                        }
                    ],
                }
            )
        )
        for start in range(0, len(arguments), FRAGMENT_SIZE):
            piece = arguments[start : start + FRAGMENT_SIZE]
            events.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(_chunk({}, "tool_calls"))
        content = ""
    else:
        tokens = content_tokens()
        events += [_chunk({"content": token}) for token in tokens]
        events.append(_chunk({}, "stop"))
        content, arguments = "".join(tokens), None
    events.append(b"data: [DONE]\n\n")
    return Stream(events, len(events) - 1, content, arguments)
