"""The job API over HTTP on the tiny profile: results equal the synchronous answers, progress, events,
cancellation, limits, and accepted jobs that outlive a crash or a restart (embedded SQLite store)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile

from tests.conftest import RESTARTABLE_GRACE_S, Secured, Served
from tests.jobs_client import (
    assert_progress_moves_forward,
    events,
    follow,
    result,
    status,
    submit,
    wait_until,
)
from tests.metrics import cancelled_jobs

RATE = 16_000
GENERATE = {"prompt": "rain on a tin roof", "duration": 10, "seed": 5, "steps": 8}
LONG = {"prompt": "a slowly evolving drone", "duration": 20, "steps": 500}  # a minute or more on the tiny profile


def wav(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), RATE, format="WAV")
    return buffer.getvalue()


def without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timings"}


# ---- on the shared server (default settings) ---------------------------------------------


def test_a_generate_job_moves_forward_and_its_result_is_the_synchronous_answer(server: str) -> None:
    job = submit(server, "generate", json=GENERATE)
    assert job["state"] == "queued" and job["seed"] == 5 and job["kind"] == "generate"
    statuses = follow(server, job["id"])
    assert_progress_moves_forward(statuses)
    denoising = [s["progress"] for s in statuses if s["progress"]["phase"] == "denoising"]
    assert denoising and all(p["unit"] == "steps" and p["total"] == GENERATE["steps"] for p in denoising)
    final = statuses[-1]
    assert final["started_at"] and final["finished_at"] and final["expires_at"]
    answer = result(server, job["id"])
    assert answer.headers["content-type"] == "audio/wav" and answer.headers["x-seed"] == "5"
    synchronous = httpx.post(f"{server}/generate", json=GENERATE, timeout=300)
    assert answer.content == synchronous.content


def test_a_generate_json_job_gives_every_waveform_as_the_synchronous_route_does(server: str) -> None:
    body = {**GENERATE, "duration": 2, "steps": 3, "num_waveforms": 2}
    job = submit(server, "generate/json", json=body)
    assert follow(server, job["id"])[-1]["state"] == "succeeded"
    answer = result(server, job["id"])
    assert answer.headers["content-type"] == "application/json"
    synchronous = httpx.post(f"{server}/generate/json", json=body, timeout=300).json()
    assert without_timings(answer.json()) == without_timings(synchronous)
    assert sorted(w["seed"] for w in answer.json()["waveforms"]) == [5, 6]


def test_a_transform_job_gives_the_synchronous_answer(server: str) -> None:
    form = {"prompt": "the same, on strings", "strength": "0.6", "seed": "4", "steps": "6"}
    files = {"audio": ("take.wav", wav(6.0), "audio/wav")}
    job = submit(server, "transform", data=form, files=files)
    assert_progress_moves_forward(follow(server, job["id"]))
    synchronous = httpx.post(f"{server}/transform", data=form, files=files, timeout=300)
    assert synchronous.status_code == 200
    assert result(server, job["id"]).content == synchronous.content


def test_a_critique_job_gives_the_synchronous_answer(server: str) -> None:
    form = {"preset": "feedback", "seed": "3", "max_new_tokens": "48"}
    files = {"audio": ("take.wav", wav(8.0), "audio/wav"), "reference": ("ref.wav", wav(8.0, 330.0), "audio/wav")}
    form["preset"] = "compare"
    job = submit(server, "critique", data=form, files=files)
    statuses = follow(server, job["id"])
    assert_progress_moves_forward(statuses)
    answer = result(server, job["id"]).json()
    synchronous = httpx.post(f"{server}/critique", data=form, files=files, timeout=300)
    assert synchronous.status_code == 200
    assert without_timings(answer) == without_timings(synchronous.json())


def test_bad_input_is_refused_at_submission_as_the_synchronous_api_refuses_it(server: str) -> None:
    for api, body in (("generate", {"json": {**GENERATE, "duration": 601}}), ("transform", {"data": {"prompt": "x"}})):
        job = httpx.post(f"{server}/jobs/{api}", timeout=30, **body)
        synchronous = httpx.post(f"{server}/{api}", timeout=30, **body)
        assert job.status_code == synchronous.status_code == 400
        assert job.json() == synchronous.json()
    short = httpx.post(f"{server}/jobs/transform", data={"prompt": "x"}, files={"audio": ("a.wav", wav(0.1))})
    assert short.status_code == 400 and short.json()["detail"][0]["loc"] == ["audio"]


def test_unknown_jobs_are_404(server: str) -> None:
    # %0A: a path BentoML's mount of the job app cannot match (found by the fuzz test); its 404 takes the shape too.
    for path in ("0" * 32, "0" * 32 + "/result", "0" * 32 + "/events", "not-a-job-id", "%C3%B6d%0A%C2%B5%5E"):
        response = httpx.get(f"{server}/jobs/{path}", timeout=30)
        assert response.status_code == 404 and response.json()["kind"] == "not_found", response.text
    assert httpx.post(f"{server}/jobs/{'0' * 32}/cancel", timeout=30).status_code == 404


def test_events_end_with_the_final_status_and_a_reconnect_starts_from_the_current_one(server: str) -> None:
    job = submit(server, "generate", json={**GENERATE, "seed": 6, "steps": 16})
    first = list(events(server, job["id"], stop_after=2))  # then the client goes away mid-way
    assert first[0]["state"] in ("queued", "running")
    again = list(events(server, job["id"]))
    assert again[0]["progress"]["fraction"] >= first[-1]["progress"]["fraction"]
    assert again[-1]["state"] == "succeeded" and again[-1]["progress"]["fraction"] == 1.0
    assert all(e["state"] not in ("succeeded", "failed", "cancelled") for e in again[:-1])
    finished = list(events(server, job["id"]))  # a finished job: its final status, then the end
    assert finished == [again[-1]]


# ---- with API keys (the `secured` server: at most 2 jobs queued or running per key) ----------------------


def test_a_job_belongs_to_the_api_key_that_submitted_it(secured: Secured) -> None:
    base = secured.served.url
    alpha, beta = ({"Authorization": f"Bearer {secured.keys[name]}"} for name in ("alpha", "beta"))
    job = submit(base, "generate", headers=alpha, json={**GENERATE, "duration": 2, "steps": 2})
    for path in ("", "/result", "/events"):
        assert httpx.get(f"{base}/jobs/{job['id']}{path}", headers=beta, timeout=30).status_code == 404
        assert httpx.get(f"{base}/jobs/{job['id']}{path}", timeout=30).status_code == 401
    assert httpx.post(f"{base}/jobs/{job['id']}/cancel", headers=beta, timeout=30).status_code == 404
    assert follow(base, job["id"], headers=alpha)[-1]["state"] == "succeeded"
    assert result(base, job["id"], headers=alpha).content[:4] == b"RIFF"


def test_each_api_key_has_its_own_job_cap(secured: Secured) -> None:
    base = secured.served.url
    gamma, beta = ({"X-API-Key": secured.keys[name]} for name in ("gamma", "beta"))
    jobs = [submit(base, "generate", headers=gamma, json={**LONG, "seed": seed}) for seed in (1, 2)]
    refused = httpx.post(f"{base}/jobs/generate", headers=gamma, json=LONG, timeout=30)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "this API key has 2 jobs queued or running; its limit is 2" in refused.json()["error"]
    other = submit(base, "generate", headers=beta, json={**GENERATE, "duration": 2, "steps": 2})  # not gamma's cap
    for job in jobs:
        assert httpx.delete(f"{base}/jobs/{job['id']}", headers=gamma, timeout=30).status_code == 202
    for job in jobs:
        wait_until(base, job["id"], lambda s: s["state"] == "cancelled", headers=gamma)
    assert follow(base, other["id"], headers=beta)[-1]["state"] == "succeeded"


def test_concurrent_submissions_get_exactly_the_keys_cap(secured: Secured) -> None:
    """40 submissions at once with one key (a cap of 2 here): the cap is checked and taken in one step. The key's
    quota (4 in flight, bursts of 4) lets 4 reach the cap; the rest are refused by the quota, also with 429."""
    base, race = secured.served.url, {"X-API-Key": secured.keys["race"]}

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, headers=race, timeout=120) as client:
            return await asyncio.gather(*(client.post("/jobs/generate", json={**LONG, "seed": s}) for s in range(40)))

    answers = asyncio.run(submit_all())
    accepted = [answer.json() for answer in answers if answer.status_code == 202]
    refused = [answer for answer in answers if answer.status_code != 202]
    try:
        assert len(accepted) == 2, [answer.text for answer in refused]
        for answer in refused:
            assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0, answer.text
        capped = [a for a in refused if "this API key has 2 jobs queued or running; its limit is 2" in a.text]
        assert len(capped) == 2, [answer.text for answer in refused]  # past the quota, refused by the cap
    finally:
        for job in accepted:
            httpx.delete(f"{base}/jobs/{job['id']}", headers=race, timeout=30)
    for job in accepted:
        wait_until(base, job["id"], lambda s: s["state"] == "cancelled", headers=race)


# ---- on the restartable server (tests/conftest.py): two job slots, a cap of four, restarts ----------------


def test_cancelled_jobs_stop_and_the_runner_moves_on(restartable: Served) -> None:
    base = restartable.url
    running = [submit(base, "generate", json={**LONG, "seed": seed}) for seed in (1, 2)]
    queued = submit(base, "generate", json={**LONG, "seed": 3})
    for job in running:
        wait_until(base, job["id"], lambda s: s["progress"]["phase"] == "denoising" and s["progress"]["done"] >= 1)
    waiting = status(base, queued["id"])
    assert waiting["state"] == "queued" and waiting["progress"]["queue_position"] == 1
    before = cancelled_jobs(base, stage="running")

    assert httpx.post(f"{base}/jobs/{queued['id']}/cancel", timeout=30).status_code == 202
    for job in running:
        assert httpx.delete(f"{base}/jobs/{job['id']}", timeout=30).status_code == 202
    for job in [queued, *running]:
        final = wait_until(base, job["id"], lambda s: s["state"] != "queued" and s["state"] != "running")
        assert final["state"] == "cancelled"
        gone = httpx.get(f"{base}/jobs/{job['id']}/result", timeout=30)
        assert gone.status_code == 409 and "cancelled" in gone.json()["error"]
    assert status(base, queued["id"])["started_at"] is None  # it never ran
    deadline = time.monotonic() + 60  # the runner counts them when it answers, at its next step boundary
    while cancelled_jobs(base, stage="running") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled_jobs(base, stage="running") == before + 2  # both running jobs left the runner mid-way
    quick = submit(base, "generate", json={**GENERATE, "duration": 2, "steps": 2})
    assert follow(base, quick["id"])[-1]["state"] == "succeeded"


def test_the_job_queue_cap_answers_429_with_retry_after(restartable: Served) -> None:
    base = restartable.url
    jobs = [submit(base, "generate", json={**LONG, "seed": seed}) for seed in range(4)]
    refused = httpx.post(f"{base}/jobs/generate", json=LONG, timeout=30)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["kind"] == "rate_limited" and "4" in refused.json()["error"]
    for job in jobs:
        httpx.post(f"{base}/jobs/{job['id']}/cancel", timeout=30)
    for job in jobs:
        wait_until(base, job["id"], lambda s: s["state"] == "cancelled")


def test_a_crash_loses_no_accepted_job_each_runs_again_to_its_synchronous_answer(restartable: Served) -> None:
    """SIGKILL of the whole server with one job running and three accepted behind it (a generate, a transform and a
    critique with uploads): after the restart all four succeed from their kept requests, each with the answer the
    synchronous route gives for its seed, and a finished job's result is still there."""
    base = restartable.url
    finished = submit(base, "generate", json={**GENERATE, "duration": 2, "steps": 2})
    assert follow(base, finished["id"])[-1]["state"] == "succeeded"
    expected = result(base, finished["id"]).content
    long_enough = {**GENERATE, "steps": 60, "seed": 21}  # seconds on the tiny profile: running when the kill comes
    transform = {"prompt": "the same, on strings", "strength": "0.6", "steps": "4"}  # its seed drawn at submission
    critique = {"preset": "feedback", "seed": "3", "max_new_tokens": "24"}
    sent = [
        ("generate", {"json": long_enough}),
        ("generate", {"json": {**GENERATE, "duration": 2, "steps": 3, "seed": 22}}),
        ("transform", {"data": transform, "files": {"audio": ("take.wav", wav(3.0), "audio/wav")}}),
        ("critique", {"data": critique, "files": {"audio": ("take.wav", wav(4.0, 330.0), "audio/wav")}}),
    ]
    running = submit(base, sent[0][0], **sent[0][1])
    wait_until(base, running["id"], lambda s: s["state"] == "running")
    jobs = [running, *(submit(base, api, **body) for api, body in sent[1:])]

    restartable.kill()
    restartable.start().wait_ready()

    assert result(base, finished["id"]).content == expected
    for job, (api, body) in zip(jobs, sent, strict=True):
        final = follow(base, job["id"])[-1]
        assert final["state"] == "succeeded", final
        answer = result(base, job["id"])
        if api == "transform":  # the seed drawn at submission, kept with the request
            body = {**body, "data": {**body["data"], "seed": str(final["seed"])}}
        synchronous = httpx.post(f"{base}/{api}", timeout=300, **body)
        assert synchronous.status_code == 200, synchronous.text
        if api == "critique":
            assert without_timings(answer.json()) == without_timings(synchronous.json())
        else:
            assert answer.content == synchronous.content
    assert status(base, running["id"])["attempt"] == 2  # it had started: this is its second run


def test_sigterm_drains_within_the_grace_and_a_stopped_job_runs_again_after_the_restart(restartable: Served) -> None:
    """SIGTERM with a job and a long request running: a request sent after it is answered 503 (not left in the
    socket's backlog), the request and the job are stopped when the grace ends and their runner with them, the whole
    server exits long before the work would have finished (minutes), and the job runs again once the server is back."""
    base = restartable.url
    job = submit(base, "generate", json={**LONG, "seed": 11})
    wait_until(base, job["id"], lambda s: s["state"] == "running")
    assert restartable.process is not None
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"{base}/generate", json={**LONG, "seed": 12}, timeout=300)
        time.sleep(0.5)
        os.killpg(restartable.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        late = httpx.post(f"{base}/generate", json=GENERATE, timeout=30)
        assert late.status_code == 503 and late.json()["kind"] == "unavailable", late.text
        restartable.process.wait(timeout=RESTARTABLE_GRACE_S + 30)  # bounded: the work alone would take minutes
        stopped = in_flight.result(timeout=30)
    assert stopped.status_code == 503 and stopped.json()["kind"] == "unavailable", stopped.text

    restartable.start().wait_ready()
    again = status(base, job["id"])  # accepted, so run again (minutes: stopped here)
    assert again["state"] in ("queued", "running") and again["attempt"] == 2, again
    httpx.delete(f"{base}/jobs/{job['id']}", timeout=30)
    assert wait_until(base, job["id"], lambda s: s["state"] == "cancelled")["attempt"] == 2


def test_the_playground_page_is_off_by_its_setting(restartable: Served) -> None:
    assert httpx.get(f"{restartable.url}/ui/", timeout=30).status_code == 404


def test_results_are_files_in_the_data_folder(restartable: Served) -> None:
    """What /result answers is the file the job left in the data folder, and its record is in the SQLite file."""
    folder = Path(restartable.env["AUDIO_STUDIO_JOB_DATA_DIR"])
    job = submit(restartable.url, "generate", json={**GENERATE, "duration": 2, "steps": 2, "seed": 11})
    assert follow(restartable.url, job["id"])[-1]["state"] == "succeeded"
    assert (folder / "results" / job["id"]).read_bytes() == result(restartable.url, job["id"]).content
    with sqlite3.connect(folder / "jobs.sqlite3") as db:
        assert db.execute("SELECT state FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("succeeded",)
