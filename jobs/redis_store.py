"""Jobs in Redis, so that several front replicas answer for any job (AUDIO_STUDIO_JOB_STORE=redis://...).

Keys (prefix `audio-studio:`): `job:<id>` the record (JSON), `job:<id>:cancel` a cancel flag,
`job:<id>:result` a result up to `inline_max_bytes`; larger results are files in the data folder, which
must then be a volume every replica mounts. Sorted sets `active` and `active:<caller>` hold active job ids
by heartbeat time, and the hash `active-bytes` their decoded uploads' bytes, for the queue caps, which a
Lua script checks and reserves in one step (`RESERVE`). Records and results carry Redis expiry times, so
Redis itself forgets them; the janitor only removes result files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.caps import Cap, Full, JobCaps
from jobs.records import JobRecord, now
from jobs.store import CHUNK_BYTES, JobStore, ResultFiles

PREFIX = "audio-studio:"
ACTIVE_KEEP_S = 7 * 24 * 3600  # a record of an active job outlives any job; its heartbeat says if it lives
NO_CAP = -1  # RESERVE's max_own when callers share the queue (API keys off)

# The caps' check (jobs/caps.py, `first_full`: the same rule) and the save of a new active job, atomic in Redis.
# KEYS: active, active:<caller>, active-bytes, job:<id>.
# ARGV: fresh since (a score), max_active, max_own, max_input_bytes, id, heartbeat, input_bytes, record, ttl.
RESERVE = """
local fresh = '(' .. ARGV[1]
local active = redis.call('ZCOUNT', KEYS[1], fresh, '+inf')
if active >= tonumber(ARGV[2]) then return {'active', active} end
local own = redis.call('ZCOUNT', KEYS[2], fresh, '+inf')
if tonumber(ARGV[3]) >= 0 and own >= tonumber(ARGV[3]) then return {'key', own} end
local held = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], fresh, '+inf')) do
  held = held + tonumber(redis.call('HGET', KEYS[3], id) or '0')
end
local bytes = tonumber(ARGV[7])
if held > 0 and held + bytes > tonumber(ARGV[4]) then return {'bytes', held} end
redis.call('SET', KEYS[4], ARGV[8], 'EX', ARGV[9])
redis.call('ZADD', KEYS[1], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], bytes)
return false
"""


class RedisStore(JobStore):
    errors = (OSError, RedisError)

    def __init__(self, url: str, folder: Path, inline_max_bytes: int) -> None:
        self.redis = Redis.from_url(url)
        self.files = ResultFiles(folder / "results")
        self.inline_max_bytes = inline_max_bytes
        self.reserve_script = self.redis.register_script(RESERVE)

    @staticmethod
    def key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    @staticmethod
    def ttl(record: JobRecord) -> int:
        return ACTIVE_KEEP_S if record.purge_at is None else max(1, int((record.purge_at - now()).total_seconds()))

    async def save(self, record: JobRecord) -> None:
        active = [self.key("active"), self.key("active", record.caller)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key("job", record.id), record.model_dump_json(), ex=self.ttl(record))
            for name in active:
                if record.active:
                    pipe.zadd(name, {record.id: record.heartbeat_at.timestamp()})
                else:
                    pipe.zrem(name, record.id)
            if record.active:
                pipe.hset(self.key("active-bytes"), record.id, record.input_bytes)
            else:
                pipe.hdel(self.key("active-bytes"), record.id)
            await pipe.execute()

    async def reserve(self, record: JobRecord, caps: JobCaps, fresh_since: datetime) -> Full | None:
        keys = [self.key("active"), self.key("active", record.caller), self.key("active-bytes")]
        args = [
            fresh_since.timestamp(),
            caps.max_active,
            NO_CAP if caps.max_active_per_key is None else caps.max_active_per_key,
            caps.max_input_bytes,
            record.id,
            record.heartbeat_at.timestamp(),
            record.input_bytes,
            record.model_dump_json(),
            self.ttl(record),
        ]
        full = await self.reserve_script(keys=[*keys, self.key("job", record.id)], args=args)
        return None if full is None else Full(cast(Cap, full[0].decode()), int(full[1]))

    async def load(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self.key("job", job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    async def request_cancel(self, job_id: str) -> None:
        await self.redis.set(self.key("job", job_id, "cancel"), b"1", ex=ACTIVE_KEEP_S)

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self.key("job", job_id, "cancel")))

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
        stale = await self.redis.zrangebyscore(self.key("active"), "-inf", now_.timestamp() - ACTIVE_KEEP_S)
        if stale:
            await self.redis.zrem(self.key("active"), *stale)
            await self.redis.hdel(self.key("active-bytes"), *stale)
        return gone

    async def interrupted(self) -> list[JobRecord]:
        """None: other replicas' jobs may be running; dead ones show by their heartbeat."""
        return []

    async def ready(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (OSError, RedisError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()
