"""A change to the HTTP path, measured before and after in the same run: one server from an earlier commit, one
from this checkout, up together, with the same requests alternated between them.

Starts two real `bentoml serve service:AudioStudio` (bench/served.py, tiny profile, no tracing): one from a
`git worktree` of `--before`, one from this checkout. After a warm-up on both, each kind is sent `--rounds` times
to one server then the other, one request at a time, so both see the same machine load:
- `clip`: POST /critique with a 30 s 44.1 kHz stereo WAV (5.3 MB), preset `feedback`, 16 greedy tokens;
- `upload`: the same request with `max_new_tokens` out of range, answered 400 once the form is parsed: the
  HTTP path and the form parser alone;
- `text`: POST /critique with a question and no audio, 16 greedy tokens.
Per server and kind: the client's p50 and the front process's CPU time per request (psutil, around each request),
and the front's resident memory after the warm-up and at the end.

    .venv/bin/python bench/front_ab.py --before 1561d5c           # 40 rounds, ~5 min on 2 cores
    .venv/bin/python bench/front_ab.py --before HEAD --rounds 2 --warmup 1   # the smoke form
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
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

from bench.common import DEFAULT_OUT, ROOT, fmt, header, header_markdown, write_report
from bench.critique_path import CLIP_SECONDS, KINDS, TIMEOUT_S, UPLOAD_ONLY, WARMUP, front_process
from bench.served import serve
from tests.audio_files import audio_file

FORMS = {
    "clip": (KINDS["clip"], True, 200),
    "upload": (UPLOAD_ONLY, True, 400),
    "text": (KINDS["text"], False, 200),
}
SIDES = ("before", "after")


@contextlib.contextmanager
def worktree(commit: str) -> Any:
    """A detached checkout of `commit` beside this one, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="front-ab-") as parent:
        path = Path(parent) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True, text=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def resolved(commit: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


class Side:
    """One server, its client and its front process."""

    def __init__(self, url: str, front: psutil.Process, clip: bytes) -> None:
        self.client = httpx.Client(base_url=url, timeout=TIMEOUT_S)
        self.front, self.clip = front, clip
        self.latencies_ms: dict[str, list[float]] = {kind: [] for kind in FORMS}
        self.cpu_ms: dict[str, list[float]] = {kind: [] for kind in FORMS}

    def send(self, kind: str, record: bool = True) -> None:
        form, with_clip, status = FORMS[kind]
        files = {"audio": ("clip.wav", self.clip, "audio/wav")} if with_clip else None
        cpu_before, started = self.front.cpu_times(), time.perf_counter()
        response = self.client.post("/critique", data=form, files=files)
        latency_ms, cpu_after = 1000 * (time.perf_counter() - started), self.front.cpu_times()
        if response.status_code != status:
            raise RuntimeError(f"{kind}: expected {status}, got {response.status_code}: {response.text[:300]}")
        if record:
            self.latencies_ms[kind].append(latency_ms)
            self.cpu_ms[kind].append(1000 * (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system))

    def rss_mib(self) -> float:
        return self.front.memory_info().rss / 2**20


def measure(sides: dict[str, Side], rounds: int, warmup: int) -> dict[str, Any]:
    for side in sides.values():
        for kind in FORMS:
            for _ in range(warmup):
                side.send(kind, record=False)
    rss_warm = {name: side.rss_mib() for name, side in sides.items()}
    for kind in FORMS:
        for _ in range(rounds):
            for side in sides.values():
                side.send(kind)
    return {
        name: {
            "kinds": {
                kind: {
                    "client_p50_ms": statistics.median(side.latencies_ms[kind]),
                    "front_cpu_ms_per_request": statistics.mean(side.cpu_ms[kind]),
                }
                for kind in FORMS
            },
            "front_rss_mib": {"after_warmup": rss_warm[name], "at_end": side.rss_mib()},
        }
        for name, side in sides.items()
    }


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    before, after = results["before"], results["after"]
    lines = ["# The HTTP path before and after (tiny profile, one request at a time)", "", *header_markdown(report)]
    lines += [
        "",
        f"- before: {report['before']}; after: this checkout ({report['after']}); both servers up together, "
        f"{report['rounds']} rounds per kind after {report['warmup']} warm-up requests per kind and server",
        f"- `clip`: a {CLIP_SECONDS:g} s 44.1 kHz stereo WAV ({report['clip_bytes'] / 1e6:.1f} MB), preset feedback, "
        "16 greedy tokens; `upload`: the same, answered 400 once the form is parsed; `text`: a question, no audio",
        "",
        "| kind | client p50 ms before | after | change | front CPU ms per request before | after | change |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in FORMS:
        b, a = before["kinds"][kind], after["kinds"][kind]
        p50 = (b["client_p50_ms"], a["client_p50_ms"])
        cpu = (b["front_cpu_ms_per_request"], a["front_cpu_ms_per_request"])
        lines.append(
            f"| {kind} | {fmt(p50[0], 1)} | {fmt(p50[1], 1)} | {p50[1] - p50[0]:+.1f} | {fmt(cpu[0], 1)} | "
            f"{fmt(cpu[1], 1)} | {cpu[1] - cpu[0]:+.1f} |"
        )
    lines += [
        "",
        "Front resident memory, MiB (after the warm-up, at the end): "
        + "; ".join(
            f"{name} {fmt(results[name]['front_rss_mib']['after_warmup'], 1)}, "
            f"{fmt(results[name]['front_rss_mib']['at_end'], 1)}"
            for name in SIDES
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=40, help="requests per kind and server")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="requests per kind and server before measuring")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for front-ab.json and .md")
    args = parser.parse_args()
    clip = audio_file("wav", CLIP_SECONDS)
    report = header() | {
        "before": resolved(args.before),
        "after": resolved("HEAD"),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "clip_bytes": len(clip),
    }
    with worktree(args.before) as before, tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        sides = {}
        for name, checkout in zip(SIDES, (before, ROOT), strict=True):
            (Path(workdir) / name).mkdir()
            server = stack.enter_context(serve(Path(workdir) / name, checkout=checkout))
            sides[name] = Side(server.url, front_process(server), clip)
        report["results"] = measure(sides, args.rounds, args.warmup)
    write_report(args.out, "front-ab", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
