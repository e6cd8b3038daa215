"""Every benchmark's smoke form, end to end: the same code as the real run in seconds to a minute each, on the
tiny profile, so a benchmark that no longer runs fails the build as a failing test would (CI runs this after
the test suite).

Each runnable script in bench/ (a Python script with a `__main__` block, or a shell script) must have a row in
SMOKE, or in COVERED when another script's smoke form runs its own; one without fails the run, so a new benchmark
cannot be added without its smoke form. A script passes when it exits 0 and writes at least one report (.json
that parses) into the folder it is given.

    .venv/bin/python bench/smoke.py                 # all of them, ~N min on 2 cores
    .venv/bin/python bench/smoke.py serving soak    # some
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TIMEOUT_S = 600  # per script: a smoke form runs in about a minute (gpu.sh's, six parts, in a few); a hang fails

# script -> its smoke arguments (besides --out). The full runs and their figures: bench/README.md.
SMOKE: dict[str, list[str]] = {
    "access_cost.py": [
        *("--quick", "--warmup", "1", "--generate", "2", "--critique", "2", "--front-only", "5"),
        *("--retries", "0", "--quiet-wait-s", "0", "--configs", "plain,keys+tracing"),
    ],
    "compile.py": ["--smoke"],
    "critique_path.py": ["--requests", "3"],
    "decode_threads.py": ["--repeats", "1"],
    "edit.py": ["--smoke"],
    # Two warm-up requests leave the Music Flamingo runner short of its plateau (+9-10% RSS at 6572922 and now, against
    # the full run's 10%): the smoke allows what tests/test_edge_load.py allows a short run.
    "edge_load.py": ["--requests", "40", "--concurrency", "8", "--warmup", "2", "--memory-tolerance", "0.25"],
    "formats.py": ["--seconds", "1", "--repeats", "1"],
    "front_ab.py": ["--before", "HEAD", "--rounds", "2", "--warmup", "1"],
    "fullsize.py": ["--smoke", "--device", "cpu"],
    "gpu.sh": ["--dry-run"],  # every part of the GPU run on tiny models, so the script cannot rot without a GPU
    "gpu_wheels.py": ["--dry-run"],
    "host_work.py": ["--smoke"],
    "job_overhead.py": ["--pairs", "3"],
    "long_form.py": ["--smoke"],
    "memory.py": ["--smoke"],
    "openai_overhead.py": ["--pairs", "3"],
    "runner_cpu.py": ["--smoke"],
    "serving.py": ["--smoke"],
    "soak.py": ["--minutes", "0.2"],
    "step_scheduler_load.py": ["--clients", "2", "--requests", "4", "--repeats", "1", "--steps", "2"],
    "stream_critique.py": ["--smoke"],
    "studio.py": ["--quick"],
}

# script -> the script whose smoke form runs its smoke form (not run twice: each costs minutes on 2 cores)
COVERED = {"preset_memory.py": "gpu.sh"}  # gpu.sh --dry-run's presets part: preset_memory.py --smoke


def runnable_scripts() -> list[str]:
    """The scripts of bench/ that run on their own (a `__main__` block, or a shell script), this one aside."""
    python = (
        path.name
        for path in BENCH.glob("*.py")
        if path.name != "smoke.py" and 'if __name__ == "__main__":' in path.read_text()
    )
    return sorted([*python, *(path.name for path in BENCH.glob("*.sh"))])


def run_one(script: str, out: Path) -> tuple[bool, float, str]:
    """Run one smoke form in a session of its own; (passed, seconds, why not). On a timeout the whole session
    is killed: a benchmark's servers would outlive it otherwise."""
    started = time.monotonic()
    interpreter = "bash" if script.endswith(".sh") else sys.executable
    command = [interpreter, str(BENCH / script), *SMOKE[script], "--out", str(out)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return False, time.monotonic() - started, f"no end after {TIMEOUT_S} s"
    seconds = time.monotonic() - started
    if process.returncode != 0:
        return False, seconds, f"exit {process.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    reports = list(out.glob("*.json"))
    if not reports:
        return False, seconds, "wrote no report"
    for report in reports:
        try:
            json.loads(report.read_text())
        except json.JSONDecodeError as error:
            return False, seconds, f"{report.name} is not JSON: {error}"
    return True, seconds, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scripts", nargs="*", help="script names without .py, shell scripts with .sh (default: all)")
    args = parser.parse_args(argv)
    scripts = runnable_scripts()
    missing = [script for script in scripts if script not in SMOKE and script not in COVERED]
    if missing:
        print(f"bench scripts without a smoke form in bench/smoke.py: {', '.join(missing)}", file=sys.stderr)
        return 1
    named = [name if name.endswith(".sh") else f"{name}.py" for name in args.scripts]
    chosen = list(dict.fromkeys(COVERED.get(script, script) for script in named or scripts))
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        for script in chosen:
            passed, seconds, why = run_one(script, Path(tmp) / script.removesuffix(".py"))
            print(f"{'ok  ' if passed else 'FAIL'} {script:<18} {seconds:6.1f} s", flush=True)
            if not passed:
                failures += 1
                print(why, file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
