"""Streamed critiques: time to the first text and total time, streamed against unstreamed, tiny profile.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py) and, after a warm-up, sends the same sampled
critique (a 5 s WAV with a question, `max_new_tokens` tokens, a seed per request) in rounds at concurrency 1 and 8,
rounds alternating streamed and unstreamed over the same seeds:

- `streamed`: POST /critique with `stream=true`; time to first token is the send to the first `delta` event, total
  the send to the `result` event;
- `unstreamed`: POST /critique; the text comes with the whole answer, so its time to first token is its total.

Each streamed request's deltas must add up to the text the unstreamed request of the same seed answered (checked).
Reported: p50 and p90 of both times per mode and concurrency.

    .venv/bin/python bench/stream_critique.py           # 12 rounds per mode and concurrency, ~3 min on 2 cores
    .venv/bin/python bench/stream_critique.py --smoke   # the same code in seconds
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

import httpx
import numpy as np
import soundfile

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.served import serve

TIMEOUT_S = 300
WARMUP = 14  # BentoML's dispatcher fits its latency model over its first 11 calls per runner (bench/serving.py)
CONCURRENCY = (1, 8)
CLIP_SECONDS = 5.0
FIELDS = {"prompt": "How is the intonation?", "do_sample": "true", "temperature": "1.2"}
Timing = dict[str, Any]  # ttft_s, total_s, text


def clip() -> bytes:
    t = np.arange(int(CLIP_SECONDS * 16_000)) / 16_000
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def critique(client: httpx.Client, audio: bytes, tokens: int, seed: int, stream: bool) -> Timing:
    data = {**FIELDS, "max_new_tokens": str(tokens), "seed": str(seed), "stream": str(stream).lower()}
    files = {"audio": ("clip.wav", audio, "audio/wav")}
    started = time.perf_counter()
    if not stream:
        response = client.post("/critique", data=data, files=files)
        response.raise_for_status()
        took = time.perf_counter() - started
        return {"ttft_s": took, "total_s": took, "text": response.json()["text"]}
    first: float | None = None
    texts: list[str] = []
    name = ""
    with client.stream("POST", "/critique", data=data, files=files) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == "delta":
                first = first or time.perf_counter()
                texts.append(json.loads(line.removeprefix("data: "))["text"])
            elif line.startswith("data: ") and name != "result":
                raise RuntimeError(f"seed {seed}: {name} event {line}")
    total = time.perf_counter() - started
    return {"ttft_s": first - started if first else total, "total_s": total, "text": "".join(texts)}


def rounds(url: str, audio: bytes, tokens: int, count: int, concurrency: int) -> dict[str, list[Timing]]:
    """`count` rounds per mode of `concurrency` requests sent at once, modes alternating, seeds shared."""
    timings: dict[str, list[Timing]] = {"streamed": [], "unstreamed": []}
    with ThreadPoolExecutor(concurrency) as pool, httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for r in range(count):
            seeds = [1000 * concurrency + r * concurrency + i for i in range(concurrency)]
            order = ("streamed", "unstreamed") if r % 2 else ("unstreamed", "streamed")
            for mode in order:
                got = list(pool.map(lambda s, m=mode: critique(client, audio, tokens, s, m == "streamed"), seeds))
                timings[mode].extend(got)
            for seed, s, u in zip(
                seeds, timings["streamed"][-concurrency:], timings["unstreamed"][-concurrency:], strict=True
            ):
                if s["text"] != u["text"]:
                    raise RuntimeError(f"seed {seed}: the streamed text differs from the unstreamed answer")
    return timings


COLUMNS = ("ttft_p50_ms", "ttft_p90_ms", "total_p50_ms", "total_p90_ms")
TABLE_HEAD = "| concurrency | mode | first token p50 ms | p90 ms | total p50 ms | p90 ms |"
TTFT_NOTE = "- time to first token: to the first `delta` event (streamed), to the whole answer (unstreamed)"


def summary(timings: list[Timing]) -> dict[str, float]:
    out = {}
    for key in ("ttft_s", "total_s"):
        values = [t[key] for t in timings]
        out[f"{key[:-2]}_p50_ms"] = 1000 * statistics.median(values)
        out[f"{key[:-2]}_p90_ms"] = 1000 * float(np.percentile(values, 90))
    return out


def measure(url: str, tokens: int, count: int) -> dict[str, Any]:
    audio = clip()
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for seed in range(WARMUP):
            critique(client, audio, tokens, seed, seed % 2 == 0)
    results: dict[str, Any] = {}
    for concurrency in CONCURRENCY:
        timings = rounds(url, audio, tokens, count, concurrency)
        results[f"c{concurrency}"] = {
            mode: {"summary": summary(got), "requests": [{k: t[k] for k in ("ttft_s", "total_s")} for t in got]}
            for mode, got in timings.items()
        }
    return {"max_new_tokens": tokens, "rounds": count, "clip_s": CLIP_SECONDS, "results": results}


def markdown(report: dict[str, Any]) -> str:
    request = (
        f"- request: POST /critique, a {report['clip_s']:g} s WAV, {json.dumps(FIELDS)}, max_new_tokens "
        f"{report['max_new_tokens']}, a seed per request; {report['rounds']} rounds per mode and concurrency, modes "
        "alternating over the same seeds; streamed texts checked equal to the unstreamed answers"
    )
    rows = [
        f"| {key[1:]} | {mode} | " + " | ".join(fmt(data["summary"][column], 0) for column in COLUMNS) + " |"
        for key, modes in report["results"].items()
        for mode, data in modes.items()
    ]
    head = ["# Streamed critiques (tiny profile)", "", *header_markdown(report), "", request, TTFT_NOTE, ""]
    return "\n".join([*head, TABLE_HEAD, "|---:|---|---:|---:|---:|---:|", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="rounds per mode and concurrency")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 32 tokens: the same code in seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for stream-critique.json and .md")
    args = parser.parse_args()
    count, tokens = (2, 32) if args.smoke else (args.rounds, args.max_new_tokens)
    report = header()
    with tempfile.TemporaryDirectory() as workdir, serve(Path(workdir)) as server:
        report.update(measure(server.url, tokens, count))
    write_report(args.out, "stream-critique", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
