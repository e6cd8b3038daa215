"""Webhooks from a real server (tiny profile) to a real receiver on 127.0.0.1 (tests/webhook_receiver.py): signed
as docs/webhooks.md says a receiver verifies, retried until the receiver takes them, throttled, refused for
destinations that are not allowed, and still delivered after a restart between attempts."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio_files import audio_file
from tests.conftest import WEBHOOK_SECRET, Served
from tests.jobs_client import FINAL, status, submit, wait_until
from tests.test_jobs import GENERATE, LONG
from tests.unit.test_webhooks import documented_verify
from tests.webhook_receiver import WebhookReceiver

QUICK = {**GENERATE, "duration": 2, "steps": 2}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def hooked_job(base: str, hook: str, events: list[str] | None = None, **body: Any) -> dict[str, Any]:
    extra = {} if events is None else {"webhook_events": events}
    return submit(base, "generate", json={**QUICK, **body, "webhook": hook, **extra})


def attempts_shown(base: str, job_id: str, count: int) -> list[dict[str, Any]]:
    done = wait_until(base, job_id, lambda s: len((s.get("webhook") or {}).get("attempts", [])) >= count)
    return done["webhook"]["attempts"]


def test_the_completed_event_is_the_signed_status_and_its_delivery_is_shown(
    restartable: Served, receiver: WebhookReceiver
) -> None:
    job = hooked_job(restartable.url, f"{receiver.url}/done")
    assert job["webhook"] == {"url": f"{receiver.url}/done", "events": ["completed"], "attempts": []}
    (event,) = receiver.wait_for("/done", 1)
    assert documented_verify()(WEBHOOK_SECRET, event.headers, event.body)
    assert event.headers["audio-studio-event"] == "completed" and event.headers["content-type"] == "application/json"
    sent = json.loads(event.body)
    assert sent["id"] == job["id"] and sent["state"] == "succeeded"
    (attempt,) = attempts_shown(restartable.url, job["id"], 1)
    assert attempt["delivered"] and attempt["status_code"] == 200 and attempt["attempt"] == 1
    assert attempt["webhook_id"] == event.headers["webhook-id"] and attempt["next_attempt_at"] is None


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(
    restartable: Served, receiver: WebhookReceiver
) -> None:
    receiver.answers["/flaky"] = [500, 500]
    job = hooked_job(restartable.url, f"{receiver.url}/flaky")
    tries = receiver.wait_for("/flaky", 3)
    assert len({t.headers["webhook-id"] for t in tries}) == 1  # one event, tried three times
    assert tries[1].at - tries[0].at >= 0.9 and tries[2].at - tries[1].at >= 1.9  # backoff: 1 s, then 2 s
    assert all(documented_verify()(WEBHOOK_SECRET, t.headers, t.body) for t in tries)
    shown = attempts_shown(restartable.url, job["id"], 3)
    assert [(a["attempt"], a["status_code"], a["delivered"]) for a in shown] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert shown[0]["next_attempt_at"] is not None and shown[2]["next_attempt_at"] is None
    time.sleep(1.5)
    assert len(receiver.at("/flaky")) == 3  # delivered: never sent again


def test_start_progress_at_most_every_2_s_and_completion(restartable: Served, receiver: WebhookReceiver) -> None:
    job = hooked_job(restartable.url, f"{receiver.url}/all", ["progress", "start", "completed"], **LONG)
    assert job["webhook"]["events"] == ["start", "progress", "completed"]
    receiver.wait_for("/all", 5)  # a start and four progress events at least
    assert httpx.delete(f"{restartable.url}/jobs/{job['id']}", timeout=30).status_code == 202
    deadline = time.monotonic() + 60
    while not any(r.headers["audio-studio-event"] == "completed" for r in receiver.at("/all")):
        assert time.monotonic() < deadline, "no completed event"
        time.sleep(0.1)
    events = receiver.at("/all")
    kinds = [r.headers["audio-studio-event"] for r in events]
    assert kinds.count("start") == kinds.count("completed") == 1, kinds
    # Events go out several at once (docs/webhooks.md): the start and the first progress may arrive either way
    # round, so they are ordered by the status they carry.
    [start] = [json.loads(r.body) for r in events if r.headers["audio-studio-event"] == "start"]
    [completed] = [json.loads(r.body) for r in events if r.headers["audio-studio-event"] == "completed"]
    assert completed["state"] == "cancelled" and completed["finished_at"] is not None
    progress = [r for r in events if r.headers["audio-studio-event"] == "progress"]
    fractions = [json.loads(r.body)["progress"]["fraction"] for r in progress]
    assert len(progress) >= 4 and fractions == sorted(fractions)
    assert start["state"] == "running" and (start["progress"] or {}).get("fraction", 0.0) <= fractions[0]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(progress)]
    assert min(gaps) >= 1.5, gaps  # sent at most every 2 s (received with the network's jitter)


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        ("http://127.0.0.2:9/x", "loopback, link-local or private"),
        ("http://[::1]:9/x", "loopback, link-local or private"),
        ("http://0x7f000001:9/x", "usual dotted form"),
        ("http://localhost:9/x", "loopback, link-local or private"),  # a name that resolves to loopback
        ("http://user:secret@127.0.0.1:9/x", "credentials"),
        ("file:///etc/passwd", "http:// or https://"),
    ],
)
def test_a_destination_that_is_not_allowed_is_a_400_naming_webhook(restartable: Served, hook: str, why: str) -> None:
    answer = httpx.post(f"{restartable.url}/jobs/generate", json={**QUICK, "webhook": hook}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"][0]["loc"] == ["webhook"] and why in answer.json()["error"]


def test_webhook_fields_in_a_form_and_webhooks_off_without_allowed_hosts(
    restartable: Served, receiver: WebhookReceiver, server: str, tmp_path: Path
) -> None:
    clip = {"audio": ("clip.wav", audio_file("wav", 2.0), "audio/wav")}
    form = {
        "prompt": "strings",
        "steps": "2",
        "webhook": f"{receiver.url}/form",
        "webhook_events": "start, completed",
    }
    answer = httpx.post(f"{restartable.url}/jobs/transform", data=form, files=clip, timeout=60)
    assert answer.status_code == 202, answer.text
    assert answer.json()["webhook"]["events"] == ["start", "completed"]
    assert json.loads(receiver.wait_for("/form", 1)[-1].body)["kind"] == "transform"
    off = httpx.post(f"{server}/jobs/generate", json={**QUICK, "webhook": f"{receiver.url}/x"}, timeout=30)
    assert off.status_code == 400 and "webhooks are off" in off.json()["error"], off.text
    assert httpx.post(f"{server}/generate", json={**QUICK, "webhook": "x"}, timeout=30).status_code == 400


def test_a_restart_between_attempts_still_delivers(restartable: Served, receiver: WebhookReceiver) -> None:
    receiver.answers["/later"] = [503] * 100
    job = hooked_job(restartable.url, f"{receiver.url}/later")
    first = receiver.wait_for("/later", 1)[0]
    restartable.stop()
    receiver.answers["/later"] = []  # the receiver is back: the next try is taken
    restartable.start().wait_ready()
    deadline = time.monotonic() + 60
    while not (shown := status(restartable.url, job["id"])["webhook"]["attempts"]) or not shown[-1]["delivered"]:
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    tries = receiver.at("/later")
    assert {t.headers["webhook-id"] for t in tries} == {first.headers["webhook-id"]}
    assert shown[-1]["status_code"] == 200 and shown[-1]["attempt"] == len(tries) >= 2
    assert status(restartable.url, job["id"])["state"] in FINAL
