"""The sdist is complete: it carries the license and the tests, and its tests run."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_sdist_runs_its_own_tests(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "deprecat" not in (built.stdout + built.stderr).lower()
    (sdist,) = tmp_path.glob("asyncchat-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path, filter="data")
    for expected in (
        "LICENSE",
        "README.md",
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/test_sse.py",
        "examples/requests.jsonl",
        "asyncchat/py.typed",
    ):
        assert expected in names
    unpacked = tmp_path / sdist.name.removesuffix(".tar.gz")
    metadata = (unpacked / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sse.py"],
        cwd=unpacked,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout


# The extras a user installs; the others (test, dev, bench) are for working on asyncchat.
USER_EXTRAS = {"structured", "otel", "redis", "ray"}


def stated_floors() -> dict[str, tuple[str, set[str | None]]]:
    """Each requirement's `>=` floor and the extras that ask for it (None: a run-time
    dependency), from the installed package's metadata (made from pyproject.toml)."""
    floors: dict[str, tuple[str, set[str | None]]] = {}
    for requirement in importlib.metadata.requires("asyncchat") or []:
        stated = re.match(r"([\w.-]+)(?:\[[\w,]+\])?>=([\w.]+)", requirement)
        if stated is None:
            continue
        name, floor = stated[1], stated[2]
        extra = re.search(r'extra == "(\w+)"', requirement)
        floor_before, extras = floors.setdefault(name, (floor, set()))
        assert floor == floor_before, f"{name}: >={floor} in one place, >={floor_before} in another"
        extras.add(extra[1] if extra else None)
    return floors


def same_version(a: str, b: str) -> bool:
    """Whether two versions are one: 2.0 and 2 are."""
    return re.sub(r"(\.0)+$", "", a) == re.sub(r"(\.0)+$", "", b)


def test_ci_tests_the_oldest_version_of_each_dependency_a_user_installs() -> None:
    """`make test-oldest` runs the suite on .ci/oldest-versions.txt: a floor stated in
    pyproject.toml and not pinned there would be a floor no test has seen."""
    pinned = dict(
        line.split("==")
        for line in (ROOT / ".ci" / "oldest-versions.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    floors = stated_floors()
    for name, (floor, extras) in floors.items():
        if extras & (USER_EXTRAS | {None}):
            assert name in pinned, f"{name}>={floor} is not pinned in .ci/oldest-versions.txt"
    for name, version in pinned.items():
        assert name in floors, f"{name} is pinned in .ci/oldest-versions.txt, not required"
        floor = floors[name][0]
        assert same_version(version, floor), f"{name}: {version} pinned, >={floor} required"


def test_ci_runs_the_oldest_and_newest_python_the_package_declares() -> None:
    """.ci/run's oldest and newest Pythons are requires-python's floor and the newest
    classifier, and the oldest dependencies run on the oldest Python: a supported
    version CI never runs is a promise no test keeps."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    floor = re.search(r'^requires-python = ">=3\.(\d+)"', pyproject, re.M)
    classified = [int(minor) for minor in re.findall(r'Python :: 3\.(\d+)"', pyproject)]
    oldest = re.search(r"^oldest=3\.(\d+)\.\d+$", ci, re.M)
    newest = re.search(r"^newest=3\.(\d+)\.\d+$", ci, re.M)
    assert floor and oldest and newest and classified
    assert int(oldest[1]) == int(floor[1]) == min(classified)
    assert int(newest[1]) == max(classified)
    assert 'python="$(pyenv_python $oldest)"\nmake test-oldest PYTHON="$python"' in ci
