"""The command line, through main(argv) and as a subprocess."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asyncchat.cli import main
from asyncchat.testing import MockServer

from .conftest import API_KEY, free_port
from .test_content import PNG


def run_chat(server: MockServer, *args: str) -> list[str]:
    return ["chat", *args, "--base-url", server.base_url, "--api-key", API_KEY]


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "You said: Say this is a test" in out
    assert "You said: Stream these words one at a time please" in out
    assert "get_current_weather({'location': 'Boston', 'unit': 'celsius'})" in out
    assert "finish_reason: tool_calls" in out


def test_chat_streams(background_server: MockServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            run_chat(
                background_server,
                "Say this is a test",
                "--model",
                "glm-4-air",
                "--system",
                "Be brief",
                "--temperature",
                "0.5",
                "--max-tokens",
                "20",
            )
        )
        == 0
    )
    assert capsys.readouterr().out == "You said: Say this is a test\n"
    body = background_server.requests[0].body
    assert body["model"] == "glm-4-air"
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "Be brief"}
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 20


def test_chat_no_stream_and_json(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_chat(background_server, "hi", "--no-stream")) == 0
    assert capsys.readouterr().out == "You said: hi\n"
    assert main(run_chat(background_server, "hi", "--json")) == 0
    lines = capsys.readouterr().out.splitlines()
    chunks = [json.loads(line) for line in lines]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "You said: hi"


def test_chat_image_and_tools(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "dot.png"
    image.write_bytes(PNG)
    tools = tmp_path / "tools.json"
    tools.write_text(
        json.dumps(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                    },
                }
            ]
        )
    )
    assert (
        main(
            run_chat(
                background_server,
                "lookup this picture",
                "--image",
                str(image),
                "--tools",
                str(tools),
            )
        )
        == 0
    )
    assert "[tool call] lookup({'q': 'picture'})" in capsys.readouterr().out
    content = background_server.requests[0].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "lookup this picture"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_chat_prompt_from_stdin(
    background_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    assert main(run_chat(background_server, "-")) == 0
    assert capsys.readouterr().out == "You said: from stdin\n"


def test_exit_codes(
    background_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ASYNCCHAT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["chat", "hi", "--base-url", background_server.base_url]) == 1
    assert "no API key" in capsys.readouterr().err
    assert main(["chat", "hi", "--base-url", background_server.base_url, "--api-key", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong" not in err
    assert main(["chat", "hi", "--base-url", "http://127.0.0.1:1/v1", "--api-key", "k"]) == 1
    assert "could not connect" in capsys.readouterr().err
    assert main(run_chat(background_server, "hi", "--tools", "/nonexistent.json")) == 2


def test_module_entry_point_as_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asyncchat", "demo"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "You said: Say this is a test" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "asyncchat", "bogus"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_mock_server_command(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncchat", "mock-server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "asyncchat",
                "chat",
                "ping",
                "--no-stream",
                "--base-url",
                f"http://127.0.0.1:{port}/v1",
                "--api-key",
                "any",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "You said: ping\n"
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in err
