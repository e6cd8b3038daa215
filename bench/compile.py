"""AudioLDM2's UNet compiled by row buckets (AUDIO_STUDIO_AUDIOLDM2_COMPILE): what the start-up compile costs
cold and from its cache (a second start), that a mixed workload after it compiles nothing, the audio against the
eager UNet's, and one UNet forward's time per row bucket, eager and compiled.

Each start is a fresh process (`--start`), the second one on the first one's cache folder, as a restarted runner
is. A start builds the engine as the runner does (models/compiled_unet.py), warms it up, runs `mixed_workload`
through the step scheduler counting dynamo's graphs, then runs the same jobs on the eager UNet.

    .venv/bin/python bench/compile.py              # tiny profile, inductor, rows 4 and 8: ~8 min on 2 cores
    .venv/bin/python bench/compile.py --smoke      # one start, dynamo alone (backend eager): ~1.5 min
    .venv/bin/python bench/compile.py --size base --device cuda --mode reduce-overhead --max-rows 32  # a GPU
"""

from __future__ import annotations

import argparse
import json
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

import numpy as np
import torch
from torch._dynamo.utils import counters

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from models.audioldm2 import AudioLDM2Engine
from runners.audioldm2_in_process import InProcessScheduler
from runners.model_thread import ModelThread
from runners.startup import use_compile_cache
from schemas import GenerationJob, TransformJob, samples_to_bytes

ROOT = Path(__file__).resolve().parent.parent
Batch = list[GenerationJob] | list[TransformJob]


def mixed_workload(long_clip: bool = True) -> list[Batch]:
    """Intake batches covering both schedulers, guidance on and off, 1 to 4 waveforms, lengths that are multiples
    of the UNet's up factor and lengths that are not, a transform and (`long_clip`) a 40 s clip in windows."""
    clip = (np.sin(np.linspace(0, 400, 16_000 * 3)) * 0.3).astype(np.float32)
    batches: list[Batch] = [
        [GenerationJob(prompt="a bell", duration=1.3, steps=3, seed=1)],
        [
            GenerationJob(prompt="rain", duration=2.0, steps=3, seed=2, scheduler="ddim", guidance_scale=1.0),
            GenerationJob(prompt="a choir", duration=5.1, steps=2, seed=3, num_waveforms=4),
        ],
        [TransformJob(samples_f32le=samples_to_bytes(clip), prompt="a flute", steps=3, seed=4, strength=0.6)],
    ]
    if long_clip:
        batches.append([GenerationJob(prompt="a slow pad", duration=40.0, steps=2, seed=5, guidance_scale=3.0)])
    return batches


def run_workload(scheduler: InProcessScheduler, batches: list[Batch]) -> list[torch.Tensor]:
    """Every job's waveforms, in order; a job that fails fails the run."""
    waveforms = []
    for batch in batches:
        engine = scheduler.engine
        start = engine.start_transform if isinstance(batch[0], TransformJob) else engine.start_generation
        for answer in scheduler.run(batch, start):  # type: ignore[arg-type]
            if answer.error is not None or answer.output is None:
                raise RuntimeError(f"a job failed: {answer.error}")
            waveforms.append(answer.output.waveforms)
    return waveforms


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def forward_ms(engine: AudioLDM2Engine, rows: int, repeats: int) -> float:
    """Median time of one UNet forward of `rows` rows at the window length (after one untimed call)."""
    inputs = engine.blank_pass(engine.stack([engine.encode("", "", guidance=False)], [1]), rows, engine.window_frames)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            started = time.perf_counter()
            engine.unet(*inputs)
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * 1000


def load(size: str, device: str) -> Any:
    """The pipeline: the tiny profile's, or a full-size architecture with random weights (bench/fullsize.py)."""
    if size == "tiny":
        from models.audioldm2 import load_pipeline
        from models.profiles import audioldm2_checkpoint
        from settings import SETTINGS

        return load_pipeline(str(audioldm2_checkpoint(SETTINGS, None).path), torch.device(device), torch.float32)
    from bench.fullsize import full_audioldm2

    return full_audioldm2(size, torch.device(device), torch.float16 if device == "cuda" else torch.float32)


def one_start(args: argparse.Namespace) -> dict[str, Any]:
    """One runner start on the cache folder: compile and warm up, the workload, then the same on eager."""
    use_compile_cache(args.cache_dir)
    thread = ModelThread("audioldm2-compile")
    pipe = thread.call(lambda: load(args.size, args.device))
    before = graphs()
    engine = thread.call(
        lambda: AudioLDM2Engine(pipe, max_rows=args.max_rows, compile=args.mode, compile_backend=args.backend)
    )
    warm_up_s = thread.call(engine.warm_up)
    warmed = graphs()
    batches = mixed_workload(long_clip=not args.smoke)
    scheduler = InProcessScheduler(engine, thread)
    compiled_audio = run_workload(scheduler, batches)
    scheduler.close()
    after = graphs()
    eager = AudioLDM2Engine(pipe, max_rows=args.max_rows)
    scheduler = InProcessScheduler(eager, thread)
    eager_audio = run_workload(scheduler, batches)
    scheduler.close()
    differences = [float((a - b).abs().max()) for a, b in zip(compiled_audio, eager_audio, strict=True)]
    peak = max(float(audio.abs().max()) for audio in eager_audio)
    repeats = 1 if args.smoke else 5
    forwards = {
        rows: {
            "eager_ms": thread.call(lambda rows=rows: forward_ms(eager, rows, repeats)),
            "compiled_ms": thread.call(lambda rows=rows: forward_ms(engine, rows, repeats)),
        }
        for rows in engine.row_buckets
    }
    return {
        "warm_up_s": warm_up_s,
        "graphs_compiled_by_warm_up": warmed - before,
        "graphs_compiled_by_workload": after - warmed,
        "graph_breaks": sum(counters["graph_break"].values()),
        "graph_break_reasons": dict(counters["graph_break"]),
        "jobs": sum(len(batch) for batch in batches),
        "max_abs_difference": max(differences),
        "peak": peak,
        "forward_ms": forwards,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["# AudioLDM2's UNet compiled by row buckets", "", *header_markdown(report), ""]
    lines += [
        f"- {report['size']} on {report['device']}, compile={report['mode']} backend={report['backend']}, "
        f"row buckets up to {report['max_rows']}; the workload: {report['starts'][0]['jobs']} jobs "
        "(both schedulers, guidance on and off, 1-4 waveforms, lengths of both kinds, a transform"
        + ("" if report["smoke"] else ", a 40 s clip in windows")
        + ")",
        "",
        "| start | warm-up (compile) s | graphs at warm-up | graphs during the workload | graph breaks "
        "| max abs difference vs eager (peak) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, start in zip(("first (empty cache)", "second (cached)"), report["starts"], strict=False):
        lines.append(
            f"| {name} | {fmt(start['warm_up_s'], 1)} | {start['graphs_compiled_by_warm_up']} "
            f"| {start['graphs_compiled_by_workload']} | {start['graph_breaks']} "
            f"| {start['max_abs_difference']:.2e} ({fmt(start['peak'], 3)}) |"
        )
    lines += ["", "| rows | UNet forward eager ms | compiled ms |", "|---:|---:|---:|"]
    for rows, times in report["starts"][-1]["forward_ms"].items():
        lines.append(f"| {rows} | {fmt(times['eager_ms'], 1)} | {fmt(times['compiled_ms'], 1)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="dynamo alone (backend eager), no long clip (CI)")
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    parser.add_argument("--max-rows", type=int, default=8, help="the largest row bucket (the runner's: 32)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a new empty folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--start", action="store_true", help=argparse.SUPPRESS)  # one start, in its own process
    args = parser.parse_args(argv)
    args.backend = "eager" if args.smoke else "inductor"
    if args.start:
        print(json.dumps(one_start(args)))
        return 0
    command = ["bench/compile.py", *(sys.argv[1:] if argv is None else argv)]
    report: dict[str, Any] = {**header(command), "smoke": args.smoke, "size": args.size, "device": args.device}
    report |= {"mode": args.mode, "backend": args.backend, "max_rows": args.max_rows, "starts": []}
    with tempfile.TemporaryDirectory(prefix="compile-cache-") as empty:
        cache = args.cache_dir or Path(empty)
        child = [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:]), "--start"]
        child += ["--cache-dir", str(cache)] if args.cache_dir is None else []
        for _ in range(1 if args.smoke else 2):  # the smoke's backend writes no kernels to cache
            done = subprocess.run(child, cwd=ROOT, capture_output=True, text=True, timeout=3000)
            if done.returncode != 0:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            report["starts"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    name = "compile-smoke" if args.smoke else f"compile-{args.size}-{args.device}"
    write_report(args.out, name, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
