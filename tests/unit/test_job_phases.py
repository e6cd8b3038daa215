"""What a job's progress reads at each stage of work of several runner calls (core/work.py's ProgressTarget,
jobs/progress.py), with the tiny Music Flamingo runner in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from core.work import ProgressTarget
from front.studio import CRITIC_SHARE, rank_by_critic
from jobs.progress import progress_of
from jobs.records import JobProgress
from runners.music_flamingo import MusicFlamingoRunner
from schemas import CritiqueJob, CritiqueOutcome, GenerationOutcome, Provenance, RunnerProgress, RunnerWaveform


@pytest.fixture(scope="module")
def flamingo() -> MusicFlamingoRunner:
    return MusicFlamingoRunner()


@dataclass
class Watched:
    """The runner's APIs as the studio calls them, noting what the job's progress reads when the critic's rows are
    sent, before their batch runs (the runner has them as `queued` then)."""

    runner: MusicFlamingoRunner
    target: ProgressTarget
    read: list[JobProgress]

    async def critique(self, jobs: list[CritiqueJob]) -> list[CritiqueOutcome]:
        [update] = await self.runner.progress([self.target.job_id])
        self.read.append(progress_of(update, self.read[-1], self.target.span, self.target.phase))
        return await self.runner.critique(jobs)

    @property
    def cancel(self) -> Callable[[list[str]], Awaitable[None]]:
        return self.runner.cancel

    @property
    def progress(self) -> Callable[[list[str]], Awaitable[list[RunnerProgress]]]:
        return self.runner.progress


def test_a_generation_ranked_by_the_critic_reads_ranking_not_queued(flamingo: MusicFlamingoRunner) -> None:
    async def generation_progress(job_ids: list[str]) -> list[RunnerProgress]:
        raise AssertionError("the critic stage follows the critic's rows, not the generation")

    target = ProgressTarget("generation", "audioldm2", generation_progress, (0.0, 1.0 - CRITIC_SHARE))
    read = [JobProgress(phase="finished", fraction=1.0 - CRITIC_SHARE)]  # the generation's own last report
    candidates = [
        RunnerWaveform.from_array(np.random.default_rng(seed).uniform(-0.3, 0.3, 16_000), seed, None) for seed in (3, 4)
    ]
    outcome = GenerationOutcome(
        waveforms=candidates, sample_rate=16_000, provenance=Provenance(model_id="tiny", profile="tiny")
    )
    watched: Any = Watched(flamingo, target, read)
    ranked = asyncio.run(rank_by_critic(watched, "rain", outcome, flamingo.limits(), target))
    assert ranked.error is None and {w.seed for w in ranked.waveforms} == {3, 4}
    [waiting] = read[1:]
    assert (waiting.phase, waiting.queue_position) == ("ranking", None)
    [finished] = asyncio.run(flamingo.progress([target.job_id]))
    after = progress_of(finished, waiting, target.span, target.phase)
    assert (after.phase, after.fraction) == ("ranking", 1.0)
