"""Jobs in Redis, so that several front replicas answer for any job (AUDIO_STUDIO_JOB_STORE=redis://...).

Keys (prefix `audio-studio:`): `job:<id>` the record (JSON), `job:<id>:cancel` a cancel flag,
`job:<id>:result` a result up to `inline_max_bytes`; larger results are files in the data folder, which
must then be a volume every replica mounts. Sorted sets `active` and `active:<caller>` hold active job ids
by heartbeat time, for the queue caps. Records and results carry Redis expiry times, so Redis itself
forgets them; the janitor only removes result files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.records import JobRecord, now
from jobs.store import CHUNK_BYTES, JobStore, ResultFiles

PREFIX = "audio-studio:"
ACTIVE_KEEP_S = 7 * 24 * 3600  # a record of an active job outlives any job; its heartbeat says if it lives


class RedisStore(JobStore):
    errors = (OSError, RedisError)

    def __init__(self, url: str, folder: Path, inline_max_bytes: int) -> None:
        self.redis = Redis.from_url(url)
        self.files = ResultFiles(folder / "results")
        self.inline_max_bytes = inline_max_bytes

    @staticmethod
    def key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    async def save(self, record: JobRecord) -> None:
        ttl = ACTIVE_KEEP_S
        if record.purge_at is not None:
            ttl = max(1, int((record.purge_at - now()).total_seconds()))
        active = [self.key("active"), self.key("active", record.caller)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key("job", record.id), record.model_dump_json(), ex=ttl)
            for name in active:
                if record.active:
                    pipe.zadd(name, {record.id: record.heartbeat_at.timestamp()})
                else:
                    pipe.zrem(name, record.id)
            await pipe.execute()

    async def load(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self.key("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def request_cancel(self, job_id: str) -> None:
        await self.redis.set(self.key("job", job_id, "cancel"), b"1", ex=ACTIVE_KEEP_S)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self.key("job", job_id, "cancel")))

    async def count_active(self, fresh_since: datetime, caller: str | None = None) -> int:
        name = self.key("active") if caller is None else self.key("active", caller)
        return int(await self.redis.zcount(name, f"({fresh_since.timestamp()}", "+inf"))

    async def write_result(self, job_id: str, body: bytes, keep_until: datetime) -> None:
        if len(body) <= self.inline_max_bytes:
            ttl = max(1, int((keep_until - now()).total_seconds()))
            await self.redis.set(self.key("job", job_id, "result"), body, ex=ttl)
        else:
            await self.files.write(job_id, body)

    async def read_result(self, job_id: str) -> AsyncIterator[bytes]:
        key = self.key("job", job_id, "result")
        size = int(await self.redis.strlen(key))
        if size == 0:
            async for chunk in self.files.read(job_id):
                yield chunk
            return
        for start in range(0, size, CHUNK_BYTES):
            yield await self.redis.getrange(key, start, start + CHUNK_BYTES - 1)

    async def expire(self, now_: datetime) -> int:
        """Redis expires records and inline results itself; result files go once their record says so."""
        gone = 0
        for path in list(self.files.folder.iterdir()):
            if path.name.startswith("."):
                continue
            record = await self.load(path.name)
            expires = record.status.expires_at if record is not None else None
            if record is None or (expires is not None and expires < now_):
                self.files.delete(path.name)
                gone += 1
        stale = now_.timestamp() - ACTIVE_KEEP_S
        await self.redis.zremrangebyscore(self.key("active"), "-inf", stale)
        return gone

    async def fail_interrupted(self, mark: Callable[[JobRecord], JobRecord]) -> int:
        """Nothing to do at start-up: other replicas' jobs may be running; dead ones show by their heartbeat."""
        return 0

    async def ready(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (OSError, RedisError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()
