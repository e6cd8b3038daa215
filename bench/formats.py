"""Output formats: file size, bitrate, encode time and distance to the WAV of each format at `compression` 0, its
default, 0.5 and 1, for a 10 s clip at the service's 16 kHz mono (audio_io.encode_audio, as the routes call it).

Two clips, since a variable-bitrate encoder spends bits by content: `music` (four tremolo tones over a little
noise) and `noise` (broadband, like the tiny profile's random-weight output). Encode time is the median of
`--repeats` runs; `distance` is tests/audio_files.spectral_distance (STFT magnitude relative L2 to the WAV).

    .venv/bin/python bench/formats.py                          # ~10 s -> bench/results/formats.json, formats.md
    .venv/bin/python bench/formats.py --seconds 1 --repeats 1  # a smoke test of the same code
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository

import numpy as np
import soundfile

from audio_io import encode_audio
from bench.common import DEFAULT_OUT, header, header_markdown, write_report
from schemas import DEFAULT_COMPRESSION, AudioFormat
from tests.audio_files import spectral_distance

RATE = 16_000
COMPRESSIONS: list[float | None] = [0.0, None, 0.5, 1.0]


def clips(seconds: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(
        0.1 * np.sin(2 * np.pi * hz * t) * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        for hz in rng.uniform(100, 800, 4)
    )
    return {
        "music": (tones + 0.02 * rng.standard_normal(len(t))).astype(np.float32),
        "noise": (0.2 * rng.standard_normal(len(t))).clip(-1, 1).astype(np.float32),
    }


def measure(seconds: float, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, clip in clips(seconds).items():
        wav = soundfile.read(io.BytesIO(encode_audio(clip, RATE, AudioFormat.WAV)), dtype="float32")[0]
        for audio_format in AudioFormat:
            for compression in [None] if audio_format is AudioFormat.WAV else COMPRESSIONS:
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    data = encode_audio(clip, RATE, audio_format, compression)
                    times.append(time.perf_counter() - started)
                samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
                rows.append(
                    {
                        "clip": name,
                        "format": audio_format.value,
                        "compression": DEFAULT_COMPRESSION.get(audio_format) if compression is None else compression,
                        "default": compression is None,
                        "bytes": len(data),
                        "kbps": len(data) * 8 / seconds / 1000,
                        "encode_ms": statistics.median(times) * 1000,
                        "decoded_samples": len(samples),
                        "rate": rate,
                        "distance": spectral_distance(wav, samples),
                    }
                )
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Output formats",
        "",
        *header_markdown(report),
        "",
        f"- clip: {report['seconds']:g} s, {RATE} Hz mono ({report['clip_samples']} "
        f"samples); encode time: median of {report['repeats']}",
        "",
        "| clip | format | compression | kB | kbps | encode ms | decoded samples | distance to WAV |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        compression = "" if r["compression"] is None else f"{r['compression']:g}" + (" (default)" * r["default"])
        lines.append(
            f"| {r['clip']} | {r['format']} | {compression} | {r['bytes'] / 1000:.1f} | {r['kbps']:.1f} | "
            f"{r['encode_ms']:.1f} | {r['decoded_samples']} | {r['distance']:.3f} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for formats.json and .md")
    args = parser.parse_args()
    report = header()
    report.update(
        seconds=args.seconds,
        repeats=args.repeats,
        clip_samples=int(args.seconds * RATE),
        rows=measure(args.seconds, args.repeats),
    )
    write_report(args.out, "formats", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
