"""A `multipart/form-data` body with one file, read from disk piece by piece.

Sans-IO: `FileUpload` knows its length and content type before anything is
sent, and yields its bytes in pieces on demand, so a 200 MB batch file is never
held in memory; each `pieces()` starts again from the top, so a retried upload
sends the whole body again.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TypeAlias

__all__ = ["FileSource", "FileUpload"]

PIECE_SIZE = 1024 * 1024
# What `files.create(file=...)` takes, as the official SDK does: a path, the bytes,
# an open binary file, or a (filename, one of those) pair.
_Source: TypeAlias = "str | os.PathLike[str] | bytes | IO[bytes]"
FileSource: TypeAlias = "_Source | tuple[str, _Source]"


def _quoted(value: str) -> str:
    """A form-data parameter value: quotes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class FileUpload:
    """`fields` and one file, as a form. `content_type` goes in the request's header."""

    def __init__(
        self,
        source: FileSource,
        fields: Mapping[str, str],
        *,
        field_name: str = "file",
        file_type: str = "application/jsonl",
    ) -> None:
        filename: str | None = None
        if isinstance(source, tuple):
            filename, source = source
        self._path: Path | None = None
        self._bytes: bytes | None = None
        self._file: IO[bytes] | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._bytes = bytes(source)
            size = len(self._bytes)
        elif isinstance(source, (str, os.PathLike)):
            self._path = Path(source)
            size = self._path.stat().st_size  # FileNotFoundError names the path
            filename = filename or self._path.name
        elif isinstance(source, io.IOBase) or hasattr(source, "read"):
            self._file = source
            self._start = source.tell()  # a retry reads again from here
            size = source.seek(0, io.SEEK_END) - self._start
            source.seek(self._start)
            name = getattr(source, "name", None)
            filename = filename or (Path(name).name if isinstance(name, str) else None)
        else:
            raise TypeError(
                f"file must be a path, bytes or an open binary file, not {type(source).__name__}"
            )
        filename = filename or "upload.jsonl"
        boundary = f"asyncchat-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in fields.items()
        )
        head += (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{_quoted(field_name)}"; filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {file_type}\r\n\r\n"
        ).encode()
        self._head = head
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self.filename = filename
        self.file_size = size
        self.length = len(head) + size + len(self._tail)

    def pieces(self) -> Iterator[bytes]:
        """The whole body, from its start, in pieces of at most `PIECE_SIZE` bytes of file."""
        yield self._head
        sent = 0
        if self._bytes is not None:
            for start in range(0, len(self._bytes), PIECE_SIZE):
                piece = self._bytes[start : start + PIECE_SIZE]
                sent += len(piece)
                yield piece
        elif self._path is not None:
            with self._path.open("rb") as file:
                while piece := file.read(PIECE_SIZE):
                    sent += len(piece)
                    yield piece
        else:
            assert self._file is not None
            self._file.seek(self._start)
            while piece := self._file.read(PIECE_SIZE):
                sent += len(piece)
                yield piece
        if sent != self.file_size:  # the Content-Length already sent would be a lie
            raise OSError(
                f"{self.filename} changed size while it was being uploaded "
                f"({self.file_size} bytes, then {sent})"
            )
        yield self._tail

    def read(self) -> bytes:
        """The whole body at once: for in-process transports and tests."""
        return b"".join(self.pieces())

    def __repr__(self) -> str:
        return f"FileUpload({self.filename!r}, {self.file_size} bytes)"
