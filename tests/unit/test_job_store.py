"""The job stores (SQLite in a temporary folder, a real Redis) and the manager's reading of their records,
with times set by the test, never by how fast the machine is: retention and heartbeats are checked against
the clock the store and the manager read, so nothing here races a server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from jobs.manager import STALE_S, JobLimits, JobManager, ended, links
from jobs.records import JobProgress, JobRecord, JobStatus, ResultInfo, now
from jobs.redis_store import RedisStore
from jobs.store import JobStore, SQLiteStore
from tests.redis_server import RedisServer

RUNNER = "audioldm2"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "jobs")
    server: RedisServer = request.getfixturevalue("redis")
    return RedisStore(server.url, tmp_path / "jobs", inline_max_bytes=0)  # every result a file: expiry deletes it


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


def manager(store: JobStore) -> JobManager:
    return JobManager(store, JobLimits(retention_s=60, max_active=4, max_active_per_key=2), {RUNNER: 1})


async def read_all(store: JobStore, job_id: str) -> bytes:
    return b"".join([chunk async for chunk in store.read_result(job_id)])


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


def test_the_manager_answers_410_past_retention_and_404_to_another_caller(store: JobStore) -> None:
    async def scenario() -> None:
        jobs = manager(store)
        await store.save(succeeded("expired", retention_s=-1))
        await store.save(succeeded("fresh", retention_s=3600))
        gone = await jobs.find("expired", "anonymous")
        assert not isinstance(gone, JobRecord) and gone.status_code == 410
        assert json.loads(bytes(gone.body))["kind"] == "gone"
        assert isinstance(await jobs.find("fresh", "anonymous"), JobRecord)
        other = await jobs.find("fresh", "someone-else")
        assert not isinstance(other, JobRecord) and other.status_code == 404
        await store.close()

    asyncio.run(scenario())


def test_an_active_job_whose_heartbeat_stopped_reads_as_failed(redis: RedisServer, tmp_path: Path) -> None:
    """Shared store (Redis): other replicas' jobs stay active at start-up; a dead one shows by its heartbeat."""

    async def scenario() -> None:
        store = RedisStore(redis.url, tmp_path / "jobs", inline_max_bytes=0)
        jobs = manager(store)
        await store.save(record("orphan", "running", heartbeat_age_s=STALE_S + 5))
        await store.save(record("alive", "running", heartbeat_age_s=0))
        orphan = await jobs.find("orphan", "anonymous")
        assert isinstance(orphan, JobRecord) and orphan.status.state == "failed"
        assert orphan.status.error_status == 503 and "stopped" in orphan.status.error.error  # type: ignore[union-attr]
        saved = await store.load("orphan")
        assert saved is not None and saved.status.state == "failed"  # written back: every reader agrees
        alive = await jobs.find("alive", "anonymous")
        assert isinstance(alive, JobRecord) and alive.status.state == "running"
        await store.close()

    asyncio.run(scenario())


def test_a_restart_fails_the_active_jobs_of_the_embedded_store_and_keeps_finished_ones(tmp_path: Path) -> None:
    async def first_life() -> None:
        store = SQLiteStore(tmp_path / "jobs")
        await store.save(record("interrupted", "running"))
        await store.save(succeeded("finished", retention_s=3600))
        await store.close()

    async def second_life() -> None:
        store = SQLiteStore(tmp_path / "jobs")
        jobs = manager(store)
        await jobs.start()
        interrupted = await store.load("interrupted")
        assert interrupted is not None and interrupted.status.state == "failed"
        assert interrupted.status.error_status == 503
        assert "restarted" in interrupted.status.error.error  # type: ignore[union-attr]
        finished = await jobs.find("finished", "anonymous")
        assert isinstance(finished, JobRecord) and finished.status.state == "succeeded"
        await store.close()

    asyncio.run(first_life())
    asyncio.run(second_life())
