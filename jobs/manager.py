"""The job API's engine room: admits jobs, runs them on the runners, follows their progress, answers for them.

A submitted job waits in this front process's queue for one of its runner's slots (as many as the
runner's batch), then runs exactly as the synchronous route would (front/work.py). One loop, every
`TICK_S`, asks each runner for the progress of the jobs it is running, picks up cancels asked on other
replicas and refreshes the heartbeat of every job this process owns. A job whose heartbeat stopped
belonged to a process that died: whoever reads it marks it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ParamSpec, TypeVar

from pydantic import BaseModel
from starlette.responses import JSONResponse, Response, StreamingResponse

from front.errors import ErrorResponse, error_response
from front.runner_calls import RunnerUnavailable
from front.work import Answer, Work
from jobs.records import FINAL, PHASE_SPANS, JobLinks, JobProgress, JobRecord, JobStatus, ResultInfo, now
from jobs.store import JobStore
from schemas import RunnerProgress

logger = logging.getLogger("bentoml.audio_studio")
P = ParamSpec("P")
R = TypeVar("R")

TICK_S = 0.5  # progress, cancels and heartbeats are this fresh
HEARTBEAT_S = 5.0
STALE_S = 30.0  # an active job whose heartbeat is older belongs to a process that died
EXPIRE_EVERY_S = 60.0
EVENT_POLL_S = 0.25
KEEPALIVE_S = 15.0  # an SSE comment now and then keeps proxies from closing a quiet stream
QUEUE_FULL_RETRY_S = 10
PROGRESS_TIMEOUT_S = 2.0
PURGE_AFTER = timedelta(days=7)  # after the result's retention the record says 410 this long, then 404


@dataclass(frozen=True)
class JobLimits:
    retention_s: int
    max_active: int
    max_active_per_key: int


@dataclass(eq=False)
class LocalJob:
    """A job this process runs."""

    work: Work
    record: JobRecord
    task: asyncio.Task[None] | None = None
    dispatched: bool = False
    dirty: bool = False  # changed since it was last saved
    saved_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def store_errors_answer_503(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """A job API call whose store cannot be reached is a 503 with Retry-After, not a 500."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        manager = args[0]
        assert isinstance(manager, JobManager)
        try:
            return await method(*args, **kwargs)
        except manager.store.errors as exc:
            logger.warning("jobs: the store is unavailable (%s)", type(exc).__name__)
            return error_response("unavailable", "the job store is unavailable; retry later")

    return wrapper


def links(job_id: str) -> JobLinks:
    base = f"/jobs/{job_id}"
    return JobLinks(status=base, events=f"{base}/events", result=f"{base}/result", cancel=f"{base}/cancel")


def progress_of(
    kind: str, update: RunnerProgress, before: JobProgress, span: tuple[float, float] = (0.0, 1.0)
) -> JobProgress:
    """The runner's phase and count as job progress, within `span` of the scale; the fraction never goes back."""
    low, high = PHASE_SPANS[update.phase]
    tokens = kind == "critique" and update.phase == "decoding"
    if tokens:
        low, high = PHASE_SPANS["prefill"][1], 1.0
    share = update.done / update.total if update.total else 0.0
    unit = "tokens" if tokens else "steps" if update.phase == "denoising" else None
    return JobProgress(
        phase=update.phase,
        unit=unit,
        done=update.done,
        total=update.total,
        fraction=max(before.fraction, span[0] + (span[1] - span[0]) * min(1.0, low + (high - low) * share)),
        queue_position=None if update.phase != "queued" else 0,
    )


def error_of(response: Response) -> tuple[ErrorResponse, int]:
    return ErrorResponse.model_validate(json.loads(bytes(response.body))), response.status_code


def ended(record: JobRecord, state: str, error: Response | None = None, retention_s: int = 0) -> JobRecord:
    """`record` in its final `state`, finished now: with the error's body, or a succeeded job's result kept
    `retention_s`."""
    finished = now()
    update: dict[str, object] = {"state": state, "finished_at": finished}
    if state == "succeeded":
        update["progress"] = JobProgress(phase="finished", fraction=1.0)
        update["expires_at"] = finished + timedelta(seconds=retention_s)
    if error is not None:
        update["error"], update["error_status"] = error_of(error)
    status = record.status.model_copy(update=update)
    return record.model_copy(update={"status": status, "purge_at": (status.expires_at or finished) + PURGE_AFTER})


class JobManager:
    def __init__(self, store: JobStore, limits: JobLimits, slots: dict[str, int]) -> None:
        self.store = store
        self.limits = limits
        self.instance = uuid.uuid4().hex
        self.local: dict[str, LocalJob] = {}
        self.waiting: dict[str, list[str]] = {runner: [] for runner in slots}
        self._slots = {runner: asyncio.Semaphore(count) for runner, count in slots.items()}
        self._started: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._saves = 0  # jobs saved by this process so far: event streams wake on a change, not the next poll
        self._saved = asyncio.Condition()

    # ---- start-up ----------------------------------------------------------------------

    async def ready(self) -> bool:
        await self.start()
        return await self.store.ready()

    async def start(self) -> None:
        """Once per process, on first use: jobs a dead predecessor left active are failed, the loop starts."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        failed = await self.store.fail_interrupted(
            lambda record: ended(
                record,
                "failed",
                error_response("unavailable", "the service restarted before this job finished; submit it again"),
            )
        )
        if failed:
            logger.warning("jobs: %d jobs were interrupted by a restart and are marked failed", failed)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    # ---- the API ------------------------------------------------------------------------

    @store_errors_answer_503
    async def submit(self, work: Work, caller: str, count_per_key: bool) -> Response:
        await self.start()
        refusal = await self._over_limits(caller if count_per_key else None)
        if refusal is not None:
            return refusal
        job_id = work.job.job_id
        stamp = now()
        status = JobStatus(
            id=job_id,
            kind=work.kind,  # type: ignore[arg-type]
            state="queued",
            progress=JobProgress(phase="queued", queue_position=len(self.waiting[work.runner]) + 1),
            seed=work.seed,
            created_at=stamp,
            links=links(job_id),
        )
        record = JobRecord(status=status, caller=caller, instance=self.instance, runner=work.runner, heartbeat_at=stamp)
        local = LocalJob(work, record)
        await self._save(local)  # first: a store that cannot take it leaves nothing behind (503)
        self.local[job_id] = local
        self.waiting[work.runner].append(job_id)
        local.task = asyncio.get_running_loop().create_task(self._run(local))
        logger.info("job %s (%s) queued for %s", job_id, work.kind, caller)
        return JSONResponse(status.model_dump(mode="json"), status_code=202, headers={"Location": status.links.status})

    @store_errors_answer_503
    async def find(self, job_id: str, caller: str) -> JobRecord | JSONResponse:
        """The caller's job, current (a dead owner's job shown failed), or the 404/410 answer."""
        await self.start()
        local = self.local.get(job_id)
        record = local.record if local is not None else await self.store.load(job_id)
        if record is None or record.caller != caller:
            return error_response("not_found", f"no job {job_id}")
        expires = record.status.expires_at
        if expires is not None and expires < now():
            return error_response("gone", f"job {job_id}'s result passed its retention time ({expires.isoformat()})")
        if record.active and local is None and record.heartbeat_at < now() - timedelta(seconds=STALE_S):
            stopped = "the front process running this job stopped before it finished; submit it again"
            record = ended(record, "failed", error_response("unavailable", stopped))
            await self.store.save(record)
        return record

    @store_errors_answer_503
    async def cancel(self, job_id: str, caller: str) -> Response:
        found = await self.find(job_id, caller)
        if isinstance(found, JSONResponse):
            return found
        if found.active:
            local = self.local.get(job_id)
            if local is not None and local.task is not None:
                local.task.cancel()
            else:
                await self.store.request_cancel(job_id)  # its owner, another replica, picks it up
        return JSONResponse(found.status.model_dump(mode="json"), status_code=202)

    @store_errors_answer_503
    async def result(self, job_id: str, caller: str) -> Response:
        found = await self.find(job_id, caller)
        if isinstance(found, JSONResponse):
            return found
        state = found.status.state
        if state != "succeeded" or found.result is None:
            why = (
                "has no result yet"
                if found.active
                else f"has no result: it {'was ' if state == 'cancelled' else ''}{state}"
            )
            return error_response("conflict", f"job {job_id} {why}; see {found.status.links.status}")
        headers = {**found.result.headers, "Content-Length": str(found.result.size)}
        return StreamingResponse(self.store.read_result(job_id), media_type=found.result.media_type, headers=headers)

    async def events(self, job_id: str, caller: str) -> AsyncIterator[str]:
        """One `status` event now and at every change; the stream ends after the final status.

        A change this process makes is sent at once; one made by another replica within EVENT_POLL_S.
        """
        loop = asyncio.get_running_loop()
        sent, sent_at = "", loop.time()
        while True:
            seen = self._saves
            found = await self.find(job_id, caller)
            if isinstance(found, JSONResponse):
                return
            payload = found.status.model_dump_json()
            if payload != sent:
                yield f"event: status\ndata: {payload}\n\n"
                sent, sent_at = payload, loop.time()
            if found.status.state in FINAL:
                return
            await self._saved_since(seen)
            if loop.time() - sent_at >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                sent_at = loop.time()

    async def _saved_since(self, seen: int) -> None:
        """Until this process has saved a job since `seen` saves, or EVENT_POLL_S at most."""
        async with self._saved:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._saved.wait_for(lambda: self._saves != seen), EVENT_POLL_S)

    # ---- running a job ----------------------------------------------------------------

    async def _run(self, local: LocalJob) -> None:
        record, work = local.record, local.work
        try:
            async with self._slots[work.runner]:
                self.waiting[work.runner].remove(record.id)
                local.dispatched = True
                record.status.progress = record.status.progress.model_copy(update={"queue_position": 0})
                answer = await work.run()
            await self._finish(local, answer)
        except asyncio.CancelledError:
            self._leave_queue(local)
            await self._end(local, ended(local.record, "cancelled"))
        except RunnerUnavailable as exc:
            await self._end(local, ended(local.record, "failed", error_response("unavailable", str(exc))))
        except Exception:
            logger.exception("job %s failed in the front", record.id)
            failure = error_response("internal", "the job failed in the front; see its log")
            await self._end(local, ended(local.record, "failed", failure))
        finally:
            self.local.pop(record.id, None)

    def _leave_queue(self, local: LocalJob) -> None:
        queue = self.waiting[local.work.runner]
        if local.record.id in queue:
            queue.remove(local.record.id)

    async def _finish(self, local: LocalJob, answer: Answer) -> None:
        if isinstance(answer, BaseModel):
            answer = Response(answer.model_dump_json(), media_type="application/json")
        if answer.status_code >= 400:
            return await self._end(local, ended(local.record, "failed", answer))
        body = bytes(answer.body)
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
        media_type = answer.media_type or answer.headers.get("content-type", "application/octet-stream")
        result = ResultInfo(media_type=media_type, headers=headers, size=len(body))
        done = ended(local.record.model_copy(update={"result": result}), "succeeded", None, self.limits.retention_s)
        assert done.purge_at is not None
        await self.store.write_result(done.id, body, done.purge_at)  # before the state says it is there
        await self._end(local, done)

    async def _end(self, local: LocalJob, record: JobRecord) -> None:
        """Keep and save the job's final record."""
        local.record = record
        await self._save(local)
        logger.info("job %s %s", local.record.id, local.record.status.state)

    async def _save(self, local: LocalJob) -> None:
        async with local.lock:
            local.record.heartbeat_at = now()
            local.saved_at = asyncio.get_running_loop().time()
            await self.store.save(local.record)
        async with self._saved:
            self._saves += 1
            self._saved.notify_all()

    async def _over_limits(self, caller: str | None) -> JSONResponse | None:
        fresh = now() - timedelta(seconds=STALE_S)
        active = await self.store.count_active(fresh)
        if active >= self.limits.max_active:
            return error_response(
                "rate_limited",
                f"the job queue holds {active} jobs; its limit is {self.limits.max_active}",
                retry_after_s=QUEUE_FULL_RETRY_S,
            )
        if caller is not None:
            own = await self.store.count_active(fresh, caller)
            if own >= self.limits.max_active_per_key:
                return error_response(
                    "rate_limited",
                    f"this API key has {own} jobs queued or running; its limit is {self.limits.max_active_per_key}",
                    retry_after_s=QUEUE_FULL_RETRY_S,
                )
        return None

    # ---- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        expired_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._tick()
                if loop.time() - expired_at > EXPIRE_EVERY_S:
                    expired_at = loop.time()
                    await self.store.expire(now())
            except Exception:  # the loop outlives any one failure (a store or runner hiccup)
                logger.exception("jobs: progress loop iteration failed")

    async def _tick(self) -> None:
        jobs = [local for local in list(self.local.values()) if local.record.active]
        await asyncio.gather(*(self._follow(runner, jobs) for runner in self.waiting))
        loop_time = asyncio.get_running_loop().time()
        for local in jobs:
            if local.task is not None and await self.store.cancel_requested(local.record.id):
                local.task.cancel()
                continue
            queue = self.waiting[local.work.runner]
            if local.record.id in queue:
                self._set_progress(
                    local,
                    local.record.status.progress.model_copy(
                        update={"queue_position": queue.index(local.record.id) + 1}
                    ),
                )
            if local.dirty or loop_time - local.saved_at > HEARTBEAT_S:
                local.dirty = False
                await self._save(local)

    async def _follow(self, runner: str, jobs: list[LocalJob]) -> None:
        """Ask `runner` where its dispatched jobs are."""
        running = [local for local in jobs if local.work.followed().runner == runner and local.dispatched]
        if not running:
            return
        targets = [local.work.followed() for local in running]
        try:
            updates = await asyncio.wait_for(
                targets[0].progress([target.job_id for target in targets]), PROGRESS_TIMEOUT_S
            )
        except Exception as exc:  # progress is best effort; the job's own call reports a runner that is down
            logger.debug("jobs: no progress from %s (%s)", runner, exc)
            return
        for local, target, update in zip(running, targets, updates, strict=True):
            status = local.record.status
            if status.state not in ("queued", "running"):
                continue
            self._set_progress(local, progress_of(status.kind, update, status.progress, target.span))
            if update.phase != "queued" and status.state == "queued":
                local.record.status = local.record.status.model_copy(update={"state": "running", "started_at": now()})
                local.dirty = True

    @staticmethod
    def _set_progress(local: LocalJob, progress: JobProgress) -> None:
        if progress != local.record.status.progress:
            local.record.status = local.record.status.model_copy(update={"progress": progress})
            local.dirty = True
