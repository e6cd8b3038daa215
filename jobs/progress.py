"""Job progress, as the runners report it: each runner places its own jobs on a 0-1 scale, by its model's phases
(runners/progress.py), so the job API knows no model. A job maps the fraction of the runner job it follows into
the part of its own scale that this stage of its work fills (core/work.py's ProgressTarget)."""

from __future__ import annotations

import asyncio
import logging

from jobs.records import JobProgress, now
from jobs.running import LocalJob
from schemas import ProgressPhase, RunnerProgress

logger = logging.getLogger("bentoml.audio_studio")

PROGRESS_TIMEOUT_S = 2.0


def progress_of(
    update: RunnerProgress,
    before: JobProgress,
    span: tuple[float, float] = (0.0, 1.0),
    phase: ProgressPhase | None = None,
    answer: bool = True,
) -> JobProgress:
    """The runner's report as job progress within `span` of the job's scale, read as `phase` where the stage names
    one (core/work.py's ProgressTarget); the fraction never goes back. The runner job's text so far is shown when
    it writes the job's `answer`."""
    low, high = span
    phase = phase or update.phase
    return JobProgress(
        phase=phase,
        unit=update.unit,
        done=update.done,
        total=update.total,
        fraction=max(before.fraction, low + (high - low) * update.fraction),
        queue_position=0 if phase == "queued" else None,
        text=update.text if answer else None,
    )


async def follow(runner: str, jobs: list[LocalJob]) -> None:
    """Ask `runner` where the dispatched jobs that follow one of its jobs are, and move them on."""
    followed = [(local, local.work.followed()) for local in jobs if local.work is not None]
    running = [local for local, target in followed if target.runner == runner]
    targets = [target for _, target in followed if target.runner == runner]
    if not running:
        return
    try:
        updates = await asyncio.wait_for(targets[0].progress([target.job_id for target in targets]), PROGRESS_TIMEOUT_S)
    except Exception as exc:  # progress is best effort; the job's own call reports a runner that is down
        logger.debug("jobs: no progress from %s (%s)", runner, exc)
        return
    for local, target, update in zip(running, targets, updates, strict=True):
        status = local.record.status
        if not local.record.active:
            continue
        local.update(progress=progress_of(update, status.progress, target.span, target.phase, target.answer))
        if update.phase != "queued" and status.state == "queued":
            local.update(state="running", started_at=now())
