"""The job stores (SQLite in a temporary folder, a real Redis) and the job manager on top of them, without HTTP.

Records are read with times set by the test, never by how fast the machine is: retention and heartbeats are
checked against the clock the store and the manager read, so nothing here races a server. The manager runs
fake work: a runner whose calls are plain async functions (no server, no model), released by the test.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import BaseModel
from redis import Redis
from starlette.responses import Response

from audio_io import DecodedAudio
from core.rooms import RunnerRoom
from core.work import Work
from front.critique_work import CritiquePlan, SegmentSettings
from jobs.errors import JobConflict, JobGone, JobNotFound, JobsBusy
from jobs.manager import JobLimits, JobManager
from jobs.records import STALE_S, JobProgress, JobRecord, JobStatus, ResultInfo, ended, links, now
from jobs.redis_store import RedisStore
from jobs.requests import RequestFolder, StoredRequest
from jobs.store import JobStore, SQLiteStore
from schemas import CritiqueRequest, RunnerJob, RunnerProgress
from tests.redis_server import RedisServer

RUNNER = "audioldm2"


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], JobStore]:
    """Opens the store anew on the same data, as each replica (Redis) or process (SQLite) does."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "jobs")
    server: RedisServer = request.getfixturevalue("redis")
    Redis.from_url(server.url).flushdb()  # the caps count every active job in the store
    return lambda: RedisStore(server.url, tmp_path / "jobs", inline_max_bytes=0)  # every result a file


@pytest.fixture
def store(open_store: Callable[[], JobStore]) -> JobStore:
    return open_store()


def record(job_id: str, state: str = "queued", caller: str = "anonymous", heartbeat_age_s: float = 0.0) -> JobRecord:
    stamp = now()
    status = JobStatus(
        id=job_id,
        kind="generate",
        state=state,  # type: ignore[arg-type]
        progress=JobProgress(phase="queued"),
        seed=1,
        created_at=stamp,
        links=links(job_id),
    )
    heartbeat = stamp - timedelta(seconds=heartbeat_age_s)
    return JobRecord(status=status, caller=caller, instance="elsewhere", runner=RUNNER, heartbeat_at=heartbeat)


def succeeded(job_id: str, retention_s: int) -> JobRecord:
    done = ended(record(job_id, "running"), "succeeded", retention_s=retention_s)
    return done.model_copy(update={"result": ResultInfo(media_type="audio/wav", size=3)})


def manager(
    store: JobStore,
    max_active: int = 4,
    max_active_per_key: int = 2,
    max_input_bytes: int = 1000,
    requests_in: Path | None = None,
) -> JobManager:
    """A job manager on `store` whose jobs run on the latest FakeRunner, keeping requests in `requests_in` (a fresh
    temporary folder by default)."""

    async def build(stored: StoredRequest) -> Work:
        assert FakeRunner.latest is not None, "make the FakeRunner first"
        return await FakeRunner.latest.build(stored)

    requests = RequestFolder(requests_in or Path(tempfile.mkdtemp(prefix="job-requests-")))
    return JobManager(
        store,
        JobLimits(60, max_active, max_active_per_key, max_input_bytes),
        {RUNNER: RunnerRoom(RUNNER, max_batch_size=1, max_queued=0)},
        requests,
        build,
    )


async def read_all(store: JobStore, job_id: str) -> bytes:
    return b"".join([chunk async for chunk in store.read_result(job_id)])


class FakeRequest(BaseModel):
    input_bytes: int = 0


class FakeRunner:
    """A runner as plain async functions: its jobs run until the test sets `release`, halfway through meanwhile.
    The latest one made runs the jobs of every manager (`manager`)."""

    latest: FakeRunner | None = None

    def __init__(self) -> None:
        FakeRunner.latest = self
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def submit(self, jobs: list[RunnerJob]) -> list[bytes]:
        self.started += [job.job_id for job in jobs]
        await self.release.wait()
        return [b"wav"] * len(jobs)

    async def cancel(self, job_ids: list[str]) -> None:
        self.cancelled += job_ids

    async def progress(self, job_ids: list[str]) -> list[RunnerProgress]:
        return [
            RunnerProgress(job_id=job_id, phase="denoising", unit="steps", done=1, total=2, fraction=0.5)
            for job_id in job_ids
        ]

    def job(self, input_bytes: int = 0) -> tuple[Work, FakeRequest, str]:
        """A submission: the work as checked, its request, its route."""
        return self.work(input_bytes), FakeRequest(input_bytes=input_bytes), "generate"

    async def build(self, stored: StoredRequest) -> Work:
        """A job's work from its kept request, as the front builds it when the job starts."""
        return self.work(FakeRequest.model_validate_json(stored.body).input_bytes, stored.job_id)

    def work(self, input_bytes: int = 0, job_id: str | None = None) -> Work:
        return Work(
            kind="generate",
            runner=RUNNER,
            job=RunnerJob(job_id=job_id) if job_id else RunnerJob(),
            submit=self.submit,
            cancel=self.cancel,
            progress=self.progress,
            render=lambda body: Response(body, media_type="audio/wav", headers={"X-Seed": "7"}),
            seed=7,
            input_bytes=input_bytes,
        )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


async def final(jobs: JobManager, job_id: str) -> JobRecord:
    """The job's record once it ended."""
    for _ in range(500):
        found = await jobs.find(job_id, "anonymous")
        if not found.active:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} still active after 5 s")


def test_a_record_and_its_result_come_back_as_saved(store: JobStore) -> None:
    async def scenario() -> None:
        saved = succeeded("kept", retention_s=3600)
        await store.save(saved)
        await store.write_result("kept", b"wav", saved.status.expires_at)  # type: ignore[arg-type]
        assert await store.load("kept") == saved
        assert await read_all(store, "kept") == b"wav"
        assert await store.load("never-saved") is None
        await store.close()

    asyncio.run(scenario())


def test_the_redis_store_works_on_after_a_restart_no_call_saw(tmp_path: Path) -> None:
    """A Redis restart leaves the pool's connections closed: the next call reconnects, it does not fail."""
    server = RedisServer(tmp_path).start()
    store = RedisStore(server.url, tmp_path / "jobs", inline_max_bytes=0)

    async def scenario() -> None:
        await store.save(record("before"))
        server.stop()
        server.start()  # without persistence: the record is gone, the connection is stale
        assert await store.load("before") is None
        saved = record("after")
        await store.save(saved)
        assert await store.load("after") == saved
        await store.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_expiry_deletes_results_past_their_retention_and_keeps_the_others(store: JobStore) -> None:
    async def scenario() -> None:
        past, future = succeeded("past", retention_s=0), succeeded("future", retention_s=3600)
        for job in (past, future):
            await store.save(job)
            await store.write_result(job.id, b"wav", job.status.expires_at)  # type: ignore[arg-type]
        later = now() + timedelta(seconds=1)
        assert await store.expire(later) == 1
        assert not (store.files.path("past")).exists()  # type: ignore[attr-defined]
        assert await read_all(store, "future") == b"wav"
        await store.close()

    asyncio.run(scenario())


def test_the_manager_refuses_a_job_past_retention_and_another_callers_job(store: JobStore) -> None:
    async def scenario() -> None:
        jobs = manager(store)
        await store.save(succeeded("expired", retention_s=-1))
        await store.save(succeeded("fresh", retention_s=3600))
        with pytest.raises(JobGone, match="retention"):
            await jobs.find("expired", "anonymous")
        assert (await jobs.find("fresh", "anonymous")).status.state == "succeeded"
        with pytest.raises(JobNotFound):
            await jobs.find("fresh", "someone-else")
        await store.close()

    asyncio.run(scenario())


def test_a_live_replica_takes_over_the_jobs_of_one_that_died(redis: RedisServer, tmp_path: Path) -> None:
    """Shared store (Redis): an active job whose heartbeat stopped is claimed by a live replica, which runs it again
    from its kept request (attempt 2 for one that had started) or fails it for good when none was kept; a job whose
    owner lives is left alone; and the old owner, if it was only slow, can no longer write the record."""

    async def scenario() -> None:
        Redis.from_url(redis.url).flushdb()
        store, kept = RedisStore(redis.url, tmp_path / "jobs", inline_max_bytes=0), tmp_path / "requests"
        orphan = record("orphan", "running", heartbeat_age_s=STALE_S + 5)
        orphan.status = orphan.status.model_copy(update={"started_at": now()})
        await store.save(orphan)
        await RequestFolder(kept).keep("orphan", "generate", FakeRequest())
        await store.save(record("unkept", "queued", heartbeat_age_s=STALE_S + 5))
        await store.save(record("alive", "running"))
        runner = FakeRunner()
        jobs = manager(store, requests_in=kept)
        await jobs.start()
        await until(lambda: runner.started == ["orphan"])
        assert (await jobs.find("orphan", "anonymous")).status.attempt == 2
        unkept = await final(jobs, "unkept")
        assert unkept.status.state == "failed" and unkept.status.error_status == 503
        assert "submit it again" in unkept.status.error.error  # type: ignore[union-attr]
        assert (await jobs.find("alive", "anonymous")).status.state == "running"
        assert not await store.save(ended(orphan, "succeeded", retention_s=60))  # the old owner, late
        runner.release.set()
        assert (await final(jobs, "orphan")).status.state == "succeeded"
        assert list(kept.iterdir()) == []
        await store.close()

    asyncio.run(scenario())


def test_a_shutdown_leaves_the_embedded_stores_jobs_to_the_next_start_which_runs_them_again(tmp_path: Path) -> None:
    """One job running (it had started: attempt 2 after the restart) and one queued (it never ran: still attempt 1)
    when the service stops: the next process runs both from their kept requests, and forgets those once they end."""
    data, kept = tmp_path / "jobs", tmp_path / "requests"
    ids: list[str] = []

    async def first_life() -> None:
        store = SQLiteStore(data)
        runner, jobs = FakeRunner(), manager(store, requests_in=kept)  # one slot: the second job waits
        ids.extend([(await jobs.submit(*runner.job(), "anonymous", count_per_key=False)).id for _ in range(2)])
        await jobs.start()
        await until(lambda: jobs.local.jobs[ids[0]].record.status.started_at is not None)  # the upkeep saw it run
        await jobs.stop(deadline=asyncio.get_running_loop().time())
        assert sorted(path.name for path in kept.iterdir()) == sorted(ids)
        await store.close()

    async def second_life() -> None:
        store = SQLiteStore(data)
        runner, jobs = FakeRunner(), manager(store, requests_in=kept)
        await jobs.start()
        assert [(await jobs.find(job_id, "anonymous")).status.attempt for job_id in ids] == [2, 1]
        runner.release.set()
        for job_id in ids:
            assert (await final(jobs, job_id)).status.state == "succeeded"
            assert b"".join([chunk async for chunk in (await jobs.result(job_id, "anonymous")).chunks]) == b"wav"
        assert runner.started == ids  # the running job first, as it was
        assert list(kept.iterdir()) == []
        await store.close()

    asyncio.run(first_life())
    asyncio.run(second_life())


def test_a_restart_fails_for_good_a_job_out_of_attempts_or_without_a_kept_request(tmp_path: Path) -> None:
    """And forgets a request whose submission never got its record saved (a crash between the two)."""

    async def scenario() -> None:
        store, kept = SQLiteStore(tmp_path / "jobs"), RequestFolder(tmp_path / "requests")
        started = now()
        spent = record("spent", "running")
        spent.status = spent.status.model_copy(update={"attempt": 3, "started_at": started})
        await store.save(spent)
        await kept.keep("spent", "generate", FakeRequest())
        await store.save(record("unkept", "queued"))  # accepted before requests were kept
        await store.save(succeeded("finished", retention_s=3600))
        await kept.keep("never-accepted", "generate", FakeRequest())  # the process died before saving its record
        FakeRunner()
        jobs = manager(store, requests_in=tmp_path / "requests")
        await jobs.start()
        for job_id, words in (("spent", "3 times"), ("unkept", "submit it again")):
            failed = await jobs.find(job_id, "anonymous")
            assert failed.status.state == "failed" and failed.status.error_status == 503
            assert words in failed.status.error.error  # type: ignore[union-attr]
        assert (await jobs.find("finished", "anonymous")).status.state == "succeeded"
        assert list((tmp_path / "requests").iterdir()) == []
        await store.close()

    asyncio.run(scenario())


def test_submissions_over_a_cap_are_refused_with_when_to_retry(store: JobStore) -> None:
    async def scenario() -> None:
        runner, jobs = FakeRunner(), manager(store)  # 4 jobs in all, 2 per key
        queued = [await jobs.submit(*runner.job(), "alpha", count_per_key=True) for _ in range(2)]
        with pytest.raises(JobsBusy, match="this API key has 2 jobs") as own:
            await jobs.submit(*runner.job(), "alpha", count_per_key=True)
        assert own.value.retry_after_s and own.value.retry_after_s > 0
        queued += [await jobs.submit(*runner.job(), "beta", count_per_key=True) for _ in range(2)]
        with pytest.raises(JobsBusy, match="the job queue holds 4 jobs"):
            await jobs.submit(*runner.job(), "gamma", count_per_key=False)
        runner.release.set()
        for status in queued:
            await until(lambda status=status: status.id not in jobs.local.jobs)
        await jobs.submit(*runner.job(), "alpha", count_per_key=True)  # ended jobs hold no place
        await store.close()

    asyncio.run(scenario())


async def accepted(submissions: list[Awaitable[JobStatus]]) -> list[JobStatus]:
    """The submissions run at once; those the caps let in (the others raise JobsBusy, with when to retry)."""
    answers = await asyncio.gather(*submissions, return_exceptions=True)
    refused = [a for a in answers if not isinstance(a, JobStatus)]
    assert all(isinstance(a, JobsBusy) and a.retry_after_s for a in refused), refused
    return [a for a in answers if isinstance(a, JobStatus)]


def test_concurrent_submissions_over_two_replicas_get_exactly_the_caps(open_store: Callable[[], JobStore]) -> None:
    """Two managers on one store (two replicas, or two processes on one SQLite file) submit at once: the caps
    are checked and the job saved in one step, so the count never passes a cap."""

    async def scenario() -> None:
        runner, stores = FakeRunner(), [open_store(), open_store()]
        replicas = [manager(store, max_active=8, max_active_per_key=3) for store in stores]
        for jobs in replicas:  # started first: a manager that starts on SQLite fails the jobs it finds active
            await jobs.start()

        def submissions(caller: str, count_per_key: bool) -> list[Awaitable[JobStatus]]:
            return [jobs.submit(*runner.job(), caller, count_per_key) for _ in range(12) for jobs in replicas]

        assert len(await accepted(submissions("alpha", count_per_key=True))) == 3  # alpha's own cap
        assert len(await accepted(submissions("anonymous", count_per_key=False))) == 5  # the rest of 8 in all
        with pytest.raises(JobsBusy, match="the job queue holds 8 jobs; its limit is 8"):
            await replicas[0].submit(*runner.job(), "beta", count_per_key=True)
        runner.release.set()
        for jobs in replicas:
            await until(lambda jobs=jobs: not jobs.local.jobs)
        for store in stores:
            await store.close()

    asyncio.run(scenario())


def test_the_decoded_uploads_of_active_jobs_have_a_byte_cap(open_store: Callable[[], JobStore]) -> None:
    async def scenario() -> None:
        runner, stores = FakeRunner(), [open_store(), open_store()]
        replicas = [manager(store, max_active=100, max_input_bytes=1000) for store in stores]
        for jobs in replicas:
            await jobs.start()
        big = [jobs.submit(*runner.job(input_bytes=400), "anonymous", False) for _ in range(6) for jobs in replicas]
        assert len(await accepted(big)) == 2  # 800 bytes held; a third would make 1200
        with pytest.raises(JobsBusy, match="MiB of decoded uploads; with this job's"):
            await replicas[1].submit(*runner.job(input_bytes=201), "anonymous", count_per_key=False)
        await replicas[1].submit(*runner.job(input_bytes=200), "anonymous", count_per_key=False)  # exactly 1000
        await replicas[0].submit(*runner.job(), "anonymous", count_per_key=False)  # no uploads: no bytes
        runner.release.set()
        for jobs in replicas:
            await until(lambda jobs=jobs: not jobs.local.jobs)
        alone = await replicas[0].submit(*runner.job(input_bytes=5000), "anonymous", count_per_key=False)
        assert alone.state == "queued"  # over the cap alone, but nothing else is held: it fits
        await until(lambda: not replicas[0].local.jobs)
        for store in stores:
            await store.close()

    asyncio.run(scenario())


def test_a_critique_job_counts_its_performance_and_its_reference(tmp_path: Path) -> None:
    request = CritiqueRequest(audio=[tmp_path / "take.wav"], reference=[tmp_path / "ref.wav"], prompt="compare")
    clips = [DecodedAudio(np.zeros(seconds * 16_000, np.float32), 16_000, seconds, False) for seconds in (3, 2)]
    plan = CritiquePlan(request, clips, 1, SegmentSettings(30.0, 10.0), 16_000, 0.0)
    runner = FakeRunner()
    flamingo = SimpleNamespace(critique=runner.submit, cancel=runner.cancel, progress=runner.progress)
    assert plan.work(flamingo).input_bytes == 5 * 16_000 * 4


def test_a_cancelled_queued_job_never_reaches_its_runner(store: JobStore) -> None:
    async def scenario() -> None:
        runner, jobs = FakeRunner(), manager(store)  # one slot: the second job waits for the first
        first = await jobs.submit(*runner.job(), "anonymous", count_per_key=False)
        second = await jobs.submit(*runner.job(), "anonymous", count_per_key=False)
        await until(lambda: first.id in runner.started)
        assert (await jobs.cancel(second.id, "anonymous")).state == "queued"  # answered at once, as it was
        cancelled = await final(jobs, second.id)
        assert cancelled.status.state == "cancelled" and second.id not in runner.started
        with pytest.raises(JobConflict, match="it was cancelled"):
            await jobs.result(second.id, "anonymous")
        runner.release.set()
        assert (await final(jobs, first.id)).status.state == "succeeded"
        assert runner.cancelled == []  # nothing to drop on the runner: it never had the job
        await store.close()

    asyncio.run(scenario())


def test_a_result_is_the_answer_the_work_rendered(store: JobStore) -> None:
    async def scenario() -> None:
        runner, jobs = FakeRunner(), manager(store)
        job = await jobs.submit(*runner.job(), "anonymous", count_per_key=False)
        with pytest.raises(JobConflict, match="no result yet"):
            await jobs.result(job.id, "anonymous")
        with pytest.raises(JobNotFound):
            await jobs.result(job.id, "someone-else")
        runner.release.set()
        assert (await final(jobs, job.id)).status.state == "succeeded"
        result = await jobs.result(job.id, "anonymous")
        assert (result.media_type, result.headers, result.size) == ("audio/wav", {"x-seed": "7"}, 3)
        assert b"".join([chunk async for chunk in result.chunks]) == b"wav"
        await store.close()

    asyncio.run(scenario())


def test_the_event_stream_follows_the_runners_progress_and_ends_on_the_final_state(store: JobStore) -> None:
    async def scenario() -> None:
        runner, jobs = FakeRunner(), manager(store)
        job = await jobs.submit(*runner.job(), "anonymous", count_per_key=False)
        with pytest.raises(JobNotFound):
            await jobs.events(job.id, "someone-else", quiet_s=60)
        seen = []
        async for status in await jobs.events(job.id, "anonymous", quiet_s=60):
            assert status is not None  # no keep-alive within a minute
            seen.append(status)
            if status.state == "running":
                runner.release.set()
        assert seen[0].state == "queued" and seen[-1].state == "succeeded"
        running = next(s.progress for s in seen if s.state == "running")
        assert (running.phase, running.unit, running.fraction) == ("denoising", "steps", 0.5)  # as the runner said
        fractions = [s.progress.fraction for s in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        await store.close()

    asyncio.run(scenario())
