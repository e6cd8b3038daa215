"""Host work per denoising step: the aten ops AudioLDM2's served step scheduler dispatches outside the UNet, its
host synchronisations, against diffusers' stock `AudioLDM2Pipeline` loop on the same tiny weights.

On a GPU the eager loop is launch-bound (issue 26: the stock pipeline spends most of a step waiting for the
host), so every op the host dispatches around the UNet (scheduler steps, guidance mixing, window fusion, row
bookkeeping) and every read of a device value (`.item()`, `bool(tensor)`, a copy to the host) costs time that a
GPU cannot hide. Counted with a `TorchDispatchMode` on the thread that runs the model:

- ops: every aten op that reaches the dispatcher, split into inside the UNet's forward (hooks on `pipe.unet`)
  and outside it. Per step is the marginal count: (count at `--steps` x 2 - count at `--steps`) / `--steps`,
  over the whole served run (its pass iterations) and over the whole stock call, so encoding, decoding and
  per-job set-up cancel out;
- syncs: `aten._local_scalar_dense`, `item`, `is_nonzero`, `equal` (a host read of a value), `nonzero` (a
  data-dependent shape, a sync on CUDA), and copies (`_to_copy`, `copy_`) between two devices. On the CPU
  every tensor is on the host, so a copy to the host dispatches nothing (`tensor.cpu()` returns the tensor): the
  CPU run counts the scalar reads, which are what a CUDA run would wait on;
- time: the tiny profile's wall time per step outside the UNet, without the counting mode (median over steps).

    .venv/bin/python bench/host_work.py            # ~1 min on 2 CPU cores; bench/results/host-work.json and .md
    .venv/bin/python bench/host_work.py --smoke    # one case's counts (tests/unit/test_host_work.py runs it)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _pop_mode_temporarily

from bench.common import DEFAULT_OUT, header, header_markdown, write_report
from models.audioldm2 import AudioLDM2Engine, JobAudio
from runners.batching import GroupRun
from runners.cancellation import CancelledJobs
from runners.model_thread import ModelThread
from runners.step_scheduler import Entry, Start, StepScheduler
from schemas import GenerationJob, JobError, ProgressPhase, RunnerJob, Scheduler, TransformJob

aten = torch.ops.aten
# A host read of a device value: the host waits for the device to get there.
SCALAR_READS = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal, aten.nonzero}
COPIES = {aten._to_copy, aten.copy_}
# Reads of a tensor's values that dispatch no aten op when it is on the CPU (on a GPU, a copy to the host): the
# Python methods themselves are counted while a tally is open.
HOST_READS = ("tolist", "numpy", "cpu", "__array__")


@dataclass
class Tally:
    """What one stretch of work dispatched: aten ops outside and inside the UNet's forward, host syncs by op,
    and wall time outside and inside the UNet."""

    outside: int = 0
    unet: int = 0
    syncs: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    unet_seconds: float = 0.0

    @property
    def seconds_outside(self) -> float:
        return self.seconds - self.unet_seconds


def device_of(value: Any) -> torch.device | None:
    return value.device if isinstance(value, torch.Tensor) else None


def crosses_devices(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """A copy between two devices: `_to_copy(x, device=...)` or `dst.copy_(src)`."""
    if func.overloadpacket is aten._to_copy:
        target = kwargs.get("device")
        return target is not None and torch.device(target) != device_of(args[0])
    return device_of(args[0]) != device_of(args[1])


class HostWork(TorchDispatchMode):
    """Counts into `tally` while one is set; the UNet's forward is told apart by hooks (`watching`)."""

    def __init__(self) -> None:
        super().__init__()
        self.tally: Tally | None = None
        self.in_unet = 0
        self._thread = 0
        self._own: dict[str, Any] = {}
        self._reading = False  # inside a counted read (`__array__` reads through `numpy`)

    def __enter__(self) -> HostWork:
        self._thread = threading.get_ident()
        self._own = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}
        for name in HOST_READS:
            setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for name, own in self._own.items():
            if own is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, own)
        super().__exit__(*exc)

    def _counted(self, name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(read)
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            tally, outermost = self.tally, not self._reading
            if tally is not None and outermost and threading.get_ident() == self._thread:
                tally.syncs[f"Tensor.{name}"] += 1
            self._reading = True
            try:
                return read(tensor, *args, **kwargs)
            finally:
                self._reading = not outermost

        return counted

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        tally = self.tally
        if tally is not None:
            if self.in_unet:
                tally.unet += 1
            else:
                tally.outside += 1
            packet = func.overloadpacket
            if packet in SCALAR_READS or (packet in COPIES and crosses_devices(func, args, kwargs)):
                tally.syncs[str(packet.__name__)] += 1
        return func(*args, **kwargs)


class Watch:
    """Tallies of stretches of work: ops (with `count`) and wall time, the UNet's share told apart by hooks on
    `unet`. The dispatch mode is per thread: a stretch is opened on the thread that runs it."""

    def __init__(self, unet: torch.nn.Module, count: bool) -> None:
        self.unet = unet
        self.mode = HostWork() if count else None
        self.current: Tally | None = None
        self._unet_began = 0.0

    @contextmanager
    def watching(self) -> Iterator[Watch]:
        """Hooks on the UNet for as long as the watch is used (the engine is shared: they are removed)."""

        def before(module: Any, args: Any) -> None:
            if self.mode is not None:
                self.mode.in_unet += 1
            self._unet_began = time.perf_counter()

        def after(module: Any, args: Any, output: Any) -> None:
            if self.mode is not None:
                self.mode.in_unet -= 1
            if self.current is not None:
                self.current.unet_seconds += time.perf_counter() - self._unet_began

        handles = [self.unet.register_forward_pre_hook(before), self.unet.register_forward_hook(after)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def stretch(self, tally: Tally) -> Iterator[Tally]:
        """Count and time what runs in the block (on this thread) into `tally`."""
        self.current = tally
        if self.mode is not None:
            self.mode.tally = tally
        began = time.perf_counter()
        try:
            if self.mode is None:
                yield tally
            else:
                with self.mode:
                    yield tally
        finally:
            tally.seconds += time.perf_counter() - began
            self.current = None
            if self.mode is not None:
                self.mode.tally = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing in the block is counted or timed (a job's encoding or decoding), and it runs at full speed:
        the dispatch mode is off."""
        tally, self.current = self.current, None
        if self.mode is not None:
            self.mode.tally = None
        began = time.perf_counter()
        try:
            if self.mode is None:
                yield
            else:
                with _pop_mode_temporarily():
                    yield
        finally:
            if tally is not None:
                tally.seconds -= time.perf_counter() - began
            self.current = tally
            if self.mode is not None:
                self.mode.tally = tally


@dataclass
class Iteration:
    """One iteration of the served scheduler: a UNet pass (`passes` 1) or a piece of a job's start or decoding."""

    tally: Tally
    passes: int = 0


class WatchedScheduler(StepScheduler):
    """The served step scheduler, each iteration tallied by `watch` on the model thread. Encoding and decoding
    pieces are not counted: they run once per job, at its boundaries."""

    def __init__(self, engine: AudioLDM2Engine, thread: ModelThread, watch: Watch) -> None:
        self.watch = watch
        self.iterations: list[Iteration] = []
        super().__init__(engine, CancelledJobs(), thread)

    def iteration(self, arrived: list[Entry]) -> None:
        record = Iteration(Tally())
        self.iterations.append(record)
        with self.watch.stretch(record.tally):
            super().iteration(arrived)

    def _run_pass(self, parts: list[tuple[Entry, int]]) -> None:
        self.iterations[-1].passes += 1
        super()._run_pass(parts)

    def _piece(self, entry: Entry, plan: Any, phase: ProgressPhase) -> Any:
        with self.watch.paused():
            return super()._piece(entry, plan, phase)

    def run(self, jobs: Sequence[RunnerJob], start: Start) -> list[GroupRun[JobAudio]]:
        return [future.result() for future in self.submit(list(jobs), start)]


def served(
    engine: AudioLDM2Engine, thread: ModelThread, batches: Sequence[tuple[Sequence[RunnerJob], Start]], count: bool
) -> list[Iteration]:
    """Each (jobs, start) as one intake batch, all submitted at once, through the served step scheduler on
    `thread` (free again afterwards); its pass iterations' tallies."""
    watch = Watch(engine.pipe.unet, count)
    with watch.watching():
        scheduler = WatchedScheduler(engine, thread, watch)
        try:
            futures = [f for jobs, start in batches for f in scheduler.submit(list(jobs), start)]
            runs = [future.result() for future in futures]
        finally:
            scheduler.close()
    failed: list[JobError] = [run.error for run in runs if run.error is not None]
    assert not failed, failed
    return [record for record in scheduler.iterations if record.passes]


def stock(engine: AudioLDM2Engine, jobs: Sequence[GenerationJob], count: bool) -> list[Tally]:
    """The jobs (one knob set: the first job's) as one call of diffusers' stock `AudioLDM2Pipeline`, on this
    thread: the whole call's tally, then one per denoising step after the first (from one step's end, the
    pipeline's callback, to the next)."""
    from models.audioldm2 import SCHEDULERS

    first = jobs[0]
    pipe = engine.pipe
    watch = Watch(pipe.unet, count)
    whole, steps = Tally(), [Tally()]
    original = pipe.scheduler
    pipe.scheduler = SCHEDULERS[first.scheduler].from_config(original.config)

    def step_ended(step: int, t: Any, latents: Any) -> None:
        last = steps[-1]
        whole.outside, whole.unet = whole.outside + last.outside, whole.unet + last.unet
        whole.syncs.update(last.syncs)
        now = time.perf_counter()
        last.seconds = now - last.seconds  # began: set below
        steps.append(Tally(seconds=now))
        watch.current = steps[-1]
        if watch.mode is not None:
            watch.mode.tally = steps[-1]

    try:
        with watch.watching():
            tally = steps[0]
            with watch.stretch(tally):
                tally.seconds = time.perf_counter()
                pipe(
                    [j.prompt for j in jobs],
                    negative_prompt=[j.negative_prompt for j in jobs],
                    audio_length_in_s=first.duration,
                    num_inference_steps=first.steps,
                    guidance_scale=first.guidance_scale,
                    generator=[torch.Generator("cpu").manual_seed(j.seed) for j in jobs],
                    output_type="latent",
                    callback=step_ended,
                    callback_steps=1,
                )
    finally:
        pipe.scheduler = original
    rest = steps[-1]  # from the last step's end to the call's end: decoding is not run (latents out)
    whole.outside, whole.unet = whole.outside + rest.outside, whole.unet + rest.unet
    whole.syncs.update(rest.syncs)
    return [whole, *steps[1:-1]]


@dataclass(frozen=True)
class Case:
    """`jobs` jobs of one knob set (seeds and prompts aside)."""

    name: str
    jobs: int
    scheduler: Scheduler
    guidance_scale: float = 3.5

    def generation(self, steps: int, duration: float = 2.0) -> list[GenerationJob]:
        return [
            GenerationJob(
                prompt=f"rain on a tin roof, take {k}",
                seed=k,
                steps=steps,
                duration=duration,
                scheduler=self.scheduler,
                guidance_scale=self.guidance_scale,
            )
            for k in range(self.jobs)
        ]


CASES = [
    Case("dpm++ batch 1", 1, Scheduler.DPMPP),
    Case("dpm++ batch 8", 8, Scheduler.DPMPP),
    Case("ddim batch 1", 1, Scheduler.DDIM),
    Case("ddim batch 8", 8, Scheduler.DDIM),
    Case("dpm++ batch 1, no guidance", 1, Scheduler.DPMPP, guidance_scale=1.0),
]


def served_ops(engine: AudioLDM2Engine, thread: ModelThread, case: Case, steps: int) -> dict[str, Any]:
    """Ops per step outside the UNet (marginal: `steps` more steps), passes and syncs of the served scheduler."""
    runs = [served(engine, thread, [(case.generation(n), engine.start_generation)], True) for n in (steps, 2 * steps)]
    short, long = (sum(i.tally.outside for i in iterations) for iterations in runs)
    return {
        "ops_outside_unet_per_step": (long - short) / steps,
        "syncs": dict(sum((i.tally.syncs for i in runs[1]), Counter())),
        "passes": len(runs[1]),
    }


def stock_ops(engine: AudioLDM2Engine, thread: ModelThread, case: Case, steps: int) -> dict[str, Any]:
    """The same for the stock pipeline's whole call (its encoding and set-up cancel out)."""
    short, long = (thread.call(lambda n=n: stock(engine, case.generation(n), True))[0] for n in (steps, 2 * steps))
    return {"ops_outside_unet_per_step": (long.outside - short.outside) / steps, "syncs": dict(long.syncs)}


def compare(engine: AudioLDM2Engine, thread: ModelThread, case: Case, steps: int) -> dict[str, Any]:
    """Ops per step outside the UNet, served and stock, and their ratio."""
    ours, theirs = served_ops(engine, thread, case, steps), stock_ops(engine, thread, case, steps)
    return {
        "case": case.name,
        "served": ours,
        "stock": theirs,
        "ratio": ours["ops_outside_unet_per_step"] / theirs["ops_outside_unet_per_step"],
    }


def timing(engine: AudioLDM2Engine, thread: ModelThread, case: Case, steps: int, duration: float) -> dict[str, Any]:
    """Median ms per step outside the UNet (and inside it), served and stock, after a warm-up of each."""
    jobs = case.generation(steps, duration)
    served(engine, thread, [(jobs, engine.start_generation)], False)
    ours = served(engine, thread, [(jobs, engine.start_generation)], False)
    thread.call(lambda: stock(engine, jobs, False))
    theirs = thread.call(lambda: stock(engine, jobs, False))[1:]
    return {
        "case": case.name,
        "served_ms_outside_unet": 1e3 * statistics.median(i.tally.seconds_outside for i in ours),
        "stock_ms_outside_unet": 1e3 * statistics.median(t.seconds_outside for t in theirs),
        "served_ms_unet": 1e3 * statistics.median(i.tally.unet_seconds for i in ours),
        "stock_ms_unet": 1e3 * statistics.median(t.unet_seconds for t in theirs),
    }


# A clip longer than this is denoised as windows in the mixed batch (the runner's limit is 30 s: a 12 s windowed
# clip runs the same code as a 10-minute one, in seconds).
MIXED_SINGLE_LATENT_S = 5.0


def mixed_batches(engine: AudioLDM2Engine, steps: int = 3) -> list[tuple[list[RunnerJob], Start]]:
    """Generate and transform, guidance on and off, DPM++ and DDIM, a windowed clip: two intake batches, for an
    engine whose single latent ends at MIXED_SINGLE_LATENT_S."""
    import numpy as np

    from schemas import samples_to_bytes

    clip = samples_to_bytes((0.2 * np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000)).astype(np.float32))
    generate: list[RunnerJob] = [
        GenerationJob(prompt="rain", seed=1, steps=steps, duration=1.0),
        GenerationJob(prompt="a bell", seed=2, steps=steps, duration=1.0, scheduler=Scheduler.DDIM),
        GenerationJob(prompt="wind", seed=3, steps=steps, duration=1.0, guidance_scale=1.0, num_waveforms=2),
        GenerationJob(prompt="a slow pad", seed=4, steps=2, duration=12.0, guidance_scale=3.0),
    ]
    transform: list[RunnerJob] = [
        TransformJob(prompt="heavier rain", seed=6, steps=steps + 2, strength=0.6, samples_f32le=clip),
        TransformJob(
            prompt="a choir",
            seed=7,
            steps=steps + 2,
            strength=0.8,
            guidance_scale=1.0,
            scheduler=Scheduler.DDIM,
            samples_f32le=clip,
        ),
    ]
    return [(generate, engine.start_generation), (transform, engine.start_transform)]


def mixed(engine: AudioLDM2Engine, thread: ModelThread) -> list[Iteration]:
    """The mixed batch through the served scheduler of an engine on `engine`'s pipeline, counted."""
    windowed = AudioLDM2Engine(engine.pipe, single_latent_max_s=MIXED_SINGLE_LATENT_S)
    return served(windowed, thread, mixed_batches(windowed), True)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Host work per denoising step: the served step scheduler against stock diffusers",
        "",
        *header_markdown(report),
        f"- tiny profile; ops: {report['steps']} and {2 * report['steps']} steps, 2 s clips, guidance 3.5 unless "
        f"said; time: {report['timing_steps']} steps, {report['timing_duration']} s clips, median over steps",
        "",
        "| case | served ops/step outside the UNet | stock | ratio | served syncs | stock syncs |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in report["ops"]:
        lines.append(
            f"| {row['case']} | {row['served']['ops_outside_unet_per_step']:.1f} "
            f"| {row['stock']['ops_outside_unet_per_step']:.1f} | {row['ratio']:.2f} "
            f"| {row['served']['syncs'] or 0} | {row['stock']['syncs'] or 0} |"
        )
    lines += [
        "",
        "Served syncs are counted over the passes (a job's encoding and decoding run outside them); the stock "
        "pipeline's over its whole call, whose prompt encoding (GPT-2's `generate`) reads device values too.",
    ]
    if mix := report.get("mixed"):
        lines += [
            "",
            "Mixed batch (generate + transform, guidance on/off, DPM++ and DDIM, a windowed 12 s clip): "
            f"{mix['passes']} passes, {mix['ops_outside_unet_per_pass']:.1f} ops per pass outside the UNet, "
            f"syncs per pass: {mix['syncs_per_pass']} ({mix['syncs'] or 'none'}).",
        ]
    if report.get("timing"):
        lines += ["", "| case | served ms/step outside the UNet | stock | served UNet ms | stock UNet ms |"]
        lines += ["|---|---:|---:|---:|---:|"]
        for row in report["timing"]:
            lines.append(
                f"| {row['case']} | {row['served_ms_outside_unet']:.2f} | {row['stock_ms_outside_unet']:.2f} "
                f"| {row['served_ms_unet']:.2f} | {row['stock_ms_unet']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the first case's counts only (tests run it)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from models.audioldm2 import load_pipeline
    from models.memory import MemoryOptions, place
    from models.profiles import audioldm2_checkpoint
    from settings import SETTINGS

    thread = ModelThread("audioldm2-model")
    placement = place("AudioLDM2", MemoryOptions(), torch.float16)
    path = str(audioldm2_checkpoint(SETTINGS, None).path)
    engine = thread.call(lambda: AudioLDM2Engine(load_pipeline(path, placement.device, placement.dtype)))
    cases = CASES[:1] if args.smoke else CASES
    command = None if argv is None else ["bench/host_work.py", *argv]
    report: dict[str, Any] = {**header(command), "smoke": args.smoke, "steps": args.steps}
    report |= {"timing_steps": 25, "timing_duration": 5.0}
    report["ops"] = [compare(engine, thread, case, args.steps) for case in cases]
    if not args.smoke:
        iterations = mixed(engine, thread)
        report["mixed"] = {
            "passes": len(iterations),
            "ops_outside_unet_per_pass": statistics.mean(i.tally.outside for i in iterations),
            "syncs": dict(sum((i.tally.syncs for i in iterations), Counter())),
            "syncs_per_pass": [sum(i.tally.syncs.values()) for i in iterations],
        }
        report["timing"] = [timing(engine, thread, case, 25, 5.0) for case in cases[:4]]
    name = "host-work-smoke" if args.smoke else "host-work"
    write_report(args.out, name, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
