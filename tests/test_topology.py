"""Distributed topology: each runner in its own process, the front reaching them by URL (as pods on Kubernetes):
the `remote` tree (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.audio_files import audio_file
from tests.conftest import Remote, Served

TIMEOUT = 120


@pytest.fixture
def topology(remote: Remote) -> dict[str, Served]:
    return {**remote.runners, "front": remote.fronts[0]}


def generate(front: Served) -> httpx.Response:
    body = {"prompt": "rain", "duration": 1, "steps": 2, "seed": 1}
    return httpx.post(f"{front.url}/generate", json=body, timeout=TIMEOUT)


def test_every_api_through_runners_in_their_own_processes(topology: dict[str, Served]) -> None:
    front = topology["front"]
    assert generate(front).status_code == 200
    transform = httpx.post(
        f"{front.url}/transform",
        data={"prompt": "jazz drums", "steps": "2"},
        files={"audio": ("clip.wav", audio_file("wav", 1.0), "audio/wav")},
        timeout=TIMEOUT,
    )
    assert transform.status_code == 200, transform.text
    critique = httpx.post(
        f"{front.url}/critique",
        data={"preset": "key", "max_new_tokens": "4"},
        files={"audio": ("clip.wav", audio_file("wav", 1.0), "audio/wav")},
        timeout=TIMEOUT,
    )
    assert critique.status_code == 200, critique.text
    # The front process started no runner of its own; each runner says which weights it runs.
    assert "audioldm2-runner" not in Path(front.log_path).read_text()
    for name, label in (("audioldm2", "AudioLDM2"), ("music_flamingo", "Music Flamingo")):
        log = Path(topology[name].log_path).read_text()
        assert f"{label} runner: profile=tiny" in log and "RANDOM WEIGHTS" in log


def test_a_stopped_runner_gives_503_and_the_front_recovers(topology: dict[str, Served]) -> None:
    front, runner = topology["front"], topology["audioldm2"]
    runner.stop()
    down = generate(front)
    assert down.status_code == 503, down.text
    assert "audioldm2 runner is unavailable" in down.json()["error"] and down.headers["retry-after"]
    other = httpx.post(f"{front.url}/critique", data={"prompt": "hello", "max_new_tokens": "2"}, timeout=TIMEOUT)
    assert other.status_code == 200, other.text  # the other runner still serves
    runner.start().wait_ready()
    assert generate(front).status_code == 200


def test_critic_ranking_needs_music_flamingo_and_plain_generation_does_not(topology: dict[str, Served]) -> None:
    front, runner = topology["front"], topology["music_flamingo"]
    body = {"prompt": "rain", "duration": 1, "steps": 2, "seed": 1, "num_waveforms": 2, "rank_by": "critic"}
    assert httpx.post(f"{front.url}/generate/json", json=body, timeout=TIMEOUT).status_code == 200
    runner.stop()
    down = httpx.post(f"{front.url}/generate/json", json=body, timeout=TIMEOUT)
    assert down.status_code == 503, down.text
    assert "music-flamingo runner is unavailable" in down.json()["error"] and down.headers["retry-after"]
    plain = httpx.post(f"{front.url}/generate/json", json={**body, "rank_by": "clap"}, timeout=TIMEOUT)
    assert plain.status_code == 200, plain.text
    assert [w["critic_score"] for w in plain.json()["waveforms"]] == [None, None]
    runner.start().wait_ready()
    assert httpx.post(f"{front.url}/generate/json", json=body, timeout=TIMEOUT).status_code == 200
