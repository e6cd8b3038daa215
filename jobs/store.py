"""Where jobs live: an embedded SQLite file by default (one front process), Redis for several replicas.

Each job's record is written by the front process that runs it (its `instance`), which refreshes the
record's heartbeat while the job is active; any process may read it. A record whose heartbeat stopped
belongs to a process that died: readers then see the job failed (jobs/manager.py). A cancel asked on
another process is a separate flag that the owner picks up, so the owner stays the record's only writer.
Results are files in the data folder (SQLite), or values in Redis up to a size and files beyond it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import anyio

from jobs.caps import Full, JobCaps, first_full
from jobs.records import JobRecord

CHUNK_BYTES = 1 << 20  # results are streamed in pieces of this size, never loaded whole for an answer
T = TypeVar("T")


class JobStore(ABC):
    """The operations the job API needs, whatever keeps the data."""

    errors: tuple[type[Exception], ...] = (OSError,)  # what its operations raise when the store is unreachable

    @abstractmethod
    async def save(self, record: JobRecord) -> bool:
        """Create or replace a record by its owner (`record.instance`); False if another process owns it now."""

    @abstractmethod
    async def load(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def request_cancel(self, job_id: str) -> None: ...

    @abstractmethod
    async def cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    async def reserve(self, record: JobRecord, caps: JobCaps, fresh_since: datetime) -> Full | None:
        """Save a new job's record if every cap has room for it, counted and saved in one atomic step; else the
        cap that is full. Counted: active jobs whose heartbeat is newer than `fresh_since` (a dead process's
        jobs hold no place), in all and the record's caller's, and their `input_bytes`."""

    @abstractmethod
    async def write_result(self, job_id: str, body: bytes, keep_until: datetime) -> None: ...

    @abstractmethod
    def read_result(self, job_id: str) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def expire(self, now: datetime) -> int:
        """Delete results past their retention and records past their purge time; how many went."""

    async def claim_stale(self, instance: str, fresh_since: datetime) -> list[JobRecord]:
        """Active jobs whose heartbeat is older than `fresh_since` (their process died), now owned by `instance`,
        for it to run again; none where one process runs every job (it resumes them at start-up instead)."""
        return []

    resumes_jobs: bool = False  # the only process that runs jobs: it resumes at start-up what a stopped one left

    @abstractmethod
    async def interrupted(self) -> list[JobRecord]:
        """At start-up: the active jobs a stopped process left, for this one to resume (none where other processes
        may be running them)."""

    @abstractmethod
    async def ready(self) -> bool: ...

    async def close(self) -> None:
        return None


class ResultFiles:
    """Results as files named by job id, written whole under a temporary name, then renamed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str) -> Path:
        return self.folder / job_id

    async def write(self, job_id: str, body: bytes) -> None:
        def write() -> None:
            partial = self.folder / f".{job_id}.partial"
            partial.write_bytes(body)
            os.replace(partial, self.path(job_id))

        await anyio.to_thread.run_sync(write)

    async def read(self, job_id: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path(job_id), "rb") as file:
            while chunk := await file.read(CHUNK_BYTES):
                yield chunk

    def delete(self, job_id: str) -> None:
        self.path(job_id).unlink(missing_ok=True)


class SQLiteStore(JobStore):
    """One SQLite file (and a results folder) in the data folder; survives restarts of the service."""

    errors = (OSError, sqlite3.Error)
    resumes_jobs = True

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = ResultFiles(folder / "results")
        self._db = sqlite3.connect(folder / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, caller TEXT NOT NULL, state TEXT NOT NULL,"
                " heartbeat REAL NOT NULL, cancel INTEGER NOT NULL DEFAULT 0, expires REAL, purge REAL,"
                " record TEXT NOT NULL)"
            )

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        return await anyio.to_thread.run_sync(locked)

    @staticmethod
    def _upsert(db: sqlite3.Connection, record: JobRecord) -> None:
        status = record.status
        row = (
            record.id,
            record.caller,
            status.state,
            record.heartbeat_at.timestamp(),
            status.expires_at.timestamp() if status.expires_at else None,
            record.purge_at.timestamp() if record.purge_at else None,
            record.model_dump_json(),
        )
        db.execute(
            "INSERT INTO jobs (id, caller, state, heartbeat, expires, purge, record) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET caller=excluded.caller, state=excluded.state,"
            " heartbeat=excluded.heartbeat, expires=excluded.expires, purge=excluded.purge,"
            " record=excluded.record",
            row,
        )

    async def save(self, record: JobRecord) -> bool:
        await self._run(lambda db: self._upsert(db, record))
        return True

    async def reserve(self, record: JobRecord, caps: JobCaps, fresh_since: datetime) -> Full | None:
        def reserve(db: sqlite3.Connection) -> Full | None:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: no other process counts meanwhile
            with db:  # commits, or rolls back on an error
                active, own, held = db.execute(
                    "SELECT count(*), count(CASE WHEN caller = ? THEN 1 END),"
                    " coalesce(sum(json_extract(record, '$.input_bytes')), 0)"
                    " FROM jobs WHERE state IN ('queued', 'running') AND heartbeat > ?",
                    (record.caller, fresh_since.timestamp()),
                ).fetchone()
                full = first_full(caps, active, own, held, record.input_bytes)
                if full is None:
                    self._upsert(db, record)
            return full

        return await self._run(reserve)

    async def load(self, job_id: str) -> JobRecord | None:
        row = await self._run(lambda db: db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return JobRecord.model_validate_json(row[0]) if row else None

    async def request_cancel(self, job_id: str) -> None:
        await self._run(lambda db: db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,)))

    async def cancel_requested(self, job_id: str) -> bool:
        row = await self._run(lambda db: db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return bool(row and row[0])

    async def write_result(self, job_id: str, body: bytes, keep_until: datetime) -> None:
        await self.files.write(job_id, body)

    def read_result(self, job_id: str) -> AsyncIterator[bytes]:
        return self.files.read(job_id)

    async def expire(self, now: datetime) -> int:
        stamp = now.timestamp()

        def expire(db: sqlite3.Connection) -> list[str]:
            gone = [r[0] for r in db.execute("SELECT id FROM jobs WHERE expires < ? AND expires IS NOT NULL", (stamp,))]
            db.execute("UPDATE jobs SET expires = NULL WHERE expires < ?", (stamp,))
            db.execute("DELETE FROM jobs WHERE purge < ?", (stamp,))
            return gone

        gone = await self._run(expire)
        for job_id in gone:
            self.files.delete(job_id)
        return len(gone)

    async def interrupted(self) -> list[JobRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM jobs WHERE state IN ('queued', 'running') ORDER BY rowid"
            ).fetchall()
        )
        return [JobRecord.model_validate_json(raw) for (raw,) in rows]

    async def ready(self) -> bool:
        return await self._run(lambda db: db.execute("SELECT 1").fetchone() == (1,))

    async def close(self) -> None:
        with self._lock:
            self._db.close()
