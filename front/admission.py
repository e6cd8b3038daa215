"""Admission: per-key quotas and per-runner load shedding; a runner's room is taken once the body is in.

A request to a model route, or a job's submission, is let in only if its caller is under its own limits
(core/quotas.py: requests in flight and a token bucket, shared across replicas with Redis) and, for a synchronous
request, its runner has room (core/rooms.py: shared with this front's jobs); otherwise it is answered at once
from the headers, before its body is read: 429 with the seconds until the caller's limit allows it again, or 503
with Retry-After when the runner's queue is full or the quotas' store is down. Nothing then waits silently in a
queue it cannot leave in time. Every POST body must keep to a pace (front/body_pace.py), and a runner's room is
taken only once the body is in (503 then if the room filled meanwhile): an upload that stalls holds no room, and
is dropped (408). Per-key quotas apply when API keys are on (see front/access.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import Counter
from starlette.responses import JSONResponse

from core.caller import ANONYMOUS, CALLER
from core.errors import error_response
from core.quotas import KeyQuotas, OverQuota
from core.rooms import RunnerRoom
from front.asgi import Scope, reply
from front.body_pace import BodyPace, PacedBody

SHED = Counter(
    "audio_studio_requests_shed",
    "Requests answered at once without running: reason=key_in_flight, key_rate (429), queue_full or "
    "quota_store_down (503); runner=jobs for a job's submission",
    ["reason", "runner"],
)
QUEUE_FULL_RETRY_S = 5
JOBS = "jobs"  # SHED's runner label for a job's submission: it waits for its runner's room as a job


class Admission:
    """ASGI middleware: let a model request in, or answer 429/503 at once; every POST body keeps to its pace.

    `rooms`: the synchronous routes and their runner's room; `submissions`: the job routes, which take only the
    caller's quota (the job takes its runner's room when it starts)."""

    def __init__(
        self, app: Any, rooms: dict[str, RunnerRoom], submissions: set[str], quotas: KeyQuotas, pace: BodyPace
    ) -> None:
        self.app = app
        self.rooms = rooms
        self.submissions = submissions
        self.quotas = quotas
        self.pace = pace

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        room = self.rooms.get(path)
        metered = room is not None or path in self.submissions
        caller = scope.get(CALLER, ANONYMOUS)
        ticket = uuid.uuid4().hex if metered and caller != ANONYMOUS else None
        label = room.name if room is not None else JOBS
        if room is not None and (refusal := self.room_refusal(room)) is not None:
            return await reply(send, refusal)
        if ticket is not None and (over := await self.quotas.enter(caller, ticket)) is not None:
            return await reply(send, self.quota_refusal(over, label))
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
            if ticket is not None:
                await self.quotas.leave(caller, ticket)
        if body.answer is not None:
            await reply(send, body.answer)

    @staticmethod
    def quota_refusal(over: OverQuota, label: str) -> JSONResponse:
        SHED.labels(reason=over.reason, runner=label).inc()
        kind = "unavailable" if over.reason == "quota_store_down" else "rate_limited"
        return error_response(kind, over.message, retry_after_s=over.retry_after_s)

    @staticmethod
    def room_refusal(room: RunnerRoom) -> JSONResponse | None:
        if not room.full:
            return None
        SHED.labels(reason="queue_full", runner=room.name).inc()
        return error_response(
            "unavailable",
            f"the {room.name} runner's queue is full ({room.outstanding} requests and jobs in flight); retry later",
            retry_after_s=QUEUE_FULL_RETRY_S,
        )
