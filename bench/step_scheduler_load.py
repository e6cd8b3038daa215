"""AudioLDM2's step scheduler under closed-loop load, in-process: how close do jobs arriving one at a time come to
the rate of the same jobs handed over as one batch?

No HTTP, no front: the runner's scheduler on its model thread (bench/in_process.py `load_audioldm2`), tiny
profile, `bench/serving.py`'s generate mix (durations 2/5/10/5 s, DPM++). Per repeat:
- the ceiling: 8 jobs of the mix submitted at once, jobs per second;
- the closed loop: `--clients` threads, each submitting its next job when its previous one is answered, until
  `--requests` jobs are answered: jobs per second, its share of the ceiling's rate, the mean of each job's
  largest pass (jobs sharing one UNet pass) and the latency percentiles.
This is what `bench/serving.py` measures at c=8 with batching on, less the HTTP path: a gap here is the
scheduler's own (runners/step_scheduler.py).

    .venv/bin/python bench/step_scheduler_load.py     # ~3 min on 2 cores -> bench/results/step-scheduler-load.*
    .venv/bin/python bench/step_scheduler_load.py --clients 2 --requests 4 --repeats 1 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

from bench.common import DEFAULT_OUT, header, header_markdown, percentiles, write_report
from bench.in_process import load_audioldm2, timed
from bench.serving import BATCH, Mix, generation_job
from runners.audioldm2_in_process import InProcessScheduler
from schemas import GenerationJob


def ceiling(scheduled: InProcessScheduler, jobs: list[GenerationJob]) -> float:
    """Jobs per second for `jobs` submitted together (one intake batch)."""
    elapsed, _ = timed(lambda: scheduled.generate(jobs))
    return len(jobs) / elapsed


def closed_loop(scheduled: InProcessScheduler, jobs: list[GenerationJob], clients: int) -> dict[str, Any]:
    """Every job of `jobs`, sent by `clients` threads one at a time each."""
    order = itertools.count()
    latencies: list[float] = []
    largest_passes: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        while (i := next(order)) < len(jobs):
            started = time.perf_counter()
            [run] = scheduled.generate([jobs[i]])
            assert run.error is None, run.error
            with lock:
                latencies.append(time.perf_counter() - started)
                largest_passes.append(run.group_size)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "jobs_per_s": len(jobs) / elapsed,
        "mean_largest_pass": statistics.mean(largest_passes),
        "latency_ms": percentiles([1000 * s for s in latencies]),
    }


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    mix = Mix(steps=args.steps, max_new_tokens=16)
    scheduled = load_audioldm2()
    try:
        jobs = [generation_job(mix.generate_body(i)) for i in range(max(args.requests, BATCH))]
        for job in jobs[:2]:  # warm-up, not recorded
            scheduled.generate([job])
        rows = []
        for repeat in range(args.repeats):
            batch_rate = ceiling(scheduled, jobs[:BATCH])
            loop = closed_loop(scheduled, jobs[: args.requests], args.clients)
            rows.append({"repeat": repeat, "ceiling_jobs_per_s": batch_rate, **loop})
        return rows
    finally:
        scheduled.close()


def markdown(report: dict[str, Any]) -> str:
    lines = ["# AudioLDM2's step scheduler under closed-loop load (in-process)", "", *header_markdown(report), ""]
    lines += [
        f"- generate mix, {report['steps']} DPM++ steps; ceiling: {BATCH} jobs submitted at once; closed loop: "
        f"{report['clients']} clients, {report['requests']} jobs",
        "",
        "| repeat | ceiling jobs/s | closed loop jobs/s | share of the ceiling | mean largest pass | p50 ms | p95 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['repeat']} | {r['ceiling_jobs_per_s']:.2f} | {r['jobs_per_s']:.2f} "
            f"| {100 * r['jobs_per_s'] / r['ceiling_jobs_per_s']:.0f}% | {r['mean_largest_pass']:.2f} "
            f"| {r['latency_ms']['p50']:.0f} | {r['latency_ms']['p95']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    report = {
        **header(argv),
        **{name: getattr(args, name) for name in ("clients", "requests", "repeats", "steps")},
        "rows": measure(args),
    }
    write_report(args.out, "step-scheduler-load", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
