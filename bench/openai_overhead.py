"""The OpenAI-compatible routes' overhead: the same request through /v1 and through the native route, paired.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py), tiny profile, and after a warm-up sends pairs of
equal requests one at a time, the order alternating within each pair:

- critique: a 5 s WAV with a question, greedy, `max_tokens` tokens, a seed per pair; POST /v1/chat/completions
  (JSON, the WAV base64 in an `input_audio` part) against POST /critique (multipart). The two answers' texts must
  be equal (checked);
- generate: POST /v1/audio/generate against POST /generate, 2 s at 2 steps; the two files must be equal (checked).

Reported per kind: the p50 of each route and the median of the per-pair differences (compatible minus native).

    .venv/bin/python bench/openai_overhead.py            # 30 pairs per kind, ~2 min on 2 cores
    .venv/bin/python bench/openai_overhead.py --pairs 3  # the smoke form
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
CLIP_SECONDS = 5.0
QUESTION = "How is the intonation?"
GENERATE = {"prompt": "rain on a tin roof", "duration": 2.0, "steps": 2}


def clip() -> bytes:
    t = np.arange(int(CLIP_SECONDS * 16_000)) / 16_000
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def timed(send: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = send()
    took = time.perf_counter() - started
    response.raise_for_status()
    return took, response


def critique_pair(client: httpx.Client, audio: bytes, tokens: int, seed: int) -> tuple[float, float, bool]:
    """(compatible s, native s, same text)."""
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    chat = {
        "model": "music-flamingo",
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}, part]}],
        "max_tokens": tokens,
        "seed": seed,
    }
    form = {"prompt": QUESTION, "max_new_tokens": str(tokens), "seed": str(seed)}

    def compatible() -> httpx.Response:
        return client.post("/v1/chat/completions", json=chat)

    def native() -> httpx.Response:
        return client.post("/critique", data=form, files={"audio": ("clip.wav", audio, "audio/wav")})

    sends = (compatible, native) if seed % 2 else (native, compatible)
    (first_s, first), (second_s, second) = (timed(send) for send in sends)
    times = {sends[0]: (first_s, first), sends[1]: (second_s, second)}
    (ours_s, ours), (theirs_s, theirs) = times[compatible], times[native]
    return ours_s, theirs_s, ours.json()["choices"][0]["message"]["content"] == theirs.json()["text"]


def generate_pair(client: httpx.Client, seed: int) -> tuple[float, float, bool]:
    compatible = {"input": GENERATE["prompt"], "audio_length": GENERATE["duration"],
                  "num_inference_steps": GENERATE["steps"], "seed": seed}  # fmt: skip
    native = {**GENERATE, "seed": seed}
    sends = [("/v1/audio/generate", compatible), ("/generate", native)]
    if seed % 2 == 0:
        sends.reverse()
    answers = {path: timed(lambda p=path, b=body: client.post(p, json=b)) for path, body in sends}
    (ours_s, ours), (theirs_s, theirs) = answers["/v1/audio/generate"], answers["/generate"]
    return ours_s, theirs_s, ours.content == theirs.content


def summary(pairs: list[tuple[float, float, bool]]) -> dict[str, Any]:
    if not all(same for _, _, same in pairs):
        raise RuntimeError("a compatible answer differs from the native one for the same request")
    ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "compatible_p50_ms": 1000 * statistics.median(ours),
        "native_p50_ms": 1000 * statistics.median(theirs),
        "paired_difference_p50_ms": 1000 * statistics.median(o - t for o, t in zip(ours, theirs, strict=True)),
        "pairs": len(pairs),
    }


def measure(url: str, pairs: int, tokens: int) -> dict[str, Any]:
    audio = clip()
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for seed in range(WARMUP):
            critique_pair(client, audio, tokens, seed)
            generate_pair(client, seed)
        critiques = [critique_pair(client, audio, tokens, 100 + k) for k in range(pairs)]
        generations = [generate_pair(client, 100 + k) for k in range(pairs)]
    return {
        "max_tokens": tokens,
        "clip_s": CLIP_SECONDS,
        "results": {"critique": summary(critiques), "generate": summary(generations)},
    }


def markdown(report: dict[str, Any]) -> str:
    rows = [
        f"| {kind} | {fmt(r['compatible_p50_ms'], 1)} | {fmt(r['native_p50_ms'], 1)} | "
        f"{fmt(r['paired_difference_p50_ms'], 1)} | {r['pairs']} |"
        for kind, r in report["results"].items()
    ]
    return "\n".join(
        [
            "# The OpenAI-compatible routes against the native ones (tiny profile)",
            "",
            *header_markdown(report),
            "",
            f"- critique: /v1/chat/completions (base64 WAV in JSON) vs /critique (multipart), a {report['clip_s']:g} s "
            f"WAV, greedy, max_tokens {report['max_tokens']}; generate: /v1/audio/generate vs /generate, "
            f"{GENERATE['duration']:g} s at {GENERATE['steps']} steps; one request at a time, pairs in alternating "
            "order, answers checked equal",
            "",
            "| kind | /v1 p50 ms | native p50 ms | paired difference p50 ms | pairs |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=30, help="pairs per kind")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for openai-overhead.json and .md")
    args = parser.parse_args()
    report = header()
    with tempfile.TemporaryDirectory() as workdir, serve(Path(workdir)) as server:
        report.update(measure(server.url, args.pairs, args.max_tokens))
    write_report(args.out, "openai-overhead", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
