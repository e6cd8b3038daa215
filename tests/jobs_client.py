"""A small client of the job API for the tests: submit, follow, read events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}
TIMEOUT_S = 300


def submit(base: str, api: str, headers: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    response = httpx.post(f"{base}/jobs/{api}", headers=headers, timeout=60, **kwargs)
    assert response.status_code == 202, response.text
    status = response.json()
    assert response.headers["location"] == status["links"]["status"] == f"/jobs/{status['id']}"
    return status


def status(base: str, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{base}/jobs/{job_id}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def follow(base: str, job_id: str, headers: dict[str, str] | None = None, every_s: float = 0.1) -> list[dict[str, Any]]:
    """Every distinct status from now until the final one."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        current = status(base, job_id, headers)
        if not seen or current != seen[-1]:
            seen.append(current)
        if current["state"] in FINAL:
            return seen
        time.sleep(every_s)
    raise AssertionError(f"job {job_id} not final in {TIMEOUT_S} s: {seen[-1]}")


def wait_until(base: str, job_id: str, done: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        current = status(base, job_id, headers)
        if done(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"job {job_id}: condition not met in {TIMEOUT_S} s: {current}")


def events(base: str, job_id: str, stop_after: int | None = None) -> Iterator[dict[str, Any]]:
    """The `status` events of the job's SSE stream (all of them, or the first `stop_after`)."""
    received = 0
    with httpx.stream("GET", f"{base}/jobs/{job_id}/events", timeout=TIMEOUT_S) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "status":
                yield json.loads(line.removeprefix("data: "))
                received += 1
                if stop_after is not None and received >= stop_after:
                    return


def result(base: str, job_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.get(f"{base}/jobs/{job_id}/result", headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


def assert_progress_moves_forward(statuses: list[dict[str, Any]]) -> None:
    order = {"queued": 0, "running": 1, "succeeded": 2}
    states = [s["state"] for s in statuses]
    assert states[-1] == "succeeded", statuses[-1]
    assert [order[s] for s in states] == sorted(order[s] for s in states), states
    fractions = [s["progress"]["fraction"] for s in statuses]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
