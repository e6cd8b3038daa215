"""Job overhead: what a job costs over the synchronous call for the same short generate, on the tiny profile.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py, SQLite job store) and, after a warm-up,
sends the same short generate (a 1 s clip in 2 DPM++ steps) in pairs, one at a time over one persistent
httpx.Client, alternating which of the pair goes first:

- `synchronous`: POST /generate, timed from send to the full WAV read;
- `job`: POST /jobs/generate, then the job's event stream (`GET /jobs/{id}/events`) until the final status,
  then GET /jobs/{id}/result; timed from the submit's send to the full WAV read, with each part timed too.

Both of a pair carry the same seed and must give the same bytes (checked). Reported: medians, p90, the
paired median difference, and where the job's extra time goes (submit, wait for the final event, result).
The event stream wakes when the front saves the job (a change made on another replica would be seen within
jobs/manager.py's EVENT_POLL_S, 0.25 s); before it did, the store poll alone added 0.16 s at the median.

    .venv/bin/python bench/job_overhead.py            # 40 pairs, ~2 min on 2 cores
    .venv/bin/python bench/job_overhead.py --pairs 3  # a smoke test of the same code
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

import httpx
import numpy as np

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.served import serve

TIMEOUT_S = 300
WARMUP = 14  # BentoML's dispatcher fits its latency model over its first 11 calls per runner (bench/serving.py)
BODY = {"prompt": "a door creaks open", "duration": 1, "steps": 2}


def synchronous(client: httpx.Client, seed: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.post("/generate", json={**BODY, "seed": seed})
    response.raise_for_status()
    return time.perf_counter() - started, response.content


def as_job(client: httpx.Client, seed: int) -> tuple[dict[str, float], bytes]:
    """Submit, follow the events to the final status, fetch the result: the client path docs/jobs.md shows."""
    started = time.perf_counter()
    submitted = client.post("/jobs/generate", json={**BODY, "seed": seed})
    if submitted.status_code != 202:
        raise RuntimeError(f"submit answered {submitted.status_code}: {submitted.text}")
    job_id = submitted.json()["id"]
    accepted = time.perf_counter()
    final: dict[str, Any] = {}
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                final = json.loads(line.removeprefix("data: "))
    if final.get("state") != "succeeded":
        raise RuntimeError(f"job {job_id} ended {final}")
    ended = time.perf_counter()
    response = client.get(f"/jobs/{job_id}/result")
    response.raise_for_status()
    done = time.perf_counter()
    parts = {"submit_s": accepted - started, "events_s": ended - accepted, "result_s": done - ended}
    return {"total_s": done - started, **parts}, response.content


def measure(url: str, pairs: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for seed in range(WARMUP):
            synchronous(client, seed)
            as_job(client, seed)
        sync_s: list[float] = []
        jobs: list[dict[str, float]] = []
        for i in range(pairs):
            seed = 1000 + i
            if i % 2:
                job, job_audio = as_job(client, seed)
                took, sync_audio = synchronous(client, seed)
            else:
                took, sync_audio = synchronous(client, seed)
                job, job_audio = as_job(client, seed)
            if job_audio != sync_audio:
                raise RuntimeError(f"seed {seed}: the job's WAV differs from the synchronous one")
            sync_s.append(took)
            jobs.append(job)
    job_s = [j["total_s"] for j in jobs]
    return {
        "pairs": pairs,
        "synchronous_s": sync_s,
        "job": jobs,
        "summary_ms": {
            "synchronous_p50": 1000 * statistics.median(sync_s),
            "synchronous_p90": 1000 * float(np.percentile(sync_s, 90)),
            "job_p50": 1000 * statistics.median(job_s),
            "job_p90": 1000 * float(np.percentile(job_s, 90)),
            "paired_median_difference": 1000 * statistics.median(j - s for j, s in zip(job_s, sync_s, strict=True)),
            **{
                f"job_{part}_p50": 1000 * statistics.median(j[f"{part}_s"] for j in jobs)
                for part in ("submit", "events", "result")
            },
        },
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["summary_ms"]
    lines = [
        "# Job overhead (tiny profile)",
        "",
        *header_markdown(report),
        "",
        f"- request: POST /generate vs POST /jobs/generate + events + result, body {json.dumps(BODY)} with a "
        f"seed per pair; {report['pairs']} pairs one at a time, order alternating, same bytes checked",
        "",
        "| path | p50 ms | p90 ms |",
        "|---|---:|---:|",
        f"| synchronous | {fmt(s['synchronous_p50'], 1)} | {fmt(s['synchronous_p90'], 1)} |",
        f"| job (submit, events to the final status, result) | {fmt(s['job_p50'], 1)} | {fmt(s['job_p90'], 1)} |",
        "",
        f"- paired median difference (job - synchronous): {fmt(s['paired_median_difference'], 1)} ms",
        f"- the job's parts (p50): submit {fmt(s['job_submit_p50'], 1)} ms, events until the final status "
        f"{fmt(s['job_events_p50'], 1)} ms, result {fmt(s['job_result_p50'], 1)} ms",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for job-overhead.json and .md")
    args = parser.parse_args()
    report = header()
    with tempfile.TemporaryDirectory() as workdir, serve(Path(workdir)) as server:
        report.update(measure(server.url, args.pairs))
    write_report(args.out, "job-overhead", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
