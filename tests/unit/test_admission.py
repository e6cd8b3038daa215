"""Admission decisions in-process: the token bucket's arithmetic, the in-flight caps and the body's pace, with an
inner app that reads its body, then holds its request until told (what a slow model does), so every limit can be
reached exactly."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.caller import CALLER
from front.admission import Admission, QuotaSettings, RunnerRoom, TokenBucket
from front.asgi import Message, Receive, Scope, Send
from front.body_pace import BodyPace

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
        quotas = QuotaSettings(max_in_flight=2, rate_per_minute=600, burst=100)
        admission = Admission(app, {"/generate": room}, quotas, PACE)
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
        assert room.outstanding == 0 and admission.keys["alice"].in_flight == 0
        assert (await call(admission, "carol"))[0] == 200  # room again once answered

    asyncio.run(scenario())


def test_without_keys_only_the_runner_room_applies() -> None:
    async def scenario() -> None:
        app = HeldApp()
        app.release.set()
        room = RunnerRoom("music-flamingo", max_batch_size=2, max_queued=0)
        quotas = QuotaSettings(max_in_flight=1, rate_per_minute=1, burst=1)
        admission = Admission(app, {"/critique": room}, quotas, PACE)
        statuses = [(await call(admission, "anonymous", "/critique"))[0] for _ in range(5)]
        assert statuses == [200] * 5 and admission.keys == {}

    asyncio.run(scenario())


OPEN = QuotaSettings(max_in_flight=100, rate_per_minute=6000, burst=100)


def test_a_body_still_coming_holds_no_room_and_a_stalled_one_is_dropped_with_408() -> None:
    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=1, max_queued=0)
        admission = Admission(app, {"/generate": room}, OPEN, BodyPace(timeout_s=0.5, min_bytes_per_s=1024))
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
        admission = Admission(app, {"/generate": room}, OPEN, PACE)
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
