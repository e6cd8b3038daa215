"""Jobs in Redis, so that several front replicas answer for any job (AUDIO_STUDIO_JOB_STORE=redis://...).

Keys (prefix `audio-studio:`): `job:<id>` the record (JSON), `job:<id>:owner` the replica that runs it (only it
may save the record: a replica thought dead that finishes late writes nothing), `job:<id>:cancel` a cancel flag,
`job:<id>:result` a result up to `inline_max_bytes`; larger results are files in the data folder, which
must then be a volume every replica mounts. Sorted sets `active` and `active:<caller>` hold active job ids
by heartbeat time, and the hash `active-bytes` their decoded uploads' bytes, for the queue caps, which a
Lua script checks and reserves in one step (`RESERVE`). An active job whose heartbeat stopped is claimed by one
live replica (`CLAIM`: its owner and heartbeat changed in one step), which runs it again from its kept request
(jobs/requests.py, in the shared data folder). Records and results carry Redis expiry times, so Redis itself
forgets them; the janitor only removes result files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import cast

from redis.exceptions import RedisError

from core.redis_client import connect
from jobs.caps import Cap, Full, JobCaps
from jobs.records import JobRecord, now
from jobs.store import CHUNK_BYTES, JobStore, ResultFiles

PREFIX = "audio-studio:"
ACTIVE_KEEP_S = 7 * 24 * 3600  # a record of an active job outlives any job; its heartbeat says if it lives
NO_CAP = -1  # RESERVE's max_own when callers share the queue (API keys off)

# The caps' check (jobs/caps.py, `first_full`: the same rule) and the save of a new active job, atomic in Redis.
# KEYS: active, active:<caller>, active-bytes, job:<id>, job:<id>:owner.
# ARGV: fresh since (a score), max_active, max_own, max_input_bytes, id, heartbeat, input_bytes, record, ttl, owner.
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
redis.call('SET', KEYS[5], ARGV[10], 'EX', ARGV[9])
redis.call('ZADD', KEYS[1], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], bytes)
return false
"""

# A record's save by its owner only (SQLite has one process; here a replica thought dead may still be running).
# KEYS: job:<id>, job:<id>:owner, active, active:<caller>, active-bytes.
# ARGV: instance, record, ttl, id, active (1/0), heartbeat, input_bytes. Returns 1 if saved.
SAVE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[7])
else
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('HDEL', KEYS[5], ARGV[4])
end
return 1
"""

# Active jobs whose heartbeat stopped become this replica's: owner and heartbeat score changed in one step, so two
# replicas never claim one job. KEYS: active. ARGV: stale before (a score), instance, now (a score), at most, prefix,
# ttl.
# Returns the claimed records as they were.
CLAIM = """
local claimed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[4])) do
  local record = redis.call('GET', ARGV[5] .. 'job:' .. id)
  if record then
    redis.call('SET', ARGV[5] .. 'job:' .. id .. ':owner', ARGV[2], 'EX', ARGV[6])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(claimed, record)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""
CLAIM_AT_MOST = 16  # per call, so one replica that comes back does not take every orphan at once


class RedisStore(JobStore):
    errors = (OSError, RedisError)

    def __init__(self, url: str, folder: Path, inline_max_bytes: int) -> None:
        self.redis = connect(url)
        self.files = ResultFiles(folder / "results")
        self.inline_max_bytes = inline_max_bytes
        self.reserve_script = self.redis.register_script(RESERVE)
        self.save_script = self.redis.register_script(SAVE)
        self.claim_script = self.redis.register_script(CLAIM)

    @staticmethod
    def key(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    @staticmethod
    def ttl(record: JobRecord) -> int:
        return ACTIVE_KEEP_S if record.purge_at is None else max(1, int((record.purge_at - now()).total_seconds()))

    async def save(self, record: JobRecord) -> bool:
        keys = [
            self.key("job", record.id),
            self.key("job", record.id, "owner"),
            self.key("active"),
            self.key("active", record.caller),
            self.key("active-bytes"),
        ]
        args = [
            record.instance,
            record.model_dump_json(),
            self.ttl(record),
            record.id,
            1 if record.active else 0,
            record.heartbeat_at.timestamp(),
            record.input_bytes,
        ]
        return bool(await self.save_script(keys=keys, args=args))

    async def claim_stale(self, instance: str, fresh_since: datetime) -> list[JobRecord]:
        args = [fresh_since.timestamp(), instance, now().timestamp(), CLAIM_AT_MOST, PREFIX, ACTIVE_KEEP_S]
        claimed = await self.claim_script(keys=[self.key("active")], args=args)
        return [JobRecord.model_validate_json(raw) for raw in claimed]

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
        keys += [self.key("job", record.id), self.key("job", record.id, "owner")]
        full = await self.reserve_script(keys=keys, args=[*args, record.instance])
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
