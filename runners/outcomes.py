"""A generation runner's answer for one job, whichever family made it: provenance, timings, and the error of a
job that failed, was cancelled or came out non-finite."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from models.profiles import Checkpoint
from runners.batching import GroupRun
from schemas import DiffusionParams, GenerationOutcome, JobError, Provenance, RunnerTimings, RunnerWaveform

Output = TypeVar("Output")

NON_FINITE = JobError(
    kind="non_finite",
    message="the model produced non-finite values (NaN/Inf) for this request; retry with another seed",
)


def generation_outcome(
    checkpoint: Checkpoint,
    sample_rate: int,
    job: DiffusionParams,
    run: GroupRun[Output],
    finite: Callable[[Output], bool],
    waveforms: Callable[[Output], list[RunnerWaveform]],
) -> GenerationOutcome:
    provenance = Provenance(
        model_id=checkpoint.model_id, profile=checkpoint.profile.value, scheduler=job.scheduler, steps=job.steps
    )
    timings = RunnerTimings(batch_size=run.batch_size, group_size=run.group_size, inference_s=run.inference_s)
    outcome = GenerationOutcome(sample_rate=sample_rate, provenance=provenance, timings=timings)
    if run.error is not None or run.output is None:
        outcome.error = run.error
    elif not finite(run.output):
        outcome.error = NON_FINITE
    else:
        outcome.waveforms = waveforms(run.output)
    return outcome
