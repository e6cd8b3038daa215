"""Serving one adaptive batch: group compatible jobs, isolate failures, keep order.

Shared by every runner. A batch from BentoML mixes requests that may differ
in every knob; `run_in_groups` runs each group of compatible jobs through the
model together and maps results back to the caller's order. A failure never
reaches a job that did not cause it: a group that runs out of memory or raises
is run again one job at a time, so only the job at fault fails (with a
message), and the other groups still run. Jobs cancelled before their batch
starts do not run and are reported cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from models.phases import Phase, collect
from runners.cancellation import CANCELLED_WHILE_QUEUED
from schemas import JobError

logger = logging.getLogger("bentoml.audio_studio")

Job = TypeVar("Job")
Output = TypeVar("Output")


@dataclass(frozen=True)
class GroupRun(Generic[Output]):
    """One job's output, or its error, with how it was served."""

    output: Output | None
    error: JobError | None
    batch_size: int
    group_size: int
    inference_s: float
    phases: tuple[Phase, ...] = ()  # the model phases of the group's run (shared by its jobs)


def group_indices(jobs: Sequence[Job], key: Callable[[Job], Hashable]) -> list[list[int]]:
    """Indices of jobs with equal keys, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(key(job), []).append(index)
    return list(groups.values())


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_in_groups(
    jobs: Sequence[Job],
    key: Callable[[Job], Hashable],
    run: Callable[[list[Job]], list[Output]],
    dropped: Callable[[Job], bool] = lambda job: False,
) -> list[GroupRun[Output]]:
    """Run `run` once per group of jobs with equal `key`; return one GroupRun per job, in order.

    Jobs for which `dropped` is true (cancelled while queued) do not run and are reported cancelled.
    """
    results: list[GroupRun[Output] | None] = [None] * len(jobs)
    live = [index for index, job in enumerate(jobs) if not dropped(job)]
    for index in set(range(len(jobs))) - set(live):
        results[index] = GroupRun(None, CANCELLED_WHILE_QUEUED, len(jobs), 0, 0.0)
    for group in group_indices([jobs[i] for i in live], key):
        indices = [live[i] for i in group]
        for index, result in zip(indices, _run_group([jobs[i] for i in indices], run, len(jobs)), strict=True):
            results[index] = result
    return [r for r in results if r is not None]


OUT_OF_MEMORY_ALONE = JobError(
    kind="out_of_memory",
    message="the model ran out of memory for this request; "
    "retry later or ask for less (shorter audio, fewer waveforms)",
)


def _run_group(group: list[Job], run: Callable[[list[Job]], list[Output]], batch_size: int) -> list[GroupRun[Output]]:
    start = time.perf_counter()

    def failed(error: JobError) -> list[GroupRun[Output]]:
        return [GroupRun(None, error, batch_size, len(group), time.perf_counter() - start)] * len(group)

    try:
        with collect() as phases:
            outputs = run(group)
    except Exception as exc:  # a model fault (out of memory included) must not take the other jobs down
        out_of_memory = isinstance(exc, torch.OutOfMemoryError)
        if out_of_memory:
            _free_accelerator_memory()
        if len(group) > 1:
            logger.warning("group of %d failed (%s); retrying one job at a time", len(group), type(exc).__name__)
            return [r for job in group for r in _run_group([job], run, batch_size)]
        if out_of_memory:
            logger.warning("job ran out of accelerator memory alone")
            return failed(OUT_OF_MEMORY_ALONE)
        logger.exception("job failed")
        message = f"inference failed ({type(exc).__name__}); the error is in the runner's log"
        return failed(JobError(kind="internal", message=message))
    elapsed = time.perf_counter() - start
    group_phases = tuple(phases)  # one tuple for the group: its jobs share it
    return [GroupRun(output, None, batch_size, len(group), elapsed, group_phases) for output in outputs]
