"""The job API without HTTP: it takes requests and answers with records (or a result to stream), or refuses with
the typed errors of jobs/errors.py, which the routes answer in the one error shape (jobs/routes.py).

It composes the parts: the caps on active jobs (jobs/caps.py, checked by the store as it saves a new job), the
jobs this process runs (jobs/running.py), the loop that keeps them current (jobs/upkeep.py) and status streams
(jobs/events.py). Any replica answers for any job from the store; an active job whose owner's heartbeat stopped
belonged to a process that died: whoever reads it marks it failed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from pydantic import BaseModel

from core.rooms import RunnerRoom
from core.work import Work
from jobs.caps import JobCaps
from jobs.deliveries import Deliverer, Outbox
from jobs.errors import JobConflict, JobGone, JobNotFound, StoreUnavailable, WebhookRefused
from jobs.events import statuses
from jobs.records import JobRecord, JobStatus, WebhookEvent, now
from jobs.requests import RequestFolder
from jobs.running import RESTARTED, Build, LocalJobs
from jobs.store import JobStore
from jobs.upkeep import Upkeep
from jobs.webhooks import WebhookSettings

logger = logging.getLogger("bentoml.audio_studio")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class JobLimits:
    retention_s: int
    max_active: int
    max_active_per_key: int
    max_input_bytes: int
    max_attempts: int = 3


@dataclass(frozen=True)
class JobResult:
    """A succeeded job's answer, to stream: the synchronous route's media type and headers, and the bytes."""

    media_type: str
    headers: dict[str, str]
    size: int
    chunks: AsyncIterator[bytes]


def store_errors_are_unavailable(
    method: Callable[Concatenate[JobManager, P], Awaitable[R]],
) -> Callable[Concatenate[JobManager, P], Awaitable[R]]:
    """A call whose store cannot be reached raises StoreUnavailable (a 503 with Retry-After), not a fault."""

    @functools.wraps(method)
    async def wrapper(manager: JobManager, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(manager, *args, **kwargs)
        except manager.store.errors as exc:
            logger.warning("jobs: the store is unavailable (%s)", type(exc).__name__)
            raise StoreUnavailable("the job store is unavailable; retry later") from exc

    return wrapper


class JobManager:
    def __init__(
        self,
        store: JobStore,
        limits: JobLimits,
        rooms: dict[str, RunnerRoom],
        requests: RequestFolder,
        build: Build,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        """`rooms`: each runner's room in this process, which a job takes while it runs, as synchronous requests do.
        `requests`: where accepted requests are kept; `build`: a stored request as the work its synchronous route
        would run. `webhooks`: where and how job events are sent (None: webhooks are off); their deliveries are kept
        in the data folder beside the requests."""
        self.store = store
        self.limits = limits
        self.local = LocalJobs(store, rooms, limits.retention_s, requests, build, limits.max_attempts)
        self.upkeep = Upkeep(self.local)
        self.webhooks = webhooks
        self.deliverer: Deliverer | None = None
        if webhooks is not None:
            outbox = Outbox(requests.folder.parent / "webhooks", self.local.instance)
            self.deliverer = Deliverer(
                outbox, webhooks.destinations, webhooks.secrets, webhooks.retry_s, self.local.show_attempt
            )
            self.local.send_event = self.deliverer.add
        self._deliveries_task: asyncio.Task[None] | None = None
        self._started: asyncio.Task[None] | None = None
        self._upkeep_task: asyncio.Task[None] | None = None

    async def ready(self) -> bool:
        await self.start()
        return await self.store.ready()

    async def start(self) -> None:
        """Once per process, on first use: jobs a stopped predecessor left active are resumed (or failed for good
        after their last attempt), the upkeep starts."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        interrupted = await self.store.interrupted()
        if self.store.resumes_jobs:  # this process alone keeps requests: one without an active job was never accepted
            for job_id in await self.local.requests.job_ids() - {record.id for record in interrupted}:
                await self.local.requests.drop(job_id)
        await self.local.take_over(interrupted, "after a restart")
        self._upkeep_task = asyncio.get_running_loop().create_task(self.upkeep.loop())
        if self.deliverer is not None:  # the one SQLite process resumes every delivery left at once
            resume_all = self.store.resumes_jobs
            self._deliveries_task = asyncio.get_running_loop().create_task(self.deliverer.loop(resume_all))

    async def stop(self, deadline: float) -> None:
        """The service is shutting down: this process's jobs may end until `deadline` (the loop's clock); those
        still active then are stopped (their runners told) and resumed at the next start where the store resumes
        jobs, else failed as a restart would have left them."""
        await self.local.stop(deadline, None if self.store.resumes_jobs else RESTARTED)
        for task in (self._upkeep_task, self._deliveries_task):
            if task is not None:
                task.cancel()

    @store_errors_are_unavailable
    async def submit(
        self,
        work: Work,
        request: BaseModel,
        route: str,
        caller: str,
        count_per_key: bool,
        webhook: tuple[str, list[WebhookEvent]] | None = None,
    ) -> JobStatus:
        """Queue the caller's job: `request` as `route` accepted it (its seed fixed), checked as `work` (JobsBusy over
        a cap; `count_per_key`: callers have their own cap), its events sent to `webhook` (URL and events;
        WebhookRefused if it may not be)."""
        subscription = None
        if webhook is not None:
            if self.webhooks is None:
                raise WebhookRefused("webhook: webhooks are off on this server (no AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS)")
            subscription = await self.webhooks.subscription(caller, *webhook)
        await self.start()
        limits = self.limits
        per_key = limits.max_active_per_key if count_per_key else None
        caps = JobCaps(limits.max_active, per_key, limits.max_input_bytes)
        status = await self.local.add(work, request, route, caller, caps, subscription)
        logger.info("job %s (%s) queued for %s", status.id, work.kind, caller)
        return status

    @store_errors_are_unavailable
    async def find(self, job_id: str, caller: str) -> JobRecord:
        """The caller's job, current; JobNotFound, or JobGone past retention."""
        await self.start()
        local = self.local.jobs.get(job_id)
        record = local.record if local is not None else await self.store.load(job_id)
        if record is None or record.caller != caller:
            raise JobNotFound(f"no job {job_id}")
        expires = record.status.expires_at
        if expires is not None and expires < now():
            raise JobGone(f"job {job_id}'s result passed its retention time ({expires.isoformat()})")
        return record  # a dead owner's job: a live replica claims it within a few seconds (jobs/upkeep.py)

    @store_errors_are_unavailable
    async def cancel(self, job_id: str, caller: str) -> JobStatus:
        """Cancel an active job (its owner, maybe another replica, stops it in a moment); the status as it was."""
        found = await self.find(job_id, caller)
        if found.active and not self.local.cancel(job_id):
            await self.store.request_cancel(job_id)  # its owner, another replica, picks it up
        return found.status

    @store_errors_are_unavailable
    async def result(self, job_id: str, caller: str) -> JobResult:
        """A succeeded job's answer; JobConflict while it runs, or when it failed or was cancelled."""
        found = await self.find(job_id, caller)
        state = found.status.state
        if state != "succeeded" or found.result is None:
            why = (
                "has no result yet"
                if found.active
                else f"has no result: it {'was ' if state == 'cancelled' else ''}{state}"
            )
            raise JobConflict(f"job {job_id} {why}; see {found.status.links.status}")
        info = found.result
        return JobResult(info.media_type, info.headers, info.size, self.store.read_result(job_id))

    async def events(self, job_id: str, caller: str, quiet_s: float) -> AsyncIterator[JobStatus | None]:
        """The job's status stream (jobs/events.py); refused at once, before any event, like `find`."""
        await self.find(job_id, caller)
        return statuses(functools.partial(self.find, job_id, caller), self.local.changes, quiet_s)
