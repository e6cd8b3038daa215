"""Faults around a real `bentoml serve` that tests may break (the `restartable` server, tiny profile): clients
that leave, runners killed or frozen, shutdown with work in flight, and servers sharing a BentoML home."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from front.edge import READINESS_TIMEOUT_S
from tests.conftest import RESTARTABLE_GRACE_S, Served
from tests.metrics import cancelled_jobs

TIMEOUT = 120
LONG = {"prompt": "a long render", "duration": 30, "steps": 60, "scheduler": "ddim"}
SHORT = {"prompt": "short", "duration": 1, "steps": 2}


def workers(restartable: Served) -> dict[str, psutil.Process]:
    """The server's worker processes by service name (front `audio-studio`, and each runner)."""
    assert restartable.process is not None
    found = {}
    for child in psutil.Process(restartable.process.pid).children(recursive=True):
        match = re.search(r"--service-name (\S+)", " ".join(child.cmdline()))
        if match:
            found[match.group(1)] = child
    return found


def test_a_client_that_disconnects_has_its_work_dropped(restartable: Served) -> None:
    before = cancelled_jobs(restartable.url)
    for seed in (1, 2, 3):  # each would take the model for many seconds
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{restartable.url}/generate", json={**LONG, "seed": seed}, timeout=0.5)
    deadline = time.monotonic() + 60
    while cancelled_jobs(restartable.url) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cancelled_jobs(restartable.url) == before + 3  # dropped while queued or stopped mid-denoising
    assert httpx.post(f"{restartable.url}/generate", json=SHORT, timeout=TIMEOUT).status_code == 200


def test_critiques_whose_client_left_are_dropped_too(restartable: Served) -> None:
    before = cancelled_jobs(restartable.url)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{restartable.url}/critique", data={"prompt": "x", "max_new_tokens": "2048"}, timeout=0.3)
    deadline = time.monotonic() + 60
    while cancelled_jobs(restartable.url) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cancelled_jobs(restartable.url) == before + 1


def test_a_bad_request_logs_one_line(restartable: Served) -> None:
    marker = "duration-999-marker"
    response = httpx.post(f"{restartable.url}/generate", json={"prompt": marker, "duration": 999}, timeout=TIMEOUT)
    assert response.status_code == 400
    time.sleep(0.5)
    log = restartable.log_tail()
    assert "POST /generate: invalid request (duration)" in log
    assert "Traceback" not in log and "[ERROR]" not in log


def test_a_runner_killed_under_load_costs_retries_or_503s_never_500s(restartable: Served) -> None:
    runner = workers(restartable)["audioldm2-runner"]

    def generate(seed: int) -> httpx.Response:
        return httpx.post(f"{restartable.url}/generate", json={**SHORT, "steps": 8, "seed": seed}, timeout=TIMEOUT)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(generate, seed) for seed in range(16)]
        time.sleep(1.0)
        killed_at = time.monotonic()
        runner.kill()
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, [r.text for r in responses if r.status_code not in (200, 503)]
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
    while generate(99).status_code != 200:
        assert time.monotonic() - killed_at < 120, "the runner did not come back"
        time.sleep(0.5)
    print(f"runner killed under load: statuses {statuses}; recovered in {time.monotonic() - killed_at:.1f} s")


def test_separate_servers_keep_separate_metrics(restartable: Served, server: str) -> None:
    """Both servers share one BENTOML_HOME; each counts only its own requests."""

    def critiques(url: str) -> float:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        pattern = r'^bentoml_service_request_total\{[^}]*endpoint="/critique"[^}]*\} (\S+)'
        return sum(float(v) for v in re.findall(pattern, metrics, re.M))

    before = critiques(server)
    for _ in range(3):
        httpx.post(f"{restartable.url}/critique", data={"prompt": "x", "max_new_tokens": "1"}, timeout=TIMEOUT)
    assert critiques(restartable.url) >= 3
    assert critiques(server) == before


def test_a_frozen_runner_fails_readiness_in_bounded_time_and_shutdown_completes(restartable: Served) -> None:
    """Late in this module: it ends the front worker, which BentoML respawns."""
    found = workers(restartable)
    runner, front = found["music-flamingo-runner"], found["audio-studio"]
    runner.suspend()
    try:
        started = time.monotonic()
        ready = httpx.get(f"{restartable.url}/readyz", timeout=READINESS_TIMEOUT_S + 10)
        assert ready.status_code == 503 and "readiness" in ready.text
        print(f"/readyz with a frozen runner: 503 in {time.monotonic() - started:.2f} s")
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(
                httpx.post, f"{restartable.url}/critique", data={"prompt": "x", "max_new_tokens": "2"}, timeout=TIMEOUT
            )
            time.sleep(1.0)
            assert not stuck.done()
            terminated = time.monotonic()
            os.kill(front.pid, signal.SIGTERM)
            front.wait(timeout=RESTARTABLE_GRACE_S + 20)
            exited = time.monotonic() - terminated
            print(f"front worker exited {exited:.1f} s after SIGTERM (grace {RESTARTABLE_GRACE_S} s)")
            answer = stuck.result(timeout=30)
        assert answer.status_code == 503 and answer.json()["kind"] == "unavailable" and answer.headers["retry-after"]
    finally:
        runner.resume()
    restartable.wait_ready()  # BentoML respawns the front; the next tests on this server wait for it to serve


def test_every_log_line_is_free_of_upload_paths(restartable: Served) -> None:
    assert not re.search(r"bentoml-request-\S*upload", Path(restartable.log_path).read_text())
