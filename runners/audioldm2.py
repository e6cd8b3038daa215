"""The AudioLDM2 runner: one process owns the pipeline and serves adaptive batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import bentoml
import torch

import compat
from compat.bentoml_dispatcher import concurrent_batches
from models.audioldm2 import AudioLDM2Engine, Denoising, JobAudio, load_placed_pipeline, waveform_seeds
from models.compiled_unet import check_compile
from models.pieces import Pieces
from models.profiles import Checkpoint, audioldm2_checkpoint, declare_weights
from registry import AUDIOLDM2
from runners.batching import GroupRun
from runners.cancellation import CancelledJobs, count_cancelled
from runners.model_thread import ModelThread
from runners.observe import observe_batch
from runners.outcomes import generation_outcome
from runners.progress import ProgressBoard
from runners.shutdown import stop_everything_after_the_grace
from runners.startup import RUNNER_CONFIG, prepare_model, use_compile_cache
from runners.step_scheduler import StepScheduler
from schemas import (
    AUDIOLDM2_SAMPLE_RATE,
    DiffusionParams,
    EditJob,
    GenerationJob,
    GenerationOutcome,
    RunnerProgress,
    RunnerWaveform,
    TransformJob,
)
from settings import SETTINGS, AudioLDM2Settings

J = TypeVar("J", GenerationJob, TransformJob, EditJob)
logger = logging.getLogger("bentoml.audio_studio")

compat.install_all()  # library patches (compat/), e.g. batches that overlap (compat/bentoml_dispatcher.py)


def load_engine(checkpoint: Checkpoint) -> tuple[AudioLDM2Engine, ModelThread]:
    """The pipeline as the runner serves it, on the thread that owns it (also what bench/in_process.py measures),
    its UNet compiled for every pass shape before the first job when the settings ask for it."""
    placement, thread = prepare_model(AUDIOLDM2, checkpoint, torch.float16)
    settings = AUDIOLDM2.settings
    assert isinstance(settings, AudioLDM2Settings)
    check_compile(settings.compile, placement)
    if settings.compile != "none":
        use_compile_cache(SETTINGS.compile_cache_dir)
    engine = thread.call(
        lambda: AudioLDM2Engine(load_placed_pipeline(str(checkpoint.path), placement), compile=settings.compile)
    )
    seconds = thread.call(engine.warm_up)
    if settings.compile != "none":
        logger.info(
            "AudioLDM2 runner: UNet compiled (%s) for rows %s at lengths of both kinds in %.1f s, kernels cached in %s",
            settings.compile,
            ",".join(map(str, engine.row_buckets)),
            seconds,
            SETTINGS.compile_cache_dir,
        )
    return engine, thread


# Every model API's intake: BentoML's adaptive batcher, sized by the registry's settings.
BATCHED = {
    "batchable": SETTINGS.batching,
    "max_batch_size": AUDIOLDM2.settings.max_batch_size,
    "max_latency_ms": AUDIOLDM2.settings.max_latency_ms,
}


@bentoml.service(name="audioldm2-runner", **RUNNER_CONFIG)
class AudioLDM2Runner:
    weights = declare_weights(SETTINGS, AUDIOLDM2.settings.checkpoint)

    def __init__(self) -> None:
        self.checkpoint = audioldm2_checkpoint(SETTINGS, type(self).weights)
        self.engine, thread = load_engine(self.checkpoint)
        self.cancelled = CancelledJobs()
        stop_everything_after_the_grace(AUDIOLDM2.name, self.cancelled, SETTINGS.shutdown_grace_s)
        self.board = ProgressBoard()
        self.scheduler = StepScheduler(
            self.engine, self.cancelled, thread, share_passes=SETTINGS.batching, board=self.board
        )
        if self.engine.sample_rate != AUDIOLDM2_SAMPLE_RATE:
            raise RuntimeError(f"{self.checkpoint.model_id} outputs {self.engine.sample_rate} Hz, not 16 kHz")

    def __is_ready__(self) -> bool:
        return hasattr(self, "engine")

    @bentoml.api(**BATCHED)
    @concurrent_batches
    async def generate(self, jobs: list[GenerationJob]) -> list[GenerationOutcome]:
        runs = await self._run(jobs, self.engine.start_generation)
        return [self._outcome(job, waveform_seeds(job), run) for job, run in zip(jobs, runs, strict=True)]

    @bentoml.api(**BATCHED)
    @concurrent_batches
    async def transform(self, jobs: list[TransformJob]) -> list[GenerationOutcome]:
        runs = await self._run(jobs, self.engine.start_transform)
        return [self._outcome(job, [job.seed], run) for job, run in zip(jobs, runs, strict=True)]

    @bentoml.api(**BATCHED)
    @concurrent_batches
    async def edit(self, jobs: list[EditJob]) -> list[GenerationOutcome]:
        runs = await self._run(jobs, self.engine.start_edit)
        return [self._outcome(job, waveform_seeds(job), run) for job, run in zip(jobs, runs, strict=True)]

    @bentoml.api
    async def cancel(self, job_ids: list[str]) -> None:
        """Forget these jobs: they leave at the next step boundary (or before starting)."""
        self.cancelled.add(job_ids)

    @bentoml.api
    async def progress(self, job_ids: list[str]) -> list[RunnerProgress]:
        """Phase and denoising steps done of these jobs (`queued` while still in the batcher's queue)."""
        return self.board.read(job_ids)

    async def _run(self, jobs: Sequence[J], start: Callable[[J], Pieces[Denoising]]) -> list[GroupRun[JobAudio]]:
        """Hand the batch to the step scheduler (the model thread) and wait for every job's answer."""
        started_ns = time.time_ns()
        futures = self.scheduler.submit(list(jobs), start)  # type: ignore[arg-type]
        runs = list(await asyncio.gather(*(asyncio.wrap_future(future) for future in futures)))
        count_cancelled(AUDIOLDM2.name, (run.error for run in runs))
        observe_batch(AUDIOLDM2.name, jobs, runs, started_ns)
        return runs

    def _outcome(self, job: DiffusionParams, seeds: list[int], run: GroupRun[JobAudio]) -> GenerationOutcome:
        def ranked(audio: JobAudio) -> list[RunnerWaveform]:
            scores = audio.clap_scores or [None] * len(seeds)
            waveforms = [
                RunnerWaveform.from_array(wave.numpy(), seed, score)
                for wave, seed, score in zip(audio.waveforms, seeds, scores, strict=True)
            ]
            if audio.clap_scores is not None:
                waveforms.sort(key=lambda w: w.clap_score, reverse=True)
            return waveforms

        return generation_outcome(
            self.checkpoint, self.engine.sample_rate, job, run, lambda audio: audio.finite, ranked
        )
