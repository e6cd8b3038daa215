"""Two CPU effects a runner process avoids: a second OpenMP team, and a fresh mapping for every block.

Each variant runs in a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (as the image sets it): the tiny AudioLDM2
engine loaded on a ModelThread and served there by the runner's step scheduler, as the runner does, a 5 s clip in
25 steps, median of 8 after 2 warm-ups.

- `runner`: as a runner runs it (runners/model_thread.py, models/allocator.py keep_freed_memory);
- `second-team`: one matrix product on the main thread first. libgomp gives every thread that starts a parallel
  region its own team; with more OpenMP threads than cores, teams sleep at barriers instead of spinning;
- `every-block-mapped`: without keep_freed_memory, so every block over 64 KiB is a fresh mapping.

    .venv/bin/python bench/runner_cpu.py     # ~3 min on 2 cores; bench/results/runner-cpu.json and .md
    .venv/bin/python bench/runner_cpu.py --smoke --out /tmp/cpu   # each variant once, 2 runs of 3 steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

from bench.common import DEFAULT_OUT, header, header_markdown, write_report

VARIANTS = ("runner", "second-team", "every-block-mapped", "runner", "second-team", "every-block-mapped")


def measure(variant: str, runs: int, steps: int) -> float:
    import torch

    from models.allocator import keep_freed_memory
    from models.audioldm2 import AudioLDM2Engine, load_placed_pipeline
    from models.memory import MemoryOptions, place
    from models.profiles import audioldm2_checkpoint
    from runners.audioldm2_in_process import InProcessScheduler
    from runners.model_thread import ModelThread
    from schemas import GenerationJob
    from settings import SETTINGS

    if variant != "every-block-mapped":
        keep_freed_memory()
    if variant == "second-team":
        x = torch.randn(2000, 2000)
        (x @ x).sum()
    thread = ModelThread("audioldm2-model")
    path = str(audioldm2_checkpoint(SETTINGS, None).path)
    engine = thread.call(
        lambda: AudioLDM2Engine(load_placed_pipeline(path, place("AudioLDM2", MemoryOptions(), torch.float16)))
    )

    def one(scheduled: InProcessScheduler, seed: int) -> float:
        started = time.perf_counter()
        [run] = scheduled.generate([GenerationJob(prompt="rain on a roof", duration=5.0, steps=steps, seed=seed)])
        assert run.error is None, run.error
        return time.perf_counter() - started

    with InProcessScheduler(engine, thread) as scheduled:
        times = [one(scheduled, seed) for seed in range(runs + 2)][2:]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="each variant once, 2 runs of 3 steps (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for runner-cpu.json and .md")
    parser.add_argument("--variant", choices=sorted(set(VARIANTS)), help=argparse.SUPPRESS)  # one, in this process
    parser.add_argument("--runs", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(measure(args.variant, args.runs, args.steps))
        return
    runs, steps = (2, 3) if args.smoke else (8, 25)
    report = header() | {"smoke": args.smoke, "runs": runs, "steps": steps}
    lines = [f"# Runner CPU effects (tiny AudioLDM2, 5 s clip, {steps} steps)", "", *header_markdown(report), ""]
    lines += ["| variant | median s |", "|---|---:|"]
    report["medians_s"] = []
    for variant in sorted(set(VARIANTS), key=VARIANTS.index) if args.smoke else VARIANTS:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        command = [sys.executable, __file__, "--variant", variant, "--runs", str(runs), "--steps", str(steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        median = float(done.stdout.strip().splitlines()[-1])
        report["medians_s"].append({"variant": variant, "median_s": median})
        lines.append(f"| {variant} | {median:.3f} |")
    markdown = "\n".join(lines) + "\n"
    write_report(args.out, "runner-cpu", report, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
