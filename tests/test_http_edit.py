"""POST /edit end to end over HTTP (multipart uploads), tiny profile: inpaint and extend, the edited range in
headers and JSON, bad ranges refused naming their field, and edit jobs (their answer, their cancellation)."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import soundfile

from tests.audio_files import audio_file
from tests.jobs_client import FINAL, result, status, submit, wait_until

TIMEOUT = 120
RATE = 16_000


def edit(server: str, data: bytes, route: str = "/edit", **fields) -> httpx.Response:
    form = {k: str(v) for k, v in {"steps": 4, "prompt": "a snare roll", **fields}.items()}
    return httpx.post(f"{server}{route}", data=form, files={"audio": ("clip.wav", data, "audio/wav")}, timeout=TIMEOUT)


def test_an_inpaint_keeps_the_length_says_its_range_and_a_seed_reproduces_it(server: str) -> None:
    clip = audio_file("wav", 6.0)
    first = edit(server, clip, mode="inpaint", start_s=2, end_s=4, seed=8)
    assert first.status_code == 200, first.text
    assert (first.headers["x-edit-start"], first.headers["x-edit-end"]) == ("2.000000", "4.000000")
    samples, rate = soundfile.read(io.BytesIO(first.content))
    assert rate == RATE and len(samples) == 6 * RATE
    assert edit(server, clip, mode="inpaint", start_s=2, end_s=4, seed=8).content == first.content


@pytest.mark.parametrize(("side", "edited"), [("end", [3.0, 5.5]), ("start", [0.0, 2.5])])
def test_an_extension_adds_its_seconds_at_its_side(server: str, side: str, edited: list[float]) -> None:
    answer = edit(server, audio_file("wav", 3.0), route="/edit/json", mode="extend", seconds=2.5, side=side)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["duration"] == 5.5
    assert [body["edited"][key] for key in ("start_s", "end_s")] == edited and body["edited"]["duration"] == 5.5
    audio = base64.b64decode(body["waveforms"][0]["audio_base64"])
    assert len(soundfile.read(io.BytesIO(audio))[0]) == int(5.5 * RATE)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"mode": "inpaint", "start_s": 1, "end_s": 7}, "end_s", "at most the clip's length, 6.000 s"),
        ({"mode": "inpaint", "start_s": 0, "end_s": 6}, "end_s", "covers the whole clip"),
        ({"mode": "inpaint", "start_s": 3, "end_s": 3}, "end_s", "the range is empty"),
        ({"mode": "inpaint", "end_s": 3}, "start_s", "required with mode=inpaint"),
        ({"mode": "inpaint", "start_s": 1, "end_s": 2, "seconds": 4}, "seconds", "for mode=extend"),
        ({"mode": "extend"}, "seconds", "required with mode=extend"),
        ({"mode": "extend", "seconds": 2, "start_s": 1}, "start_s", "for mode=inpaint"),
        ({"mode": "extend", "seconds": 595}, "seconds", "must be at most 600 s"),
        ({"mode": "extend", "seconds": 2, "side": "middle"}, "side", "'start' or 'end'"),
        ({"mode": "extend", "seconds": 2, "blend_s": 3}, "blend_s", "less than or equal to 2"),
        ({"mode": "extend", "seconds": 2, "repaint_jumps": 5}, "repaint_jumps", "less than or equal to 4"),
        ({"mode": "outpaint", "seconds": 2}, "mode", "'inpaint' or 'extend'"),
        ({"seconds": 2}, "mode", "Field required"),
    ],
)
def test_bad_edits_get_a_400_naming_the_field(server: str, fields: dict, field: str, message: str) -> None:
    response = edit(server, audio_file("wav", 6.0, rate=16_000), **fields)
    assert response.status_code == 400, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == [field] and message in e["msg"] for e in errors), errors


def test_an_edit_job_gives_the_synchronous_answer(server: str) -> None:
    form = {"mode": "extend", "seconds": "1.5", "prompt": "more of it", "seed": "4", "steps": "4"}
    files = {"audio": ("take.wav", audio_file("wav", 2.0), "audio/wav")}
    job = submit(server, "edit", data=form, files=files)
    assert job["kind"] == "edit"
    assert wait_until(server, job["id"], lambda s: s["state"] in FINAL)["state"] == "succeeded"
    synchronous = httpx.post(f"{server}/edit", data=form, files=files, timeout=TIMEOUT)
    assert synchronous.status_code == 200, synchronous.text
    answer = result(server, job["id"])
    assert answer.content == synchronous.content and answer.headers["x-edit-end"] == "3.500000"


def test_a_cancelled_edit_job_stops_at_its_next_step(server: str) -> None:
    form = {"mode": "inpaint", "start_s": "1", "end_s": "3", "prompt": "a long render", "steps": "500"}
    job = submit(server, "edit", data=form, files={"audio": ("take.wav", audio_file("wav", 20.0), "audio/wav")})
    running = wait_until(server, job["id"], lambda s: s["progress"]["phase"] == "denoising" and s["progress"]["done"])
    assert httpx.post(f"{server}/jobs/{job['id']}/cancel", timeout=30).status_code == 202
    cancelled = wait_until(server, job["id"], lambda s: s["state"] in FINAL)
    assert cancelled["state"] == "cancelled"
    assert running["progress"]["total"] == 500 and status(server, job["id"])["progress"]["done"] < 500
