"""Long-form AudioLDM2 benchmark: window overlap, time per minute of audio, decode memory, short-job latency.

In-process, every job through the runner's step scheduler on one model thread (no HTTP):
1. overlaps: a 30 s clip (the longest single latent) denoised whole and as windows with each overlap; the
   relative difference of the windowed latent from the whole one (how much the windows disagree with the
   model's own view of the clip) and the rows each step costs;
2. tiny-profile wall time of 60/180/600 s generations, split into denoise and decode;
3. peak decode memory (VAE + vocoder) for two lengths, each in a fresh process: growth of the peak RSS while
   decoding, with the tiny models, and with the full-size architectures (random weights) with `--full`;
4. fairness: a short job's latency alone and while a long render runs on the same step scheduler;
5. encode: a 1 s generate's latency alone and while a 599 s transform's clip is encoded, then how long after
   its cancel the transform stops (the encoding runs in pieces, models/pieces.py).

    .venv/bin/python bench/long_form.py                    # tiny profile, ~15 min on 2 CPU cores
    .venv/bin/python bench/long_form.py --quick            # short lengths and few steps, ~2 min
    .venv/bin/python bench/long_form.py --smoke --out /tmp/lf   # every part once at 30 s, 2 steps (CI)
    .venv/bin/python bench/long_form.py --only memory --full --memory-seconds 60 600   # full-size decode memory
    .venv/bin/python bench/long_form.py --only encode      # cancel and short jobs during a long encode, ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.tiny_profile import ROOT  # the tiny profile, before any project import

# isort: split

import numpy as np
import torch

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from models.audioldm2 import AudioLDM2Engine, load_pipeline
from models.profiles import audioldm2_checkpoint
from models.tiled_vae import TILES_PER_CALL, decode_tiled, vocode_chunked
from runners.audioldm2_in_process import InProcessScheduler
from runners.batching import GroupRun
from runners.cancellation import CANCELLED_WHILE_RUNNING, CancelledJobs
from runners.model_thread import ModelThread
from runners.step_scheduler import Start, StepScheduler
from schemas import GenerationJob, RunnerJob, TransformJob, samples_to_bytes
from settings import SETTINGS

MIB = 2**20
PARTS = ("overlaps", "timings", "memory", "fairness", "encode")


@functools.cache
def model_thread() -> ModelThread:
    """The one thread that loads and runs every engine here, as a runner's does (runners/model_thread.py)."""
    return ModelThread("audioldm2-model", SETTINGS.model_threads)


def tiny_engine(**options: Any) -> AudioLDM2Engine:
    def load() -> AudioLDM2Engine:
        pipe = load_pipeline(str(audioldm2_checkpoint(SETTINGS, None).path), torch.device("cpu"), torch.float32)
        return AudioLDM2Engine(pipe, **options)

    return model_thread().call(load)


def served(scheduled: InProcessScheduler, job: GenerationJob) -> GroupRun[Any]:
    [run] = scheduled.generate([job])
    assert run.error is None and run.output is not None, run.error
    return run


# Clip lengths (s) and denoising steps of each part, by the run's size.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 2, "timings": [30], "memory": [30], "fairness": 30, "encode": 60.0},
    "quick": {"steps": 2, "timings": [30, 60], "memory": [30, 60], "fairness": 60, "encode": 60.0},
    "full": {"steps": 10, "timings": [60, 180, 600], "memory": None, "fairness": 600, "encode": 599.0},
}


def overlaps(steps: int) -> list[dict[str, Any]]:
    job = GenerationJob(prompt="a slow pad with rain", duration=30.0, steps=steps, seed=3, guidance_scale=3.0)
    with InProcessScheduler(tiny_engine(), model_thread()) as scheduled:
        whole = served(scheduled, job).output.latents
    rows = []
    for overlap in (0.0, 0.25, 0.5, 0.75):
        engine = tiny_engine(single_latent_max_s=10.0, window_overlap=overlap)  # force windows on 30 s
        with InProcessScheduler(engine, model_thread()) as scheduled:
            latents = served(scheduled, job).output.latents
        difference = float((latents - whole).norm() / whole.norm())
        windows = len(engine.windows(engine.mel_frames(job.duration)))
        rows.append({"overlap": overlap, "windows": windows, "relative_difference": difference})
    return rows


def timings(seconds: list[int], steps: int) -> list[dict[str, Any]]:
    """Denoise: from the job's arrival to its last step (encoding included); decode: from there to its answer."""
    rows = []
    with InProcessScheduler(tiny_engine(), model_thread()) as scheduled:
        served(scheduled, GenerationJob(prompt="warm-up", duration=2.0, steps=2, seed=0))
        for duration in seconds:
            job = GenerationJob(prompt="an evolving drone", duration=duration, steps=steps, seed=1, guidance_scale=3.0)
            began = time.time_ns()
            run = served(scheduled, job)
            finished = time.time_ns()
            [denoise] = [p for p in run.phases if p.name == "denoise"]
            rows.append(
                {
                    "seconds": duration,
                    "steps": steps,
                    "windows": denoise.attributes["windows"],
                    "denoise_s": (denoise.end_ns - began) / 1e9,
                    "decode_s": (finished - denoise.end_ns) / 1e9,
                    "total_s": (finished - began) / 1e9,
                }
            )
    return rows


def peak_rss() -> int:
    """This process's peak resident set since it started or since `reset_peak_rss()`, in bytes."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak_rss() -> None:
    """Linux's reset of the peak RSS (proc(5), clear_refs "5"): several lengths measured in one process."""
    Path("/proc/self/clear_refs").write_text("5")


def decode_peaks(seconds: list[int], full: bool) -> list[dict[str, Any]]:
    """In this process, after a warm-up: how far the RSS rises over where it stood while decoding each length."""
    if full:
        from bench.fullsize import full_vae, full_vocoder

        vae, vocoder = full_vae().eval(), full_vocoder().eval()
    else:
        pipe = load_pipeline(str(audioldm2_checkpoint(SETTINGS, None).path), torch.device("cpu"), torch.float32)
        vae, vocoder = pipe.vae, pipe.vocoder
    tile = 256

    def decode(frames: int) -> torch.Tensor:
        latents = torch.randn(1, 8, frames, 16, generator=torch.Generator().manual_seed(0))
        mel = decode_tiled(vae, latents, tile).run()
        return vocode_chunked(vocoder, mel[:, 0]).run()

    decode(tile * (TILES_PER_CALL + 2))  # warm-up: one full batch of tiles is the working set
    rows = []
    for duration in seconds:
        reset_peak_rss()  # the peak is now the current RSS
        before = peak_rss()
        began = time.perf_counter()
        audio_mib = decode(duration * 25).numel() * 4 / MIB
        elapsed = time.perf_counter() - began
        rows.append(
            {
                "seconds": duration,
                "full_size": full,
                "peak_growth_mib": (peak_rss() - before) / MIB,
                "audio_mib": audio_mib,
                "decode_s": elapsed,
            }
        )
    return rows


def memory(seconds: list[int], full: bool) -> list[dict[str, Any]]:
    """Decode peaks in a fresh process, with the allocator setting of the Bento's image (bentofile.yaml)."""
    command = [sys.executable, __file__, "--decode-peak", *map(str, seconds), *(["--full"] if full else [])]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fairness(long_seconds: int, steps: int) -> dict[str, Any]:
    engine = tiny_engine()
    scheduler = StepScheduler(engine, CancelledJobs(), model_thread())  # as the runner's event loop drives it
    short = GenerationJob(prompt="a door knock", duration=2.0, steps=steps, seed=5, guidance_scale=3.0)
    long = GenerationJob(prompt="a long drone", duration=long_seconds, steps=steps, seed=6, guidance_scale=3.0)

    async def latency(job: GenerationJob) -> float:
        began = time.perf_counter()
        [future] = scheduler.submit([job.model_copy()], engine.start_generation)
        await asyncio.wrap_future(future)
        return time.perf_counter() - began

    async def scenario() -> dict[str, Any]:
        await latency(short)  # warm-up
        alone = [await latency(short) for _ in range(3)]
        render = asyncio.ensure_future(latency(long))
        await asyncio.sleep(2.0)
        during = [await latency(short) for _ in range(3)]
        long_s = await render
        return {"short_alone_s": alone, "short_during_render_s": during, "render_s": long_s}

    result = asyncio.run(scenario())
    scheduler.close()
    alone_median = sorted(result["short_alone_s"])[1]
    during_median = sorted(result["short_during_render_s"])[1]
    return {**result, "long_seconds": long_seconds, "steps": steps, "ratio": during_median / alone_median}


def encode(clip_seconds: float) -> dict[str, Any]:
    """As the issue's repro (a 599 s `/transform`, 50 steps, then a 1 s `/generate`), on the step scheduler as the
    runner's event loop drives it: the generate (the API's default steps) alone, then three times while the clip
    is encoded; then the transform is cancelled and the time until it is answered is how long it took to stop."""
    engine = tiny_engine()
    cancelled = CancelledJobs()
    scheduler = StepScheduler(engine, cancelled, model_thread())
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(int(clip_seconds * engine.sample_rate))).astype(np.float32)
    transform = TransformJob(prompt="the same, on strings", steps=50, seed=7, samples_f32le=samples_to_bytes(clip))
    short = GenerationJob(prompt="a door knock", duration=1.0, seed=5)

    def submit(job: RunnerJob, start: Start) -> asyncio.Future[GroupRun[Any]]:
        [future] = scheduler.submit([job.model_copy()], start)
        return asyncio.wrap_future(future)

    async def latency() -> float:
        began = time.perf_counter()
        await submit(short, engine.start_generation)  # type: ignore[arg-type]
        return time.perf_counter() - began

    def encoding() -> tuple[int, int] | None:
        """The transform's pieces done and total while it encodes."""
        progress = scheduler.board.read([transform.job_id])[0]
        return (progress.done, progress.total) if progress.phase == "encoding" else None

    async def scenario() -> dict[str, Any]:
        await latency()  # warm-up
        alone = [await latency() for _ in range(3)]
        submitted = time.perf_counter()
        answered = submit(transform, engine.start_transform)  # type: ignore[arg-type]
        while (encoding() or (0, 0))[0] < 1:  # its first piece (the spectrogram and one tile) has run
            if answered.done():
                raise RuntimeError(f"a {clip_seconds:g} s clip was encoded in one piece: give one over 30 s")
            await asyncio.sleep(0.05)
        during, still_encoding = [], []
        for _ in range(3):
            during.append(await latency())
            still_encoding.append(encoding() is not None)
        at_cancel = encoding()
        cancelled_at = time.perf_counter()
        cancelled.add([transform.job_id])
        run = await answered
        stopped = time.perf_counter()
        assert run.error == CANCELLED_WHILE_RUNNING and at_cancel is not None, (run.error, at_cancel)
        return {
            "clip_seconds": clip_seconds,
            "short_steps": short.steps,
            "short_alone_s": alone,
            "short_during_encode_s": during,
            "still_encoding_after_each": still_encoding,
            "encoding_s_before_cancel": cancelled_at - submitted,
            "pieces_done_at_cancel": at_cancel[0],
            "pieces_total": at_cancel[1],
            "stop_after_cancel_s": stopped - cancelled_at,
        }

    try:
        return asyncio.run(scenario())
    finally:
        scheduler.close()


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Long-form AudioLDM2", "", *header_markdown(report["header"]), ""]
    for part, head in report.get("commands", {}).items():
        lines.append(f"- {part}: `{head['command']}` ({head['date']})")
    lines.append("")
    if "overlaps" in report:
        lines += [
            "## Window overlap (30 s clip, windows vs one latent)",
            "",
            "| overlap | windows | relative difference |",
        ]
        lines.append("|---:|---:|---:|")
        for r in report["overlaps"]:
            lines.append(f"| {r['overlap']:.2f} | {r['windows']} | {r['relative_difference']:.4f} |")
        lines.append("")
    if "timings" in report:
        lines += [
            "## Tiny profile, one generation",
            "",
            "| seconds | steps | windows | denoise s | decode s | total s |",
        ]
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for r in report["timings"]:
            times = " | ".join(fmt(r[key]) for key in ("denoise_s", "decode_s", "total_s"))
            lines.append(f"| {r['seconds']} | {r['steps']} | {r['windows']} | {times} |")
        lines.append("")
    if "memory" in report:
        lines += ["## Decode memory (VAE in tiles + vocoder in chunks), one fresh process", ""]
        lines += ["| size | seconds | RSS rise MiB | audio out MiB | decode s |", "|---|---:|---:|---:|---:|"]
        for r in report["memory"]:
            size = "full" if r["full_size"] else "tiny"
            figures = " | ".join(fmt(r[key], 1) for key in ("peak_growth_mib", "audio_mib", "decode_s"))
            lines.append(f"| {size} | {r['seconds']} | {figures} |")
        lines.append("")
    if "fairness" in report:
        f = report["fairness"]
        lines += [
            f"## A 2 s job during a {f['long_seconds']} s render ({f['steps']} steps each)",
            "",
            f"- alone: {', '.join(fmt(x) for x in f['short_alone_s'])} s",
            f"- during the render: {', '.join(fmt(x) for x in f['short_during_render_s'])} s",
            f"- ratio of medians: **{f['ratio']:.2f}x** (target: at most 3x); the render: {fmt(f['render_s'], 1)} s",
            "",
        ]
    if "encode" in report:
        e = report["encode"]
        lines += [
            f"## A 1 s generate during a {e['clip_seconds']:.0f} s transform's encoding, then its cancel",
            "",
            f"- 1 s generate ({e['short_steps']} steps) alone: {', '.join(fmt(x) for x in e['short_alone_s'])} s",
            f"- while the clip is encoded: {', '.join(fmt(x) for x in e['short_during_encode_s'])} s (still encoding "
            f"after each: {e['still_encoding_after_each']})",
            f"- cancelled {fmt(e['encoding_s_before_cancel'], 1)} s after it was sent, at piece "
            f"{e['pieces_done_at_cancel']} of {e['pieces_total']}: stopped **{fmt(e['stop_after_cancel_s'])} s** "
            "after the cancel",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short lengths and few steps")
    parser.add_argument("--smoke", action="store_true", help="every part once at 30 s, 2 steps (CI)")
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--full", action="store_true", help="memory: full-size VAE and vocoder architectures")
    parser.add_argument("--memory-seconds", type=int, nargs="+", default=[60, 600])
    parser.add_argument("--decode-peak", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.decode_peak:
        print(json.dumps(decode_peaks(args.decode_peak, args.full)))
        return 0
    parts = set(args.only or PARTS)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    lengths = SIZES[size]
    steps = lengths["steps"]
    report: dict[str, Any] = {"header": header(argv)}
    if "overlaps" in parts:
        report["overlaps"] = overlaps(steps)
    if "timings" in parts:
        report["timings"] = timings(lengths["timings"], steps)
    if "memory" in parts:
        report["memory"] = memory(args.memory_seconds if size == "full" else lengths["memory"], args.full)
    if "fairness" in parts:
        report["fairness"] = fairness(lengths["fairness"], steps)
    if "encode" in parts:
        report["encode"] = encode(lengths["encode"])
    name = "long-form" + ("" if size == "full" else f"-{size}") + ("-full-memory" if args.full else "")
    previous = args.out / f"{name}.json"
    if args.only and previous.exists():  # parts measured separately accumulate; each part keeps its own command
        earlier = json.loads(previous.read_text())
        commands = earlier.get("commands", {part: earlier["header"] for part in earlier if part in PARTS})
        report = {**earlier, **report, "commands": {**commands, **{part: report["header"] for part in parts}}}
    write_report(args.out, name, report, markdown(report) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
