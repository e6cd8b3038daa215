"""Admission: per-key quotas and per-runner load shedding; a runner's room is taken once the body is in.

A request to a model route is let in only if its caller is under its own
limits (requests in flight, and a token bucket of requests per minute) and its
runner has room; otherwise it is answered at once from the headers, before its
body is read: 429 with the seconds until the caller's limit allows it again, or
503 with Retry-After when the runner's queue is full. Nothing then waits
silently in a queue it cannot leave in time. Every POST body must keep to a pace
(front/body_pace.py), and a runner's room is taken only once the body is in
(503 then if the room filled meanwhile): an upload that stalls holds no room,
and is dropped (408).

A runner's room is counted here, per front process: the requests it has been
sent (or is about to be) and not yet answered. Its batcher holds one batch
running and the rest waiting; this lets at most `max_queued` wait beyond a full
batch. Per-key quotas apply when API keys are on (see front/access.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.responses import JSONResponse

from core.caller import ANONYMOUS, CALLER
from core.errors import error_response
from front.asgi import Scope, reply
from front.body_pace import BodyPace, PacedBody

SHED = Counter(
    "audio_studio_requests_shed",
    "Requests answered at once without running: reason=key_in_flight, key_rate (429) or queue_full (503)",
    ["reason", "runner"],
)
OUTSTANDING = Gauge(
    "audio_studio_runner_outstanding",
    "Requests this front has let in for a runner and not yet answered (waiting for a batch or in one)",
    ["runner"],
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "audio_studio_runner_queue_depth",
    "Requests for a runner beyond one full batch: they wait in its batcher (exact when the runner is busy)",
    ["runner"],
    multiprocess_mode="livesum",
)
QUEUE_FULL_RETRY_S = 5


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


@dataclass(frozen=True)
class QuotaSettings:
    max_in_flight: int
    rate_per_minute: int
    burst: int


@dataclass
class RunnerRoom:
    """One runner's room in this front: a full batch plus `max_queued` waiting."""

    name: str
    max_batch_size: int
    max_queued: int
    outstanding: int = 0

    @property
    def full(self) -> bool:
        return self.outstanding >= self.max_batch_size + self.max_queued

    def change(self, delta: int) -> None:
        self.outstanding += delta
        OUTSTANDING.labels(runner=self.name).set(self.outstanding)
        QUEUE_DEPTH.labels(runner=self.name).set(max(0, self.outstanding - self.max_batch_size))


class Admission:
    """ASGI middleware: let a model request in, or answer 429/503 at once; every POST body keeps to its pace."""

    def __init__(self, app: Any, rooms: dict[str, RunnerRoom], quotas: QuotaSettings, pace: BodyPace) -> None:
        self.app = app
        self.rooms = rooms  # by route
        self.quotas = quotas
        self.pace = pace
        self.keys: dict[str, KeyQuota] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        room = self.rooms.get(scope["path"])
        caller = scope.get(CALLER, ANONYMOUS)
        quota = None if room is None or caller == ANONYMOUS else self.quota_of(caller)
        refusal = None if room is None else self.key_refusal(quota, room) or self.room_refusal(room)
        if refusal is not None:
            return await reply(send, refusal)
        if quota is not None:
            quota.bucket.take()
            quota.in_flight += 1
        holds_room = False

        def enter() -> JSONResponse | None:
            """The body is in: take the room, unless it filled while the body came."""
            nonlocal holds_room
            full = None if room is None else self.room_refusal(room)
            if room is not None and full is None:
                room.change(+1)
                holds_room = True
            return full

        body = PacedBody(receive, self.pace, enter)
        try:
            await self.app(scope, body.receive, body.sender(send))
        finally:
            if room is not None and holds_room:
                room.change(-1)
            if quota is not None:
                quota.in_flight -= 1
        if body.answer is not None:
            await reply(send, body.answer)

    def quota_of(self, caller: str) -> KeyQuota:
        if caller not in self.keys:
            self.keys[caller] = KeyQuota(TokenBucket(self.quotas.rate_per_minute, self.quotas.burst))
        return self.keys[caller]

    def key_refusal(self, quota: KeyQuota | None, room: RunnerRoom) -> JSONResponse | None:
        """The caller's own limits come first: they tell it to slow down."""
        if quota is None:
            return None
        if quota.in_flight >= self.quotas.max_in_flight:
            SHED.labels(reason="key_in_flight", runner=room.name).inc()
            return error_response(
                "rate_limited",
                f"this API key has {quota.in_flight} requests in flight; its limit is {self.quotas.max_in_flight}",
                retry_after_s=1,
            )
        wait = quota.bucket.seconds_until_token(time.monotonic())
        if wait > 0:
            SHED.labels(reason="key_rate", runner=room.name).inc()
            return error_response(
                "rate_limited",
                f"this API key is over its rate of {self.quotas.rate_per_minute} requests per minute "
                f"(bursts of {self.quotas.burst}); retry in {math.ceil(wait)} s",
                retry_after_s=math.ceil(wait),
            )
        return None

    @staticmethod
    def room_refusal(room: RunnerRoom) -> JSONResponse | None:
        if not room.full:
            return None
        SHED.labels(reason="queue_full", runner=room.name).inc()
        return error_response(
            "unavailable",
            f"the {room.name} runner's queue is full ({room.outstanding} requests in flight); retry later",
            retry_after_s=QUEUE_FULL_RETRY_S,
        )
