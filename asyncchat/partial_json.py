"""Incremental JSON: the value so far of a JSON text that arrives in pieces.

Sans-IO, in the spirit of the SSE decoder: feed it text split anywhere, read
the value at any time, in time linear in the text however it is split.

    parser = PartialJSONParser()
    parser.feed('{"city": "Bos')      # the changes: {} at (), "" at ("city",), "Bos" added there
    parser.value                       # {"city": "Bos"}
    parser.feed('ton", "days": 3}')
    parser.close()                     # {"city": "Boston", "days": 3}

What a snapshot shows, so that each one extends the one before and the last
is `json.loads(text)`:

- containers appear (`{}`, `[]`) as soon as they open;
- a string appears as `""` as soon as its opening quote arrives, and grows as
  its characters do; an escape (`\\n`, `\\u00e9`, a surrogate pair) appears only
  once complete;
- an object key appears only once it is complete and its value has started
  (with a number, `true`, `false` or `null`: once that value is complete);
- a number appears only once complete: when the character after it arrives, or
  at `close()`, so a snapshot never shows `1` for what becomes `12`; `true`,
  `false` and `null` appear once their last letter arrives.

Invalid JSON raises `PartialJSONError` (a `ValueError`) naming the position, from
the `feed` whose piece makes it invalid.

`feed` returns the changes its piece made, each a `Change(path, kind, value)`: a
value that appeared at `path` (`kind == "value"`: a new `{}`, `[]`, `""` or a
complete scalar), or text appended to the string at `path` (`kind == "text"`). A
UI that applies them renders a 1 MB string in linear total time, while reading
`value` after every piece joins the open string each time.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = ["Change", "PartialJSONError", "PartialJSONParser"]

Path = tuple[str | int, ...]


class Change(NamedTuple):
    """What a piece changed: a `value` that appeared at `path`, or `text` added there."""

    path: Path
    kind: str  # "value" or "text"
    value: Any


class PartialJSONError(ValueError):
    """The text is not JSON; `position` is the offset of the character that shows it."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"not JSON: {message} at position {position}")
        self.position = position


# Builds a Change without the Python-level `__new__` of a NamedTuple, at half the cost.
_new_change = tuple.__new__

_WHITESPACE = frozenset(" \t\n\r")
# A run of string characters that need no attention, matched at C speed: the
# bulk of a long text goes through here, not through a Python loop per character.
_PLAIN = re.compile(r'[^"\\\x00-\x1f]+')
_NUMBER_CHARS = re.compile(r"[0-9eE.+-]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
_HEX = frozenset("0123456789abcdefABCDEF")

# What comes next in the innermost open container, or at the top level.
_VALUE = 0  # a value (at the top, after ':', after ',' in an array)
_VALUE_OR_END = 1  # a value or ']' (just after '[')
_KEY_OR_END = 2  # a key or '}' (just after '{')
_KEY = 3  # a key (after ',' in an object)
_COLON = 4
_COMMA_OR_END = 5
_NOTHING = 6  # the top-level value has started: only whitespace may follow it


class _Frame:
    """An open container: itself, its path, what comes next in it."""

    __slots__ = ("container", "expect", "key", "path")

    def __init__(self, container: dict[str, Any] | list[Any], path: Path, expect: int) -> None:
        self.container = container
        self.path = path
        self.expect = expect
        self.key = ""  # in an object, the key whose value comes next


class _String:
    """A string being read: its characters so far, in pieces, and where it is shown."""

    __slots__ = ("is_key", "parts", "path", "reported", "slot")

    def __init__(self, is_key: bool, path: Path, slot: tuple[Any, Any] | None) -> None:
        self.is_key = is_key
        self.parts: list[str] = []
        self.path = path
        self.slot = slot  # (container, key or index): where a value string is shown
        self.reported = 0  # parts already reported as changes


class PartialJSONParser:
    """Feed JSON text in pieces; `value` is the value so far, `done` once it is complete."""

    def __init__(self) -> None:
        self._stack: list[_Frame] = []
        self._top = _VALUE
        self._root: Any = None
        self._started = False
        self._offset = 0  # the position of the first character of the current piece
        # A token a piece ended inside of:
        self._string: _String | None = None
        self._plain: _String | None = None  # the open value string, when no escape is pending
        self._escape: str | None = None  # what followed the backslash so far
        self._high_surrogate: int | None = None  # waiting to see if a low one follows
        self._number: list[str] | None = None
        self._number_start = 0
        self._literal: tuple[str, Any, int] | None = None  # word, value, letters matched
        self._changes: list[Change] = []
        # The latest value placed, and where: a string's slot, a container to push.
        self._last_placed: Any = None
        self._last_slot: tuple[Any, Any] = (self.__dict__, "_root")

    @property
    def done(self) -> bool:
        """True once the top-level value is complete (`close()` may still be called)."""
        return (
            self._started
            and not self._stack
            and self._string is None
            and self._number is None
            and self._literal is None
        )

    @property
    def value(self) -> Any:
        """The value so far (None before it starts): a live object, later pieces change it."""
        string = self._string
        if string is not None and string.slot is not None and len(string.parts) > 1:
            joined = "".join(string.parts)
            string.parts[:] = [joined]  # the next join starts from here
            string.reported = 1
            container, key = string.slot
            container[key] = joined
        elif string is not None and string.slot is not None and string.parts:
            container, key = string.slot
            container[key] = string.parts[0]
        return self._root

    def feed(self, text: str) -> list[Change]:
        """Parse the next piece of text; the changes it made."""
        string = self._plain
        if (
            string is not None
            and '"' not in text
            and "\\" not in text
            and text.isprintable()  # no control characters (and a few rarer ones)
            and text
        ):
            # The usual piece of a long text: plain characters inside a value
            # string. This path skips the general loop, which costs more than the
            # piece itself; `_plain` is set by that loop when it ends in such a string.
            string.parts.append(text)
            self._offset += len(text)
            return [_new_change(Change, (string.path, "text", text))]
        self._changes = []
        self._plain = None
        if self._string is not None:
            self._string.reported = len(self._string.parts)  # all reported before now
        position, end = 0, len(text)
        while position < end:
            if self._string is not None:
                position = self._read_string(text, position)
            elif self._number is not None:
                position = self._read_number(text, position)
            elif self._literal is not None:
                position = self._read_literal(text, position)
            else:
                position = self._read_structure(text, position)
        string = self._string
        if string is not None:
            self._report(string)
            if not string.is_key and self._escape is None and self._high_surrogate is None:
                self._plain = string
        self._offset += end
        return self._changes

    def close(self) -> Any:
        """The end of the text: the complete value, or `PartialJSONError`."""
        if self._number is not None:
            self._end_number(self._offset)
        if self._string is not None or self._literal is not None:
            raise PartialJSONError("the text ends inside a value", self._offset)
        if self._stack:
            raise PartialJSONError("the text ends inside an object or array", self._offset)
        if not self._started:
            raise PartialJSONError("the text holds no value", self._offset)
        return self._root

    # --- structure ------------------------------------------------------------------

    def _error(self, message: str, index: int) -> PartialJSONError:
        return PartialJSONError(message, self._offset + index)

    def _read_structure(self, text: str, position: int) -> int:
        """Whitespace, a structural character, or the first character of a value."""
        char = text[position]
        if char in _WHITESPACE:
            return position + 1
        frame = self._stack[-1] if self._stack else None
        expect = frame.expect if frame is not None else self._top
        if expect in (_VALUE, _VALUE_OR_END):
            if char == "]" and expect == _VALUE_OR_END:
                return self._close(position)
            return self._start_value(text, position)
        assert frame is not None or expect == _NOTHING
        if expect in (_KEY_OR_END, _KEY):
            if char == "}" and expect == _KEY_OR_END:
                return self._close(position)
            if char != '"':
                raise self._error(f"expected a key in double quotes, found {char!r}", position)
            self._string = _String(True, (), None)
            return position + 1
        if expect == _COLON:
            if char != ":":
                raise self._error(f"expected ':' after a key, found {char!r}", position)
            assert frame is not None
            frame.expect = _VALUE
            return position + 1
        if expect == _COMMA_OR_END:
            assert frame is not None
            is_object = type(frame.container) is dict
            if char == ",":
                frame.expect = _KEY if is_object else _VALUE
                return position + 1
            if char == ("}" if is_object else "]"):
                return self._close(position)
            closer = "}" if is_object else "]"
            raise self._error(f"expected ',' or {closer!r}, found {char!r}", position)
        raise self._error(f"expected the end of the text, found {char!r}", position)

    def _start_value(self, text: str, position: int) -> int:
        char = text[position]
        if char == "{":
            path = self._place({}, {})
            self._stack.append(_Frame(self._last_placed, path, _KEY_OR_END))
            return position + 1
        if char == "[":
            path = self._place([], [])
            self._stack.append(_Frame(self._last_placed, path, _VALUE_OR_END))
            return position + 1
        if char == '"':
            path = self._place("", "")
            self._string = _String(False, path, self._last_slot)
            return position + 1
        if char == "-" or "0" <= char <= "9":
            self._number, self._number_start = [], self._offset + position
            self._hold_place()
            return self._read_number(text, position)
        literal = _LITERALS.get(char)
        if literal is None:
            raise self._error(f"expected a value, found {char!r}", position)
        self._literal = (literal[0], literal[1], 0)
        self._hold_place()
        return self._read_literal(text, position)

    def _hold_place(self) -> None:
        """A scalar started: nothing else may start in its place until it is complete."""
        if self._stack:
            self._stack[-1].expect = _COMMA_OR_END
        else:
            self._top = _NOTHING

    def _place(self, value: Any, shown: Any) -> Path:
        """Put a value that just appeared in its place; report it; returns its path."""
        if not self._stack:
            self._root, self._started, self._top = value, True, _NOTHING
            path: Path = ()
            self._last_slot = (self.__dict__, "_root")
        else:
            frame = self._stack[-1]
            container = frame.container
            if type(container) is dict:
                key: str | int = frame.key
                container[frame.key] = value
            else:
                key = len(container)
                container.append(value)  # type: ignore[union-attr]
            path = (*frame.path, key)
            self._last_slot = (container, key)
            frame.expect = _COMMA_OR_END
        self._last_placed = value
        self._changes.append(_new_change(Change, (path, "value", shown)))
        return path

    def _close(self, position: int) -> int:
        self._stack.pop()
        return position + 1

    # --- tokens -----------------------------------------------------------------------

    def _read_string(self, text: str, position: int) -> int:
        string = self._string
        assert string is not None
        parts = string.parts
        end = len(text)
        while position < end:
            if self._escape is not None:
                position = self._read_escape(text, position, parts)
                continue
            char = text[position]
            if self._high_surrogate is not None and char != "\\":
                parts.append(chr(self._high_surrogate))  # a lone one, as json.loads keeps it
                self._high_surrogate = None
            run = _PLAIN.match(text, position)
            if run is not None:
                parts.append(run.group())
                position = run.end()
            elif char == '"':
                self._end_string(string)
                return position + 1
            elif char == "\\":
                self._escape = ""
                position += 1
            else:
                raise self._error(f"a control character {char!r} inside a string", position)
        return position

    def _read_escape(self, text: str, position: int, parts: list[str]) -> int:
        """The characters after a backslash; the escaped character once it is complete."""
        escape = self._escape
        assert escape is not None
        if escape == "":
            char = text[position]
            if char == "u":
                self._escape = "u"
                return position + 1
            escaped = _ESCAPES.get(char)
            if escaped is None:
                raise self._error(f"an invalid escape '\\{char}'", position)
            self._escape = None
            self._flush_high_surrogate(parts)
            parts.append(escaped)
            return position + 1
        digits = text[position : position + 5 - len(escape)]
        for index, digit in enumerate(digits):
            if digit not in _HEX:
                raise self._error(f"an invalid \\u escape (found {digit!r})", position + index)
        escape += digits
        position += len(digits)
        if len(escape) < 5:
            self._escape = escape  # the piece ended inside the escape
            return position
        self._escape = None
        code = int(escape[1:], 16)
        high = self._high_surrogate
        if high is not None and 0xDC00 <= code <= 0xDFFF:
            self._high_surrogate = None
            parts.append(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)))
        elif 0xD800 <= code <= 0xDBFF:
            self._flush_high_surrogate(parts)
            self._high_surrogate = code  # shown once its pair (or its absence) is known
        else:
            self._flush_high_surrogate(parts)
            parts.append(chr(code))
        return position

    def _flush_high_surrogate(self, parts: list[str]) -> None:
        if self._high_surrogate is not None:
            parts.append(chr(self._high_surrogate))
            self._high_surrogate = None

    def _report(self, string: _String) -> None:
        """One "text" change for what a value string gained since the last one."""
        parts = string.parts
        if string.is_key or len(parts) == string.reported:
            return
        added = "".join(parts[string.reported :])
        string.reported = len(parts)
        if added:
            self._changes.append(_new_change(Change, (string.path, "text", added)))

    def _end_string(self, string: _String) -> None:
        self._flush_high_surrogate(string.parts)
        self._string = None
        text = "".join(string.parts)
        if string.is_key:
            frame = self._stack[-1]
            frame.key, frame.expect = text, _COLON
            return
        self._report(string)
        assert string.slot is not None
        container, key = string.slot
        container[key] = text

    def _read_number(self, text: str, position: int) -> int:
        number = self._number
        assert number is not None
        run = _NUMBER_CHARS.match(text, position)
        if run is not None:
            number.append(run.group())
            position = run.end()
        if position < len(text):
            self._end_number(self._offset + position)  # a character after it arrived
        return position

    def _end_number(self, position: int) -> None:
        number = self._number
        assert number is not None
        self._number = None
        text = "".join(number)
        match = _NUMBER.fullmatch(text)
        if match is None:
            raise PartialJSONError(f"{text[:40]!r} is not a number", self._number_start)
        value = float(text) if match.group(1) or match.group(2) else int(text)
        self._unhold_place()
        self._place(value, value)

    def _read_literal(self, text: str, position: int) -> int:
        literal = self._literal
        assert literal is not None
        word, value, matched = literal
        end = len(text)
        while position < end and matched < len(word):
            if text[position] != word[matched]:
                raise self._error(f"expected {word!r}", position)
            position += 1
            matched += 1
        if matched < len(word):
            self._literal = (word, value, matched)
            return position
        self._literal = None
        self._unhold_place()
        self._place(value, value)
        return position

    def _unhold_place(self) -> None:
        """Undo `_hold_place` so that `_place` puts the completed scalar where it began."""
        if self._stack:
            frame = self._stack[-1]
            frame.expect = _VALUE
        else:
            self._top = _VALUE
