"""What OpenAI-compatible servers do differently, and the one rule asyncchat follows
for each. A new quirk goes here (and in a test), not into the modules that use it.

    quirk                                     who                      rule
    ----------------------------------------  -----------------------  -----------------------
    reasoning as `reasoning_content`          DeepSeek, GLM, Qwen      accumulated like content
    reasoning as `reasoning`                  vLLM, OpenRouter, Ollama   (REASONING_KEYS), kept
    reasoning under both names at once        StepFun                    under the first name
    `reasoning_details` in pieces             OpenRouter               joined by `index`, sent
                                                                       back as they came
    an error body as a list of one error      Gemini                   read as that one error
    `{"error": {...}}` in a 2xx body/event    OpenRouter, GLM, proxies an APIStatusError
    `{"object": "error", "message": ...}`     vLLM, SGLang               (is_error_body)
    `event: error`, JSON or text              some gateways            the same, in streams
    tool-call fragments without `index`       Gemini, older Ollama     routed by id, then a new
                                                                       name, then the latest call
    id / type / name in every fragment        some vLLM builds         assigned, never appended
    the whole tool call in one chunk          GLM, Ollama, vLLM        one fragment like others
    tool arguments as a JSON object           Ollama, proxies          serialized to JSON text
    a call's own fields (`extra_content`:     Gemini                   kept with the call, and
      its thought signature)                                             sent back with it
    usage in a last `choices: []` chunk,      OpenAI, vLLM             the last non-null usage
      in every chunk, or in the choice        Moonshot                   wins, never summed
    a first chunk with `choices: []`          Azure (filter results)   skipped
    no `[DONE]`, or `[DONE]` twice            Ollama, llama.cpp        done when every choice
                                                                       has a finish_reason
    finish_reason `sensitive`, ...            GLM                      an open string; parse()
                                                                       reads `sensitive` as a
                                                                       content filter
                                                                       (CONTENT_FILTER_REASONS)
    `json_schema` response_format refused     DeepSeek, GLM            parse(strategy=
                                                                       "json_object")
    only `tool_choice: "auto"` taken          GLM                      no "tool" strategy there
    SSE labelled `application/json`           hand-written servers     read as SSE
    503 "Loading model" while it loads        llama.cpp                a batch job waits for
                                                                       it (says_loading_model)
    a value of the wrong JSON type            any                      skipped as if absent

The SSE rules (line ends, comments, a BOM) live in `sse.py`, the stream's labels in
`_stream.py`; the rules below are the ones the chunk readers share.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONTENT_FILTER_REASONS",
    "REASONING_KEYS",
    "is_error_body",
    "reasoning_text",
    "says_loading_model",
    "unindexed_fragment_starts_a_call",
]

REASONING_KEYS = ("reasoning_content", "reasoning")
# finish_reason values that mean a provider's filter stopped the answer.
CONTENT_FILTER_REASONS = frozenset({"content_filter", "sensitive"})


def reasoning_text(message: dict[str, Any]) -> str | None:
    """The reasoning text of a delta or message, under whichever key the server used."""
    for key in REASONING_KEYS:
        value = message.get(key)
        if value and type(value) is str:
            return value
    return None


def is_error_body(data: dict[str, Any]) -> bool:
    """Whether a JSON object that came with a 2xx status (a body, or a stream event)
    is really an error report."""
    return bool(data.get("error")) or ("choices" not in data and data.get("object") == "error")


def says_loading_model(status: int, body: Any) -> bool:
    """Whether an error answer says the server is up but still loading its model
    (llama.cpp's 503 "Loading model"): the request was not run, and the server
    will serve once loaded."""
    error = body.get("error") if status == 503 and isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and message.strip().lower() == "loading model"


def unindexed_fragment_starts_a_call(
    call_id: str | None, name: Any, latest_name: str | None
) -> bool:
    """A tool-call fragment without `index` (Gemini, older Ollama), whose id is not one
    already seen: does it start a new call, or continue the latest one? A new id or a
    new name starts one; anything else (arguments alone) continues."""
    return call_id is not None or bool(name and latest_name and name != latest_name)
