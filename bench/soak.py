"""Soak: mixed traffic for a long time against one `bentoml serve` (tiny profile), each process's RSS recorded as it
goes, to tell a leak (growth that goes on at the same pace) from warm-up (caches, allocator arenas, the first
request of each shape: growth that levels off).

Each round sends the edge-load mix (good and bad requests on every route, `bench/edge_load.py`) plus a few jobs
through the job API (submitted, followed to the end, their results fetched), then records each process's RSS.
The verdict compares the growth in the first and the last third of the run per process and per request.

    .venv/bin/python bench/soak.py --minutes 30                  # -> bench/results/soak.json, soak.md
    .venv/bin/python bench/soak.py --minutes 30 --glibc-default  # without MALLOC_MMAP_THRESHOLD_ (soak-glibc.*)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository

import httpx
import psutil

from bench.common import DEFAULT_OUT, header, header_markdown, write_report
from bench.edge_load import Clips, drive, make_mix, server_processes
from bench.served import serve

ROUND_REQUESTS = 60
JOBS_PER_ROUND = 4
CONCURRENCY = 8
JOB_TIMEOUT_S = 300
MIB = 2**20


def run_jobs(base: str, count: int, seed: int) -> int:
    """Submit `count` short generation jobs, follow each to its end, fetch each result; how many succeeded."""
    succeeded = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        ids = [
            client.post("/jobs/generate", json={"prompt": "soak", "duration": 1, "steps": 3, "seed": seed + i}).json()[
                "id"
            ]
            for i in range(count)
        ]
        for job_id in ids:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline:
                state = client.get(f"/jobs/{job_id}").json()["state"]
                if state in {"succeeded", "failed", "cancelled"}:
                    break
                time.sleep(0.2)
            if state == "succeeded" and client.get(f"/jobs/{job_id}/result").status_code == 200:
                succeeded += 1
    return succeeded


def rss_mib(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: round(process.memory_info().rss / MIB, 1) for role, process in processes.items()}


def soak(base: str, processes: dict[str, psutil.Process], minutes: float, log: Any) -> dict[str, Any]:
    clips = Clips()
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    sent = 0
    index = 0
    rounds.append({"t_s": 0.0, "requests": 0, "rss_mib": rss_mib(processes)})
    while time.monotonic() - started < minutes * 60:
        outcomes, _ = drive(base, make_mix(ROUND_REQUESTS, seed=index), CONCURRENCY, clips)
        jobs_ok = run_jobs(base, JOBS_PER_ROUND, seed=10_000 * index)
        sent += len(outcomes) + 3 * JOBS_PER_ROUND  # submit, status (at least once), result
        index += 1
        point = {
            "t_s": round(time.monotonic() - started, 1),
            "requests": sent,
            "transport_errors": sum(o.status == 0 for o in outcomes),
            "server_errors": sum(o.status >= 500 and o.status != 503 for o in outcomes),
            "jobs_succeeded": jobs_ok,
            "rss_mib": rss_mib(processes),
        }
        rounds.append(point)
        log(f"round {index}: {sent} requests, RSS {point['rss_mib']}")
    return {"rounds": rounds, "verdict": verdict(rounds)}


def verdict(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process: MiB gained in the first and in the last third of the run, and per 1,000 requests in each."""
    third = max(1, len(rounds) // 3)
    first, last = rounds[: third + 1], rounds[-third - 1 :]
    out: dict[str, dict[str, float]] = {}
    for role in rounds[0]["rss_mib"]:

        def growth(part: list[dict[str, Any]], role: str = role) -> tuple[float, float]:
            gained = part[-1]["rss_mib"][role] - part[0]["rss_mib"][role]
            requests = max(1, part[-1]["requests"] - part[0]["requests"])
            return round(gained, 1), round(1000 * gained / requests, 2)

        (first_mib, first_per_k), (last_mib, last_per_k) = growth(first), growth(last)
        out[role] = {
            "start_mib": rounds[0]["rss_mib"][role],
            "end_mib": rounds[-1]["rss_mib"][role],
            "first_third_mib": first_mib,
            "first_third_mib_per_1000_requests": first_per_k,
            "last_third_mib": last_mib,
            "last_third_mib_per_1000_requests": last_per_k,
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Soak: RSS per process under mixed traffic", "", *header_markdown(report), ""]
    lines += [f"- allocator: {report['allocator']}", f"- minutes: {report['minutes']}", ""]
    lines += [
        "| process | start MiB | end MiB | first third: MiB (per 1k requests) | last third: MiB (per 1k requests) |",
        "|---|---|---|---|---|",
    ]
    for role, v in report["verdict"].items():
        lines.append(
            f"| {role} | {v['start_mib']} | {v['end_mib']} | {v['first_third_mib']} "
            f"({v['first_third_mib_per_1000_requests']}) | {v['last_third_mib']} "
            f"({v['last_third_mib_per_1000_requests']}) |"
        )
    roles = list(report["rounds"][0]["rss_mib"])
    lines += ["", "RSS (MiB) after each round:", "", "| t (s) | requests | " + " | ".join(roles) + " |"]
    lines.append("|---|---|" + "---|" * len(roles))
    for point in report["rounds"]:
        lines.append(
            f"| {point['t_s']} | {point['requests']} | " + " | ".join(str(point["rss_mib"][r]) for r in roles) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--glibc-default", action="store_true", help="run without MALLOC_MMAP_THRESHOLD_ (as a plain local serve)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    report: dict[str, Any] = header(None if argv is None else ["bench/soak.py", *argv])
    report["minutes"] = args.minutes
    report["allocator"] = "glibc default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=65536 (as the image)"
    with (
        tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
        serve(Path(tmp), glibc_default=args.glibc_default) as server,
    ):
        log(f"ready at {server.url}")
        report |= soak(server.url, server_processes(server.process.pid), args.minutes, log)
    name = "soak-glibc" if args.glibc_default else "soak"
    write_report(args.out, name, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
