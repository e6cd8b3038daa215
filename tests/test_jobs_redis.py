"""The job API with its state in a real Redis, served by two front processes over the same runners (the `remote`
tree, tests/conftest.py): a job submitted on one front is followed, fetched and cancelled on the other, and
finished by the other when its front dies."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REMOTE_INLINE_RESULT_BYTES, Remote, Served
from tests.jobs_client import assert_progress_moves_forward, events, follow, result, status, submit, wait_until
from tests.redis_server import RedisServer
from tests.test_jobs import GENERATE, LONG, wav, without_timings


@pytest.fixture
def fronts(remote: Remote) -> tuple[Served, Served]:
    return remote.fronts


@pytest.fixture
def redis(remote: Remote) -> RedisServer:
    return remote.redis


def test_a_job_submitted_on_one_front_is_followed_and_fetched_on_the_other(fronts: tuple[Served, Served]) -> None:
    a, b = (front.url for front in fronts)
    job = submit(a, "generate", json=GENERATE)
    assert_progress_moves_forward(follow(b, job["id"]))
    fetched = result(b, job["id"])
    assert len(fetched.content) > REMOTE_INLINE_RESULT_BYTES  # read from the shared folder, streamed
    assert fetched.content == httpx.post(f"{a}/generate", json=GENERATE, timeout=300).content


def test_a_critique_job_streams_its_events_on_the_other_front(fronts: tuple[Served, Served]) -> None:
    a, b = (front.url for front in fronts)
    form = {"preset": "feedback", "seed": "2", "max_new_tokens": "32"}
    files = {"audio": ("take.wav", wav(4.0), "audio/wav")}
    job = submit(b, "critique", data=form, files=files)
    seen = list(events(a, job["id"]))
    assert seen[-1]["state"] == "succeeded"
    fractions = [event["progress"]["fraction"] for event in seen]
    assert fractions == sorted(fractions)
    synchronous = httpx.post(f"{b}/critique", data=form, files=files, timeout=300).json()
    assert without_timings(result(a, job["id"]).json()) == without_timings(synchronous)


def test_a_short_result_lives_in_redis(fronts: tuple[Served, Served], redis: RedisServer) -> None:
    a, b = (front.url for front in fronts)
    job = submit(a, "generate", json={**GENERATE, "duration": 2, "steps": 2})
    assert follow(a, job["id"])[-1]["state"] == "succeeded"
    assert len(result(b, job["id"]).content) < REMOTE_INLINE_RESULT_BYTES
    assert not (Path(fronts[0].env["AUDIO_STUDIO_JOB_DATA_DIR"]) / "results" / job["id"]).exists()


def test_a_cancel_on_the_other_front_stops_the_job(fronts: tuple[Served, Served]) -> None:
    a, b = (front.url for front in fronts)
    job = submit(a, "generate", json={**LONG, "seed": 4})
    wait_until(b, job["id"], lambda s: s["state"] == "running")
    assert httpx.post(f"{b}/jobs/{job['id']}/cancel", timeout=30).status_code == 202
    final = wait_until(b, job["id"], lambda s: s["state"] not in ("queued", "running"))
    assert final["state"] == "cancelled"
    assert status(a, job["id"])["state"] == "cancelled"


def test_readiness_and_submissions_follow_redis(fronts: tuple[Served, Served], redis: RedisServer) -> None:
    front = fronts[0].url
    assert httpx.get(f"{front}/readyz", timeout=10).status_code == 200
    redis.stop()
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{front}/readyz", timeout=10).status_code == 200:
            assert time.monotonic() < deadline, "/readyz stayed 200 with Redis down"
            time.sleep(0.5)
        refused = httpx.post(f"{front}/jobs/generate", json=GENERATE, timeout=30)
        assert refused.status_code == 503 and "job store" in refused.json()["error"], refused.text
        assert int(refused.headers["retry-after"]) > 0
        assert httpx.get(f"{front}/jobs/{'0' * 32}", timeout=30).status_code == 503
    finally:
        redis.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{front}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "/readyz did not recover with Redis back"
        time.sleep(0.5)


def test_a_job_whose_front_died_is_finished_by_the_other_front(fronts: tuple[Served, Served]) -> None:
    """SIGKILL of the front running a job: after its heartbeat goes stale (30 s) the other front claims the job and
    runs it again from its kept request (attempt 2), to the bytes the synchronous route gives for its seed."""
    dying, living = fronts
    for front in fronts:  # after the readiness test's Redis restart, a pooled connection fails once (a 503)
        deadline = time.monotonic() + 30
        while httpx.get(f"{front.url}/jobs/{'0' * 32}", timeout=30).status_code != 404:
            assert time.monotonic() < deadline, "the job store did not answer again"
            time.sleep(0.5)
    body = {**GENERATE, "steps": 40, "seed": 31}  # seconds on the tiny profile: running when the kill comes
    job = submit(dying.url, "generate", json=body)
    wait_until(living.url, job["id"], lambda s: s["state"] == "running")
    dying.kill()
    try:
        final = follow(living.url, job["id"])[-1]
        assert final["state"] == "succeeded" and final["attempt"] == 2, final
        expected = httpx.post(f"{living.url}/generate", json=body, timeout=300).content
        assert result(living.url, job["id"]).content == expected
    finally:
        dying.start().wait_ready()
