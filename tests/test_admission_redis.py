"""One admission system over two replicas: two fronts with API keys and a Redis of their own, on the `remote`
tree's runners. A key's quota is counted once over both fronts, synchronous requests and job submissions alike;
jobs and synchronous requests share a runner's room; with Redis down a keyed request is refused, never let in."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Remote, Served, keys_file_text, start_side_by_side
from tests.jobs_client import FINAL, submit, wait_until
from tests.redis_server import RedisServer
from tests.test_jobs import LONG

KEY_NAMES = ("shared", "room", "down")
TINY_GENERATE = {"prompt": "a bell", "duration": 1, "steps": 2}


@dataclass(frozen=True)
class Replicas:
    fronts: tuple[Served, Served]
    redis: RedisServer
    keys: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def replicas(remote: Remote, serve_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two fronts with keys (4 requests per minute, bursts of 4) and AudioLDM2 rooms of 2 + 1."""
    folder = tmp_path_factory.mktemp("keyed-replicas")
    redis = RedisServer(folder).start()
    keys = {name: f"{name}-{secrets.token_urlsafe(24)}" for name in KEY_NAMES}
    (folder / "api-keys").write_text(keys_file_text(keys))
    env = {
        **serve_env,
        "AUDIO_STUDIO_AUDIOLDM2_URL": remote.runners["audioldm2"].url,
        "AUDIO_STUDIO_MUSIC_FLAMINGO_URL": remote.runners["music_flamingo"].url,
        "AUDIO_STUDIO_JOB_STORE": redis.url,
        "AUDIO_STUDIO_JOB_DATA_DIR": str(folder / "shared-volume"),
        "AUDIO_STUDIO_API_KEYS_FILE": str(folder / "api-keys"),
        "AUDIO_STUDIO_KEY_MAX_IN_FLIGHT": "4",
        "AUDIO_STUDIO_KEY_RATE_PER_MINUTE": "4",
        "AUDIO_STUDIO_KEY_BURST": "4",
        "AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE": "2",
        "AUDIO_STUDIO_AUDIOLDM2_MAX_QUEUED": "1",
    }
    fronts = (
        Served("service:AudioStudio", env, folder / "a.log"),
        Served("service:AudioStudio", env, folder / "b.log"),
    )
    try:
        start_side_by_side(*fronts)
        yield Replicas(fronts, redis, keys)
    finally:
        for front in fronts:
            front.stop()
        redis.stop()


def test_a_keys_quota_holds_once_over_two_replicas(replicas: Replicas) -> None:
    """4 per minute, bursts of 4: of 12 requests spread over both fronts, half of them job submissions, the first
    4 are admitted and the other 8 get 429 with the seconds until a token is back."""
    headers = replicas.auth("shared")
    answers = []
    for n in range(12):
        front = replicas.fronts[n % 2].url
        route = "/generate" if n % 4 < 2 else "/jobs/generate"
        answers.append(httpx.post(f"{front}{route}", json=TINY_GENERATE, headers=headers, timeout=120))
    statuses = [answer.status_code for answer in answers]
    assert statuses[:4] == [200, 200, 202, 202], [answer.text for answer in answers[:4]]
    assert statuses[4:] == [429] * 8, statuses
    for answer in answers[4:]:
        assert "4 requests per minute" in answer.json()["error"] and 1 <= int(answer.headers["retry-after"]) <= 15
    for job in (answers[2].json(), answers[3].json()):  # submitted on either front, followed on the first
        final = wait_until(replicas.fronts[0].url, job["id"], lambda s: s["state"] in FINAL, headers)
        assert final["state"] == "succeeded", final


def outstanding(replicas: Replicas, front: Served, key: str) -> float:
    metrics = httpx.get(f"{front.url}/metrics", headers=replicas.auth(key), timeout=30).text
    line = next(
        line for line in metrics.splitlines() if line.startswith('audio_studio_runner_outstanding{runner="audioldm2"}')
    )
    return float(line.rsplit(" ", 1)[1])


def test_running_jobs_take_the_runners_room_from_synchronous_requests(replicas: Replicas) -> None:
    """A room of 2 + 1: two running jobs and one slow request fill it, so the next request gets 503 at once; the
    other front's room is its own."""
    front, other = replicas.fronts
    headers = replicas.auth("room")
    jobs = [submit(front.url, "generate", headers=headers, json={**LONG, "seed": seed}) for seed in (1, 2)]
    for job in jobs:
        wait_until(front.url, job["id"], lambda s: s["state"] == "running", headers)
    assert outstanding(replicas, front, "room") == 2

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=front.url, headers=headers, timeout=300) as client:
            slow = asyncio.create_task(client.post("/generate", json={**LONG, "seed": 3}))
            deadline = time.monotonic() + 30
            while outstanding(replicas, front, "room") < 3:
                assert time.monotonic() < deadline, "the slow request was not let in"
                await asyncio.sleep(0.1)
            refused = await client.post("/generate", json=TINY_GENERATE)
            slow.cancel()
            await asyncio.gather(slow, return_exceptions=True)
            return refused

    try:
        refused = asyncio.run(scenario())
        assert refused.status_code == 503, refused.text
        assert "queue is full (3 requests and jobs in flight)" in refused.json()["error"]
        assert outstanding(replicas, other, "room") == 0
    finally:
        for job in jobs:
            httpx.delete(f"{front.url}/jobs/{job['id']}", headers=headers, timeout=30)
    for job in jobs:
        wait_until(front.url, job["id"], lambda s: s["state"] == "cancelled", headers)


def test_with_redis_down_a_keyed_request_is_refused_until_it_returns(replicas: Replicas) -> None:
    """Quotas never fail open: 503 with Retry-After naming the quota store, on both fronts, then service again."""
    headers = replicas.auth("down")
    replicas.redis.stop()
    try:
        for front in replicas.fronts:
            for route in ("/generate", "/jobs/generate"):
                started = time.monotonic()
                answer = httpx.post(f"{front.url}{route}", json=TINY_GENERATE, headers=headers, timeout=60)
                assert answer.status_code == 503, answer.text
                assert answer.json()["kind"] == "unavailable" and "API key quotas" in answer.json()["error"]
                assert int(answer.headers["retry-after"]) >= 1 and time.monotonic() - started < 10
    finally:
        replicas.redis.start()
    deadline = time.monotonic() + 30
    while (
        answer := httpx.post(f"{replicas.fronts[0].url}/generate", json=TINY_GENERATE, headers=headers, timeout=60)
    ).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
