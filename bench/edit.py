"""Editing benchmark (POST /edit's engine, in-process through the runner's step scheduler, tiny profile):

1. seams: spectral flux across each boundary of an inpainted range, against the flux inside the range and in
   the kept audio beside it, with and without `blend_s` and `repaint_jumps` (means over seeds). A seam the ear
   hears is a jump in the spectrum that the audio on either side does not have: a ratio near 1 is no seam;
2. long clip: 5 s inpainted in the middle of a 120 s clip against 120 s transforms (strength 1: every step of
   every window; 0.6, the default), split into encode, denoise and decode, with the windows each denoises.

With random weights the model makes no music, so the seam figures show what the mechanics (mask, ramps,
crossfade, re-noising) do to a spectrum, not how good a real edit sounds; that needs the real checkpoints.

    .venv/bin/python bench/edit.py                      # ~6 min on 2 CPU cores
    .venv/bin/python bench/edit.py --smoke --out /tmp/edit   # 2 steps, one seed, a 40 s clip (CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

import numpy as np

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.long_form import model_thread, tiny_engine
from runners.audioldm2_in_process import InProcessScheduler
from schemas import EditJob, TransformJob, samples_to_bytes

RATE = 16_000
N_FFT, HOP = 512, 128
SEAM_S = 0.05  # the frames within this of a boundary are the seam's
SIDE_S = 1.0  # the audio either side of a boundary the seam is compared with
CONFIGS = [(0.0, 0), (0.25, 0), (0.0, 2), (0.25, 2)]  # (blend_s, repaint_jumps)


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A chord with a slow tremolo and a little noise: a spectrum that changes, as music's does."""
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * hz * t) for hz in (220.0, 277.2, 329.6)) / 3
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.4 * tones * (0.75 + 0.25 * np.sin(2 * np.pi * 0.5 * t)) + 0.02 * noise).astype(np.float32)


def flux(samples: np.ndarray) -> np.ndarray:
    """Per STFT frame, the L2 norm of the rise of each bin's magnitude over the previous frame."""
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), N_FFT)[::HOP]
    magnitudes = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1))
    return np.concatenate([[0.0], np.linalg.norm(np.clip(np.diff(magnitudes, axis=0), 0, None), axis=1)])


def seam_ratio(samples: np.ndarray, boundary_s: float) -> float:
    """The seam's largest flux over the median flux of the SIDE_S either side (its 5 % and more away)."""
    values = flux(samples)
    centres = (np.arange(len(values)) * HOP + N_FFT / 2) / RATE
    seam = np.abs(centres - boundary_s) <= SEAM_S
    sides = (np.abs(centres - boundary_s) > SEAM_S) & (np.abs(centres - boundary_s) <= SIDE_S)
    return float(values[seam].max() / max(np.median(values[sides]), 1e-12))


def seams(scheduled: InProcessScheduler, steps: int, seeds: int) -> list[dict[str, Any]]:
    """Each configuration's mean ratio over seeds and both boundaries; first, the same measure on the clip's round
    trip (no edit: no seam), the level a seamless edit would show."""
    audio = clip(8.0)
    round_trip = TransformJob(samples_f32le=samples_to_bytes(audio), prompt="-", seed=0, strength=0.0)
    [kept] = scheduled.transform([round_trip])
    assert kept.output is not None
    unedited = float(np.mean([seam_ratio(kept.output.waveforms[0].numpy(), b) for b in (3.0, 5.0)]))
    rows: list[dict[str, Any]] = [{"blend_s": None, "repaint_jumps": None, "seam_ratio": unedited, "s": 0.0}]
    for blend_s, jumps in CONFIGS:
        inpaint = {"mode": "inpaint", "start_s": 3.0, "end_s": 5.0, "blend_s": blend_s, "repaint_jumps": jumps}
        jobs = [
            EditJob(samples_f32le=samples_to_bytes(audio), prompt="a snare roll", seed=seed, steps=steps, **inpaint)
            for seed in range(seeds)
        ]
        began = time.perf_counter()
        runs = scheduled.edit(jobs)
        elapsed = (time.perf_counter() - began) / seeds
        outputs = [run.output.waveforms[0].numpy() for run in runs if run.output is not None]
        ratios = [seam_ratio(out, boundary) for out in outputs for boundary in (3.0, 5.0)]
        rows.append({"blend_s": blend_s, "repaint_jumps": jumps, "seam_ratio": float(np.mean(ratios)), "s": elapsed})
    return rows


def phases_of(run: Any) -> dict[str, Any]:
    times = {phase.name: (phase.end_ns - phase.start_ns) / 1e9 for phase in run.phases}
    windows = next(phase.attributes["windows"] for phase in run.phases if phase.name == "denoise")
    return {**{name: times.get(name, 0.0) for name in ("encode_audio", "denoise", "decode")}, "windows": windows}


def long_clip(scheduled: InProcessScheduler, seconds: float, steps: int) -> dict[str, Any]:
    """After a warm-up round trip of the clip (its first tiled encode and decode pay for allocations), each case
    once: the edit; a transform at strength 1 (every step of every window, no encode); one at the API's default
    strength, 0.6 (the clip encoded, 60% of the steps)."""
    audio = samples_to_bytes(clip(seconds))
    middle = seconds / 2

    def transform(strength: float) -> TransformJob:
        return TransformJob(samples_f32le=audio, prompt="a bell", seed=0, steps=steps, strength=strength)

    scheduled.transform([transform(0.0)])
    cases = {
        "edit": EditJob(
            samples_f32le=audio,
            prompt="a bell",
            seed=0,
            steps=steps,
            mode="inpaint",
            start_s=middle - 2.5,
            end_s=middle + 2.5,
        ),
        "transform, strength 1": transform(1.0),
        "transform, strength 0.6": transform(0.6),
    }
    report: dict[str, Any] = {"seconds": seconds, "steps": steps}
    for name, job in cases.items():
        began = time.perf_counter()
        [run] = scheduled.edit([job]) if isinstance(job, EditJob) else scheduled.transform([job])
        report[name] = {"total_s": time.perf_counter() - began, **phases_of(run)}
    return report


def markdown(head: dict[str, Any], seam_rows: list[dict[str, Any]], long: dict[str, Any]) -> str:
    lines = ["# Editing (tiny profile, in-process)", "", *header_markdown(head), ""]
    lines += ["## Seams: largest spectral flux at a boundary / median flux within 1 s of it", ""]
    lines += ["| blend_s | repaint_jumps | seam ratio | s per edit |", "|---|---|---|---|"]
    for r in seam_rows:
        if r["blend_s"] is None:
            lines.append(f"| the round trip, unedited | | {fmt(r['seam_ratio'])} | |")
        else:
            lines.append(f"| {r['blend_s']:g} | {r['repaint_jumps']} | {fmt(r['seam_ratio'])} | {fmt(r['s'])} |")
    lines += ["", f"## {long['seconds']:g} s clip, {long['steps']} steps: 5 s inpainted against transforms", ""]
    lines += ["| | total s | encode s | denoise s | decode s | windows |", "|---|---|---|---|---|---|"]
    for name in ("edit", "transform, strength 1", "transform, strength 0.6"):
        r = long[name]
        lines.append(
            f"| {name} | {fmt(r['total_s'])} | {fmt(r['encode_audio'])} | {fmt(r['denoise'])} | {fmt(r['decode'])} "
            f"| {r['windows']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="2 steps, one seed, a 40 s clip")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    steps, seeds, seconds = (2, 1, 40.0) if args.smoke else (10, 4, 120.0)
    head = header(sys.argv[1:])
    with InProcessScheduler(tiny_engine(), model_thread()) as scheduled:
        seam_rows = seams(scheduled, steps, seeds)
        long = long_clip(scheduled, seconds, steps)
    report = {**head, "seams": seam_rows, "long_clip": long}
    write_report(args.out, "edit", report, markdown(head, seam_rows, long))


if __name__ == "__main__":
    main()
