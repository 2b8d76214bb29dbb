"""The command line, through main(argv) and as a subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import asyncchat
from asyncchat._cli_chat import _params
from asyncchat.cli import _parser, main
from asyncchat.testing import MockServer, StreamStyle

from .conftest import API_KEY, completion_json, free_port, served_in_a_thread
from .test_content import PNG


class Terminal(io.StringIO):
    """A standard stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def stdin_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As when typed at a shell: nothing piped (tests that pipe replace it)."""
    monkeypatch.setattr(sys, "stdin", Terminal())


def run_chat(server: MockServer, *args: str) -> list[str]:
    return ["chat", *args, "--base-url", server.base_url, "--api-key", API_KEY]


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "You said: Say this is a test" in out
    assert "You said: Stream these words one at a time please" in out
    assert 'get_current_weather {"location": "Boston", "unit": "celsius"}' in out
    assert "finish_reason: tool_calls" in out
    assert '   {}\n   {"name": "Bos"}\n   {"name": "Boston"}\n' in out  # it grows
    assert "parsed: {'name': 'Boston', 'population': 1}" in out
    assert '-> get_current_weather({"location": "Boston", "unit": "celsius"})' in out
    assert "<- 21 degrees celsius and sunny in Boston" in out
    assert "answer: You said: What's the weather like in Boston?" in out


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


@pytest.mark.parametrize(
    ("base_url", "sent_as"),
    [
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("https://my-east.openai.azure.com/openai/v1", "max_completion_tokens"),
        ("https://open.bigmodel.cn/api/paas/v4", "max_tokens"),
        ("http://127.0.0.1:8000/v1", "max_tokens"),
        (None, "max_completion_tokens"),  # OpenAI's, when nothing names another
    ],
)
def test_max_tokens_is_sent_under_the_name_the_server_takes(
    base_url: str | None, sent_as: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI's reasoning models refuse max_tokens ("Use 'max_completion_tokens'
    instead"); GLM, DeepSeek and local servers know only max_tokens."""
    for name in ("ASYNCCHAT_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    where = ["--base-url", base_url] if base_url else []
    args = _parser().parse_args(["chat", "hi", "--max-tokens", "9", *where])
    params = _params(args)
    [other] = {"max_tokens", "max_completion_tokens"} - {sent_as}
    assert params[sent_as] == 9 and other not in params
    if base_url is None:  # from the environment, as the client takes it
        monkeypatch.setenv("OPENAI_BASE_URL", "https://api.deepseek.com/v1")
        assert "max_tokens" in _params(_parser().parse_args(["chat", "hi", "--max-tokens", "9"]))


@pytest.mark.parametrize(
    ("base_url", "asked"),
    [("https://api.mistral.ai/v1", False), ("https://api.openai.com/v1", True)],
)
def test_usage_is_asked_for_where_the_server_takes_the_field(base_url: str, asked: bool) -> None:
    """Mistral refuses `stream_options` (422 "Extra inputs are not permitted") and ends
    every stream with its usage unasked; other servers report it only when asked."""
    args = _parser().parse_args(["chat", "hi", "-u", "--base-url", base_url])
    assert ("stream_options" in _params(args)) is asked


def test_chat_no_stream_and_json(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_chat(background_server, "hi", "--no-stream")) == 0
    assert capsys.readouterr().out == "You said: hi\n"
    assert main(run_chat(background_server, "hi", "--json")) == 0
    lines = capsys.readouterr().out.splitlines()
    chunks = [json.loads(line) for line in lines]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "You said: hi"


def test_chat_shows_a_custom_tool_call_s_input_as_text(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "custom", "custom": {"name": "run_sql"}}]))
    prompt = 'run_sql SELECT "a"'
    for mode in ([], ["--no-stream"]):
        assert main(run_chat(background_server, prompt, "--tools", str(tools), *mode)) == 0
        out, err = capsys.readouterr()
        assert out == '[tool call] run_sql "run_sql SELECT \\"a\\""\n', mode
        assert err == ""  # free text is not "arguments that are not a JSON object"


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
    assert '[tool call] lookup {"q": "picture"}' in capsys.readouterr().out
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
    assert main(["chat", "hi", "--base-url", "https://api.example.com/v1"]) == 2
    err = capsys.readouterr().err
    assert "no API key" in err and "--api-key" in err
    # A server on this machine may need no key: this one does, and says so.
    assert main(["chat", "hi", "--base-url", background_server.base_url]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["chat", "hi", "--base-url", background_server.base_url, "--api-key", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong" not in err
    assert main(["chat", "hi", "--base-url", "http://127.0.0.1:1/v1", "--api-key", "k"]) == 1
    err = capsys.readouterr().err
    assert "could not connect" in err and "check --base-url and that the server is up" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", ""], "--model must not be empty"),
        (["-m", " "], "--model must not be empty"),
        (["--tools", "/nonexistent.json"], "/nonexistent.json"),
        (["-o", "model", "x"], "-o model: set it with -m/--model"),
        (["-o", "stream", "false"], "-o stream: set it with --no-stream"),
        (["--image", "/nonexistent.png"], "/nonexistent.png"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    background_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    assert main(run_chat(background_server, "hi", *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("asyncchat: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1
    assert background_server.requests == []


def test_standard_input_is_read_once(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["-", "--image", "-"], ["hi", "--image", "-", "--image", "-"]):
        assert main(run_chat(background_server, *args)) == 2
        assert "standard input can be read once" in capsys.readouterr().err
    assert background_server.requests == []


def test_a_tools_file_that_is_missing_or_not_json_is_named(
    background_server: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "bad.json"
    tools.write_text("[{")
    assert main(run_chat(background_server, "hi", "--tools", str(tools))) == 2
    err = capsys.readouterr().err
    assert f"--tools {tools}: not valid JSON" in err
    tools.write_text('{"type": "function"}')
    assert main(run_chat(background_server, "hi", "--tools", str(tools))) == 2
    assert "expected a JSON list" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    assert main(run_chat(background_server, "hi", "--tools", str(missing))) == 2
    err = capsys.readouterr().err
    reason = "cannot read it (No such file or directory)"
    assert err == f"asyncchat: error: --tools {missing}: {reason}\n"
    assert background_server.requests == []


def test_a_warning_is_one_line_in_the_command_s_words(background_server: MockServer) -> None:
    # Plain http:// to another host warns; the mock server plays the proxy that reaches it.
    environment = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    environment["HTTP_PROXY"] = f"http://127.0.0.1:{background_server.port}"
    argv = ["chat", "hi", "--base-url", "http://cli.example.invalid/v1", "--api-key", API_KEY]
    done = subprocess.run(
        [sys.executable, "-m", "asyncchat", *argv],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "You said: hi\n"), done.stderr
    assert done.stderr.startswith("asyncchat: warning: base_url http://cli.example.invalid/v1")
    assert len(done.stderr.splitlines()) == 1  # not Python's file:line and source line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"asyncchat {asyncchat.__version__}\n"


def test_model_default_from_the_environment(
    background_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ASYNCCHAT_MODEL", raising=False)
    assert main(run_chat(background_server, "hi")) == 0
    monkeypatch.setenv("ASYNCCHAT_MODEL", "glm-4-flash")
    assert main(run_chat(background_server, "hi", "-s", "Be brief")) == 0
    assert main(run_chat(background_server, "hi", "-m", "deepseek-chat")) == 0
    models = [request.body["model"] for request in background_server.requests]
    assert models == ["gpt-4o-mini", "glm-4-flash", "deepseek-chat"]
    assert background_server.requests[1].body["messages"][0] == {
        "role": "system",
        "content": "Be brief",
    }
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    assert "ASYNCCHAT_MODEL ('glm-4-flash')" in capsys.readouterr().out
    monkeypatch.delenv("ASYNCCHAT_MODEL")
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    assert "else gpt-4o-mini" in " ".join(capsys.readouterr().out.split())


def test_a_model_the_server_does_not_know_suggests_the_flag(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    background_server.enqueue(
        404,
        {"error": {"message": "The model `gpt-4o-mini` does not exist", "code": "model_not_found"}},
    )
    assert main(run_chat(background_server, "hi")) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "-m/--model or ASYNCCHAT_MODEL" in err
    assert "`asyncchat models` lists them" in err


def test_models_lists_what_the_server_offers(capsys: pytest.CaptureFixture[str]) -> None:
    with served_in_a_thread(MockServer(models=["glm-4-air", "glm-4-flash"])) as server:
        connection = ["--base-url", server.base_url]
        assert main(["models", *connection]) == 0
        assert capsys.readouterr().out == "glm-4-air\nglm-4-flash\n"
        assert main(["models", "--json", *connection]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert [model["id"] for model in answer["data"]] == ["glm-4-air", "glm-4-flash"]
        # As a command, its list piped on: one name a line.
        result = subprocess.run(
            [sys.executable, "-m", "asyncchat", "models", *connection],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            "glm-4-air\nglm-4-flash\n",
            "",
        )
        assert [r.path for r in server.requests] == ["/v1/models"] * 3


def test_models_from_a_server_without_a_list_is_one_error_line(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    base_url = background_server.base_url.removesuffix("/v1") + "/v2"
    assert main(["models", "--base-url", base_url, "--api-key", API_KEY]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"asyncchat: error: HTTP 404 Not Found from GET {base_url}/models: "
        "no route for GET /v2/models\n"
    )


def test_piped_text_goes_before_the_prompt(
    background_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("line one\nline two\n"))
    assert main(run_chat(background_server, "Summarize this")) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("just piped\n"))
    assert main(run_chat(background_server)) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # an empty pipe adds nothing
    assert main(run_chat(background_server, "only the prompt")) == 0
    texts = [request.body["messages"][-1]["content"] for request in background_server.requests]
    assert texts == ["line one\nline two\n\nSummarize this", "just piped", "only the prompt"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(run_chat(background_server)) == 2
    assert "no prompt" in capsys.readouterr().err


def test_piped_prompt_as_a_subprocess(background_server: MockServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asyncchat", *run_chat(background_server)],
        input="echo me",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You said: echo me\n"


def test_image_from_stdin_and_from_a_url(background_server: MockServer) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncchat",
            *run_chat(background_server, "what is this", "--image", "-"),
            "--image",
            "https://example.com/cat.png",
        ],
        input=PNG,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    content = background_server.requests[0].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "what is this"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[2]["image_url"]["url"] == "https://example.com/cat.png"


def test_options_are_typed_from_json(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-o", "seed", "42", "-o", "user", "alice", "-o", "stop", '["x", "y"]']
    args += ["-o", "response_format", '{"type": "json_object"}', "-o", "logprobs", "true"]
    assert main(run_chat(background_server, "hi", *args, "--no-stream")) == 0
    body = background_server.requests[0].body
    assert body["seed"] == 42 and body["user"] == "alice" and body["stop"] == ["x", "y"]
    assert body["response_format"] == {"type": "json_object"} and body["logprobs"] is True


def test_reasoning_is_printed_apart_from_the_answer(
    background_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    background_server.style = StreamStyle(reasoning="reasoning_content")
    # Into a pipe: the answer on stdout, the reasoning on stderr.
    assert main(run_chat(background_server, "hi")) == 0
    captured = capsys.readouterr()
    assert captured.out == "You said: hi\n"
    assert captured.err == "Let me think.\n"
    assert main(run_chat(background_server, "hi", "--hide-reasoning")) == 0
    assert capsys.readouterr() == ("You said: hi\n", "")
    # On a terminal: dim, before the answer.
    terminal, captured_stdout = Terminal(), sys.stdout
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(run_chat(background_server, "hi")) == 0
    assert terminal.getvalue() == "\x1b[2mLet me think.\x1b[0m\n\nYou said: hi\n"
    # Without streaming, the same.
    monkeypatch.setattr(sys, "stdout", captured_stdout)
    answer = completion_json("the answer")
    answer["choices"][0]["message"]["reasoning_content"] = "thinking..."
    background_server.enqueue(200, answer)
    assert main(run_chat(background_server, "hi", "--no-stream")) == 0
    assert capsys.readouterr() == ("the answer\n", "thinking...\n")


def test_mistral_thinking_parts_are_printed_as_reasoning(
    background_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mistral's reasoning models send content as parts: thinking, then text."""
    background_server.style = StreamStyle(reasoning="thinking")
    assert main(run_chat(background_server, "hi")) == 0
    assert capsys.readouterr() == ("You said: hi\n", "Let me think.\n")
    answer = completion_json("")
    answer["choices"][0]["message"]["content"] = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "thinking..."}]},
        {"type": "text", "text": "the answer"},
    ]
    background_server.enqueue(200, answer)
    assert main(run_chat(background_server, "hi", "--no-stream")) == 0
    assert capsys.readouterr() == ("the answer\n", "thinking...\n")


@pytest.mark.parametrize("mode", [[], ["--no-stream"]])
def test_chat_warns_of_an_answer_cut_short(
    background_server: MockServer, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    assert main(run_chat(background_server, "one two three", "--max-tokens", "2", *mode)) == 0
    assert capsys.readouterr() == (
        "You said:\n",
        "asyncchat: warning: the answer was cut at the token limit (finish_reason 'length'): "
        "raise --max-tokens\n",
    )
    assert main(run_chat(background_server, "one two three", "--max-tokens", "5", *mode)) == 0
    assert capsys.readouterr() == ("You said: one two three\n", "")  # whole: no warning


@pytest.mark.parametrize(
    ("finish_reason", "warning"),
    [
        ("sensitive", "the provider's content filter stopped the answer"),  # GLM's filter
        ("insufficient_system_resource", "the answer was cut when the server stopped it"),
        (
            "model_context_window_exceeded",
            "the answer was cut where the conversation filled the model's context window",
        ),
    ],
)
def test_chat_warns_of_an_answer_a_filter_or_the_server_stopped(
    background_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    finish_reason: str,
    warning: str,
) -> None:
    stopped = completion_json("I cannot")
    stopped["choices"][0]["finish_reason"] = finish_reason
    background_server.enqueue(200, stopped, headers={"content-type": "application/json"})
    assert main(run_chat(background_server, "hi", "--no-stream")) == 0
    assert capsys.readouterr() == (
        "I cannot\n",
        f"asyncchat: warning: {warning} (finish_reason {finish_reason!r})\n",
    )


def _tool_answer(arguments: str) -> dict[str, Any]:
    answer = completion_json("")
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        ],
    }
    answer["choices"][0]["finish_reason"] = "tool_calls"
    return answer


def _tool_stream(arguments: str) -> str:
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": arguments},
    }
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("arguments", "shown", "warned"),
    [
        ('{"city":"Zürich"}', '[tool call] f {"city": "Zürich"}', False),
        ("{not json", "[tool call] f {not json", True),
        ("[1, 2]", "[tool call] f [1, 2]", True),
    ],
)
def test_tool_calls_print_as_json_with_and_without_streaming(
    background_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    stream: bool,
    arguments: str,
    shown: str,
    warned: bool,
) -> None:
    if stream:
        background_server.enqueue_stream(_tool_stream(arguments))
    else:
        background_server.enqueue(200, _tool_answer(arguments))
    flags = [] if stream else ["--no-stream"]
    assert main(run_chat(background_server, "hi", *flags)) == 0
    captured = capsys.readouterr()
    assert captured.out == shown + "\n"
    assert ("not a JSON object" in captured.err) is warned


@pytest.mark.parametrize("stream", [True, False])
def test_usage_flag(
    background_server: MockServer, capsys: pytest.CaptureFixture[str], stream: bool
) -> None:
    flags = [] if stream else ["--no-stream"]
    assert main(run_chat(background_server, "hi there", "-u", *flags)) == 0
    captured = capsys.readouterr()
    assert captured.out == "You said: hi there\n"
    assert re.fullmatch(r"usage: \d+ prompt \+ 4 completion = \d+ tokens\n", captured.err)
    body = background_server.requests[0].body
    assert ("stream_options" in body) is stream


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
            stdin=subprocess.DEVNULL,  # nothing piped: the prompt is the argument alone
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


def _start_mock_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncchat", "mock-server", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert "listening" in process.stdout.readline()
    return process, f"http://127.0.0.1:{port}/v1"


def _chat_subprocess(base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncchat", "chat", "ping", "--base-url", base_url, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_chat_no_stream_against_a_server_that_streams_anyway() -> None:
    process, base_url = _start_mock_server("--stream-always", "--reply", "all of it")
    try:
        result = _chat_subprocess(base_url, "--no-stream")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "all of it\n"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_mock_server_command_options() -> None:
    process, base_url = _start_mock_server(
        *("--api-key", "k", "--reply", "pong pong", "--model", "a", "--model", "b"),
        *("--line-ending", "crlf", "--keepalive", "--no-done", "--reasoning", "reasoning"),
        *("--resolve-model", "a=a-2026-01-01"),
    )
    try:
        request = urllib.request.Request(
            base_url + "/models", headers={"Authorization": "Bearer k"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            listed = json.loads(response.read())
        assert [model["id"] for model in listed["data"]] == ["a", "b"]
        for asked, answered in (("a", "a-2026-01-01"), ("b", "b")):
            request = urllib.request.Request(
                base_url + "/chat/completions",
                data=json.dumps(
                    {"model": asked, "messages": [{"role": "user", "content": "hi"}]}
                ).encode(),
                headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["model"] == answered
        result = _chat_subprocess(base_url, "--api-key", "k")
        assert result.returncode == 0, result.stderr
        assert (result.stdout, result.stderr) == ("pong pong\n", "Let me think.\n")
        refused = _chat_subprocess(base_url, "--api-key", "wrong")
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_mock_server_command_thinks_as_asked() -> None:
    process, base_url = _start_mock_server("--thinking", "deepseek")
    try:
        result = _chat_subprocess(base_url, "--no-stream")
        assert result.returncode == 0, result.stderr
        assert (result.stdout, result.stderr) == ("You said: ping\n", "Let me think.\n")
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        dropped = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]
        request = urllib.request.Request(
            base_url + "/chat/completions",
            data=json.dumps({"model": "m", "messages": dropped}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        with info.value as refused:
            assert refused.code == 400
            assert "Missing `reasoning_content` field" in refused.read().decode()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def _weather_tools_file(directory: Path) -> Path:
    """A `--tools` file with one function, get_weather(city)."""
    tools = directory / "tools.json"
    weather = {"type": "object", "properties": {"city": {"type": "string"}}}
    function = {"name": "get_weather", "parameters": weather}
    tools.write_text(json.dumps([{"type": "function", "function": function}]))
    return tools


def test_mock_server_command_wraps_json_and_restates_arguments(tmp_path: Path) -> None:
    process, base_url = _start_mock_server("--json-wrapper", "fence", "--tool-calls", "restated")
    try:
        asked_json = _chat_subprocess(base_url, "-o", "response_format", '{"type": "json_object"}')
        assert asked_json.returncode == 0, asked_json.stderr
        assert asked_json.stdout == '```json\n{"answer":"You said: ping"}\n```\n'
        tools = _weather_tools_file(tmp_path)
        called = _chat_subprocess(base_url, "--tools", str(tools))
        assert called.returncode == 0, called.stderr
        assert called.stdout == '[tool call] get_weather {"city": "ping"}\n'
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def _streamed_events(base_url: str) -> list[str]:
    """The data of each event of a stream the server at `base_url` answers "hi" with."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    request = urllib.request.Request(
        base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return [line[6:] for line in response.read().decode().splitlines() if line]


def test_mock_server_command_puts_usage_where_groq_does() -> None:
    process, base_url = _start_mock_server("--usage", "x_groq")
    try:
        events = _streamed_events(base_url)
        finishing = json.loads(events[-2])  # before [DONE], and no usage chunk: not asked
        assert finishing["choices"][0]["finish_reason"] == "stop"
        assert finishing["x_groq"]["usage"]["completion_tokens"] == 3
        printed = _chat_subprocess(base_url, "-u")
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == "You said: ping\n"
        assert printed.stderr.startswith("usage: ") and "+ 3 completion" in printed.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_mock_server_command_annotates_as_azures_filter_does() -> None:
    process, base_url = _start_mock_server("--filter-annotations")
    try:
        events = _streamed_events(base_url)
        prompt, annotation = json.loads(events[0]), json.loads(events[-2])
        assert prompt["choices"] == [] and prompt["prompt_filter_results"]
        assert (annotation["model"], annotation["id"]) == ("", "")
        assert annotation["choices"][0]["content_filter_offsets"]["check_offset"] > 0
        printed = _chat_subprocess(base_url)
        assert (printed.returncode, printed.stdout) == (0, "You said: ping\n")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_chat_prints_a_call_once_whole_behind_a_proxy_that_stops_every_chunk(
    tmp_path: Path,
) -> None:
    process, base_url = _start_mock_server("--finish-every-chunk")
    try:
        tools = _weather_tools_file(tmp_path)
        called = _chat_subprocess(base_url, "--tools", str(tools))
        assert called.returncode == 0, called.stderr
        assert called.stdout == '[tool call] get_weather {"city": "ping"}\n'
        answered = _chat_subprocess(base_url)
        assert (answered.returncode, answered.stdout) == (0, "You said: ping\n")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_mock_server_command_faults() -> None:
    process, base_url = _start_mock_server("--error-after", "2", "--chunk-delay", "0.01")
    try:
        result = _chat_subprocess(base_url)  # no key: the server is on this machine
        assert result.returncode == 1
        assert "mock server error mid-stream" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_mock_server_command_keeps_a_providers_limit() -> None:
    process, base_url = _start_mock_server("--rpm", "1")
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        first = urllib.request.Request(
            base_url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(first, timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(first, timeout=10)
        refused.value.close()
        assert refused.value.code == 429
        assert refused.value.headers["Retry-After"] == "60"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
