"""Studio features: what structured critique, long recordings in segments and ranking by listening cost, tiny profile.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py) with the default segment settings (segments of
at most the checkpoint's per-clip limit, 600 s on the tiny profile, overlapping by 10 s) and, after a warm-up, sends one
request at a time over one persistent httpx.Client, timed on the client (send to full body read):

1. `output`: POST /critique, preset `feedback`, a 10 s 44.1 kHz stereo WAV, greedy, seed 7, max_new_tokens 512,
   `output=text` against `output=json` (decoding under the StructuredCritique grammar), order alternating. The
   grammar keeps a reserve of tokens to close the object (~361 with the tiny tokenizer, ~383 with a reference), so
   both run with 512: reported are the medians, tokens_generated and milliseconds per generated token (prefill
   included). The random-weight model never ends either answer itself: text runs to the budget, and json writes
   freely until the reserve is reached and is then closed by the grammar's shortest path (`closed_early`).
2. `long_audio`: POST /critique, preset `feedback`, max_new_tokens 32, seed 7, on the longest recording the limits
   allow: 1200 s (the total-upload limit), a 16 kHz mono WAV (38.4 MB; 44.1 kHz stereo would pass the 200 MiB
   upload limit). `segments` hears it all: three equal segments 0-406.7, 396.7-803.3 and 793.3-1200 s, critiqued
   in one call, then one text-only pass summarises them; `truncate` hears the first 600 s only. The answer's
   `timings.inference_s` is its last pass alone (the summary, for segments): the front's `total_s` is the whole.
3. `rank_by`: POST /generate/json {"prompt": "rain on a tin roof", "duration": 5, "steps": 25, "num_waveforms": 4,
   "seed": 1}, `rank_by=clap` against `rank_by=critic` (Music Flamingo listens to each candidate and scores it, one
   critique row of at most 96 tokens per candidate), order alternating; the critic's extra cost in ms and %.

`--quick` is a smoke test of the same code: fewer repetitions, a 60 s long recording, and a server with
AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS=30 (so the 60 s recording is 3 equal segments of ~26.7 s; with
`truncate` it is heard whole, being under the 600 s limit).

    .venv/bin/python bench/studio.py            # 10 / 3 / 10 repetitions, ~3 min on a quiet 2-core machine
    .venv/bin/python bench/studio.py --quick --out /tmp/studio   # 2 / 1 / 2, a 60 s recording in 30 s segments
"""

from __future__ import annotations

import argparse
import io
import os
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
import soundfile

from bench.access_cost import wait_quiet
from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.served import serve
from bench.serving import CpuShare
from tests.audio_files import audio_file

TIMEOUT_S = 900  # the service's traffic timeout
WARMUP = 4  # light calls per runner; requests go one at a time, so the dispatcher's first 11 (serving.py) matter less
SEED = 7
CLIP_S = 10.0
LONG_S = 1200.0  # MAX_TOTAL_AUDIO_SECONDS
QUICK_LONG_S = 60.0
LONG_RATE = 16_000  # the model's rate: 1200 s of 44.1 kHz stereo is 211 MB, over audio_io.MAX_UPLOAD_BYTES
QUICK_SEGMENT_ENV = {"AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS": "30"}
SEGMENT_ENV_NAMES = ("AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS", "AUDIO_STUDIO_CRITIQUE_SEGMENT_OVERLAP_SECONDS")
OUTPUT_FIELDS = {"preset": "feedback", "max_new_tokens": "512", "seed": str(SEED)}
LONG_FIELDS = {"preset": "feedback", "max_new_tokens": "32", "seed": str(SEED)}
RANK_BODY = {"prompt": "rain on a tin roof", "duration": 5, "steps": 25, "num_waveforms": 4, "seed": 1}
QUIET_WAIT_S = 120.0  # before each part: the longest wait for no pytest and others under 0.15 cores
REPS = {"output": 10, "long_audio": 3, "rank_by": 10}
QUICK_REPS = {"output": 2, "long_audio": 1, "rank_by": 2}


def mono_wav(seconds: float, rate: int, hz: float = 220.0) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def critique(client: httpx.Client, audio: bytes, fields: dict[str, str]) -> dict[str, Any]:
    files = {"audio": ("take.wav", audio, "audio/wav")}
    started = time.perf_counter()
    response = client.post("/critique", data=fields, files=files)
    wall_s = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"critique {fields} answered {response.status_code}: {response.text[:2000]}")
    body = response.json()
    return {
        "wall_s": wall_s,
        "total_s": body["timings"]["total_s"],
        "inference_s": body["timings"]["inference_s"],
        "tokens_generated": body["tokens_generated"],
        "closed_early": body["closed_early"],
        "structured": body["structured"] is not None,
        "long_audio": body["long_audio"],
        "segments": [[s["start_s"], s["end_s"]] for s in body["segments"]],
        "heard_s": [clip["seconds"] for clip in body["audio_seconds"]],
        "truncated": body["truncated"],
        "text": body["text"],
    }


def generate(client: httpx.Client, rank_by: str) -> dict[str, Any]:
    started = time.perf_counter()
    response = client.post("/generate/json", json={**RANK_BODY, "rank_by": rank_by})
    wall_s = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"generate rank_by={rank_by} answered {response.status_code}: {response.text[:2000]}")
    body = response.json()
    waveforms = body["waveforms"]
    if rank_by == "critic" and any(w["critic_score"] is None for w in waveforms):
        raise RuntimeError("rank_by=critic answered without critic scores")
    return {
        "wall_s": wall_s,
        "total_s": body["timings"]["total_s"],
        "seeds": [w["seed"] for w in waveforms],
        "critic_scores": [w["critic_score"] for w in waveforms],
    }


def warm_up(client: httpx.Client) -> None:
    """Light calls of both runners, then the first structured critique (its grammar) and the first ranked batch."""
    short = mono_wav(1.0, LONG_RATE)
    for i in range(WARMUP):
        critique(client, short, {"preset": "describe", "max_new_tokens": "8", "seed": str(i)})
        response = client.post("/generate", json={"prompt": "a door creaks open", "duration": 1, "steps": 2, "seed": i})
        response.raise_for_status()
    critique(client, short, {**OUTPUT_FIELDS, "output": "json"})
    response = client.post("/generate/json", json={**RANK_BODY, "duration": 1, "steps": 2, "rank_by": "critic"})
    response.raise_for_status()


def alternating(reps: int, kinds: tuple[str, str], call: Any, name: str) -> dict[str, list[dict[str, Any]]]:
    """`reps` calls of each kind, one at a time, the order alternating; each with the CPU others used meanwhile."""
    progress(f"{name}: waited {wait_quiet(QUIET_WAIT_S, progress):g} s for a quiet machine")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for i in range(reps):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            share = CpuShare()
            result = call(kind)
            result["others_cpu"] = share.foreign()
            runs[kind].append(result)
            others = result["others_cpu"]["cores"]
            progress(f"{name}={kind} #{i + 1}: {result['wall_s']:.2f} s, others' CPU {others:.2f} cores")
    return runs


def busiest(runs: dict[str, list[dict[str, Any]]]) -> float:
    return max(r["others_cpu"]["cores"] for results in runs.values() for r in results)


def median_ms(runs: list[dict[str, Any]], key: str = "wall_s") -> float:
    return 1000 * statistics.median(r[key] for r in runs)


def measure_output(client: httpx.Client, clip: bytes, reps: int) -> dict[str, Any]:
    runs = alternating(
        reps, ("text", "json"), lambda kind: critique(client, clip, {**OUTPUT_FIELDS, "output": kind}), "output"
    )
    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        tokens = statistics.median(r["tokens_generated"] for r in results)
        summary[kind] = {
            "wall_ms_p50": median_ms(results),
            "total_ms_p50": median_ms(results, "total_s"),
            "inference_ms_p50": median_ms(results, "inference_s"),
            "tokens_generated": tokens,
            "tokens_generated_all": sorted({r["tokens_generated"] for r in results}),
            "ms_per_token": median_ms(results) / tokens,
            "same_text_every_time": len({r["text"] for r in results}) == 1,
            "closed_early": any(r["closed_early"] for r in results),
        }
        for r in results:
            r["text_chars"] = len(r.pop("text"))
    text, structured = summary["text"], summary["json"]
    summary["others_cores_max"] = busiest(runs)
    summary["json_minus_text_ms"] = structured["wall_ms_p50"] - text["wall_ms_p50"]
    summary["json_over_text_ms_per_token_pct"] = 100 * (structured["ms_per_token"] / text["ms_per_token"] - 1)
    return {"reps": reps, "clip_s": CLIP_S, "fields": OUTPUT_FIELDS, "runs": runs, "summary": summary}


def measure_long_audio(client: httpx.Client, seconds: float, reps: int) -> dict[str, Any]:
    recording = mono_wav(seconds, LONG_RATE)
    runs = alternating(
        reps,
        ("segments", "truncate"),
        lambda kind: critique(client, recording, {**LONG_FIELDS, "long_audio": kind}),
        "long_audio",
    )
    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        summary[kind] = {
            "wall_s_p50": statistics.median(r["wall_s"] for r in results),
            "total_s_p50": statistics.median(r["total_s"] for r in results),
            "inference_s_p50": statistics.median(r["inference_s"] for r in results),
            "segments": results[0]["segments"],
            "heard_s": results[0]["heard_s"],
            "truncated": results[0]["truncated"],
            "tokens_generated": results[0]["tokens_generated"],
        }
        for r in results:
            r["text_chars"] = len(r.pop("text"))
    summary["others_cores_max"] = busiest(runs)
    summary["segments_over_truncate"] = summary["segments"]["wall_s_p50"] / summary["truncate"]["wall_s_p50"]
    return {
        "reps": reps,
        "recording_s": seconds,
        "recording_bytes": len(recording),
        "fields": LONG_FIELDS,
        "runs": runs,
        "summary": summary,
    }


def measure_rank_by(client: httpx.Client, reps: int) -> dict[str, Any]:
    runs = alternating(reps, ("clap", "critic"), lambda kind: generate(client, kind), "rank_by")
    clap, critic = median_ms(runs["clap"]), median_ms(runs["critic"])
    paired = [1000 * (b["wall_s"] - a["wall_s"]) for a, b in zip(runs["clap"], runs["critic"], strict=True)]
    return {
        "reps": reps,
        "body": RANK_BODY,
        "runs": runs,
        "summary": {
            "clap_ms_p50": clap,
            "critic_ms_p50": critic,
            "clap_total_ms_p50": median_ms(runs["clap"], "total_s"),
            "critic_total_ms_p50": median_ms(runs["critic"], "total_s"),
            "critic_extra_ms": critic - clap,
            "critic_extra_pct": 100 * (critic / clap - 1),
            "paired_median_difference_ms": statistics.median(paired),
            "others_cores_max": busiest(runs),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    out, long, rank = report["output"], report["long_audio"], report["rank_by"]
    o, lg, r = out["summary"], long["summary"], rank["summary"]
    seg, trunc = lg["segments"], lg["truncate"]

    def spans(bounds: list[list[float]]) -> str:
        return ", ".join(f"{a:g}-{b:g}" for a, b in bounds) or "none"

    lines = [
        "# Studio features (tiny profile)",
        "",
        *header_markdown(report),
        f"- segment settings: {report['segment_settings']}",
        f"- whole run {report['bench_wall_s'] / 60:.1f} min (server start and warm-up included); each part starts "
        f"after a wait (at most {QUIET_WAIT_S:g} s) for no pytest and others under 0.15 cores, and every request "
        'records the CPU that other processes used meanwhile ("others\' CPU", its largest per part below)',
        "",
        "## Structured critique: `output=text` vs `output=json`",
        "",
        f"- request: POST /critique, a {out['clip_s']:g} s 44.1 kHz stereo WAV, fields {out['fields']}; "
        f"{out['reps']} of each one at a time, order alternating",
        "",
        "| output | p50 ms (client) | p50 ms (front `total_s`) | p50 ms (runner `inference_s`) | tokens generated "
        "| ms per token | closed early | same text every time |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for kind in ("text", "json"):
        k = o[kind]
        lines.append(
            f"| {kind} | {fmt(k['wall_ms_p50'], 0)} | {fmt(k['total_ms_p50'], 0)} | {fmt(k['inference_ms_p50'], 0)} "
            f"| {k['tokens_generated']:g} | {fmt(k['ms_per_token'], 2)} | {'yes' if k['closed_early'] else 'no'} "
            f"| {'yes' if k['same_text_every_time'] else 'no'} |"
        )
    lines += [
        "",
        f"- json - text: {o['json_minus_text_ms']:+.0f} ms between the medians; ms per generated token, json against "
        f"text: {o['json_over_text_ms_per_token_pct']:+.1f}% (prefill included in both); "
        f"others' CPU at most {fmt(o['others_cores_max'], 2)} cores",
        "",
        "## Long recording: `long_audio=segments` vs `long_audio=truncate`",
        "",
        f"- request: POST /critique, a {long['recording_s']:g} s {LONG_RATE // 1000} kHz mono WAV "
        f"({long['recording_bytes'] / 1e6:.1f} MB), fields {long['fields']}; {long['reps']} of each, order alternating",
        "",
        "| long_audio | p50 s (client) | p50 s (front `total_s`) | segments (s) | heard s | tokens generated |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for kind, k in (("segments", seg), ("truncate", trunc)):
        count = f"{len(k['segments'])}: {spans(k['segments'])}" if k["segments"] else "none"
        lines.append(
            f"| {kind} | {fmt(k['wall_s_p50'], 1)} | {fmt(k['total_s_p50'], 1)} | {count} "
            f"| {', '.join(f'{s:g}' for s in k['heard_s'])} | {k['tokens_generated']} |"
        )
    lines += [
        "",
        f"- segments / truncate: {fmt(lg['segments_over_truncate'], 2)}x the time, to hear "
        f"{fmt(seg['heard_s'][0] / trunc['heard_s'][0], 1)}x the audio (plus one text-only summarising pass); "
        f"tokens generated with segments count every row's; the segmented answer's runner `inference_s` is its "
        f"summarising pass alone ({fmt(seg['inference_s_p50'], 2)} s; truncate: {fmt(trunc['inference_s_p50'], 2)} s); "
        f"others' CPU at most {fmt(lg['others_cores_max'], 2)} cores",
        "",
        "## Ranking: `rank_by=clap` vs `rank_by=critic`",
        "",
        f"- request: POST /generate/json {rank['body']}; {rank['reps']} of each one at a time, order alternating",
        "",
        "| rank_by | p50 ms (client) | p50 ms (front `total_s`) |",
        "|---|---:|---:|",
        f"| clap | {fmt(r['clap_ms_p50'], 0)} | {fmt(r['clap_total_ms_p50'], 0)} |",
        f"| critic | {fmt(r['critic_ms_p50'], 0)} | {fmt(r['critic_total_ms_p50'], 0)} |",
        "",
        f"- critic - clap: {r['critic_extra_ms']:+.0f} ms ({r['critic_extra_pct']:+.1f}%) between the medians; "
        f"paired median difference {r['paired_median_difference_ms']:+.0f} ms; others' CPU at most "
        f"{fmt(r['others_cores_max'], 2)} cores",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, a 60 s recording in 30 s segments")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for studio.json and .md")
    args = parser.parse_args()
    reps = QUICK_REPS if args.quick else REPS
    for name in SEGMENT_ENV_NAMES:  # the server runs the default segment settings unless --quick
        os.environ.pop(name, None)
    extra_env = QUICK_SEGMENT_ENV if args.quick else {}
    report = header()
    report["quick"] = args.quick
    report["segment_settings"] = (
        "AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS=30 (--quick), overlap 10 s (the default)"
        if args.quick
        else "the defaults: equal segments of at most the checkpoint's per-clip limit, overlap 10 s"
    )
    clip = audio_file("wav", CLIP_S, hz=220)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as workdir,
        serve(Path(workdir), extra_env) as server,
        httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client,
    ):
        progress(f"server up at {server.url}; warming up")
        warm_up(client)
        report["output"] = measure_output(client, clip, reps["output"])
        report["long_audio"] = measure_long_audio(client, QUICK_LONG_S if args.quick else LONG_S, reps["long_audio"])
        report["rank_by"] = measure_rank_by(client, reps["rank_by"])
    report["bench_wall_s"] = time.perf_counter() - started
    write_report(args.out, "studio", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
