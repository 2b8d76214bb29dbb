"""The sans-IO core imports neither asyncio nor aiohttp, directly or through another module."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE_MODULES = [
    "asyncchat.sse",
    "asyncchat.accumulate",
    "asyncchat.types",
    "asyncchat.errors",
    "asyncchat._retry",
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
