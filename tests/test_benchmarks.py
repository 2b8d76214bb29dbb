"""The benchmark suite, on a tiny configuration, so it keeps working (no timing asserted)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import LoadServer, memory_slopes, summarize
from benchmarks.instructions import stream_counts, summary_lines
from benchmarks.micro import accumulator_benchmark, decoder_benchmark
from benchmarks.scenarios import SCENARIOS, build
from benchmarks.steps import STEPS, step_function

ROOT = Path(__file__).resolve().parent.parent
LOCAL_RUNNERS = [
    "asyncchat",
    "asyncchat-text",
    "asyncchat-uvloop",
    "asyncchat-events",
    "asyncchat-otel",
    "asyncchat-otel-each",
    "asyncchat-otel-off",
    "asyncchat-otel-hand",
    "asyncchat-partial",
    "aiohttp-readline",
    "floor-raw",
    "floor-parse",
]


def test_scenarios_are_consistent() -> None:
    for scenario in SCENARIOS:
        stream = build(scenario)
        assert stream.events[-1] == b"data: [DONE]\n\n"
        assert stream.chunk_count == len(stream.events) - 1
    tools = build("tools")
    assert tools.arguments is not None
    assert 250 <= len(tools.arguments) <= 350
    assert json.loads(tools.arguments)["unit"] == "celsius"


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--n",
            "1",
            "3",
            "--repeat",
            "1",
            "--runners",
            *LOCAL_RUNNERS,
            "--micro-size",
            "0",
            "--no-plot",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BENCH_PACE": "0.002"},  # the paced streams, quicker
    )
    assert result.returncode == 0, result.stderr
    assert "CPU µs/chunk" in result.stdout
    [report_path] = tmp_path.glob("bench-*.json")
    report = json.loads(report_path.read_text())
    runs = report["runs"]
    # Every local runner, in every scenario (stream_text skips tool calls), at both N.
    assert len(runs) == len(SCENARIOS) * 2 * len(LOCAL_RUNNERS) - 2
    for run in runs:
        assert run["ok"], run
        assert run["chunks"] == run["n"] * build(run["scenario"]).chunk_count
        assert run["connections_opened"] == run["n"]
        assert run["loop"].split(".")[0] == (
            "uvloop" if run["runner"] == "asyncchat-uvloop" else "asyncio"
        )
    assert {row["runner"] for row in report["summary"]} == set(LOCAL_RUNNERS)


@pytest.mark.parametrize("runner", ["asyncchat-otel", "asyncchat-otel-hand", "asyncchat-otel-each"])
def test_the_telemetry_runners_record_a_span_and_three_histograms_a_stream(
    runner: str,
) -> None:
    # The hand-instrumented runner stands for the SDK's own cost only if it makes
    # the calls asyncchat's telemetry makes: one span, and three histogram records
    # (the time per chunk once a chunk after the first, with the `each` setting),
    # with the same attributes (what the SDK copies, cleans and hashes).
    script = f"""
import asyncio, json, sys
from benchmarks import clients
from benchmarks.scenarios import build
spans, reader = clients.STARTUP[{runner!r}]()
results = asyncio.run(clients.RUNNERS[{runner!r}](sys.argv[1], 3, "token", build("token")))
assert all(isinstance(r, clients.Result) for r in results), results
collected = [
    metric
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
]
counts = {{m.name: sum(point.count for point in m.data.data_points) for m in collected}}
keys = {{
    m.name: sorted({{key for point in m.data.data_points for key in point.attributes}})
    for m in collected
}}
finished = spans.get_finished_spans()
print(json.dumps({{"spans": [s.name for s in finished], "metrics": counts,
                  "span_keys": sorted(finished[0].attributes), "metric_keys": keys}}))
"""
    server = LoadServer()
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, server.url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)
    assert recorded["spans"] == ["chat token"] * 3
    assert recorded["metrics"] == {
        "gen_ai.client.operation.duration": 3,
        "gen_ai.client.operation.time_to_first_chunk": 3,
        "gen_ai.client.operation.time_per_output_chunk": (
            3 * (build("token").chunk_count - 1) if runner == "asyncchat-otel-each" else 3
        ),
    }
    common = ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
              "server.address", "server.port"]  # fmt: skip
    answered = ["gen_ai.response.model", "openai.response.system_fingerprint"]
    assert recorded["span_keys"] == sorted(
        [*common, *answered, "openai.api.type", "gen_ai.request.stream", "gen_ai.response.id",
         "gen_ai.response.finish_reasons", "gen_ai.response.time_to_first_chunk"]
    )  # fmt: skip
    assert recorded["metric_keys"] == {
        "gen_ai.client.operation.duration": sorted([*common, *answered]),
        "gen_ai.client.operation.time_to_first_chunk": sorted(common),
        "gen_ai.client.operation.time_per_output_chunk": sorted(common),
    }


def test_the_paced_scenario_sends_each_event_on_its_own() -> None:
    """`paced`: a reader that keeps up gets the token stream's events one at a time,
    over at least the pauses between them (`BENCH_PACE` seconds each)."""
    script = """
import asyncio, sys, time
async def main(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"model": "paced"}'
    writer.write(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\n"
                 b"Content-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    started, reads, received = time.monotonic(), 0, b""
    while not received.endswith(b"0\\r\\n\\r\\n"):
        received += await reader.read(65536)
        reads += 1
    writer.close()
    print(reads, time.monotonic() - started, received.count(b"data: "))
asyncio.run(main(int(sys.argv[1])))
"""
    server = LoadServer({**os.environ, "BENCH_PACE": "0.01"})
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(server.port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    reads, seconds, events = result.stdout.split()
    assert int(events) == build("paced").chunk_count + 1  # and [DONE]
    assert float(seconds) >= 0.01 * build("paced").chunk_count
    assert int(reads) >= 20


def test_the_paced_scenario_is_counted_at_fewer_streams_unless_told() -> None:
    # Under valgrind a client keeps up with a model's pace only at a few streams.
    assert stream_counts("paced", None, None) == (4, 12)
    assert stream_counts("token", None, None) == (50, 250)
    assert stream_counts("paced", 2, None) == (2, 12)
    assert stream_counts("tools", 0, 5) == (0, 5)


def test_summary_medians_and_ratios() -> None:
    runs = [
        {
            "scenario": "token",
            "n": 10,
            "runner": runner,
            "ok": True,
            "cpu_us_per_chunk": cpu,
            "peak_rss_kib": 1000 + 10 * cpu,
        }
        for runner, cpu in [
            ("floor-parse", 4.0),
            ("floor-parse", 6.0),
            ("floor-parse", 5.0),
            ("asyncchat", 6.0),
            ("openai", 60.0),
        ]
    ] + [{"scenario": "token", "n": 10, "runner": "asyncchat", "ok": False, "error": "boom"}]
    rows = {row["runner"]: row for row in summarize(runs)}
    assert rows["floor-parse"]["cpu_us_per_chunk"] == 5.0
    assert rows["asyncchat"]["vs_floor"] == 6.0 / 5.0
    assert rows["asyncchat"]["sdk_vs_this"] == 10.0
    assert rows["asyncchat"]["ok_runs"] == 1
    assert memory_slopes(list(rows.values())) == []


def test_micro_benchmarks_run() -> None:
    decoders = decoder_benchmark(20_000, (1024,), repeat=1)
    mine = next(row for row in decoders if row["decoder"] == "asyncchat.sse")
    assert mine["mb_per_second"] > 0
    accumulators = accumulator_benchmark(50, repeat=1)
    assert accumulators[0]["us_per_chunk"] > 0


def _instructions(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_split_into_per_chunk_and_per_stream() -> None:
    """--split counts again on longer streams and splits a stream's count in two."""
    result = _instructions(
        "--runners", "floor-parse", "--scenarios", "token", "--small", "1", "--large", "3",
        "--split", "--scale", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    words = line.split()
    assert words[:2] == ["token", "floor-parse"]
    per_stream = float(words[2]) * 1e6
    per_chunk = float(words[words.index("=") + 1]) * 1e3
    fixed = float(words[words.index("+") + 1]) * 1e6
    # The longer streams were longer (a chunk costs a good part of its share of
    # a stream), and a stream costs something besides its chunks (the request).
    assert 0.2 * per_stream / 52 < per_chunk < per_stream / 52
    assert fixed > 0


def test_longer_streams_are_built_from_the_environment() -> None:
    code = (
        "from benchmarks.scenarios import build; "
        "print(*(build(s).chunk_count for s in ('token', 'bulk', 'tools')))"
    )

    def counts(scale: str) -> list[int]:
        output = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "BENCH_STREAM_SCALE": scale},
        ).stdout
        return [int(count) for count in output.split()]

    usual, longer = counts("1"), counts("3")
    assert usual[:2] == [52, 52] and longer[:2] == [152, 152]
    assert longer[2] > usual[2]


@pytest.mark.parametrize("scenario", ["token", "bulk", "tools"])
def test_every_chunk_step_gets_the_stream_back(scenario: str) -> None:
    stream = build(scenario)
    for step in STEPS:
        assert "".join(step_function(step)(stream.events)) == (stream.content or stream.arguments)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_chunk_steps_counted_under_valgrind() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.steps", "--scenarios", "token",
         "--small", "1", "--large", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["token", step] for step in STEPS]
    per_chunk = [float(row[2]) for row in rows]
    # Each step does all the one before it did, and more.
    assert all(0 < earlier < later for earlier, later in itertools.pairwise(per_chunk))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_chunk_steps_count_the_longer_streams_they_are_told_of() -> None:
    """With `BENCH_STREAM_SCALE` set, the counted processes build the longer streams
    whose chunks the count is divided by: a chunk costs what it costs on usual ones."""

    def floor_per_chunk(scale: str) -> float:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.steps", "--scenarios", "token",
             "--steps", "floor", "--small", "1", "--large", "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "BENCH_STREAM_SCALE": scale},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        [line] = result.stdout.splitlines()
        assert line.split()[:2] == ["token", "floor"]
        assert "+" not in line  # no step before it was counted
        return float(line.split()[2])

    usual, longer = floor_per_chunk("1"), floor_per_chunk("3")
    # Had the counted processes built the usual streams, this would be about 1/3.
    assert 0.8 < longer / usual < 1.25


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_under_valgrind_repeated_in_rounds() -> None:
    """Each runner counted in each round (--repeat), in order, then a median line
    each, the later runners with their ratio to the first."""
    result = _instructions(
        "--runners", "floor-raw", "floor-parse", "--scenarios", "bulk",
        "--small", "1", "--large", "2", "--repeat", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[:2] for line in lines] == [["bulk", "floor-raw"], ["bulk", "floor-parse"]] * 3
    counts = [float(line[2]) for line in lines[:4]]
    assert all(count > 0 for count in counts)
    raw, parse = lines[4:]
    assert raw[2] == parse[2] == "median"
    assert float(raw[3]) == pytest.approx(sum(counts[0::2]) / 2, abs=0.002)
    assert float(parse[3]) == pytest.approx(sum(counts[1::2]) / 2, abs=0.002)
    assert parse[9] == "floor-raw" and float(parse[8].rstrip("x")) > 1  # parsing costs more


def test_a_summary_gives_medians_and_ratios_to_the_first_runner_of_each_round() -> None:
    counts = {"off": [6.0e6, 6.2e6, 6.1e6], "on": [6.6e6, 6.5e6, 7.0e6]}
    off, on = summary_lines("paced", counts)
    assert off.split() == ["paced", "off", "median", "6.100", "M", "(6.000", "to", "6.200)"]
    # Paired by round: 1.100, 1.048 and 1.148, so the median is 1.100 (the ratio of
    # the medians, 6.6 / 6.1, would be 1.082).
    assert on.split() == [
        "paced", "on", "median", "6.600", "M", "(6.500", "to", "7.000)",
        "1.100x", "off", "(1.048x", "to", "1.148x)",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--repeat", "2", "--runners", "floor-raw", "floor-raw"], "name each runner once"),
    ],
)
def test_instruction_counts_refuse_a_repeat_they_cannot_summarize(
    arguments: list[str], message: str
) -> None:
    result = _instructions(*arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_instruction_counts_say_when_valgrind_is_missing(tmp_path: Path) -> None:
    result = _instructions(env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2
    assert "valgrind is not installed" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("otel", [False, True])
def test_agent_benchmark_runs(otel: bool) -> None:
    """benchmarks.agent: every loop gets the right answer from the mock server; with
    --otel, run_tools' tool calls are traced (a warm-up and 3 conversations, a call each)."""
    command = [sys.executable, "-m", "benchmarks.agent", "--conversations", "3", "--repeat", "1"]
    result = subprocess.run(
        command + ["--otel"] * otel, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    on = ", telemetry on" if otel else ""
    assert lines[0] == f"3 conversations of 2 turns, 10 at a time{on}"
    rows = {line[:38].strip(): line[38:].strip() for line in lines[2:7]}
    assert rows["asyncchat run_tools (streamed)"].isdigit()
    assert rows["asyncchat hand-written loop, stream()"].isdigit()
    if otel:
        assert lines[-1].endswith("spans recorded, 4 of them tool calls"), lines[-1]
    else:
        assert len(lines) == 7


@pytest.mark.slow
@pytest.mark.parametrize("storm", [False, True])
def test_shared_limit_benchmark_runs(storm: bool) -> None:
    """benchmarks.shared_limit: both modes run, against a real redis-server; with
    --server-rpm, the server's 429s are counted."""
    command = [sys.executable, "-m", "benchmarks.shared_limit"]
    command += ["--processes", "2", "--rpm", "1200", "--seconds", "2"]
    if storm:
        command += ["--server-rpm", "600"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("booking a request: ") and "µs mean" in lines[1]
    rows = lines[3:]
    expected = (
        ["shared (Redis)", "shared, fixed rate", "naive split"]
        if storm
        else ["shared (Redis)", "naive split, skewed"]
    )
    assert [row[:22].strip() for row in rows] == expected
    assert all(int(row[22:32]) > 0 for row in rows)
    too_many = [float(row.split()[-1]) for row in rows]
    assert all(share > 0 for share in too_many) if storm else too_many == [0.0, 0.0]


@pytest.mark.slow
def test_batch_api_benchmark_runs() -> None:
    """benchmarks.batch_api: both ways write every result (the benchmark checks the
    counts) and their rows are read off the kernel."""
    command = [sys.executable, "-m", "benchmarks.batch_api", "--requests", "300"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("300 requests, ")
    rows = {line[:18].strip(): line[18:].split() for line in lines[3:]}
    assert list(rows) == ["local runner", "--via batch-api"]
    assert all(float(cpu) > 0 and float(rss) > 0 for _, cpu, _, rss in rows.values())
