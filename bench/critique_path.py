"""Where one critique's time goes on the HTTP path, per kind of request, and what receiving an upload costs the front.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py), tiny profile, tracing every request to a local
OTLP receiver, and after a warm-up sends, one at a time:
- `clip`: POST /critique with a 30 s 44.1 kHz stereo WAV (5.3 MB), preset `feedback`, 16 greedy tokens;
- `text`: POST /critique with a question and no audio, 16 greedy tokens.
For each kind: the client's p50, and the median start and end of every span (front and runner) from the request's
start, so the gaps between spans show as well as the spans. `bench/serving.py` mixes both kinds in one median.

Then, on a second server that does not trace:
- each kind's client p50 again, untraced;
- `upload`: the clip's request with `max_new_tokens` out of range, answered 400 once the form is parsed and
  validated, so it costs the HTTP path and the form parser alone: the client's p50 and the front process's CPU
  time per request (psutil, over all of them).

Last, `in-process`: the same jobs through Music Flamingo's engine in a spawned process that holds that model alone,
loaded and run on one model thread as its runner does (bench/in_process.py). Overhead per kind = the untraced
client p50 minus this p50.

    .venv/bin/python bench/critique_path.py                  # 30 requests per kind, ~2 min on 2 cores
    .venv/bin/python bench/critique_path.py --requests 3     # the smoke form
"""

from __future__ import annotations

import argparse
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
import psutil

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.in_process import Flamingo, alone, critique_job, timed
from bench.served import Server, serve
from tests.audio_files import audio_file
from tests.otlp_receiver import OTLPReceiver

TIMEOUT_S = 300
WARMUP = 14  # BentoML's dispatcher fits its latency model over its first 11 calls per runner (bench/serving.py)
CLIP_SECONDS = 30.0
KINDS: dict[str, dict[str, str]] = {
    "clip": {"preset": "feedback", "max_new_tokens": "16", "seed": "1"},
    "text": {"prompt": "What key is this in?", "max_new_tokens": "16", "seed": "1"},
}
# The clip's request with `max_new_tokens` out of range: answered 400 once the form is parsed, so it costs the HTTP
# path and the form parser alone (also bench/front_ab.py's `upload`).
UPLOAD_ONLY = {**KINDS["clip"], "max_new_tokens": "999999"}


def timeline(receiver: OTLPReceiver, trace_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per span name (`service: name`): median start and end in ms from its trace's first span, and how many."""
    receiver.settled_count()
    seen: dict[str, list[tuple[float, float]]] = {}
    for trace_id in trace_ids:
        spans = receiver.trace(trace_id)
        origin = min(span.start_ns for span in spans)
        for span in spans:
            seen.setdefault(f"{span.service}: {span.name}", []).append(
                ((span.start_ns - origin) / 1e6, (span.end_ns - origin) / 1e6)
            )
    rows = {
        name: {
            "start_ms": statistics.median(s for s, _ in times),
            "end_ms": statistics.median(e for _, e in times),
            "count": len(times),
        }
        for name, times in seen.items()
    }
    return dict(sorted(rows.items(), key=lambda item: (item[1]["start_ms"], -item[1]["end_ms"])))


def front_process(server: Server) -> psutil.Process:
    [front] = [w for w in server.workers if "--service-name audio-studio" in " ".join(w.cmdline())]
    return front


def send_each_kind(server: Server, clip: bytes, requests: int) -> dict[str, tuple[list[float], list[str]]]:
    """Per kind, after a warm-up, `requests` sent one at a time: their client latencies (ms) and trace ids."""
    sent = {}
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        for kind, form in KINDS.items():
            send = {"data": form, "files": {"audio": ("clip.wav", clip, "audio/wav")} if kind == "clip" else None}
            for _ in range(WARMUP):
                client.post("/critique", **send).raise_for_status()
            latencies, trace_ids = [], []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.post("/critique", **send)
                latencies.append(1000 * (time.perf_counter() - started))
                response.raise_for_status()
                trace_ids.append(response.headers.get("x-trace-id", ""))
            sent[kind] = (latencies, trace_ids)
    return sent


def measure(server: Server, receiver: OTLPReceiver, clip: bytes, requests: int) -> dict[str, Any]:
    """Each kind's client p50 and span timeline on the traced server."""
    return {
        kind: {"client_p50_ms": statistics.median(latencies), "spans": timeline(receiver, trace_ids)}
        for kind, (latencies, trace_ids) in send_each_kind(server, clip, requests).items()
    }


def client_p50s(server: Server, clip: bytes, requests: int) -> dict[str, float]:
    """Each kind's client p50 on the untraced server."""
    sent = send_each_kind(server, clip, requests)
    return {kind: statistics.median(latencies) for kind, (latencies, _) in sent.items()}


def in_process_p50s(clip: bytes, requests: int) -> dict[str, float]:
    """Each kind's job through Music Flamingo's engine on its model thread, in a process of its own
    (bench/in_process.py). The job is the one the front sends for the same form."""
    flamingo = Flamingo()
    clips = {"clip": [flamingo.decoded(clip)], "text": []}
    p50s = {}
    for kind, form in KINDS.items():
        job = critique_job(form, clips[kind])
        for _ in range(3):
            timed(lambda job=job: flamingo.run([job]))
        p50s[kind] = 1000 * statistics.median(timed(lambda job=job: flamingo.run([job]))[0] for _ in range(requests))
    return p50s


def measure_upload(server: Server, clip: bytes, requests: int) -> dict[str, Any]:
    """The clip's request refused once its form is parsed, on a server that does not trace: the front's CPU time
    then holds nothing but these requests."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        refused = client.build_request("POST", "/critique", data=UPLOAD_ONLY, files={"audio": ("c.wav", clip)})
        body, headers = b"".join(refused.stream), dict(refused.headers)
        for _ in range(WARMUP):
            client.post("/critique", content=body, headers=headers)
        front = front_process(server)
        cpu_before, latencies = front.cpu_times(), []
        for _ in range(max(requests, 5)):
            started = time.perf_counter()
            response = client.post("/critique", content=body, headers=headers)
            latencies.append(1000 * (time.perf_counter() - started))
            if response.status_code != 400:
                raise RuntimeError(f"expected a 400 after the parse, got {response.status_code}: {response.text[:300]}")
        cpu_after = front.cpu_times()
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "client_p50_ms": statistics.median(latencies),
        "front_cpu_ms_per_request": 1000 * cpu_s / len(latencies),
        "bytes": len(body),
    }


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    lines = ["# Where a critique's time goes (tiny profile, one request at a time)", "", *header_markdown(report), ""]
    lines += [
        f"- `clip`: a {report['clip_s']:g} s 44.1 kHz stereo WAV ({report['clip_bytes'] / 1e6:.1f} MB), "
        "preset feedback; "
        "`text`: a question, no audio; both 16 greedy tokens; "
        f"{report['requests']} requests per kind after {WARMUP} warm-up requests",
        "",
    ]
    for kind in KINDS:
        lines += [
            f"## {kind}: client p50 {fmt(results[kind]['client_p50_ms'], 1)} ms",
            "",
            "| span (service: name) | start ms | end ms | spans |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {fmt(row['start_ms'], 1)} | {fmt(row['end_ms'], 1)} | {row['count']} |"
                for name, row in results[kind]["spans"].items()
            ),
            "",
        ]
    lines += [
        "## The HTTP path against the same job in-process (Music Flamingo alone in its process, on one thread)",
        "",
        "| kind | HTTP p50 ms (untraced) | in-process p50 ms | overhead ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {kind} | {fmt(results['untraced_client_p50_ms'][kind], 1)} | "
            f"{fmt(results['in_process_p50_ms'][kind], 1)} | {fmt(results['overhead_ms'][kind], 1)} |"
            for kind in KINDS
        ),
        "",
    ]
    upload = results["upload"]
    lines += [
        "## Receiving the clip's upload (answered 400 once the form is parsed)",
        "",
        f"- body {upload['bytes'] / 1e6:.1f} MB: client p50 {fmt(upload['client_p50_ms'], 1)} ms, front CPU "
        f"{fmt(upload['front_cpu_ms_per_request'], 1)} ms per request",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="requests per kind")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for critique-path.json and .md")
    args = parser.parse_args()
    report = header()
    clip = audio_file("wav", CLIP_SECONDS)
    report |= {"requests": args.requests, "clip_s": CLIP_SECONDS, "clip_bytes": len(clip)}
    with OTLPReceiver() as receiver, tempfile.TemporaryDirectory() as workdir:
        for name in ("traced", "plain"):
            (Path(workdir) / name).mkdir()
        env = {"AUDIO_STUDIO_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with serve(Path(workdir) / "traced", env) as server:
            results = measure(server, receiver, clip, args.requests)
        with serve(Path(workdir) / "plain") as server:
            results["untraced_client_p50_ms"] = client_p50s(server, clip, args.requests)
            results["upload"] = measure_upload(server, clip, args.requests)
    with alone() as child:
        results["in_process_p50_ms"] = child.submit(in_process_p50s, clip, args.requests).result()
    results["overhead_ms"] = {
        kind: results["untraced_client_p50_ms"][kind] - results["in_process_p50_ms"][kind] for kind in KINDS
    }
    report["results"] = results
    write_report(args.out, "critique-path", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
