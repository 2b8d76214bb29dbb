"""The README's self-contained examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_sans_io_example_runs() -> None:
    [block] = [b for b in python_blocks() if "SSEDecoder()" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_every_python_block_compiles() -> None:
    for block in python_blocks():
        # Snippets use `await` at top level, as in an async function body.
        body = "".join(f"    {line}\n" for line in block.splitlines())
        compile(f"async def snippet():\n{body}", "README.md", "exec")
