"""The jobs this front process runs.

A submitted job's request is kept on disk before it is accepted (jobs/requests.py). The job waits in this
process's queue for a place in its runner's room (core/rooms.py: shared with synchronous requests; jobs hold at
most a batch of it), then is built from that request and
runs exactly as its synchronous route would (core/work.py); its answer becomes its result, or its error. A job
resumed after a restart takes the same path. This process is the only writer of its jobs' records, which it saves
with a fresh heartbeat (jobs/upkeep.py keeps saving them while they run).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from core.errors import ErrorResponse
from core.rooms import RunnerRoom
from core.runner_calls import RunnerUnavailable
from core.work import Answer, Reply, Work
from jobs.caps import JobCaps
from jobs.events import Changes
from jobs.records import (
    FINAL,
    WEBHOOK_ATTEMPTS_SHOWN,
    Failure,
    JobProgress,
    JobRecord,
    JobStatus,
    JobWebhook,
    ResultInfo,
    WebhookAttempt,
    WebhookEvent,
    ended,
    failure,
    fresh_since,
    links,
    now,
)
from jobs.requests import RequestFolder, StoredRequest
from jobs.store import JobStore
from schemas import new_job_id

logger = logging.getLogger("bentoml.audio_studio")
RESTARTED = failure("unavailable", "the service restarted before this job finished; submit it again")
# Builds a job's work from its stored request as the synchronous route would: the work, or the route's refusal.
Build = Callable[[StoredRequest], Awaitable[Work | Answer]]
PROGRESS_EVERY_S = 2.0  # a webhook's progress events, at most this often
# Sends a job's webhook event: job id, caller, URL, event, the status it carries (jobs/deliveries.py).
SendEvent = Callable[[str, str, str, WebhookEvent, JobStatus], Awaitable[None]]


def given_up(attempts: int) -> Failure:
    return failure(
        "unavailable",
        f"the service restarted while this job ran, {attempts} times; it is not run again (submit it again, or "
        "report it if it keeps happening)",
    )


@dataclass(eq=False)
class LocalJob:
    record: JobRecord
    task: asyncio.Task[None] | None = None
    work: Work | None = None  # built from its stored request once it holds a place in its runner's room
    dirty: bool = False  # changed since it was last saved
    taken_over: bool = False  # another replica owns it now (this one was thought dead): it writes nothing more
    saved_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: list[tuple[WebhookEvent, JobStatus]] = field(default_factory=list)  # for its webhook, once saved
    progress_sent: tuple[float, JobProgress | None] = (-PROGRESS_EVERY_S, None)  # when, and what, last sent
    completed_sent: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def dispatched(self) -> bool:
        """Sent on: it holds a place in its runner's room."""
        return self.work is not None

    def update(self, **changes: object) -> None:
        """Change the job's public status (saved at the next tick, if it changed)."""
        status = self.record.status.model_copy(update=changes)
        if status != self.record.status:
            if status.webhook is not None and status.state == "running" != self.record.status.state:
                self.events.append(("start", status))
            self.record.status = status
            self.dirty = True

    def webhook_events(self, clock: float) -> list[tuple[WebhookEvent, JobStatus]]:
        """The events its webhook is due, as the job's saved status stands: a start, progress at most every
        PROGRESS_EVERY_S while it runs, its completion once; the others it is not subscribed to are dropped."""
        hook, status = self.record.status.webhook, self.record.status
        events, self.events = self.events, []
        if hook is None:
            return []
        if status.state in FINAL and not self.completed_sent:
            self.completed_sent = True
            events.append(("completed", status))
        sent_at, sent = self.progress_sent
        due = status.state == "running" and status.progress != sent and clock - sent_at >= PROGRESS_EVERY_S
        if due and "progress" in hook.events:
            self.progress_sent = (clock, status.progress)
            events.append(("progress", status))
        return [(event, at) for event, at in events if event in hook.events]


class LocalJobs:
    def __init__(
        self,
        store: JobStore,
        rooms: dict[str, RunnerRoom],
        retention_s: int,
        requests: RequestFolder,
        build: Build,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.retention_s = retention_s
        self.requests = requests
        self.build = build
        self.instance = uuid.uuid4().hex
        self.jobs: dict[str, LocalJob] = {}
        self.waiting: dict[str, list[str]] = {runner: [] for runner in rooms}
        self.changes = Changes()
        self.rooms = rooms
        self.send_event: SendEvent | None = None  # set when webhooks are on (jobs/manager.py)
        self._attempts_lock = asyncio.Lock()  # attempts shown in stored records: one read-change-write at a time
        self._stopped_as: Failure | None = None  # set by `stop`: how the jobs it stops end (None: resumed later)
        self._stopping = False

    async def add(
        self, work: Work, request: BaseModel, route: str, caller: str, caps: JobCaps, webhook: JobWebhook | None = None
    ) -> JobStatus:
        """Queue the caller's job: `request`, accepted by `route` (its seed fixed), checked as `work`. Its request is
        kept first, then its record saved if the caps have room for it, in one step with their check (JobsBusy if
        not): a store that cannot take it leaves nothing behind. `work` itself is not kept."""
        job_id, stamp = new_job_id(), now()
        status = JobStatus(
            id=job_id,
            kind=work.kind,  # type: ignore[arg-type]
            state="queued",
            progress=JobProgress(phase="queued", queue_position=len(self.waiting[work.runner]) + 1),
            seed=work.seed,
            created_at=stamp,
            webhook=webhook,
            links=links(job_id),
        )
        record = JobRecord(
            status=status,
            caller=caller,
            instance=self.instance,
            runner=work.runner,
            heartbeat_at=stamp,
            input_bytes=work.input_bytes,
        )
        await self.requests.keep(job_id, route, request)
        try:
            full = await self.store.reserve(record, caps, fresh_since())
        except BaseException:
            await self.requests.drop(job_id)
            raise
        if full is not None:
            await self.requests.drop(job_id)
            raise full.refusal(caps, work.input_bytes)
        await self._start(record)
        return status

    async def take_over(self, records: list[JobRecord], when: str) -> None:
        """Jobs a stopped process had accepted, now this one's: each runs again from its kept request, or fails for
        good once it has started `max_attempts` times (or has no kept request: accepted before requests were)."""
        resumed = failed = 0
        for found in records:
            record = found.model_copy(update={"instance": self.instance})
            attempts = record.status.attempt
            spent = record.status.started_at is not None and attempts >= self.max_attempts
            if not spent and await self.requests.load(record.id) is not None:
                await self.resume(record)
                resumed += 1
            else:
                await self.store.save(ended(record, "failed", given_up(attempts) if spent else RESTARTED))
                await self.requests.drop(record.id)
                failed += 1
        if resumed or failed:
            logger.warning("jobs: %s, %d job(s) resumed and %d failed for good", when, resumed, failed)

    async def resume(self, record: JobRecord) -> None:
        """Run again a job a stopped process had accepted: queued anew, owned by this process; a job that had
        started counts one attempt more."""
        ran = record.status.started_at is not None
        status = record.status.model_copy(
            update={
                "state": "queued",
                "attempt": record.status.attempt + ran,
                "started_at": None,
                "progress": JobProgress(phase="queued", queue_position=len(self.waiting[record.runner]) + 1),
            }
        )
        resumed = record.model_copy(update={"status": status, "instance": self.instance, "heartbeat_at": now()})
        await self.store.save(resumed)
        await self._start(resumed)

    async def _start(self, record: JobRecord) -> None:
        local = LocalJob(record, saved_at=asyncio.get_running_loop().time())
        self.jobs[record.id] = local
        self.waiting[record.runner].append(record.id)
        local.task = asyncio.get_running_loop().create_task(self._run(local))
        await asyncio.sleep(0)  # the task starts first, so a cancel always finds it inside `_run`, which records it

    def cancel(self, job_id: str) -> bool:
        """Cancel the job if this process runs it (False: another replica does, or nobody)."""
        local = self.jobs.get(job_id)
        if local is None or local.task is None:
            return False
        local.task.cancel()
        return True

    async def stop(self, deadline: float, error: Failure | None) -> None:
        """The service is shutting down: jobs not yet sent to their runner stop now, the others may end until
        `deadline` (the loop's clock). Every job stopped fails with `error`, or with None stays active, its request
        kept, for the next start to resume. Stopping a running job cancels its runner call, which tells its runner to
        drop it (core/runner_calls.py)."""
        self._stopped_as, self._stopping = error, True
        waiting = {local.task for local in self.jobs.values() if local.task is not None and not local.dispatched}
        for task in waiting:
            task.cancel()
        tasks = {local.task for local in self.jobs.values() if local.task is not None}
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        _, active = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        if active:
            logger.warning("jobs: stopping %d job(s) still running at the end of the shutdown grace", len(active))
            for task in active:
                task.cancel()
            await asyncio.wait(active)

    async def save(self, local: LocalJob) -> bool:
        """Save the job's record; False if another replica took the job over, which stops it here."""
        async with local.lock:
            local.record.heartbeat_at = now()
            local.saved_at = asyncio.get_running_loop().time()
            if not await self.store.save(local.record):
                logger.warning("job %s was taken over by another replica; stopping it here", local.id)
                local.taken_over = True
                if local.task is not None and local.task is not asyncio.current_task():
                    local.task.cancel()
                return False
            if self.send_event is not None and local.record.status.webhook is not None:
                for event, status in local.webhook_events(asyncio.get_running_loop().time()):
                    await self.send_event(local.id, local.record.caller, local.record.status.webhook.url, event, status)
        await self.changes.made()
        return True

    async def show_attempt(self, job_id: str, attempt: WebhookAttempt) -> None:
        """A webhook attempt's outcome, into the job's status: saved with the job while this process runs it, else
        into its stored record."""
        local = self.jobs.get(job_id)
        if local is not None:
            local.update(webhook=with_attempt(local.record.status, attempt))
            await self.save(local)
            return
        async with self._attempts_lock:
            record = await self.store.load(job_id)
            if record is not None and record.status.webhook is not None:
                status = record.status.model_copy(update={"webhook": with_attempt(record.status, attempt)})
                await self.store.save(record.model_copy(update={"status": status}))

    async def _run(self, local: LocalJob) -> None:
        runner = local.record.runner
        try:
            async with self.rooms[runner].job_place():
                self.waiting[runner].remove(local.id)
                built = await self._build(local)
                if isinstance(built, Work):
                    local.work = built
                    local.update(progress=local.record.status.progress.model_copy(update={"queue_position": 0}))
                    reply = await built.reply()
                else:  # refused now as the synchronous route would (a runner's limits changed since)
                    reply = Reply.of(built)
            await self._finish(local, reply)
        except asyncio.CancelledError:
            if local.id in self.waiting[runner]:
                self.waiting[runner].remove(local.id)
            if local.taken_over:
                pass  # its new owner runs it
            elif not self._stopping:  # its own cancel
                await self._end(local, ended(local.record, "cancelled"))
            elif self._stopped_as is not None:
                await self._end(local, ended(local.record, "failed", self._stopped_as))
            else:
                logger.info("job %s stopped by the shutdown; it resumes at the next start", local.id)
        except RunnerUnavailable as exc:
            await self._end(local, ended(local.record, "failed", failure("unavailable", str(exc))))
        except Exception:
            logger.exception("job %s failed in the front", local.id)
            error = failure("internal", "the job failed in the front; see its log")
            await self._end(local, ended(local.record, "failed", error))
        finally:
            self.jobs.pop(local.id, None)

    async def _build(self, local: LocalJob) -> Work | Answer:
        stored = await self.requests.load(local.id)
        if stored is None:
            raise RuntimeError(f"job {local.id}'s request is missing from the data folder")
        return await self.build(stored)

    async def _finish(self, local: LocalJob, reply: Reply) -> None:
        if reply.status >= 400:
            error = ErrorResponse.model_validate_json(reply.body), reply.status
            return await self._end(local, ended(local.record, "failed", error))
        result = ResultInfo(media_type=reply.media_type, headers=reply.headers, size=len(reply.body))
        done = ended(local.record.model_copy(update={"result": result}), "succeeded", None, self.retention_s)
        assert done.purge_at is not None
        await self.store.write_result(done.id, reply.body, done.purge_at)  # before the state says it is there
        await self._end(local, done)

    async def _end(self, local: LocalJob, record: JobRecord) -> None:
        """Keep and save the job's final record; its request is no longer needed."""
        local.record = record
        if await self.save(local):
            await self.requests.drop(local.id)
        logger.info("job %s %s", local.id, record.status.state)


def with_attempt(status: JobStatus, attempt: WebhookAttempt) -> JobWebhook:
    assert status.webhook is not None
    attempts = [*status.webhook.attempts, attempt][-WEBHOOK_ATTEMPTS_SHOWN:]
    return status.webhook.model_copy(update={"attempts": attempts})
