"""Can an upload's decode run beside the front's event loop in one process? Each step of the decode timed alone,
then beside a thread that stays busy in Python, as the event loop is while it reads and parses a 5.3 MB body.

A step that holds the GIL, or that drops and retakes it between many short calls, is slowed by the busy thread
instead of running beside it: then decoding in a worker thread while the body arrives cannot hide the decode
(bench/README.md, "decoding on arrival"). The steps, on a 30 s 44.1 kHz stereo WAV as the benchmarks upload it:
- `decode_upload`: audio_io.decode_upload as the front runs it (read, scale, down-mix, resample, check);
- `soxr stream`: soxr.ResampleStream.resample_chunk over the decode's blocks of mono samples;
- `soxr one-shot`: soxr.resample of the whole mono clip at once;
- `numpy block steps`: the decode's per-block scale, down-mix and finiteness check.

    .venv/bin/python bench/decode_threads.py                 # ~10 s -> bench/results/decode-threads.json, .md
    .venv/bin/python bench/decode_threads.py --repeats 1     # the smoke form
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository

import numpy as np
import soxr

from audio_io import DECODE_BLOCK_SAMPLES, decode_upload
from bench.common import DEFAULT_OUT, header, header_markdown, write_report
from tests.audio_files import audio_file

RATE, CLIP_RATE, CLIP_SECONDS = 16_000, 44_100, 30.0


@contextmanager
def busy_python_thread() -> Iterator[None]:
    """A thread running Python bytecode until the block ends, as an event loop parsing a body does."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def steps(wav: Path) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    mono = rng.uniform(-0.9, 0.9, int(CLIP_SECONDS * CLIP_RATE)).astype(np.float32)
    frames = DECODE_BLOCK_SAMPLES // 2
    block = rng.integers(-30000, 30000, (frames, 2)).astype(np.int16)
    as_float, down_mixed = np.empty(block.shape, np.float32), np.empty(frames, np.float32)
    weights = np.full(2, 0.5, np.float32)

    def stream() -> None:
        resampler = soxr.ResampleStream(CLIP_RATE, RATE, 1, dtype="float32")
        for start in range(0, len(mono), frames):
            resampler.resample_chunk(mono[start : start + frames])
        resampler.resample_chunk(np.empty(0, np.float32), last=True)

    def block_steps() -> None:
        for _ in range(-(-len(mono) // frames)):
            np.multiply(block, np.float32(2.0**-15), out=as_float)
            np.isfinite(np.matmul(as_float, weights, out=down_mixed)).all()

    return {
        "decode_upload": lambda: decode_upload(wav, "audio", RATE, 600.0, truncate=False),
        "soxr stream": stream,
        "soxr one-shot": lambda: soxr.resample(mono, CLIP_RATE, RATE),
        "numpy block steps": block_steps,
    }


def median_ms(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(repeats: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        wav.write_bytes(audio_file("wav", CLIP_SECONDS))
        rows = []
        for name, step in steps(wav).items():
            step()  # warm: first-call set-up is not the question
            alone = median_ms(step, repeats)
            with busy_python_thread():
                beside = median_ms(step, repeats)
            rows.append({"step": name, "alone_ms": alone, "beside_busy_thread_ms": beside, "slowdown": beside / alone})
        return rows


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Decode steps beside a busy Python thread", "", *header_markdown(report), ""]
    lines += [
        f"- a 30 s {CLIP_RATE} Hz stereo WAV; median of {report['repeats']} runs per step, alone and beside a thread "
        "looping in Python (the GIL's switch interval: 5 ms)",
        "",
        "| step | alone ms | beside a busy thread ms | slowdown |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['step']} | {r['alone_ms']:.1f} | {r['beside_busy_thread_ms']:.1f} | {r['slowdown']:.1f}x |"
        for r in report["rows"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    report = {**header(argv), "repeats": args.repeats, "rows": measure(args.repeats)}
    write_report(args.out, "decode-threads", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
