"""Thinking models whose thought must come back with their tool calls, for
`MockServer(thinking=...)`: an agent loop that drops it fails against the mock as
it would against the provider.

- "deepseek" (DeepSeek's thinking mode): every answer carries its reasoning as
  `reasoning_content`; an assistant message with tool calls sent back without it
  is refused with DeepSeek's 400.
- "gemini" (Gemini 3 on its OpenAI-compatible endpoint): the first call of each
  answer carries a thought signature (`extra_content.google.thought_signature`); a
  call of the current turn (after the last user message) sent back without it, or
  with another, is refused with Gemini's 400, an error in a list as Gemini sends it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

__all__ = ["REASONING", "Thinking", "refusal", "signed"]

Thinking = Literal["deepseek", "gemini"]
REASONING = "Let me think."  # the thought every answer comes with

_DEEPSEEK_MISSING = (
    "Missing `reasoning_content` field in the assistant message at message index {index}. "
    "For more information, please refer to "
    "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
)
_GEMINI_MISSING = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {index}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
    "details."
)


def signature(call_id: Any) -> str:
    """The opaque signature the mock gives the call with this id."""
    digest = hashlib.sha256(f"thought:{call_id}".encode()).digest()[:24]
    return base64.b64encode(digest).decode()


def signed(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An answer's calls with the first one signed, as Gemini signs a turn's calls
    (the dicts given are not changed: a scripted turn keeps its own)."""
    if not tool_calls:
        return tool_calls
    first = tool_calls[0]
    google = {"thought_signature": signature(first.get("id"))}
    return [{**first, "extra_content": {"google": google}}, *tool_calls[1:]]


def refusal(thinking: Thinking, messages: list[Any]) -> Any:
    """The error body the provider refuses these messages with; None if it takes them."""
    if thinking == "deepseek":
        return _deepseek_refusal(messages)
    return _gemini_refusal(messages)


def _deepseek_refusal(messages: list[Any]) -> Any:
    for index, message in enumerate(messages):
        if (
            _is_assistant(message)
            and message.get("tool_calls")
            and not isinstance(message.get("reasoning_content"), str)
        ):
            text = _DEEPSEEK_MISSING.format(index=index)
            kind = "invalid_request_error"
            return {"error": {"message": text, "type": kind, "param": None, "code": kind}}
    return None


def _gemini_refusal(messages: list[Any]) -> Any:
    users = [i for i, message in enumerate(messages) if _role(message) == "user"]
    start = users[-1] + 1 if users else 0
    for index in range(start, len(messages)):
        message = messages[index]
        calls = message.get("tool_calls") if _is_assistant(message) else None
        if not isinstance(calls, list) or not calls or not isinstance(calls[0], dict):
            continue
        first = calls[0]
        extra = first.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        sent = google.get("thought_signature") if isinstance(google, dict) else None
        if sent is None:
            function = first.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            text = _GEMINI_MISSING.format(name=name, index=index + 1)
        elif sent != signature(first.get("id")):
            text = "Corrupted thought signature."
        else:
            continue
        return [{"error": {"code": 400, "message": text, "status": "INVALID_ARGUMENT"}}]
    return None


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _is_assistant(message: Any) -> bool:
    return bool(_role(message) == "assistant")
