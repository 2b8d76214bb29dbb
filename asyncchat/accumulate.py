"""Assemble streamed chunks into the completion a non-streamed call would return.

Sans-IO: `add` takes decoded chunks (dicts or `ChatCompletionChunk`s) from any
source. Each chunk costs a few dict lookups and list appends; text is joined
once, when `completion()` is asked for.

A value of the wrong JSON type (`"choices": 5`, a `delta` that is text, a
`usage` that is not an object, an `index` that is not an integer) is skipped
as if absent, so a stream is never lost to one odd field; indexes are keys,
never list positions, so `10**9` allocates nothing.

It follows what real servers send rather than what they should: tool-call
fragments without `index` (routed by `id`, then by name, then to the latest
call), every parallel call at `index` 0 (a new id and name after whole
arguments start a call of its own, as do, without an id, arguments that open
another object or another function's name), `id` and `type` repeated in every fragment
(assigned, never concatenated), the name repeated or cut in pieces (kept once,
its pieces joined), a call's own provider fields (kept with it), arguments sent
as a JSON object, arguments sent again (all so far in each piece, or whole at
the end: only what is new is added, or the whole replaces what came), usage
repeated, sent on a chunk with no choices, or with a choice's finish
(Moonshot's inside the choice, Groq's in `x_groq`; the last non-null value
wins), reasoning as `reasoning_content` or `reasoning` (or the same text under
both: kept once, under the first name), OpenRouter's `reasoning_details` in
pieces (joined by their `index`), Mistral's content as a list of `text` and
`thinking` parts (joined into one part of each, as its answer holds them), and
choices that first appear in any order. A choice's own provider fields (vLLM's `stop_reason`) are
kept as its finishing chunk has them. A chunk's `moderation` is merged into what
came before (the input's and the answer's may come in different chunks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncchat.quirks import (
    REASONING_KEYS,
    arguments_piece,
    content_parts,
    could_restate_arguments,
    idless_fragment_starts_a_call,
    name_piece,
    names_a_function,
    reused_index_starts_a_call,
    unindexed_fragment_starts_a_call,
    usage_beside_finish,
)
from asyncchat.types import TOOL_CALL_FIELDS, APIObject, ChatCompletion, arguments_text

__all__ = ["ChatCompletionAccumulator", "ToolCallBuffer", "ToolCallFragment"]

# Top-level chunk keys with a fixed place in the completion; others are provider extras.
_FIRST_VALUE_WINS = frozenset({"id", "created"})
_NOT_COPIED = frozenset({"choices", "usage", "object"})
# A streamed choice's keys with a place in the completion (Moonshot's `usage` goes to
# the completion's); others are a provider's fields of the choice.
_CHOICE_FIELDS = frozenset({"index", "delta", "message", "finish_reason", "logprobs", "usage"})


class ToolCallBuffer:
    """One tool call being assembled from fragments: a function's (`type` "function"),
    or a custom tool's (`type` "custom"), whose free-form input `arguments` holds.
    `extras` keeps a provider's own fields of the call (Gemini's thought signature in
    `extra_content`), which must go back with it. `restated` says a piece replaced the
    arguments rather than extending them; the events clear it as they start over."""

    __slots__ = ("_arguments", "extras", "id", "index", "name", "restated", "type")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self._arguments: list[str] = []
        self.extras: dict[str, Any] | None = None
        self.restated = False

    @property
    def arguments(self) -> str:
        """The arguments received so far, as JSON text.

        The pieces are joined into one on read, so reading after every fragment
        (as the typed events do) joins two strings, not every piece so far.
        """
        parts = self._arguments
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def add_object_piece(self, piece: str) -> str:
        """Add an arguments piece that opens an object; returns what it added. Usually
        the piece: the first, or a nested object; but a server that sends the
        arguments again adds only what is new, or replaces them
        (`quirks.arguments_piece`)."""
        parts = self._arguments
        if not parts or not could_restate_arguments(parts[0], piece):
            parts.append(piece)
            return piece
        added = arguments_piece(self.arguments, piece)
        if added is None:
            parts[:] = [piece]
            self.restated = True
            return ""
        if added:
            parts.append(added)
        return added

    def to_dict(self) -> dict[str, Any]:
        call: dict[str, Any]
        if self.type == "custom":
            call = {
                "id": self.id,
                "type": "custom",
                "custom": {"name": self.name, "input": self.arguments},
            }
        else:
            call = {
                "id": self.id,
                "type": self.type or "function",
                "function": {"name": self.name, "arguments": self.arguments},
            }
        if self.extras:
            call.update(self.extras)
        return call


# A tool-call fragment routed to its call: (choice index, the call, the arguments piece).
ToolCallFragment = tuple[int, ToolCallBuffer, str]

_JOINED_DETAIL_FIELDS = frozenset({"text", "summary", "data"})


class _ReasoningDetail:
    """One entry of OpenRouter's `reasoning_details` (a thought's text, summary or
    encrypted data, and its signature), assembled from the pieces that share its
    `index`: the text joined, other fields assigned. It goes back to the server
    unmodified, or the next request is refused."""

    __slots__ = ("fields", "texts")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.texts: dict[str, list[str]] = {}

    def add(self, piece: dict[str, Any]) -> None:
        fields = self.fields
        for key, value in piece.items():
            if key in _JOINED_DETAIL_FIELDS and type(value) is str:
                self.texts.setdefault(key, []).append(value)
                fields.setdefault(key, None)  # its place among the fields
            elif value is not None or key not in fields:
                fields[key] = value

    def to_dict(self) -> dict[str, Any]:
        detail = dict(self.fields)
        for key, parts in self.texts.items():
            if len(parts) > 1:
                parts[:] = ["".join(parts)]
            detail[key] = parts[0]
        return detail


class _ChoiceBuffer:
    """One choice being assembled."""

    __slots__ = (
        "by_id",
        "by_index",
        "choice_extras",
        "content",
        "details",
        "extras",
        "finish_reason",
        "function_call",
        "index",
        "logprobs",
        "reasoning",
        "reasoning_key",
        "refusal",
        "role",
        "thinking",
        "tool_calls",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] | None = None  # None until the server sends any content
        self.reasoning: list[str] | None = None
        self.reasoning_key = "reasoning_content"  # the name the server sends it under
        self.thinking: list[str] | None = None  # thinking parts of the content (Mistral)
        self.refusal: list[str] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.tool_calls: dict[int, ToolCallBuffer] = {}  # by the call's place in the answer
        # By the `index` fragments send; the same as the place unless a server numbered
        # another call with an index already held (Ollama's parallel calls).
        self.by_index: dict[int, ToolCallBuffer] = {}
        self.by_id: dict[str, ToolCallBuffer] = {}
        self.function_call: ToolCallBuffer | None = None  # the legacy single function call
        # OpenRouter's reasoning_details, in order, by `index` (one without: its own key)
        self.details: dict[object, _ReasoningDetail] | None = None
        self.extras: dict[str, Any] = {}  # a provider's fields of the message
        # A provider's fields of the choice, as its finishing chunk has them (vLLM's
        # `stop_reason`, SGLang's `matched_stop`, Azure's `content_filter_results`).
        self.choice_extras: dict[str, Any] | None = None

    def route(
        self, index: Any, call_id: str | None, named: dict[str, Any] | None
    ) -> ToolCallBuffer:
        """The call a tool-call fragment belongs to, created if new. `named` is the
        fragment's `function` (or `custom`) part, whose name may tell."""
        if type(index) is int:
            by_index = self.by_index
            call = by_index.get(index)
            if call is None:
                call = by_index[index] = self._new_call(index)
            elif call_id is not None and call.id is not None and call_id != call.id:
                call = by_index[index] = self._reused_index(call, call_id, named)
        elif call_id is not None and call_id in self.by_id:
            call = self.by_id[call_id]
        else:
            calls = self.tool_calls
            name = named.get("name") if named is not None else None
            latest = calls[max(calls)] if calls else None
            if latest is None or unindexed_fragment_starts_a_call(call_id, name, latest.name):
                call = self._new_call(max(calls) + 1 if calls else 0)
            else:
                call = latest
        if call_id is not None:
            self.by_id[call_id] = call
        return call

    def call_after(self, held: ToolCallBuffer, name: Any, arguments: Any) -> ToolCallBuffer:
        """The call of a fragment without an id that came where `held` is, carrying
        `name` and `arguments`: `held`, or, when the fragment starts a call of its own
        after held's whole arguments (`quirks.idless_fragment_starts_a_call`), a new
        call after the last, of held's function unless it names one, which later
        fragments at that index follow."""
        parts = held._arguments
        if not parts or not parts[-1].rstrip().endswith("}"):
            return held  # the arguments so far are not a whole object: told at no cost
        if type(arguments) is not str:
            arguments = arguments_text(arguments) or ""
        if not idless_fragment_starts_a_call(held.name, held.arguments, name, arguments):
            return held
        call = self._new_call(max(self.tool_calls) + 1)
        call.type = held.type
        if not names_a_function(name):
            call.name = held.name
        for index, routed in self.by_index.items():
            if routed is held:
                self.by_index[index] = call
                break
        return call

    def _new_call(self, position: int) -> ToolCallBuffer:
        """A new call at `position` in the answer, or after the last when that is taken."""
        calls = self.tool_calls
        if position in calls:
            position = max(calls) + 1
        call = calls[position] = ToolCallBuffer(position)
        return call

    def _reused_index(
        self, held: ToolCallBuffer, call_id: str, named: dict[str, Any] | None
    ) -> ToolCallBuffer:
        """The call of a fragment whose `index` `held` has, under another id: a call
        seen before under that id, a new call (`quirks.reused_index_starts_a_call`),
        or `held` itself, its id unsteady."""
        known = self.by_id.get(call_id)
        if known is not None:
            return known
        name = named.get("name") if named is not None else None
        if reused_index_starts_a_call(name, held.arguments):
            return self._new_call(max(self.tool_calls) + 1)
        return held

    def add_reasoning_details(self, pieces: list[Any]) -> None:
        """Route each piece to the entry of its `index` (one without an index is an
        entry of its own)."""
        if self.details is None:
            self.details = {}
        for piece in pieces:
            if type(piece) is not dict:
                continue
            index = piece.get("index")
            key = index if type(index) is int else object()
            detail = self.details.get(key)
            if detail is None:
                detail = self.details[key] = _ReasoningDetail()
            detail.add(piece)

    def to_dict(self) -> dict[str, Any]:
        content: str | list[dict[str, Any]] | None = None
        if self.content is not None:
            content = "".join(self.content)
        if self.thinking is not None:  # parts, as the answer itself would hold them
            thought = {"type": "text", "text": "".join(self.thinking)}
            content = [{"type": "thinking", "thinking": [thought]}] + (
                [{"type": "text", "text": content}] if content else []
            )
        message: dict[str, Any] = {"role": self.role or "assistant", "content": content}
        if self.reasoning is not None:
            message[self.reasoning_key] = "".join(self.reasoning)
        if self.details is not None:
            message["reasoning_details"] = [detail.to_dict() for detail in self.details.values()]
        if self.refusal is not None:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [
                self.tool_calls[index].to_dict() for index in sorted(self.tool_calls)
            ]
        if self.function_call is not None:
            function = self.function_call
            message["function_call"] = {"name": function.name, "arguments": function.arguments}
        message.update(self.extras)
        choice = {
            "index": self.index,
            "message": message,
            "finish_reason": self.finish_reason,
            # Copied: the lists grow with later chunks, the completion must not.
            "logprobs": None
            if self.logprobs is None
            else {key: list(value) for key, value in self.logprobs.items()},
        }
        if self.choice_extras:
            choice.update(self.choice_extras)
        return choice

    def add_choice_extras(self, choice: dict[str, Any]) -> None:
        """Keep the provider's fields of a finishing choice. Read only where a choice
        finishes: the fields servers add are decided then, and it costs the other
        chunks nothing."""
        for key, value in choice.items():
            if value is not None and key not in _CHOICE_FIELDS:
                if self.choice_extras is None:
                    self.choice_extras = {}
                self.choice_extras[key] = value


# These two replace what they keep rather than change it: a completion taken
# mid-stream holds the list or dict it was given, and later chunks must not
# change it under its reader.


def _add_annotations(message: dict[str, Any], annotations: list[Any]) -> None:
    """Keep every annotation once: some servers send each citation in the chunk of
    the text it cites, others the whole list in the last chunk, or again and again."""
    kept = list(message.get("annotations", ()))
    for annotation in annotations:
        if type(annotation) is dict and annotation not in kept:
            kept.append(annotation)
    message["annotations"] = kept


def _add_audio(message: dict[str, Any], piece: dict[str, Any]) -> None:
    """A spoken answer comes in pieces: its audio and transcript are joined, the rest
    (its id, when it expires) assigned."""
    audio = dict(message.get("audio", {}))
    for key, value in piece.items():
        if key in ("data", "transcript"):
            if type(value) is str:
                audio[key] = audio.get(key, "") + value
        elif value is not None:
            audio[key] = value
    message["audio"] = audio


class ChatCompletionAccumulator:
    """Collects streamed chunks; `completion()` gives the `ChatCompletion` so far.

    `request_id` is the fallback for `ChatCompletion.request_id` when no chunk
    carries one in its body (the stream passes the `x-request-id` header), and
    `headers` the completion's `headers` (the stream passes the response's).
    """

    def __init__(
        self, *, request_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.request_id = request_id
        self.headers = headers
        self._top: dict[str, Any] = {}
        self._choices: dict[int, _ChoiceBuffer] = {}
        self._usage: Any = None
        # The tool-call fragments of the latest chunk (what `add` returned).
        self.last_fragments: list[ToolCallFragment] = []
        self._top_size = -1  # how many top-level fields the last chunk read had
        self._top_settled = False
        self._last: Any = None  # the latest chunk, and the latest whose fields were read
        self._last_read: Any = None
        self.chunk_count = 0

    @property
    def finished(self) -> bool:
        """True once every choice seen so far has a `finish_reason`."""
        choices = self._choices.values()
        return bool(choices) and all(choice.finish_reason for choice in choices)

    def add(self, chunk: dict[str, Any] | APIObject) -> list[ToolCallFragment]:
        """Add one chunk: a `ChatCompletionChunk` or its decoded JSON dict.

        Returns the tool-call fragments it carried, each routed to its call (what
        the typed events report); the list is reused, read it before the next add.
        """
        data = chunk._data if isinstance(chunk, APIObject) else chunk
        if not isinstance(data, dict):
            raise TypeError(f"a chunk must be a dict or ChatCompletionChunk, not {type(data)}")
        return self._ingest(data)

    def _ingest(self, data: dict[str, Any]) -> list[ToolCallFragment]:
        """Add a chunk's JSON; returns the tool-call fragments it carried, routed to their calls.

        The stream's typed events need to know which call a fragment went to. The
        list returned is reused: read it before the next call. This runs for every
        streamed chunk, so the common shapes take the shortest path.
        """
        self.chunk_count += 1
        fragments = self.last_fragments
        if fragments:
            fragments = self.last_fragments = []
        if not self._top_settled or len(data) != self._top_size:
            self._read_top_level(data)
        self._last = data
        usage = data.get("usage")
        if usage is not None and type(usage) is dict:
            self._usage = usage
        choices = data.get("choices")
        if not choices or type(choices) is not list:
            return fragments
        for choice in choices:
            if type(choice) is not dict:
                continue
            index = choice.get("index", 0)
            if type(index) is not int:
                index = 0
            buffer = self._choices.get(index)
            if buffer is None:
                buffer = self._choices[index] = _ChoiceBuffer(index)
            delta = choice.get("delta")
            if delta and type(delta) is dict:
                content = delta.get("content")
                if type(content) is str and len(delta) == 1 and buffer.content is not None:
                    buffer.content.append(content)  # the common case, token by token
                elif len(delta) == 1 and type(calls := delta.get("tool_calls")) is list:
                    # The common case of a tool stream: fragments only.
                    self._add_tool_fragments(buffer, calls, fragments)
                else:
                    self._add_delta(buffer, delta, fragments)
            elif delta is None and type(message := choice.get("message")) is dict:
                self._add_delta(buffer, message, fragments)  # a whole answer as one event
            finish_reason = choice.get("finish_reason")
            if finish_reason and type(finish_reason) is str:
                buffer.finish_reason = finish_reason
                if type(usage) is not dict and (beside := usage_beside_finish(data, choice)):
                    self._usage = beside
                buffer.add_choice_extras(choice)
            logprobs = choice.get("logprobs")
            if logprobs:
                self._add_logprobs(buffer, logprobs)
        return fragments

    def _read_top_level(self, data: dict[str, Any]) -> None:
        """Take the chunk's top-level fields (id, model, provider extras).

        They are the same in every chunk of a stream in practice, so once id,
        model and created are known they are read again only when the number of
        fields changes (a field added: `usage`, a provider extra), and from the
        last chunk when the completion is assembled; not for every chunk. A field
        present only in a middle chunk that also dropped another would be missed.
        An empty string never replaces a value already known: Azure's content-filter
        annotations, sent between and after the answer's chunks, have an empty id
        and model.
        """
        self._top_size = len(data)
        self._last_read = data
        top = self._top
        for key, value in data.items():
            if value is None or key in _NOT_COPIED:
                continue
            if (key in _FIRST_VALUE_WINS or value == "") and top.get(key):
                continue
            if key == "moderation" and type(value) is dict and type(top.get(key)) is dict:
                value = {**top[key], **value}  # the input's and the answer's may come apart
            top[key] = value
        self._top_settled = bool(top.get("id") and top.get("model") and top.get("created"))

    def _add_delta(
        self,
        buffer: _ChoiceBuffer,
        delta: dict[str, Any],
        fragments: list[ToolCallFragment],
    ) -> None:
        # Values of the wrong JSON type are skipped: a stream is never lost to one
        # odd field.
        for key, value in delta.items():
            if value is None:
                continue
            if key == "content":
                if type(value) is str:
                    if buffer.content is None:
                        buffer.content = [value]
                    else:
                        buffer.content.append(value)
                elif type(value) is list:
                    text, thinking = content_parts(value)
                    if text:
                        if buffer.content is None:
                            buffer.content = text
                        else:
                            buffer.content += text
                    if thinking:
                        if buffer.thinking is None:
                            buffer.thinking = thinking
                        else:
                            buffer.thinking += thinking
            elif key == "tool_calls":
                if type(value) is list:
                    self._add_tool_fragments(buffer, value, fragments)
            elif key in REASONING_KEYS:
                # The first name the server uses is its name; text under the other
                # is the same text again (StepFun sends each piece under both).
                if type(value) is str:
                    if buffer.reasoning is None:
                        buffer.reasoning = [value]
                        buffer.reasoning_key = key
                    elif key == buffer.reasoning_key:
                        buffer.reasoning.append(value)
            elif key == "role":
                if type(value) is str:
                    buffer.role = value
            elif key == "refusal":
                if type(value) is str:
                    if buffer.refusal is None:
                        buffer.refusal = [value]
                    else:
                        buffer.refusal.append(value)
            elif key == "function_call":
                if type(value) is dict:
                    if buffer.function_call is None:
                        buffer.function_call = ToolCallBuffer(0)
                    self._add_function(buffer.function_call, value)
            elif key == "annotations":
                if type(value) is list:
                    _add_annotations(buffer.extras, value)
            elif key == "audio":
                if type(value) is dict:
                    _add_audio(buffer.extras, value)
            elif key == "reasoning_details":
                if type(value) is list:
                    buffer.add_reasoning_details(value)
            else:
                buffer.extras[key] = value

    def _add_tool_fragments(
        self,
        buffer: _ChoiceBuffer,
        tool_calls: list[Any],
        fragments: list[ToolCallFragment],
    ) -> None:
        """Route each fragment to its call: assign id, type and name, append the arguments
        (or a custom tool's input)."""
        for fragment in tool_calls:
            if type(fragment) is not dict:
                continue
            call_id = fragment.get("id")
            if not call_id or type(call_id) is not str:
                call_id = None
            function = fragment.get("function")
            custom = None
            if type(function) is not dict:
                function = None
                # A custom tool's call. Read only without `function`: some gateways
                # echo an empty `custom: {}` beside every function fragment.
                custom = fragment.get("custom")
                if type(custom) is not dict:
                    custom = None
            call = buffer.route(fragment.get("index"), call_id, function or custom)
            if call_id is not None:
                call.id = call_id
            if "type" in fragment:
                call_type = fragment["type"]
                if call_type and type(call_type) is str:
                    call.type = call_type
            piece = ""
            if function is not None:
                arguments = function.get("arguments")
                if type(arguments) is str and len(function) == 1:  # the usual fragment
                    if arguments:
                        if arguments[0] == "{" and call._arguments:
                            if call_id is None:
                                call = buffer.call_after(call, None, arguments)
                            arguments = call.add_object_piece(arguments)
                        else:
                            call._arguments.append(arguments)
                    piece = arguments
                else:
                    if call_id is None and call._arguments:
                        call = buffer.call_after(
                            call, function.get("name"), function.get("arguments")
                        )
                    piece = self._add_function(call, function)
            elif custom is not None:
                piece = self._add_custom(call, custom)
            # The usual fragment is `index` and `function` alone: only a longer one
            # is looked through for a provider's fields (a per-fragment set is not free).
            if len(fragment) > 2:
                for key in fragment.keys() - TOOL_CALL_FIELDS:
                    if fragment[key] is not None:
                        if call.extras is None:
                            call.extras = {}
                        call.extras[key] = fragment[key]
            fragments.append((buffer.index, call, piece))

    @staticmethod
    def _add_function(call: ToolCallBuffer, function: dict[str, Any]) -> str:
        """Add the name's piece, append the arguments; returns the arguments piece.

        Some servers send the arguments as a JSON object rather than text: it is
        serialized.
        """
        if "name" in function:
            name = function["name"]
            if name and type(name) is str:
                call.name = name_piece(call.name, name)
        arguments = function.get("arguments")
        if type(arguments) is not str:
            arguments = arguments_text(arguments)
            if arguments is None:
                return ""
        if arguments:
            if arguments[0] == "{" and call._arguments:
                return call.add_object_piece(arguments)
            call._arguments.append(arguments)
        return arguments

    @staticmethod
    def _add_custom(call: ToolCallBuffer, custom: dict[str, Any]) -> str:
        """Add the name's piece, append the input; returns the input piece. A fragment that
        carries either makes the call a custom one, if no `type` said so."""
        name = custom.get("name")
        named = False
        if name and type(name) is str:
            call.name = name_piece(call.name, name)
            named = True
        piece = custom.get("input")
        if type(piece) is not str:
            piece = ""
        if piece:
            call._arguments.append(piece)
        if call.type is None and (piece or named):
            call.type = "custom"
        return piece

    @staticmethod
    def _add_logprobs(buffer: _ChoiceBuffer, logprobs: Any) -> None:
        if not isinstance(logprobs, dict):
            return
        if buffer.logprobs is None:
            buffer.logprobs = {}
        for key, value in logprobs.items():
            if isinstance(value, list):
                buffer.logprobs.setdefault(key, []).extend(value)

    def choice_indexes(self) -> list[int]:
        """The indexes of the choices seen so far, in order."""
        return sorted(self._choices)

    def content_pieces(self, choice_index: int = 0) -> list[str]:
        """The pieces of one choice's text so far: a live list that only grows."""
        buffer = self._choices.get(choice_index)
        if buffer is None or buffer.content is None:
            return []
        return buffer.content

    def tool_calls(self, choice_index: int = 0) -> list[ToolCallBuffer]:
        """The tool calls of one choice so far, in index order."""
        buffer = self._choices.get(choice_index)
        if buffer is None:
            return []
        return [buffer.tool_calls[index] for index in sorted(buffer.tool_calls)]

    def response_fields(self) -> dict[str, Any]:
        """The completion so far without its messages: id, model, OpenAI's system
        fingerprint and service tier, each choice's finish reason, usage. Cheaper
        than `completion_dict`: no text is joined."""
        if self._last is not self._last_read:
            self._read_top_level(self._last)
        top = self._top
        fields: dict[str, Any] = {
            "id": top.get("id"),
            "model": top.get("model"),
            "system_fingerprint": top.get("system_fingerprint"),
            "service_tier": top.get("service_tier"),
            "choices": [
                {"finish_reason": self._choices[index].finish_reason}
                for index in sorted(self._choices)
            ],
        }
        if self._usage is not None:
            fields["usage"] = self._usage
        return fields

    def completion_dict(self) -> dict[str, Any]:
        """The completion so far as a JSON-shaped dict."""
        if self._last is not self._last_read:
            self._read_top_level(self._last)
        top = self._top
        result: dict[str, Any] = {
            "id": top.get("id"),
            "object": "chat.completion",
            "created": top.get("created"),
            "model": top.get("model"),
            "choices": [self._choices[index].to_dict() for index in sorted(self._choices)],
        }
        if self._usage is not None:
            result["usage"] = self._usage
        for key, value in top.items():
            if key not in result:
                result[key] = value
        return result

    def completion(self) -> ChatCompletion:
        """The completion so far, shaped like a non-streamed response."""
        return ChatCompletion(self.completion_dict(), self.request_id, self.headers)
