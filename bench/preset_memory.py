"""Peak GPU memory of each memory preset (deploy/presets/*.env) with the models the benchmarks' profile loads.

Each preset runs in a process of its own (settings are read once, at import), its lines added to that process's
environment. Every runner the preset configures (it has an AUDIO_STUDIO_<RUNNER>_* line) is loaded as the runner
loads it (bench/in_process.py), then serves one batch of the preset's max batch size: AudioLDM2 10 s clips (DPM++,
5 steps: a pass peaks the same whatever the step count), Music Flamingo critiques of a 30 s clip with the
`feedback` preset (16 new tokens). Reported per runner: torch.cuda.max_memory_allocated over what was allocated
before its load, after the load and after the batch, and the sum for the preset (both runners on one card).

The profile is the benchmarks' (bench/tiny_profile.py): bench/gpu.sh chooses `random` with full-size folders.

    AUDIO_STUDIO_PROFILE=random AUDIO_STUDIO_RANDOM_MODEL_DIR=DIR python bench/preset_memory.py   # on a GPU
    .venv/bin/python bench/preset_memory.py --smoke    # CPU, seconds: batches of 2, 1 s clips, 2 steps, 4 tokens

Without a GPU there is no memory figure, and float16 is read as bfloat16 (PyTorch lacks CPU kernels for some
float16 convolutions): the same code runs, for the smoke form.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.tiny_profile import PROFILE  # the tiny profile (or random folders), before any project import

# isort: split

# Nothing here imports the project at module level: a preset's child process imports this module before its
# environment holds the preset's settings.
from bench.common import DEFAULT_OUT, ROOT, fmt, header, header_markdown, write_report
from bench.in_process import alone

PRESETS = sorted((ROOT / "deploy" / "presets").glob("*.env"))
RUNNER_PREFIXES = {"audioldm2": "AUDIO_STUDIO_AUDIOLDM2_", "music_flamingo": "AUDIO_STUDIO_MUSIC_FLAMINGO_"}


@dataclass(frozen=True)
class Load:
    """The batch each runner serves after loading."""

    clip_s: float  # AudioLDM2's clips
    steps: int  # AudioLDM2's DPM++ steps
    new_tokens: int  # Music Flamingo's
    most_jobs: int | None  # None: the preset's max batch size

    def batch(self, max_batch_size: int) -> int:
        return min(max_batch_size, self.most_jobs or max_batch_size)


FULL_LOAD = Load(clip_s=10.0, steps=5, new_tokens=16, most_jobs=None)
SMOKE_LOAD = Load(clip_s=1.0, steps=2, new_tokens=4, most_jobs=2)


def preset_settings(preset: Path, cuda: bool) -> dict[str, str]:
    """The preset's settings; without a GPU float16 reads as bfloat16 (the placement refuses float16 on a CPU)."""
    lines = [line.strip() for line in preset.read_text().splitlines()]
    entries = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: "bfloat16" if value == "float16" and not cuda else value for name, value in entries.items()}


def configured_runners(settings: dict[str, str]) -> list[str]:
    return [runner for runner, prefix in RUNNER_PREFIXES.items() if any(name.startswith(prefix) for name in settings)]


class Memory:
    """GPU memory allocated beyond what was allocated when it was made (None without a GPU)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()

    def peak_gib(self) -> float | None:
        import torch

        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - self.base) / 2**30


def measure_runner(runner: str, load: Load) -> dict[str, Any]:
    """In the preset's process: load `runner`'s model as its runner does, serve one batch; memory and seconds."""
    from bench.in_process import Flamingo, critique_job, load_audioldm2
    from presets import Preset
    from registry import AUDIOLDM2, MUSIC_FLAMINGO
    from schemas import GenerationJob
    from tests.audio_files import audio_file

    memory = Memory()
    started = time.perf_counter()
    if runner == "audioldm2":
        scheduled = load_audioldm2()
        batch = load.batch(AUDIOLDM2.settings.max_batch_size)
        jobs: list[Any] = [
            GenerationJob(prompt="rain on a tin roof", duration=load.clip_s, steps=load.steps, seed=seed)
            for seed in range(batch)
        ]
        serve = scheduled.generate
    else:
        flamingo = Flamingo()
        batch = load.batch(MUSIC_FLAMINGO.settings.max_batch_size)
        clips = [flamingo.decoded(audio_file("wav", 30.0))]
        fields = {"preset": Preset.FEEDBACK.value, "max_new_tokens": load.new_tokens}
        jobs = [critique_job({**fields, "seed": seed}, clips) for seed in range(batch)]
        serve = flamingo.run
    loaded_s, loaded_gib = time.perf_counter() - started, memory.peak_gib()
    started = time.perf_counter()
    runs = serve(jobs)
    return {
        "batch": batch,
        "load_s": loaded_s,
        "batch_s": time.perf_counter() - started,
        "loaded_gib": loaded_gib,
        "peak_gib": memory.peak_gib(),
        "errors": [run.error.message for run in runs if run.error is not None],
    }


def measure_preset(runners: list[str], load: Load) -> dict[str, dict[str, Any]]:
    """In the preset's process: each runner in turn, each measured from what was allocated before its load."""
    return {runner: measure_runner(runner, load) for runner in runners}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Peak GPU memory per preset ({report['profile']} profile)", "", *header_markdown(report), ""]
    lines += [
        "Per runner the preset configures: one batch of its max batch size (AudioLDM2: {clip_s:g} s clips, {steps} "
        "DPM++ steps; Music Flamingo: a 30 s clip's critique, {new_tokens} new tokens); GiB allocated beyond what was "
        "allocated before the load (torch.cuda.max_memory_allocated).".format(**report["load"]),
        "",
        "| preset | runner | batch | loaded GiB | peak GiB | load s | batch s | errors |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, preset in report["presets"].items():
        if "error" in preset:
            lines.append(f"| {name} | - | | | | | | {preset['error'][:200]} |")
        for runner, r in preset.get("runners", {}).items():
            lines.append(
                f"| {name} | {runner} | {r['batch']} | {fmt(r['loaded_gib'])} | {fmt(r['peak_gib'])} "
                f"| {r['load_s']:.1f} | {r['batch_s']:.1f} | {'; '.join(r['errors'])[:200]} |"
            )
        if preset.get("peak_gib_sum") is not None:
            lines.append(f"| {name} | both, on one card | | | {preset['peak_gib_sum']:.2f} | | | |")
    if report["skipped"]:
        lines += ["", "Skipped (time budget): " + ", ".join(report["skipped"])]
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="batches of 2, 1 s clips, 2 steps, 4 tokens (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the report (.json and .md)")
    parser.add_argument("--name", default="preset-memory", help="the report's file name")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new preset after this many seconds")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    load = SMOKE_LOAD if args.smoke else FULL_LOAD
    report: dict[str, Any] = header(None if argv is None else ["bench/preset_memory.py", *argv])
    report |= {"profile": PROFILE, "load": asdict(load), "presets": {}, "skipped": []}
    deadline = time.monotonic() + (args.budget_s if args.budget_s is not None else float("inf"))
    failed = False
    for preset in PRESETS:
        if time.monotonic() > deadline:
            report["skipped"].append(preset.stem)
            continue
        settings = preset_settings(preset, cuda)
        runners = configured_runners(settings)
        entry: dict[str, Any] = {"settings": settings}
        try:
            with alone(settings) as child:
                entry["runners"] = child.submit(measure_preset, runners, load).result()
        except Exception as exc:  # one preset's failure (out of memory, a missing package) keeps the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
        peaks = [r["peak_gib"] for r in entry.get("runners", {}).values()]
        entry["peak_gib_sum"] = sum(peaks) if peaks and None not in peaks else None
        failed |= "error" in entry or any(r["errors"] for r in entry.get("runners", {}).values())
        report["presets"][preset.stem] = entry
        write_report(args.out, args.name, report, markdown(report))
        print(f"[{time.strftime('%H:%M:%S')}] {preset.stem}: {entry.get('runners', entry.get('error'))}", flush=True)
    write_report(args.out, args.name, report, markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
