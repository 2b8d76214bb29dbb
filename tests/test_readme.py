"""The README's self-contained examples run as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asyncchat.testing import MockServer

from .ray_logs import console_spans, instrumentation_version, ray_root

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


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


def test_mock_transport_example_runs() -> None:
    """The README's MockTransport example, run as written (inside an async function)."""
    [block] = [b for b in python_blocks() if "MockTransport(handler)" in b]
    body = "".join(f"    {line}\n" for line in block.splitlines())
    namespace: dict[str, object] = {}
    exec(
        compile(f"async def example():\n{body}\n    return transport", "README.md", "exec"),
        namespace,
    )
    transport = asyncio.run(namespace["example"]())  # type: ignore[operator]
    assert [request.json()["model"] for request in transport.requests] == ["glm-4-air"]


def test_tls_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The MockServer-over-HTTPS example: refused, then trusted with verify=."""
    [block] = [b for b in python_blocks() if "ssl_context=server_side" in b]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    refused, trusted = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"refused: the certificate of https://127\.0\.0\.1:\d+/v1/models failed verification: "
        r"unable to get local issuer certificate; if a private CA signed it, .*",
        refused,
    )
    assert trusted == "trusted: ['mock-model']"


def test_partial_json_example_runs() -> None:
    [block] = [b for b in python_blocks() if "PartialJSONParser()" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_structured_outputs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The parse() and stream(response_format=) example, over a real MockServer."""
    [block] = [b for b in python_blocks() if "completions.parse(" in b and "asyncio.run" in b]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{}"
    assert "{'name': 'Bos'}" in printed
    assert printed[-1] == "{'name': 'Boston', 'population': 1, 'landmarks': ['Boston']}"


@pytest.mark.parametrize(
    "marker",
    [
        "top_logprobs=2",  # log probabilities and moderation
        "@asyncchat.custom_tool(",  # a custom tool, over a scripted model
    ],
)
def test_example_prints_what_the_readme_shows(
    marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An example over a real MockServer: its output is the block after it."""
    [block] = [b for b in python_blocks() if marker in b]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == shown_after(block)


def shown_after(block: str) -> str:
    """The output the README shows under a block ("prints", then a plain block)."""
    shown = README.read_text().split(block, 1)[1]
    [expected] = re.findall(r"\Aprints\n\n```\n(.*?)```", shown.lstrip("`\n"), flags=re.DOTALL)
    return expected


def test_agent_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The run_tools example: two async tools and a sync one, a tool error fed back and
    recovered, over a scripted MockServer."""
    [block] = [b for b in python_blocks() if "run_tools(" in b and "get_time" in b]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "-> get_time({'zone': 'Mars/Paris'})" in printed
    assert "<- get_time: Error: ValueError: unknown time zone 'Mars/Paris'" in printed
    assert "<- to_fahrenheit: 69.8" in printed
    assert printed.rstrip().endswith("In Paris it is 21 °C (69.8 °F) at 14:00.")


def test_opentelemetry_example_prints_a_span() -> None:
    """The console-exporter example, in its own process (the global tracer provider
    can be set once per process)."""
    [block] = [b for b in python_blocks() if "SimpleSpanProcessor(ConsoleSpanExporter())" in b]
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
    )
    span = json.loads(done.stdout)
    assert span["name"] == "chat glm-4-air" and span["kind"] == "SpanKind.CLIENT"
    assert span["attributes"]["gen_ai.request.temperature"] == 0.2
    assert span["attributes"]["gen_ai.request.stream"] is True
    assert span["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert 0 < span["attributes"]["gen_ai.response.time_to_first_chunk"] < 5


def test_zero_code_command_traces_the_demo() -> None:
    """The `opentelemetry-instrument` command as written: the demo's requests are
    spans, each with its HTTP span under it."""
    command = re.search(r"\n(opentelemetry-instrument [^\n]*\\\n[^\n]*)", README.read_text())
    assert command is not None
    program, *arguments = command.group(1).replace("\\\n", " ").split()
    assert arguments[-2:] == ["asyncchat", "demo"]
    installed = Path(sys.executable).parent  # the console scripts beside this Python
    # Spans written at the exit only, not between two pieces of a line the demo writes.
    environment = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    done = subprocess.run(
        [str(installed / program), *arguments[:-2], str(installed / "asyncchat"), "demo"],
        capture_output=True, text=True, timeout=120, env=environment,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4. A JSON answer, parsed as it streams:" in done.stdout  # the demo ran
    # The spans are the JSON documents that begin and end at a line's start.
    found = re.findall(r"^\{\n.*?^\}$", done.stdout, flags=re.DOTALL | re.MULTILINE)
    spans = [json.loads(document) for document in found]
    chats = {s["context"]["span_id"] for s in spans if s["name"] == "chat glm-4-air"}
    posts = [s for s in spans if s["name"] == "POST"]
    assert chats and len(posts) == len(chats)
    assert {s["parent_id"] for s in posts} == chats


def against_mock_server(text: str, server: MockServer, folder: Path) -> str:
    """A README example's `text` pointed at `server` in place of `asyncchat mock-server`
    on port 8000, with the example requests copied to `folder`, where it is to run."""
    server.api_key = None  # as `asyncchat mock-server` without --api-key
    (folder / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "requests.jsonl", folder / "examples")
    return text.replace("http://127.0.0.1:8000/v1", server.base_url)


def run_ray_example(block: str, server: MockServer, folder: Path) -> str:
    """A README Ray example run in its own process (it starts a local Ray cluster), in
    `folder` with the example requests, against `server` in place of port 8000; what
    it printed."""
    block = against_mock_server(block, server, folder)
    environment = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=folder, capture_output=True, text=True,
        timeout=180, env=environment,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_one_client_across_asyncio_runs_example_runs(
    tmp_path: Path, background_server: MockServer
) -> None:
    """The example of one client serving an `asyncio.run` per call: both answers, and
    not a warning (every warning shown) of a socket left open."""
    [block] = [b for b in python_blocks() if "def answer(question: str)" in b]
    block = against_mock_server(block, background_server, tmp_path)
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", block],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["You said: Say this is a test", "You said: Say it again"]


def test_process_pool_example_runs(tmp_path: Path, background_server: MockServer) -> None:
    """The example of answers coming back from worker processes, run as a script (as a
    pool's workers need), every warning shown."""
    [block] = [b for b in python_blocks() if "ProcessPoolExecutor(2)" in b]
    script = tmp_path / "example.py"
    script.write_text(against_mock_server(block, background_server, tmp_path))
    done = subprocess.run(
        [sys.executable, "-W", "always", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "You said: Say this is a test 12",
        "You said: Say it again 8",
    ]


@pytest.mark.slow
def test_ray_example_writes_the_results(tmp_path: Path, background_server: MockServer) -> None:
    """The Ray pipeline example: a result line for every request, each answered."""
    [block] = [b for b in python_blocks() if "write_batch_jsonl(results" in b]
    printed = run_ray_example(block, background_server, tmp_path)
    requests = (ROOT / "examples" / "requests.jsonl").read_text().splitlines()
    assert printed == f"{len(requests)} results written"
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {result["response"]["status_code"] for result in results} == {200}


@pytest.mark.slow
def test_ray_telemetry_example_traces_every_request_in_the_actors(
    tmp_path: Path, background_server: MockServer
) -> None:
    """The Ray example with a setup hook, in its own process: every request is a `chat`
    span, recorded in an actor's process (the driver sets up none), none lost when Ray
    ends the actors."""
    [block] = [b for b in python_blocks() if "worker_process_setup_hook" in b]
    spans = tmp_path / "spans"
    spans.mkdir()
    # Each worker writes its spans to a file of its own, a line each, and only when
    # Ray ends it: the schedule's delay is longer than the test.
    exporter = (
        f"ConsoleSpanExporter(out=open(f'{spans}/{{__import__(\"os\").getpid()}}', 'w'), "
        "formatter=lambda span: span.to_json(indent=None) + '\\n')"
    )
    block = block.replace(
        "BatchSpanProcessor(ConsoleSpanExporter())",
        f"BatchSpanProcessor({exporter}, schedule_delay_millis=600_000)",
    )
    assert str(spans) in block
    printed = run_ray_example(block, background_server, tmp_path)
    count = len((ROOT / "examples" / "requests.jsonl").read_text().splitlines())
    assert printed == f"{count} requests, each a `chat` span in its actor's output"
    recorded = [
        json.loads(line) for path in spans.iterdir() for line in path.read_text().splitlines()
    ]
    assert len(recorded) == count
    assert {span["name"] for span in recorded} == {"chat glm-4-air"}
    assert {span["attributes"]["server.port"] for span in recorded} == {background_server.port}
    assert {span["status"]["status_code"] for span in recorded} == {"UNSET"}
    assert len({span["attributes"]["gen_ai.response.id"] for span in recorded}) == count


@pytest.mark.slow
def test_ray_command_telemetry_example_traces_every_request(
    tmp_path: Path, background_server: MockServer
) -> None:
    """The `--ray-runtime-env` command as written: each worker runs the hook that
    `opentelemetry-instrument` runs, so each request is a `chat` span, its HTTP span
    under it, in the actors' output that Ray keeps in its logs. The hook came with
    opentelemetry-instrumentation 0.52b0, as the README says: with an older one the
    job ends at once, nothing sent."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if "--ray-runtime-env" in b]
    install, command = block.split("\n", 1)
    assert install.startswith("pip install 'opentelemetry-distro>=0.52b0'")
    command = against_mock_server(command.replace("\\\n", " "), background_server, tmp_path)
    program, *arguments = shlex.split(command)
    assert program == "asyncchat" and "--ray-address" not in arguments
    with ray_root() as root:
        environment = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(root)}
        done = subprocess.run(
            [sys.executable, "-m", "asyncchat", *arguments],
            cwd=tmp_path, capture_output=True, text=True, timeout=180, env=environment,
        )  # fmt: skip
        if instrumentation_version() < (0, 52):
            assert done.returncode == 2, done.stderr
            assert "worker_process_setup_hook fails" in done.stderr.splitlines()[-1]
            assert background_server.requests == []
            return
        assert done.returncode == 0, done.stderr
        spans = console_spans(root)
    chats = [s for s in spans if s["name"] == "chat glm-4-air"]
    count = len((ROOT / "examples" / "requests.jsonl").read_text().splitlines())
    assert len(chats) == count
    assert len({s["attributes"]["gen_ai.response.id"] for s in chats}) == count
    assert {s["resource"]["attributes"]["service.name"] for s in chats} == {"asyncchat-batch"}
    posts = [s for s in spans if s["name"] == "POST"]
    assert sorted(s["parent_id"] for s in posts) == sorted(s["context"]["span_id"] for s in chats)


def test_batch_api_library_example_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_batch_api and the files/batches calls, over the MockServer's Batch API."""
    [block] = [b for b in python_blocks() if "run_batch_api(" in b]
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "requests.jsonl", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    count = len((ROOT / "examples" / "requests.jsonl").read_text().splitlines())
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{count} of {count} succeeded"
    assert printed[1] == f"completed {count} of {count}"
    size = (tmp_path / "batch-output.jsonl").stat().st_size
    assert printed[2] == f"{size} bytes downloaded" and size > 0
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {result["response"]["status_code"] for result in results} == {200}


def test_batch_api_command_runs(tmp_path: Path, background_server: MockServer) -> None:
    """The `--via batch-api` command as written, against the mock server."""
    readme = README.read_text()
    command = re.search(r"(asyncchat batch [^\n]*--via batch-api \\\n[^\n]*)", readme)
    assert command is not None
    text = against_mock_server(command.group(1).replace("\\\n", " "), background_server, tmp_path)
    arguments = text.split()[1:]
    done = subprocess.run(
        [sys.executable, "-m", "asyncchat", *arguments],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "merged into results.jsonl" in done.stderr
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    count = len((ROOT / "examples" / "requests.jsonl").read_text().splitlines())
    assert len(results) == count and {r["response"]["status_code"] for r in results} == {200}
    batches = list(background_server.batch.batches.values())
    assert [b.data["metadata"] for b in batches] == [{"job": "nightly"}]


def test_the_readmes_links_lead_somewhere() -> None:
    """A link to a file of the repository names one that exists; one to a section of
    the README (or of a linked document) names a heading that exists."""
    documents = [README, *(ROOT / "docs").glob("*.md")]
    for document in documents:
        text = document.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            assert linked.exists(), f"{document.name} links to {target}, which is not there"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
                slugs = {
                    re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings
                }
                assert anchor in slugs, f"{document.name} links to {target}: no such heading"
