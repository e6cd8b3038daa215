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

from compat.bentoml_session_refresh import session_closed_under_the_call
from schemas import RunnerJob, new_job_id

logger = logging.getLogger("bentoml.audio_studio")
T = TypeVar("T")
J = TypeVar("J", bound=RunnerJob)

DROPPED_CONNECTION_RETRIES = 2
CANCEL_TIMEOUT_S = 3.0  # a cancel is a tiny call; a runner that cannot answer it in time is down or frozen
_cancellations: set[asyncio.Task[None]] = set()  # keeps fire-and-forget cancel calls alive until they finish


class RunnerUnavailable(Exception):
    """A runner process or pod cannot be reached: the request is answered 503 (a job fails with that answer), the
    front keeps serving."""

    def __init__(self, runner: str, cause: Exception) -> None:
        super().__init__(f"the {runner} runner is unavailable ({type(cause).__name__}); retry later")


def dropped_connection(exc: Exception) -> bool:
    """A connection failure worth one more try: refused, reset, closed under us, or on a closed session."""
    return isinstance(exc, aiohttp.ClientConnectionError) or session_closed_under_the_call(exc)


async def call_runner(
    runner: str, call: Callable[[], Awaitable[T]], on_dropped: Callable[[], None] = lambda: None
) -> T:
    """Call a runner API; connection failures (runner down, restarting, unreachable) become RunnerUnavailable.

    A call whose connection is dropped mid-flight is sent again (twice at most): BentoML 1.4.39's proxy replaces its
    connection session every 100 calls and closes the old one under in-flight requests
    (compat/bentoml_session_refresh.py; measured in bench/results/serving-one-server.md). `on_dropped` runs before
    each resend.
    """
    try:
        for _ in range(DROPPED_CONNECTION_RETRIES):
            try:
                return await call()
            except (aiohttp.ClientConnectionError, RuntimeError) as exc:
                if not dropped_connection(exc):
                    raise
                logger.warning("%s runner connection dropped (%s); sending the request again", runner, exc)
                on_dropped()
        return await call()
    except (TimeoutError, aiohttp.ClientConnectionError, ServiceUnavailable) as exc:
        logger.warning("%s runner unavailable: %s", runner, exc)
        raise RunnerUnavailable(runner, exc) from exc


async def run_job(
    runner: str,
    submit: Callable[[list[J]], Awaitable[list[T]]],
    cancel: Callable[[list[str]], Awaitable[None]],
    job: J,
) -> T:
    """Send one job to a runner's batchable API and return its outcome (see run_jobs)."""
    [outcome] = await run_jobs(runner, submit, cancel, [job])
    return outcome


async def run_jobs(
    runner: str,
    submit: Callable[[list[J]], Awaitable[list[T]]],
    cancel: Callable[[list[str]], Awaitable[None]],
    jobs: list[J],
) -> list[T]:
    """Send jobs to a runner's batchable API in one call (so they share a batch) and return their outcomes.

    A resend after a dropped connection goes under new job ids, and the dropped attempt (which may still be
    queued or running on the runner) is cancelled; jobs are deterministic (the seed is fixed before the call),
    so the resend returns exactly what the first attempt would have. When the caller is cancelled (its client
    disconnected, see front/edge.py) the runner is told to drop the jobs: BentoML cannot take a queued job back.
    """
    current = jobs

    def resend_under_new_ids() -> None:
        nonlocal current
        cancel_in_background(runner, cancel, [job.job_id for job in current])
        current = [job.model_copy(update={"job_id": new_job_id()}) for job in current]

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


async def _send_cancel(runner: str, cancel: Callable[[list[str]], Awaitable[None]], job_ids: list[str]) -> None:
    named = ", ".join(job_ids)
    try:
        await asyncio.wait_for(cancel(job_ids), timeout=CANCEL_TIMEOUT_S)
        logger.info("%s runner told to drop job %s (its client left or its connection dropped)", runner, named)
    except Exception as exc:  # best effort: the jobs then run to completion, as they would have
        logger.warning("could not cancel job %s on the %s runner: %s", named, runner, exc)
