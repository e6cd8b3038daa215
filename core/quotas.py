"""Per API key quotas: requests in flight, and a token bucket of requests per minute.

Every model request takes one token and one place in flight until it is answered: a synchronous request, and a
job's submission (front/admission.py); a job's own count while queued or running is the job caps' (jobs/caps.py).

Without Redis each front process counts alone (N replicas give a key N times its quota). With Redis
(`AUDIO_STUDIO_JOB_STORE=redis://...`) every replica counts in Redis, each check and take one Lua script on
Redis's clock, so N replicas give a key its quota once. A place in flight is a member of a sorted set that
expires after the request's time budget, so a replica that dies leaks no place for longer. When Redis cannot be
reached a keyed request is refused with 503 (`QUOTA_STORE_DOWN`): quotas never fail open.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from core.redis_client import connect

logger = logging.getLogger("bentoml.audio_studio")

QUOTA_STORE_DOWN_RETRY_S = 5
Reason = Literal["key_in_flight", "key_rate", "quota_store_down"]


@dataclass(frozen=True)
class QuotaSettings:
    max_in_flight: int
    rate_per_minute: int
    burst: int


@dataclass(frozen=True)
class OverQuota:
    """Why a key's request is refused, and when to retry."""

    reason: Reason
    message: str
    retry_after_s: int


def in_flight_refusal(quotas: QuotaSettings, held: int) -> OverQuota:
    return OverQuota(
        "key_in_flight", f"this API key has {held} requests in flight; its limit is {quotas.max_in_flight}", 1
    )


def rate_refusal(quotas: QuotaSettings, wait_s: float) -> OverQuota:
    return OverQuota(
        "key_rate",
        f"this API key is over its rate of {quotas.rate_per_minute} requests per minute "
        f"(bursts of {quotas.burst}); retry in {math.ceil(wait_s)} s",
        max(1, math.ceil(wait_s)),
    )


class KeyQuotas(Protocol):
    settings: QuotaSettings

    async def enter(self, caller: str, ticket: str) -> OverQuota | None:
        """Take a token and a place in flight for request `ticket`, or say why not (nothing taken then)."""
        ...

    async def leave(self, caller: str, ticket: str) -> None:
        """Request `ticket` is answered: give its place back."""
        ...


@dataclass
class TokenBucket:
    """`burst` requests at once, refilled at `per_minute`; each request takes one token."""

    per_minute: int
    burst: int
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_minute / 60)
        self.updated = now

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * 60 / self.per_minute

    def take(self) -> None:
        self.tokens -= 1


@dataclass
class KeyQuota:
    bucket: TokenBucket
    in_flight: int = 0


class LocalKeyQuotas:
    """This process's count (no Redis)."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.settings = settings
        self.keys: dict[str, KeyQuota] = {}

    async def enter(self, caller: str, ticket: str) -> OverQuota | None:
        quota = self.keys.setdefault(caller, KeyQuota(TokenBucket(self.settings.rate_per_minute, self.settings.burst)))
        if quota.in_flight >= self.settings.max_in_flight:
            return in_flight_refusal(self.settings, quota.in_flight)
        wait = quota.bucket.seconds_until_token(time.monotonic())
        if wait > 0:
            return rate_refusal(self.settings, wait)
        quota.bucket.take()
        quota.in_flight += 1
        return None

    async def leave(self, caller: str, ticket: str) -> None:
        self.keys[caller].in_flight -= 1


# The in-flight check, the bucket's refill and check, and the take, in one step on Redis's clock.
# KEYS: quota:<caller> (a hash: tokens, updated), in-flight:<caller> (a sorted set: ticket -> expiry).
# ARGV: rate per minute, burst, max in flight, ticket, lease seconds.
# Returns false (admitted), {'in_flight', held} or {'rate', seconds to wait} (as strings: Lua numbers lose digits).
ENTER = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate, burst, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
if held >= tonumber(ARGV[3]) then return {'in_flight', tostring(held)} end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 60)
if tokens < 1 then return {'rate', tostring((1 - tokens) * 60 / rate)} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst * 60 / rate) + 60)
redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
redis.call('EXPIRE', KEYS[2], math.ceil(lease) + 60)
return false
"""
PREFIX = "audio-studio:"


class RedisKeyQuotas:
    """Every replica's count, in Redis: a key gets its quota once however many replicas serve it."""

    def __init__(self, url: str, settings: QuotaSettings, lease_s: float) -> None:
        self.url = url
        self.settings = settings
        self.lease_s = lease_s
        self._client: tuple[Redis, AsyncScript] | None = None

    def client(self) -> tuple[Redis, AsyncScript]:
        """The client and the ENTER script, made on first use in the process and event loop that serves requests."""
        if self._client is None:
            redis = connect(self.url)
            self._client = redis, redis.register_script(ENTER)
        return self._client

    @staticmethod
    def keys_of(caller: str) -> list[str]:
        return [f"{PREFIX}quota:{caller}", f"{PREFIX}in-flight:{caller}"]

    async def enter(self, caller: str, ticket: str) -> OverQuota | None:
        quotas = self.settings
        args = [quotas.rate_per_minute, quotas.burst, quotas.max_in_flight, ticket, self.lease_s]
        try:
            refused = await self.client()[1](keys=self.keys_of(caller), args=args)
        except (OSError, RedisError) as exc:
            logger.warning("API key quotas: Redis is unavailable (%s); keyed requests are refused", type(exc).__name__)
            return OverQuota(
                "quota_store_down",
                "the store that keeps API key quotas (Redis) is unavailable; retry later",
                QUOTA_STORE_DOWN_RETRY_S,
            )
        if not refused:
            return None
        kind, value = (part.decode() for part in refused)
        if kind == "in_flight":
            return in_flight_refusal(quotas, int(value))
        return rate_refusal(quotas, float(value))

    async def leave(self, caller: str, ticket: str) -> None:
        try:
            await self.client()[0].zrem(self.keys_of(caller)[1], ticket)
        except (OSError, RedisError) as exc:  # its place expires with its lease
            logger.warning("API key quotas: a place in flight was not given back (%s)", type(exc).__name__)


def open_quotas(job_store: str, settings: QuotaSettings, lease_s: float) -> KeyQuotas:
    """Shared in Redis where the jobs are (several replicas), else this process's count."""
    if job_store.startswith(("redis://", "rediss://", "unix://")):
        return RedisKeyQuotas(job_store, settings, lease_s)
    return LocalKeyQuotas(settings)
