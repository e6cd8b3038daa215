"""The AudioLDM (v1) runner: one process owns the model and serves adaptive batches of generations.

Jobs of one shape (length, steps, sampler, guidance, candidates) share a pipeline call (runners/batching.py);
what the family does not do is refused by the front from the registry's features (registry.py).
"""

from __future__ import annotations

import asyncio
import time

import bentoml
import torch

import compat
from models.audioldm import AudioLDMEngine, Waveforms, load_placed_audioldm
from models.audioldm2 import waveform_seeds
from models.profiles import audioldm_checkpoint, declare_weights
from registry import AUDIOLDM
from runners.batching import GroupRun, run_in_groups
from runners.cancellation import CancelledJobs, count_cancelled
from runners.observe import observe_batch
from runners.outcomes import generation_outcome
from runners.progress import ProgressBoard
from runners.shutdown import stop_everything_after_the_grace
from runners.startup import RUNNER_CONFIG, prepare_model
from schemas import (
    GenerationJob,
    GenerationOutcome,
    RunnerProgress,
    RunnerWaveform,
)
from settings import SETTINGS

compat.install_all()  # library patches (compat/)


@bentoml.service(name="audioldm-runner", **RUNNER_CONFIG)
class AudioLDMRunner:
    weights = declare_weights(SETTINGS, AUDIOLDM.settings.checkpoint)

    def __init__(self) -> None:
        self.checkpoint = audioldm_checkpoint(SETTINGS, type(self).weights)
        placement, self.thread = prepare_model(AUDIOLDM, self.checkpoint, torch.float16)
        self.engine = self.thread.call(
            lambda: AudioLDMEngine(load_placed_audioldm(str(self.checkpoint.path), placement))
        )
        self.cancelled = CancelledJobs()
        stop_everything_after_the_grace(AUDIOLDM.name, self.cancelled, SETTINGS.shutdown_grace_s)
        self.board = ProgressBoard()
        if self.engine.sample_rate != AUDIOLDM.sample_rate:
            raise RuntimeError(f"{self.checkpoint.model_id} outputs {self.engine.sample_rate} Hz, not 16 kHz")

    def __is_ready__(self) -> bool:
        return hasattr(self, "engine")

    @bentoml.api(
        batchable=SETTINGS.batching,
        max_batch_size=AUDIOLDM.settings.max_batch_size,
        max_latency_ms=AUDIOLDM.settings.max_latency_ms,
    )
    async def generate(self, jobs: list[GenerationJob]) -> list[GenerationOutcome]:
        """The batch runs on the model thread; the event loop stays free for `cancel` and `progress`."""
        return await asyncio.wrap_future(self.thread.submit(lambda: self._generate(jobs)))

    @bentoml.api
    async def cancel(self, job_ids: list[str]) -> None:
        """Forget these jobs: dropped if still queued; a running call finishes (the pipeline has no exit)."""
        self.cancelled.add(job_ids)

    @bentoml.api
    async def progress(self, job_ids: list[str]) -> list[RunnerProgress]:
        """Phase and denoising steps done of these jobs (`queued` while still in the batcher's queue)."""
        return self.board.read(job_ids)

    def _generate(self, jobs: list[GenerationJob]) -> list[GenerationOutcome]:
        started_ns = time.time_ns()

        def run(group: list[GenerationJob]) -> list[Waveforms]:
            def on_step(done: int) -> None:
                for job in group:
                    self.board.set(job.job_id, "denoising", done, job.steps)

            on_step(0)
            return self.engine.generate(group, on_step)

        runs = run_in_groups(jobs, self.engine.group_key, run, dropped=lambda job: job.job_id in self.cancelled)
        observe_batch(AUDIOLDM.name, jobs, runs, started_ns)
        outcomes = [self._outcome(job, result) for job, result in zip(jobs, runs, strict=True)]
        for job in jobs:
            self.board.set(job.job_id, "finished")
        count_cancelled(AUDIOLDM.name, (outcome.error for outcome in outcomes))
        return outcomes

    def _outcome(self, job: GenerationJob, run: GroupRun[Waveforms]) -> GenerationOutcome:
        def in_seed_order(output: Waveforms) -> list[RunnerWaveform]:  # no CLAP audio tower: never ranked
            return [
                RunnerWaveform.from_array(wave, seed, None)
                for wave, seed in zip(output.audio, waveform_seeds(job), strict=True)
            ]

        return generation_outcome(
            self.checkpoint, self.engine.sample_rate, job, run, lambda output: output.finite, in_seed_order
        )
