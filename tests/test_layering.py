"""The layers: the sans-IO core imports neither asyncio nor aiohttp, directly or through
another module; nothing but the transport imports aiohttp."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asyncchat"

CORE_MODULES = [
    "asyncchat.sse",
    "asyncchat.accumulate",
    "asyncchat.types",
    "asyncchat.errors",
    "asyncchat._retry",
    "asyncchat._http",
    "asyncchat._headers",
    "asyncchat.events",
    "asyncchat.quirks",
    "asyncchat.partial_json",
    "asyncchat.structured",
    "asyncchat.tools",
    "asyncchat._redact",
    "asyncchat._ratelimit",
    "asyncchat.ratelimits",
    "asyncchat._multipart",
    "asyncchat._genai",
    "asyncchat._tls",
    "asyncchat._decode",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_no_io(module: str) -> None:
    # asyncchat/__init__ imports the client; load the core module alone.
    code = (
        "import importlib.util, sys, types\n"
        "package = types.ModuleType('asyncchat')\n"
        "package.__path__ = [importlib.util.find_spec('asyncchat').submodule_search_locations[0]]\n"
        "sys.modules['asyncchat'] = package\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'aiohttp')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# aiohttp, and the libraries it brings, stay behind the transport (and the test server).
AIOHTTP_ALLOWED = {"_transport.py", "testing.py", "_mockbatch.py"}
AIOHTTP_PACKAGES = {"aiohttp", "yarl", "multidict"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_only_the_transport_imports_aiohttp(path: Path) -> None:
    found = imported_packages(path) & AIOHTTP_PACKAGES
    if path.name in AIOHTTP_ALLOWED:
        return
    assert not found, f"{path.name} imports {sorted(found)}: go through asyncchat._http"


def test_the_aiohttp_check_sees_imports() -> None:
    assert imported_packages(PACKAGE / "_transport.py") >= {"aiohttp", "yarl"}


def test_the_drawn_exception_tree_is_the_real_one() -> None:
    """errors.py's docstring draws the tree; each drawn parent is the class's first base."""
    import asyncchat.errors as errors

    parents: list[type] = []
    drawn = set()
    for line in (errors.__doc__ or "").splitlines():
        name = line.lstrip(" │├└─").split(" ", 1)[0]
        if not line.startswith("    ") or not name.endswith("Error"):
            continue
        depth = line.index(name) // 4 - 1
        cls = getattr(errors, name)
        del parents[depth:]
        if parents:
            assert cls.__bases__[0] is parents[-1], (name, parents[-1])
        parents.append(cls)
        drawn.add(name)
    assert drawn == {name for name in errors.__all__ if name.endswith("Error")}
