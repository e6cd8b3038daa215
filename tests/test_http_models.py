"""The model families over HTTP: GET /models, `model` on /generate and /transform, and AudioLDM (v1) served by
its own runner next to AudioLDM2 (the shared tiny-profile server runs every family)."""

from __future__ import annotations

import io

import httpx
import soundfile

from tests.jobs_client import follow, result, submit

TIMEOUT = 120
V1 = {"prompt": "a dog barking", "duration": 2, "steps": 3, "seed": 21, "model": "audioldm"}


def test_models_lists_every_family_the_deployment_runs(server: str) -> None:
    listed = {family["name"]: family for family in httpx.get(f"{server}/models", timeout=30).json()["models"]}
    assert set(listed) == {"audioldm2", "audioldm", "music-flamingo"}
    assert [name for name, family in listed.items() if family["default"]] == ["audioldm2"]
    v1 = listed["audioldm"]
    assert v1["features"] == ["generate"] and v1["max_seconds"] == 30 and v1["profile"] == "tiny"
    assert v1["checkpoint"] == "cvssp/audioldm-s-full-v2" and "cvssp/audioldm-l-full" in v1["checkpoints"]
    assert "transform" in listed["audioldm2"]["features"] and listed["audioldm2"]["max_seconds"] == 600


def test_audioldm_v1_generates_on_its_own_runner_and_a_seed_gives_the_same_bytes(server: str) -> None:
    first = httpx.post(f"{server}/generate", json=V1, timeout=TIMEOUT)
    assert first.status_code == 200, first.text
    assert first.headers["x-model-id"] == "audio-studio/tiny-audioldm" and first.headers["x-seed"] == "21"
    audio, rate = soundfile.read(io.BytesIO(first.content))
    assert rate == 16_000 and audio.shape == (32_000,)
    assert httpx.post(f"{server}/generate", json=V1, timeout=TIMEOUT).content == first.content
    audioldm2 = httpx.post(f"{server}/generate", json={**V1, "model": "audioldm2"}, timeout=TIMEOUT)
    assert audioldm2.headers["x-model-id"] == "audio-studio/tiny-audioldm2" and audioldm2.content != first.content


def test_audioldm_v1_as_a_job_gives_the_synchronous_answer(server: str) -> None:
    job = submit(server, "generate", json=V1)
    assert follow(server, job["id"])[-1]["state"] == "succeeded"
    assert result(server, job["id"]).content == httpx.post(f"{server}/generate", json=V1, timeout=TIMEOUT).content


def test_what_a_family_cannot_do_is_a_400_naming_the_field_and_the_limit(server: str) -> None:
    too_long = httpx.post(f"{server}/generate", json={**V1, "duration": 31}, timeout=30)
    assert too_long.status_code == 400 and too_long.json()["detail"][0]["loc"][-1] == "duration"
    assert "at most 30 s" in too_long.json()["error"]
    wav = io.BytesIO()
    soundfile.write(wav, [0.0] * 32_000, 16_000, format="WAV")
    transform = httpx.post(
        f"{server}/transform",
        data={"prompt": "strings", "model": "audioldm"},
        files={"audio": ("a.wav", wav.getvalue(), "audio/wav")},
        timeout=30,
    )
    assert transform.status_code == 400 and transform.json()["detail"][0]["loc"][-1] == "model"
    assert "does not support transform; choices: audioldm2" in transform.json()["error"]
    unknown = httpx.post(f"{server}/generate", json={**V1, "model": "musicgen"}, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["detail"][0]["loc"][-1] == "model"
