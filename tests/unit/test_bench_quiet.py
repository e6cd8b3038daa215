"""The benchmarks' wait for a quiet machine (bench/access_cost.py, used by studio.py too) waits for a pytest beside
them, not for the shell that launched them: the README's test command runs pytest, then bench/smoke.py, from one
shell line that says "pytest" for as long as the smoke forms run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASK = "from bench.access_cost import pytest_running; print(pytest_running())"


def asked_from(shell_line: str) -> str:
    done = subprocess.run(["bash", "-c", shell_line], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_shell_that_ran_pytest_before_is_not_a_pytest_beside() -> None:
    # This test's own pytest is an ancestor too; the shell line names pytest as the README's command does.
    assert asked_from(f": pytest; {sys.executable} -c '{ASK}'") == "False"


def test_a_pytest_beside_is_seen() -> None:
    beside = subprocess.Popen(["bash", "-c", "sleep 30; true", "pytest-beside"])  # "; true": bash stays
    try:
        assert asked_from(f"{sys.executable} -c '{ASK}'") == "True"
    finally:
        beside.kill()
        beside.wait()
