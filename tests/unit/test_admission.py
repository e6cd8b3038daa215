"""Admission decisions in-process: the token bucket's arithmetic, the in-flight caps and the body's pace, with an
inner app that reads its body, then holds its request until told (what a slow model does), so every limit can be
reached exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.caller import CALLER
from core.quotas import LocalKeyQuotas, OverQuota, QuotaSettings, RedisKeyQuotas, TokenBucket
from core.rooms import RunnerRoom
from front.admission import Admission
from front.asgi import Message, Receive, Scope, Send
from front.body_pace import BodyPace
from tests.redis_server import RedisServer

PACE = BodyPace(timeout_s=60, min_bytes_per_s=1024)


def test_the_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(per_minute=6, burst=2, updated=100.0)
    assert bucket.seconds_until_token(100.0) == 0
    bucket.take()
    bucket.take()
    assert bucket.seconds_until_token(100.0) == pytest.approx(10.0)  # one token every 10 s
    assert bucket.seconds_until_token(104.0) == pytest.approx(6.0)
    assert bucket.seconds_until_token(110.0) == 0
    assert bucket.seconds_until_token(1000.0) == 0 and bucket.tokens == 2  # never more than the burst


class HeldApp:
    """An inner app that reads its body (as BentoML does before any work), then answers 200 only when released;
    counts what reached it with its body."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        while message.get("more_body", False):
            message = await receive()
        if message["type"] == "http.disconnect":  # Starlette's ClientDisconnect: the app's answer is not heard
            await send({"type": "http.response.start", "status": 400, "headers": []})
            return await send({"type": "http.response.body", "body": b"client disconnected"})
        self.reached += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def whole_body() -> Message:
    return {"type": "http.request", "body": b"{}", "more_body": False}


def stalled_body(after_first: asyncio.Event) -> Receive:
    """One byte, then the rest only once `after_first` is set (never, for a client that stalled)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{", "more_body": True}
        await after_first.wait()
        return {"type": "http.request", "body": b"}", "more_body": False}

    return receive


async def call(
    admission: Admission, caller: str, path: str = "/generate", receive: Receive = whole_body
) -> tuple[int, dict[str, str], dict]:
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], CALLER: caller}
    await admission(scope, receive, send)
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body) if body else {}


def test_in_flight_caps_per_key_and_per_runner() -> None:
    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=2, max_queued=2)
        quotas = LocalKeyQuotas(QuotaSettings(max_in_flight=2, rate_per_minute=600, burst=100))
        admission = Admission(app, {"/generate": room}, set(), quotas, PACE)
        held = [asyncio.create_task(call(admission, "alice")) for _ in range(2)]
        await asyncio.sleep(0)
        status, headers, body = await call(admission, "alice")  # alice's third, answered at once
        assert (status, headers["retry-after"], body["kind"]) == (429, "1", "rate_limited")
        assert "2 requests in flight" in body["error"]
        held += [asyncio.create_task(call(admission, "bob")) for _ in range(2)]
        await asyncio.sleep(0)
        assert room.outstanding == 4 and app.reached == 4
        status, headers, body = await call(admission, "carol")  # the runner's room (2 + 2) is full
        assert (status, body["kind"]) == (503, "unavailable") and int(headers["retry-after"]) >= 1
        app.release.set()
        assert [s for s, _, _ in await asyncio.gather(*held)] == [200] * 4
        assert room.outstanding == 0 and quotas.keys["alice"].in_flight == 0
        assert (await call(admission, "carol"))[0] == 200  # room again once answered

    asyncio.run(scenario())


def test_without_keys_only_the_runner_room_applies() -> None:
    async def scenario() -> None:
        app = HeldApp()
        app.release.set()
        room = RunnerRoom("music-flamingo", max_batch_size=2, max_queued=0)
        quotas = LocalKeyQuotas(QuotaSettings(max_in_flight=1, rate_per_minute=1, burst=1))
        admission = Admission(app, {"/critique": room}, {"/jobs/critique"}, quotas, PACE)
        statuses = [(await call(admission, "anonymous", path))[0] for path in ["/critique", "/jobs/critique"] * 3]
        assert statuses == [200] * 6 and quotas.keys == {}

    asyncio.run(scenario())


OPEN = LocalKeyQuotas(QuotaSettings(max_in_flight=100, rate_per_minute=6000, burst=100))


def test_a_body_still_coming_holds_no_room_and_a_stalled_one_is_dropped_with_408() -> None:
    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=1, max_queued=0)
        admission = Admission(app, {"/generate": room}, set(), OPEN, BodyPace(timeout_s=0.5, min_bytes_per_s=1024))
        stalled = [asyncio.create_task(call(admission, "anonymous", receive=stalled_body(asyncio.Event())))]
        await asyncio.sleep(0)
        assert room.outstanding == 0
        app.release.set()
        assert (await call(admission, "anonymous"))[0] == 200  # the room was free: the stalled upload held none
        status, headers, body = (await asyncio.gather(*stalled))[0]
        assert (status, body["kind"], body["detail"][0]["loc"]) == (408, "request_timeout", ["body"])
        assert headers["connection"] == "close" and "1 bytes arrived" in body["error"]
        assert app.reached == 1 and room.outstanding == 0

    asyncio.run(scenario())


def test_the_room_is_taken_as_the_body_completes_and_a_room_filled_meanwhile_is_a_503() -> None:
    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=1, max_queued=0)
        admission = Admission(app, {"/generate": room}, set(), OPEN, PACE)
        rest = asyncio.Event()
        slow = asyncio.create_task(call(admission, "anonymous", receive=stalled_body(rest)))
        fast = asyncio.create_task(call(admission, "anonymous"))
        await asyncio.sleep(0.01)
        assert room.outstanding == 1 and app.reached == 1  # the fast one's body is in: it holds the room
        rest.set()
        status, _, body = await slow
        assert (status, body["kind"]) == (503, "unavailable") and app.reached == 1
        app.release.set()
        assert (await fast)[0] == 200 and room.outstanding == 0

    asyncio.run(scenario())


def test_the_body_deadline_grows_with_what_arrived() -> None:
    """One second more per `min_rate` bytes: an upload that keeps to the rate is never cut, however large; one at
    half the rate is cut once its grace is used up; one byte and nothing more gets only the timeout."""
    pace = BodyPace(timeout_s=20, min_bytes_per_s=32 * 1024)

    def cut_at(rate_kib_s: int, size: int = 400 << 20) -> int | None:
        """The first second at which the upload is still coming after its deadline, if any."""
        rate = rate_kib_s * 1024
        return next((t for t in range(size // rate + 1) if t > pace.deadline(0.0, t * rate)), None)

    assert cut_at(33) is None
    assert cut_at(16) == 41  # 20 s + (16 KiB/s x t) / 32 KiB/s < t from t = 40 s
    assert pace.deadline(0.0, 1) < 21


def test_jobs_and_requests_share_a_runners_room() -> None:
    """Batch 2 + 1 queued: jobs hold at most the batch, so a synchronous request still finds the queued place; a
    job waits while requests fill the room, and starts when one is answered."""

    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=2, max_queued=1)
        admission = Admission(app, {"/generate": room}, set(), OPEN, PACE)
        done = asyncio.Event()

        async def job() -> None:
            async with room.job_place():
                await done.wait()

        jobs = [asyncio.create_task(job()) for _ in range(3)]
        await asyncio.sleep(0)
        assert (room.outstanding, room.jobs) == (2, 2)  # the third job waits: jobs hold a batch at most
        request = asyncio.create_task(call(admission, "anonymous"))
        await asyncio.sleep(0.01)
        assert room.outstanding == 3 and app.reached == 1
        status, _, body = await call(admission, "anonymous")  # two jobs and a request: the room is full
        assert (status, body["kind"]) == (503, "unavailable") and "requests and jobs" in body["error"]
        done.set()
        await asyncio.sleep(0.01)
        assert room.jobs == 0 and room.outstanding == 1  # the third job ran in the place the others left
        assert all(task.done() for task in jobs)
        app.release.set()
        assert (await request)[0] == 200 and room.outstanding == 0

        held = [asyncio.create_task(call(admission, "anonymous")) for _ in range(3)]
        app.release.clear()
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(job())
        await asyncio.sleep(0.01)
        assert room.outstanding == 3 and room.jobs == 0  # requests fill the room: the job waits its turn
        app.release.set()
        await asyncio.gather(*held)
        await asyncio.sleep(0.01)
        assert waiting.done() and room.outstanding == 0

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("quota-redis")).start()
    try:
        yield server
    finally:
        server.stop()


def test_replicas_share_a_keys_quota_in_redis(redis_server: RedisServer) -> None:
    """Two replicas' counts in one Redis: 4 of 12 requests spread over both pass a burst of 4; places in flight are
    shared too, given back once answered, and expire with their lease when a replica dies holding them."""

    async def scenario() -> None:
        settings = QuotaSettings(max_in_flight=2, rate_per_minute=1, burst=4)
        replicas = [RedisKeyQuotas(redis_server.url, settings, lease_s=0.5) for _ in range(2)]
        outcomes = []
        for n in range(12):
            outcome = await replicas[n % 2].enter("rate", f"t{n}")
            outcomes.append(outcome)
            if outcome is None:
                await replicas[n % 2].leave("rate", f"t{n}")
        assert sum(o is None for o in outcomes) == 4 and outcomes[:4] == [None] * 4
        refused = outcomes[4]
        assert refused is not None and refused.reason == "key_rate" and 1 <= refused.retry_after_s <= 60

        assert await replicas[0].enter("held", "a") is None and await replicas[1].enter("held", "b") is None
        third = await replicas[0].enter("held", "c")
        assert third is not None and third.reason == "key_in_flight" and "2 requests in flight" in third.message
        await replicas[1].leave("held", "b")
        assert await replicas[0].enter("held", "c") is None  # b's place, given back by the other replica
        await asyncio.sleep(0.6)  # a replica that died holding a and c: their places end with the lease
        assert await replicas[1].enter("held", "d") is None

    asyncio.run(scenario())


def test_quotas_refuse_while_redis_is_down(tmp_path: Path) -> None:
    """No Redis, no admission for a keyed request: a 503-worthy refusal within the client's timeout, never a pass;
    once Redis is back (restarted unseen too), the next request is let in."""
    server = RedisServer(tmp_path).start()
    quotas = RedisKeyQuotas(server.url, QuotaSettings(max_in_flight=2, rate_per_minute=60, burst=4), lease_s=60)

    async def enter() -> OverQuota | None:
        return await quotas.enter("alice", uuid.uuid4().hex)

    async def scenario() -> None:
        assert await enter() is None
        server.stop()
        refused = await enter()
        assert refused is not None and refused.reason == "quota_store_down"
        assert "unavailable" in refused.message and refused.retry_after_s >= 1
        server.start()
        assert await enter() is None
        server.stop()  # a restart no call saw: the pooled connection is stale, the next call reconnects
        server.start()
        assert await enter() is None

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
