"""The benchmark scripts (``make bench``) keep up with the library: each imports and parses its
options, and those that take ``--out`` run end to end on tiny data (their numbers are not checked
here; speed is measured by ``make bench``, not by tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)


def test_every_benchmark_is_found():
    assert {s.stem for s in SCRIPTS} >= {"bench_pitfalls", "bench_training", "bench_metrics", "bench_bootstrap",
                                         "bench_audit", "bench_volumes", "bench_cluster"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.stem)
def test_benchmark_imports_and_parses_its_options(script):
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


@pytest.mark.parametrize("script, args, name", [
    ("bench_metrics", ["--pixels", "2e4", "--volumes", "4", "--skip-slow"], "metrics"),
    ("bench_bootstrap", ["--pixels", "2e4", "--cases", "6", "--resamples", "20", "--check-pixels", "1e4",
                         "--coverage-sets", "3", "--skip-evaluate"], "bootstrap"),
])
def test_benchmark_runs_on_tiny_data(script, args, name, tmp_path):
    done = run(BENCHMARKS / f"{script}.py", *args, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    assert json.loads((tmp_path / f"{name}.json").read_text())
