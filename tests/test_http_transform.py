"""POST /transform end to end over HTTP (multipart uploads), tiny profile."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import soundfile

from tests.audio_files import MEDIA_TYPES, audio_file

FAST = {"steps": "4"}
TIMEOUT = 120


def transform(server: str, data: bytes, route: str = "/transform", media_type: str = "audio/wav", **fields):
    form = {k: str(v) for k, v in {**FAST, "prompt": "a jazz drum kit", **fields}.items()}
    files = {"audio": ("clip", data, media_type)}
    return httpx.post(f"{server}{route}", data=form, files=files, timeout=TIMEOUT)


@pytest.mark.parametrize("container", ["wav", "flac", "mp3", "ogg"])
def test_each_upload_format_comes_back_as_16k_audio_of_its_length(server: str, container: str) -> None:
    data = audio_file(container, 2.0)
    response = transform(server, data, media_type=MEDIA_TYPES[container], seed=3)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav" and response.headers["x-profile"] == "tiny"
    samples, rate = soundfile.read(io.BytesIO(response.content))
    expected = len(soundfile.read(io.BytesIO(data))[0]) * 16_000 // 44_100
    assert rate == 16_000 and abs(len(samples) - expected) <= 1


def test_json_form_flac_and_seed_reproduce(server: str) -> None:
    data = audio_file("wav", 1.5)
    first = transform(server, data, route="/transform/json", seed=11, format="flac", strength=0.5)
    again = transform(server, data, route="/transform/json", seed=11, format="flac", strength=0.5)
    other = transform(server, data, route="/transform/json", seed=12, format="flac", strength=0.5)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["format"] == "flac" and body["sample_rate"] == 16_000 and body["duration"] == 1.5
    assert [w["seed"] for w in body["waveforms"]] == [11]
    assert body["provenance"]["profile"] == "tiny" and body["provenance"]["steps"] == 4
    audio = base64.b64decode(body["waveforms"][0]["audio_base64"])
    assert soundfile.info(io.BytesIO(audio)).format == "FLAC"
    assert audio == base64.b64decode(again.json()["waveforms"][0]["audio_base64"])
    assert audio != base64.b64decode(other.json()["waveforms"][0]["audio_base64"])


def test_a_curl_style_upload_without_audio_content_type_is_accepted(server: str) -> None:
    response = transform(server, audio_file("wav", 1.0), media_type="application/octet-stream")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("data", "fields", "status", "field", "message"),
    [
        (audio_file("wav", 601.0, rate=8_000), {}, 400, "audio", "the limit is 600 s"),
        (audio_file("wav", 0.5), {}, 400, "audio", "the minimum is 1 s"),
        (b"", {}, 400, "audio", "empty"),
        (b"GIF89a" + bytes(500), {}, 415, "audio", "not a readable audio file"),
        (audio_file("wav", 1.0), {"strength": 1.5}, 400, "strength", "less than or equal to 1"),
        (audio_file("wav", 1.0), {"strength": -0.1}, 400, "strength", "greater than or equal to 0"),
        (audio_file("wav", 1.0), {"prompt": ""}, 400, "prompt", "at least 1 character"),
        (audio_file("wav", 1.0), {"steps": 0}, 400, "steps", "greater than or equal to 1"),
        (audio_file("wav", 1.0), {"scheduler": "euler"}, 400, "scheduler", "'dpmpp' or 'ddim'"),
        (audio_file("wav", 1.0), {"format": "ogg"}, 400, "format", "'wav', 'flac', 'mp3' or 'opus'"),
    ],
)
def test_bad_input_gets_4xx_naming_the_field(server: str, data, fields, status, field, message) -> None:
    response = transform(server, data, **fields)
    assert response.status_code == status, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == [field] and message in e["msg"] for e in errors), errors


def test_missing_audio_is_a_400_and_the_service_keeps_serving(server: str) -> None:
    response = httpx.post(f"{server}/transform", data={"prompt": "x"}, files={"other": ("f", b"1")}, timeout=TIMEOUT)
    assert response.status_code == 400
    assert any(e["loc"] == ["audio"] for e in response.json()["detail"])
    assert transform(server, audio_file("ogg", 1.0)).status_code == 200
