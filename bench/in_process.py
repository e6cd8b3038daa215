"""The served model code without HTTP, one model family per process: the baselines the HTTP path is judged by.

Each family is loaded and run on a model thread of its own, as its runner does (runners/model_thread.py), in a
spawned process that holds nothing else. A process that held both families would run two OpenMP teams on the
same cores, and that slows single jobs (measured: 0.96 -> 1.83 s for 8 critiques at 64 tokens) more than
batches, so it would inflate the ceiling batching is judged against (bench/README.md).

    with alone() as child:
        child.submit(some_top_level_function, ...).result()   # the function loads what it needs
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from models.music_flamingo import CritiqueJob as EngineJob
    from models.music_flamingo import MusicFlamingoEngine
    from runners.audioldm2_in_process import InProcessScheduler
    from runners.batching import GroupRun
    from runners.model_thread import ModelThread
    from schemas import JobError


def alone(environ: dict[str, str] | None = None) -> ProcessPoolExecutor:
    """A fresh spawned process (no model, no torch state inherited) for one family's measurements; `environ`
    is added to its environment before its first task, so settings read at import see it."""
    return ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=add_environ, initargs=(environ or {},)
    )


def add_environ(environ: dict[str, str]) -> None:
    os.environ.update(environ)


def load_audioldm2() -> InProcessScheduler:
    """AudioLDM2 as its runner builds it (`runners.audioldm2.load_engine`), served by the step scheduler on its
    model thread."""
    from models.profiles import audioldm2_checkpoint
    from runners.audioldm2 import load_engine
    from runners.audioldm2_in_process import InProcessScheduler
    from settings import SETTINGS

    return InProcessScheduler(*load_engine(audioldm2_checkpoint(SETTINGS, None)))


class Flamingo:
    """Music Flamingo as its runner builds it (`runners.music_flamingo.load_engine`), each call run on its model
    thread."""

    def __init__(self) -> None:
        from models.profiles import music_flamingo_checkpoint
        from runners.music_flamingo import load_engine
        from settings import SETTINGS

        self.engine: MusicFlamingoEngine
        self.thread: ModelThread
        self.engine, self.thread = load_engine(music_flamingo_checkpoint(SETTINGS, None))

    def run(self, jobs: Sequence[EngineJob]) -> list[GroupRun[Any]]:
        """`jobs` as one runner batch, on the model thread."""
        from runners.batching import run_in_groups

        return self.thread.call(lambda: run_in_groups(list(jobs), self.engine.group_key, self.engine.generate))

    def refusal(self, job: EngineJob) -> JobError | None:
        """The runner's per-job checks, on the model thread as the runner runs them."""
        from runners.music_flamingo import refusal

        return self.thread.call(lambda: refusal(self.engine, job))

    def decoded(self, upload: bytes) -> bytes:
        """An uploaded file as the front hands it on: decoded, down-mixed and resampled, as float32 bytes."""
        from audio_io import decode_upload
        from schemas import samples_to_bytes

        with tempfile.NamedTemporaryFile(suffix=".wav") as file:
            file.write(upload)
            file.flush()
            rate, longest = self.engine.sample_rate, self.engine.max_audio_seconds
            decoded = decode_upload(Path(file.name), "audio", rate, longest, truncate=True)
        return samples_to_bytes(decoded.samples)


def critique_job(fields: dict[str, Any], clips_f32le: list[bytes]) -> EngineJob:
    """The engine job the front sends for a critique form's `fields` (preset or prompt, max_new_tokens, seed)."""
    from presets import Preset, compose_prompt
    from runners.music_flamingo import engine_job
    from schemas import CritiqueJob

    preset = Preset(fields["preset"]) if "preset" in fields else None
    return engine_job(
        CritiqueJob(
            prompt=compose_prompt(preset, fields.get("prompt")),
            clips_f32le=clips_f32le,
            max_new_tokens=int(fields["max_new_tokens"]),
            seed=int(fields["seed"]),
        )
    )


@contextmanager
def no_second_openmp_team() -> Iterator[None]:
    """Fails when the work inside starts threads in this process. Torch work on any thread but the model's starts
    a second OpenMP team, and every later model run slows, single jobs more than batches (runners/model_thread.py):
    a ceiling measured after it would be inflated. The runner's checks once did this (as `count_prompt_tokens` on
    the main thread), unseen, before the critique ceilings."""
    before = psutil.Process().num_threads()
    yield
    if (after := psutil.Process().num_threads()) > before:
        raise RuntimeError(f"{after - before} thread(s) started outside the model thread: torch work ran elsewhere")


def timed(run: Callable[[], Sequence[GroupRun[Any]]]) -> tuple[float, Sequence[GroupRun[Any]]]:
    """Seconds one call of `run` took, and its runs; every job of it must have succeeded."""
    started = time.perf_counter()
    runs = run()
    elapsed = time.perf_counter() - started
    for done in runs:
        assert done.error is None, done.error
    return elapsed, runs


def batch_scaling(jobs: list[Any], run: Callable[[list[Any]], list[GroupRun[Any]]], repeats: int) -> dict[str, Any]:
    """The same jobs one by one, then as one runner batch, `repeats` times: what batching can give at most, as the
    median speedup with its spread."""
    speedups, singles_s, batch_s = [], [], []
    runs: Sequence[GroupRun[Any]] = ()
    for _ in range(repeats):
        singles_s.append(sum(timed(lambda job=job: run([job]))[0] for job in jobs))
        elapsed, runs = timed(lambda: run(jobs))
        batch_s.append(elapsed)
        speedups.append(singles_s[-1] / elapsed)
    return {
        "jobs": len(jobs),
        "groups": round(sum(1 / r.group_size for r in runs)),  # sets of jobs that shared their model passes
        "repeats": repeats,
        "sum_of_singles_s": statistics.median(singles_s),
        "one_batch_s": statistics.median(batch_s),
        "speedup": statistics.median(speedups),
        "speedup_min": min(speedups),
        "speedup_max": max(speedups),
    }
