"""`python -m benchmarks`: every client against one load server, side by side.

Each (scenario, N, runner) is a fresh client process; runners are interleaved
and the order rotates every repeat, so machine drift hits all of them alike.
The table shows medians over the repeats, with each runner's CPU per chunk as a
ratio to the "floor-parse" runner and to the official SDK.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.clients import REQUIREMENTS, RUNNERS
from benchmarks.micro import accumulator_benchmark, decoder_benchmark
from benchmarks.scenarios import SCENARIOS

# The runners that face 10,000 streams; the others stop at 1,000 unless
# --all-at-max is given (the official SDK would take minutes there).
MAX_N_RUNNERS = ("asyncchat", "floor-parse")
FLOOR = "floor-parse"
SDK = "openai"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[1, 100, 1000, 10000],
        help="concurrent streams (default: 1 100 1000 10000)",
    )
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cell (median kept)")
    parser.add_argument(
        "--repeat-single",
        action="store_true",
        help="repeat the N=1 cells too (by default they run once)",
    )
    parser.add_argument(
        "--max-n-repeat",
        type=int,
        default=1,
        help="runs of each cell at the largest N when it is over 1000 (10,000 streams take long)",
    )
    parser.add_argument(
        "--all-at-max",
        action="store_true",
        help="run every runner at the largest N, not only asyncchat and floors",
    )
    parser.add_argument(
        "--micro-size",
        type=int,
        default=10 * 1024 * 1024,
        help="bytes for the decoder micro-benchmark (0 to skip micro-benchmarks)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def _available(runner: str) -> str | None:
    """None if the runner can run here, else why not."""
    for module in REQUIREMENTS.get(runner, ()):
        try:
            __import__(module)
        except ImportError:
            return f"not installed: {module} (pip install '.[bench]')"
    return None


class LoadServer:
    """The load server in its own process."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.load_server", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the load server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/stats")
            stats: dict[str, Any] = json.loads(connection.getresponse().read())
            return stats
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _run_client(
    server: LoadServer, runner: str, n: int, scenario: str, timeout: float
) -> dict[str, Any]:
    before = server.stats()
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.clients", runner, server.url, str(n), scenario],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        result: dict[str, Any] = {"ok": False, "error": f"timed out after {timeout}s"}
    else:
        if completed.returncode == 0 and completed.stdout.strip():
            result = json.loads(completed.stdout.strip().splitlines()[-1])
        else:
            tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
            result = {"ok": False, "error": f"exit {completed.returncode}: {tail[0][:300]}"}
    after = server.stats()
    result.update(runner=runner, scenario=scenario, n=n)
    # Less one: the connection that asked for the second stats.
    result["connections_opened"] = after["connections"] - before["connections"] - 1
    chunks = result.get("chunks") or 0
    server_cpu = after["cpu_seconds"] - before["cpu_seconds"]
    result["server_cpu_us_per_chunk"] = server_cpu / chunks * 1e6 if chunks else None
    return result


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, n, runner): medians of the runs that succeeded."""
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["scenario"], run["n"], run["runner"]), []).append(run)
    rows = []
    for (scenario, n, runner), cell in cells.items():
        good = [run for run in cell if run.get("ok")]
        row: dict[str, Any] = {
            "scenario": scenario,
            "n": n,
            "runner": runner,
            "runs": len(cell),
            "ok_runs": len(good),
        }
        if not good:
            row["error"] = cell[0].get("error") or "wrong results"
        for key in (
            "cpu_us_per_chunk",
            "wall_seconds",
            "chunks_per_second",
            "ttft_median_ms",
            "ttft_p99_ms",
            "peak_rss_kib",
            "connections_opened",
            "server_cpu_us_per_chunk",
        ):
            row[key] = _median([run.get(key) for run in good])
        rows.append(row)
    by_cell = {(r["scenario"], r["n"], r["runner"]): r for r in rows}
    for row in rows:
        cpu = row["cpu_us_per_chunk"]
        for name, reference in (("vs_floor", FLOOR), ("sdk_vs_this", SDK)):
            other = by_cell.get((row["scenario"], row["n"], reference), {}).get("cpu_us_per_chunk")
            if cpu and other:
                row[name] = cpu / other if name == "vs_floor" else other / cpu
    return rows


def memory_slopes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KiB of peak RSS per additional stream, between the two largest N each runner ran."""
    slopes = []
    for scenario in sorted({row["scenario"] for row in rows}):
        for runner in RUNNERS:
            points = sorted(
                (row["n"], row["peak_rss_kib"])
                for row in rows
                if row["scenario"] == scenario and row["runner"] == runner and row["peak_rss_kib"]
            )
            if len(points) >= 2:
                (n1, rss1), (n2, rss2) = points[-2], points[-1]
                slopes.append(
                    {
                        "scenario": scenario,
                        "runner": runner,
                        "from_n": n1,
                        "to_n": n2,
                        "kib_per_stream": (rss2 - rss1) / (n2 - n1),
                    }
                )
    return slopes


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        "scenario",
        "N",
        "runner",
        "CPU µs/chunk",
        "x floor",
        "SDK/x",
        "wall s",
        "chunks/s",
        "TTFT med ms",
        "TTFT p99 ms",
        "peak RSS MiB",
        "conns",
        "srv µs/chunk",
    )
    lines = [header]
    for row in sorted(
        rows, key=lambda r: (r["scenario"], r["n"], list(RUNNERS).index(r["runner"]))
    ):
        if row.get("error"):
            lines.append(
                (
                    row["scenario"],
                    str(row["n"]),
                    row["runner"],
                    "FAILED: " + row["error"][:60],
                    *[""] * 9,
                )
            )
            continue
        lines.append(
            (
                row["scenario"],
                str(row["n"]),
                row["runner"],
                _fmt(row["cpu_us_per_chunk"]),
                _fmt(row.get("vs_floor"), 2),
                _fmt(row.get("sdk_vs_this"), 1),
                _fmt(row["wall_seconds"], 2),
                _fmt(row["chunks_per_second"], 0),
                _fmt(row["ttft_median_ms"]),
                _fmt(row["ttft_p99_ms"]),
                _fmt(row["peak_rss_kib"] / 1024 if row["peak_rss_kib"] else None),
                _fmt(row["connections_opened"]),
                _fmt(row["server_cpu_us_per_chunk"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """CPU µs per chunk by N, one panel per scenario; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = sorted({row["scenario"] for row in rows})
    figure, axes = plt.subplots(
        1, len(scenarios), figsize=(5.5 * len(scenarios), 4.5), squeeze=False
    )
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        for color, runner in enumerate(RUNNERS):
            points = sorted(
                (r["n"], r["cpu_us_per_chunk"])
                for r in rows
                if r["scenario"] == scenario and r["runner"] == runner and r["cpu_us_per_chunk"]
            )
            if points:
                style = "-" if runner.startswith("asyncchat") else "--"
                axis.plot(
                    *zip(*points, strict=True), style, marker="o", label=runner, color=f"C{color}"
                )  # the same color for a runner in every panel
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{scenario} streams")
        axis.set_xlabel("concurrent streams (N)")
        axis.set_ylabel("client CPU µs per chunk")
        axis.grid(True, which="both", alpha=0.3)
    # One legend for every runner (the tool-call panel has no stream_text line).
    handles = {}
    for axis in axes[0]:
        handles.update(zip(*reversed(axis.get_legend_handles_labels()), strict=True))
    ordered = [name for name in RUNNERS if name in handles]
    axes[0][-1].legend(
        [handles[name] for name in ordered],
        ordered,
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runners = []
    skipped = {}
    for runner in args.runners:
        reason = _available(runner)
        if reason:
            skipped[runner] = reason
        else:
            runners.append(runner)
    for runner, reason in skipped.items():
        print(f"skipping {runner}: {reason}", file=sys.stderr)
    largest = max(args.n)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    server = LoadServer()
    try:
        for repeat in range(args.repeat):
            for scenario in args.scenarios:
                for n in sorted(args.n):
                    order = runners[repeat % len(runners) :] + runners[: repeat % len(runners)]
                    for runner in order:
                        if scenario == "tools" and runner == "asyncchat-text":
                            continue  # text only: nothing to check in a tool-call stream
                        if n == 1 and repeat > 0 and not args.repeat_single:
                            continue  # one stream is a smoke check: its CPU is mostly startup
                        if (
                            n == largest
                            and n > 1000
                            and (
                                repeat >= args.max_n_repeat
                                or (not args.all_at_max and runner not in MAX_N_RUNNERS)
                            )
                        ):
                            continue
                        result = _run_client(server, runner, n, scenario, args.timeout)
                        runs.append(result)
                        status = "ok" if result.get("ok") else f"FAILED {result.get('error')}"
                        print(
                            f"[{time.perf_counter() - started:6.0f}s] repeat {repeat + 1} "
                            f"{scenario:6} N={n:<6} {runner:17} "
                            f"{_fmt(result.get('cpu_us_per_chunk'))} µs/chunk {status}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        server.stop()
    rows = summarize(runs)
    slopes = memory_slopes(rows)
    print()
    print_table(rows)
    if slopes:
        print("\nPeak RSS per additional stream (KiB):")
        for slope in slopes:
            print(
                f"  {slope['scenario']:6} {slope['runner']:17} N {slope['from_n']} -> "
                f"{slope['to_n']}: {slope['kib_per_stream']:.1f}"
            )
    micro: dict[str, Any] = {}
    if args.micro_size:
        micro["decoder"] = decoder_benchmark(args.micro_size, (1024, 64 * 1024), repeat=3)
        micro["accumulator"] = accumulator_benchmark(2000, repeat=5)
        print("\nSSE decoders, the same byte stream in the same pieces:")
        for row in micro["decoder"]:
            result = row.get("skipped") or (
                f"{row['mb_per_second']:7.1f} MB/s  {row['us_per_event']:6.2f} µs/event"
            )
            print(f"  {row['decoder']:20} {row['piece_bytes'] // 1024:3} KiB pieces  {result}")
        print("\nAccumulators, one tool call in 2,000 four-character fragments:")
        for row in micro["accumulator"]:
            result = row.get("skipped") or f"{row['us_per_chunk']:6.2f} µs/chunk"
            print(f"  {row['accumulator']:36} {result}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "arguments": {key: str(value) for key, value in vars(args).items()},
        "skipped": skipped,
        "runs": runs,
        "summary": rows,
        "memory": slopes,
        "micro": micro,
        "seconds": time.perf_counter() - started,
    }
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {json_path}")
    if not args.no_plot:
        png_path = args.out / "cpu_per_chunk.png"
        if plot(rows, png_path):
            print(f"plot: {png_path}")
        else:
            print("plot skipped: matplotlib is not installed (pip install '.[bench]')")
    failed = [row for row in rows if row.get("error")]
    return 1 if any(row["runner"].startswith("asyncchat") for row in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
