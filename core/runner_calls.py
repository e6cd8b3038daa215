"""Calling a runner: dropped connections resent (the dropped attempt cancelled), a runner that is down is a
RunnerUnavailable, and a caller that is cancelled (its client left, or its job was cancelled) tells its runner to
drop the job. The synchronous routes and the job API run their work through here alike (core/work.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from bentoml.exceptions import ServiceUnavailable

from schemas import RunnerJob, new_job_id

logger = logging.getLogger("bentoml.audio_studio")
T = TypeVar("T")
J = TypeVar("J", bound=RunnerJob)

DROPPED_CONNECTION_RETRIES = 2
# A connection that fails, or an answer cut short because the runner died while sending it.
DROPPED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
CANCEL_TIMEOUT_S = 3.0  # a cancel is a tiny call; a runner that cannot answer it in time is down or frozen
_cancellations: set[asyncio.Task[None]] = set()  # keeps fire-and-forget cancel calls alive until they finish


class RunnerUnavailable(Exception):
    """A runner process or pod cannot be reached: the request is answered 503 (a job fails with that answer), the
    front keeps serving."""

    def __init__(self, runner: str, cause: Exception) -> None:
        super().__init__(f"the {runner} runner is unavailable ({type(cause).__name__}); retry later")


async def call_runner(
    runner: str, call: Callable[[], Awaitable[T]], on_dropped: Callable[[], None] = lambda: None
) -> T:
    """Call a runner API; connection failures (runner down, restarting, unreachable) become RunnerUnavailable.

    A call whose connection is dropped mid-flight (the runner restarted, a pod went away) is sent again, twice at
    most; `on_dropped` runs before each resend. BentoML's own session refresh no longer drops calls
    (compat/bentoml_session_refresh.py), so a resend means a real fault.
    """
    try:
        for _ in range(DROPPED_CONNECTION_RETRIES):
            try:
                return await call()
            except DROPPED as exc:
                logger.warning("%s runner connection dropped (%s); sending the request again", runner, exc)
                on_dropped()
        return await call()
    except (TimeoutError, *DROPPED, ServiceUnavailable) as exc:
        logger.warning("%s runner unavailable: %s", runner, exc)
        raise RunnerUnavailable(runner, exc) from exc


Renamed = Callable[[dict[str, str]], None]  # told each resent job's new id: old id -> new id


async def run_job(
    runner: str,
    submit: Callable[[list[J]], Awaitable[list[T]]],
    cancel: Callable[[list[str]], Awaitable[None]],
    job: J,
    on_resend: Renamed = lambda renamed: None,
) -> T:
    """Send one job to a runner's batchable API and return its outcome (see run_jobs)."""
    [outcome] = await run_jobs(runner, submit, cancel, [job], on_resend)
    return outcome


async def run_jobs(
    runner: str,
    submit: Callable[[list[J]], Awaitable[list[T]]],
    cancel: Callable[[list[str]], Awaitable[None]],
    jobs: list[J],
    on_resend: Renamed = lambda renamed: None,
) -> list[T]:
    """Send jobs to a runner's batchable API in one call (so they share a batch) and return their outcomes.

    A resend after a dropped connection goes under new job ids, and the dropped attempt (which may still be
    queued or running on the runner) is cancelled; jobs are deterministic (the seed is fixed before the call),
    so the resend returns exactly what the first attempt would have. `on_resend` learns the new ids, so that progress
    follows the attempt that runs (core/work.py's ProgressTarget). When the caller is cancelled (its client
    disconnected, see front/edge.py) the runner is told to drop the jobs: BentoML cannot take a queued job back.
    """
    current = jobs

    def resend_under_new_ids() -> None:
        nonlocal current
        cancel_in_background(runner, cancel, [job.job_id for job in current])
        resent = [job.model_copy(update={"job_id": new_job_id()}) for job in current]
        on_resend({old.job_id: new.job_id for old, new in zip(current, resent, strict=True)})
        current = resent

    try:
        return await call_runner(runner, lambda: submit(current), on_dropped=resend_under_new_ids)
    except asyncio.CancelledError:
        cancel_in_background(runner, cancel, [job.job_id for job in current])
        raise


def cancel_in_background(runner: str, cancel: Callable[[list[str]], Awaitable[None]], job_ids: list[str]) -> None:
    """One cancel call for all of `job_ids` (the runner's `cancel` takes a list), not awaited by the caller."""
    task = asyncio.get_running_loop().create_task(_send_cancel(runner, cancel, job_ids))
    _cancellations.add(task)
    task.add_done_callback(_cancellations.discard)


async def cancels_sent() -> None:
    """Wait for the cancel calls still on their way (each bounded by CANCEL_TIMEOUT_S): a shutdown lets them reach
    their runners before it closes the clients."""
    if _cancellations:
        await asyncio.wait(set(_cancellations))


async def _send_cancel(runner: str, cancel: Callable[[list[str]], Awaitable[None]], job_ids: list[str]) -> None:
    named = ", ".join(job_ids)
    try:
        await asyncio.wait_for(cancel(job_ids), timeout=CANCEL_TIMEOUT_S)
        logger.info("%s runner told to drop job %s (its client left or its connection dropped)", runner, named)
    except Exception as exc:  # best effort: the jobs then run to completion, as they would have
        logger.warning("could not cancel job %s on the %s runner: %r", named, runner, exc)
