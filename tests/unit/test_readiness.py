"""/readyz at the front's edge (front/edge.py): bounded when a runner hangs, and a runner is not blamed for the
time the front's own event loop spends on other requests. A stand-in app answers the probe; no server."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from front import edge
from front.asgi import Message

PROBE_STEPS = 5  # the probe's answer takes a few loop turns, as an HTTP call to each runner does
STEP_S = 0.05


def readiness(probe_answers: bool, hog_s: float) -> tuple[int, str]:
    """/readyz through the edge while another task holds the event loop for `hog_s` (another request's CPU
    work); the probe answers 200 after PROBE_STEPS short waits, or never."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for _ in range(PROBE_STEPS):
            await asyncio.sleep(STEP_S)
        if not probe_answers:
            await asyncio.Event().wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def hog() -> None:
        await asyncio.sleep(STEP_S / 2)  # the probe is under way
        time.sleep(hog_s)

    async def main() -> tuple[int, str]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def stop_jobs(deadline: float) -> None:
            pass

        guard = edge.EdgeGuard(app, SimpleNamespace(apis={}), 1, 1.0, stop_jobs)
        hogging = asyncio.create_task(hog())
        await guard({"type": "http", "path": "/readyz", "method": "GET", "headers": []}, None, send)
        await hogging
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def one_second_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe takes 0.25 s of its own: well inside the bound, which the 2 s the loop is held is well over."""
    monkeypatch.setattr(edge, "READINESS_TIMEOUT_S", 1.0)


def test_a_front_busy_with_other_requests_is_not_a_runner_that_did_not_answer() -> None:
    assert readiness(probe_answers=True, hog_s=2.0) == (200, "ok")


def test_a_runner_that_never_answers_is_named_and_the_front_s_own_busy_time_is_told_apart() -> None:
    status, reason = readiness(probe_answers=False, hog_s=0.0)
    assert (status, reason) == (503, "a runner did not answer its readiness probe in 1 s")
    status, reason = readiness(probe_answers=False, hog_s=2.0)
    assert status == 503 and reason.startswith("a runner did not answer its readiness probe in 1 s (this front's")
    assert float(reason.split("event loop was busy for ")[1].split(" s")[0]) > 1
