"""Admission decisions in-process: the token bucket's arithmetic and the in-flight caps, with an inner app that
holds its requests until told (what a slow model does), so every limit can be reached exactly."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.caller import CALLER
from front.admission import Admission, QuotaSettings, RunnerRoom, TokenBucket
from front.asgi import Message, Receive, Scope, Send


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
    """An inner app that answers 200 only when released; counts what reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(admission: Admission, caller: str, path: str = "/generate") -> tuple[int, dict[str, str], dict]:
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], CALLER: caller}
    await admission(scope, None, send)
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body) if body else {}


def test_in_flight_caps_per_key_and_per_runner() -> None:
    async def scenario() -> None:
        app = HeldApp()
        room = RunnerRoom("audioldm2", max_batch_size=2, max_queued=2)
        admission = Admission(app, {"/generate": room}, QuotaSettings(max_in_flight=2, rate_per_minute=600, burst=100))
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
        admission = Admission(app, {"/critique": room}, QuotaSettings(max_in_flight=1, rate_per_minute=1, burst=1))
        statuses = [(await call(admission, "anonymous", "/critique"))[0] for _ in range(5)]
        assert statuses == [200] * 5 and admission.keys == {}

    asyncio.run(scenario())
