"""Serving one adaptive batch: group compatible jobs, isolate failures, keep order.

Shared by every runner. A batch from BentoML mixes requests that may differ
in every knob; `run_in_groups` runs each group of compatible jobs through the
model together and maps results back to the caller's order. A failure never
leaves the group it happened in: an out-of-memory group is retried one job at
a time, any other exception fails that group's jobs with a message, and the
other groups still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

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
) -> list[GroupRun[Output]]:
    """Run `run` once per group of jobs with equal `key`; return one GroupRun per job, in order."""
    results: list[GroupRun[Output] | None] = [None] * len(jobs)
    for indices in group_indices(jobs, key):
        for index, result in zip(indices, _run_group([jobs[i] for i in indices], run, len(jobs)), strict=True):
            results[index] = result
    return [r for r in results if r is not None]


def _run_group(group: list[Job], run: Callable[[list[Job]], list[Output]], batch_size: int) -> list[GroupRun[Output]]:
    start = time.perf_counter()
    try:
        outputs = run(group)
    except torch.OutOfMemoryError:
        _free_accelerator_memory()
        if len(group) == 1:
            logger.warning("job ran out of accelerator memory alone")
            error = JobError(
                kind="out_of_memory",
                message="the model ran out of memory for this request; "
                "retry later or ask for less (shorter audio, fewer waveforms)",
            )
            return [GroupRun(None, error, batch_size, 1, time.perf_counter() - start)]
        logger.warning("group of %d ran out of accelerator memory; retrying one job at a time", len(group))
        return [r for job in group for r in _run_group([job], run, batch_size)]
    except Exception as exc:  # a model fault must not take the other groups down
        logger.exception("group of %d failed", len(group))
        error = JobError(kind="internal", message=f"inference failed: {type(exc).__name__}: {exc}")
        return [GroupRun(None, error, batch_size, len(group), time.perf_counter() - start)] * len(group)
    elapsed = time.perf_counter() - start
    return [GroupRun(output, None, batch_size, len(group), elapsed) for output in outputs]
