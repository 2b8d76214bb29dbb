"""`Headers`: response headers as a plain, read-only mapping whose keys match in any case.

The mock transport answers with it, and a response object or an error that is
pickled (to leave a worker process) takes its headers along as one: the
transport's own (aiohttp's view of them) cannot be pickled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["Headers"]


class Headers(Mapping[str, str]):
    """Response headers: a read-only mapping whose keys match in any case."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        # A header sent twice reads as its first value, as in aiohttp's headers.
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in (items or {}).items():
            self._items.setdefault(key.lower(), (key, value))

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"
