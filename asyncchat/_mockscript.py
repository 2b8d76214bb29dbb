"""A scripted model, for `MockServer(turns=[...])`: test an agent without a model.

Each request gets the next `Turn`, after checking that it carries what an agent
loop must send: the tools the turn calls, and, after a turn that called tools,
the assistant's message and one `tool` message per call, in call order, with
their ids. A request that fails a check gets a 400 saying why (the script does
not move on), and the reason is kept in `script.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Turn", "TurnScript", "tool_spec"]


@dataclass
class Turn:
    """One answer of the scripted model, and what the request for it must carry.

    `tool_calls`: the calls to make, as `(name, arguments)` pairs (a text for
    `arguments` makes it a custom tool's call, with that input); without them,
    `content` is the answer's text. `expect_results`: for each call of the turn
    before, a text its `tool` message must contain. `expect`: a function of the
    request body that raises `AssertionError` when the request is wrong.
    """

    content: str | None = None
    tool_calls: Sequence[tuple[str, dict[str, Any] | str]] = ()
    expect_results: Sequence[str] | None = None
    expect: Callable[[dict[str, Any]], None] | None = None


@dataclass
class PlayedTurn:
    """A turn as the server answers it: tool calls in the API's shape, or text."""

    tool_calls: list[dict[str, Any]]
    content: str | None


class TurnScript:
    """The turns of a scripted model, played one request at a time."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = list(turns)
        self.played = 0
        self.errors: list[str] = []
        self._previous_calls: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        """True once every turn was played."""
        return self.played == len(self.turns)

    def play(self, body: dict[str, Any]) -> PlayedTurn | str:
        """The next turn for this request, or why the request is not what it expects."""
        if self.done:
            return self._fail(f"the script has no turn left: its {len(self.turns)} were played")
        number = self.played + 1
        turn = self.turns[self.played]
        problem = self._check(turn, body)
        if problem is not None:
            return self._fail(f"scripted turn {number}: {problem}")
        calls = [
            _call(f"call_{number}_{index}", name, sent)
            for index, (name, sent) in enumerate(turn.tool_calls)
        ]
        self.played += 1
        self._previous_calls = calls
        return PlayedTurn(calls, None if calls else (turn.content or ""))

    def _fail(self, message: str) -> str:
        self.errors.append(message)
        return message

    def _check(self, turn: Turn, body: dict[str, Any]) -> str | None:
        offered = offered_tools(body.get("tools"))
        for name, sent in turn.tool_calls:
            kind = "custom" if isinstance(sent, str) else "function"
            if (kind, name) not in offered:
                names = ", ".join(sorted(f"{n} ({k})" for k, n in offered)) or "none"
                return (
                    f"it calls the {kind} tool {name!r}, which the request does not offer "
                    f"(tools: {names})"
                )
        messages = body.get("messages")
        if not isinstance(messages, list):
            return "the request has no messages"
        if self._previous_calls:
            problem = self._check_results(messages, turn.expect_results)
            if problem is not None:
                return problem
        if turn.expect is not None:
            try:
                turn.expect(body)
            except AssertionError as exc:
                return f"expect failed: {exc}"
        return None

    def _check_results(self, messages: list[Any], expected: Sequence[str] | None) -> str | None:
        """The request must end with the assistant's calls and their results, in order."""
        calls = self._previous_calls
        ids = [call["id"] for call in calls]
        tail = messages[-len(calls) :]
        sent = [m.get("tool_call_id") if isinstance(m, dict) else None for m in tail]
        if len(messages) <= len(calls) or any(
            not isinstance(m, dict) or m.get("role") != "tool" for m in tail
        ):
            return f"the request should end with {len(calls)} tool message(s), for {ids}"
        if sent != ids:
            return f"the tool messages answer {sent}, not the calls {ids} in order"
        assistant = messages[-len(calls) - 1]
        asked = [
            call.get("id")
            for call in (assistant.get("tool_calls") or [] if isinstance(assistant, dict) else [])
            if isinstance(call, dict)
        ]
        if asked != ids:
            return f"the assistant message before the results should carry the calls {ids}"
        for index, text in enumerate(expected or ()):
            content = tail[index].get("content") if index < len(tail) else None
            if not isinstance(content, str) or text not in content:
                return f"the result of {ids[index]} should contain {text!r}, got {content!r}"
        return None


def _call(call_id: str, name: str, sent: dict[str, Any] | str) -> dict[str, Any]:
    """A tool call in the API's shape: a custom tool's for a text, else a function's."""
    if isinstance(sent, str):
        return {"id": call_id, "type": "custom", "custom": {"name": name, "input": sent}}
    arguments = orjson.dumps(sent).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_spec(tool: Any) -> tuple[str, dict[str, Any]] | None:
    """A tool dict's kind ("function" or "custom") and its part of that name; None
    for anything else."""
    if not isinstance(tool, dict):
        return None
    kind = "custom" if tool.get("type") == "custom" else "function"
    spec = tool.get(kind)
    return (kind, spec) if isinstance(spec, dict) else None


def offered_tools(tools: Any) -> set[tuple[str, Any]]:
    """The tools a request offers, as (kind, name) pairs."""
    specs = map(tool_spec, tools if isinstance(tools, list) else ())
    return {(kind, spec.get("name")) for kind, spec in filter(None, specs)}
