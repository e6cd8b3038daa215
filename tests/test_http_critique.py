"""POST /critique end to end over HTTP (multipart uploads), tiny Music Flamingo."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile

from tests.audio_files import MEDIA_TYPES, audio_file
from tests.conftest import Served
from tests.metrics import batch_counts

TIMEOUT = 300
FAST = {"max_new_tokens": "8"}


def critique(server: str, audio: bytes | None = None, reference: bytes | None = None, **fields) -> httpx.Response:
    form = {k: str(v) for k, v in {**FAST, **fields}.items()}
    files = {}
    if audio is not None:
        files["audio"] = ("performance", audio, "audio/wav")
    if reference is not None:
        files["reference"] = ("reference", reference, "audio/wav")
    return httpx.post(f"{server}/critique", data=form, files=files or None, timeout=TIMEOUT)


def silence_flac(seconds: float, rate: int = 8_000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), dtype=np.int16), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize("container", ["wav", "flac", "mp3", "ogg"])
def test_each_format_gets_a_critique(server: str, container: str) -> None:
    data = audio_file(container, 3.0)
    response = httpx.post(
        f"{server}/critique",
        data={**FAST, "preset": "feedback"},
        files={"audio": ("clip", data, MEDIA_TYPES[container])},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["text"], str) and 1 <= body["tokens_generated"] <= 8
    assert body["preset"] == "feedback" and body["truncated"] is False
    [clip] = body["audio_seconds"]
    assert clip["field"] == "audio" and abs(clip["seconds"] - 3.0) < 0.1
    assert body["model"]["profile"] == "tiny" and "music-flamingo" in body["model"]["model_id"]


def test_reference_comparison(server: str) -> None:
    response = critique(server, audio_file("wav", 2.0, hz=220), audio_file("flac", 3.0, hz=330), preset="compare")
    assert response.status_code == 200, response.text
    assert [c["field"] for c in response.json()["audio_seconds"]] == ["audio", "reference"]


def test_text_only_and_audio_only(server: str) -> None:
    text_only = critique(server, prompt="What makes a good vibrato?")
    assert text_only.status_code == 200, text_only.text
    assert text_only.json()["audio_seconds"] == []
    audio_only = critique(server, audio_file("wav", 2.0))
    assert audio_only.status_code == 200, audio_only.text


def test_greedy_is_deterministic_and_sampling_follows_the_seed(server: str) -> None:
    clip = audio_file("wav", 2.0)
    assert critique(server, clip, preset="key").json()["text"] == critique(server, clip, preset="key").json()["text"]
    sampled = [critique(server, clip, do_sample="true", seed=5, temperature=1.5).json() for _ in range(2)]
    assert sampled[0]["text"] == sampled[1]["text"] and sampled[0]["seed"] == 5


def test_clip_over_the_checkpoint_limit_is_truncated_and_says_so(server: str) -> None:
    response = critique(server, silence_flac(601), prompt="describe", max_new_tokens="2")
    assert response.status_code == 200, response.text
    body = response.json()
    [clip] = body["audio_seconds"]
    assert body["truncated"] is True and clip["truncated"] is True
    assert clip["seconds"] == 600 and abs(clip["source_seconds"] - 601) < 1e-6


def test_concurrent_mixed_requests_batch_and_match_one_by_one(server: str) -> None:
    requests = [
        {"audio": audio_file("wav", 1.0 + i, hz=200 + 50 * i), "preset": ["describe", "key", "tempo", "caption"][i % 4]}
        for i in range(6)
    ] + [{"prompt": "Name three jazz standards."}, {"audio": audio_file("ogg", 2.0), "prompt": "Is this in tune?"}]
    before = batch_counts(server, "critique")
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda r: critique(server, **r), requests))
    after = batch_counts(server, "critique")
    assert [r.status_code for r in concurrent] == [200] * 8, [r.text for r in concurrent]
    batches, single = after[0] - before[0], after[1] - before[1]
    assert batches - single >= 1, f"no critique batch larger than 1 among {batches:.0f}"
    for request, response in zip(requests, concurrent, strict=True):
        assert critique(server, **request).json()["text"] == response.json()["text"]


@pytest.mark.parametrize(
    ("kwargs", "status", "field", "message"),
    [
        ({}, 400, "prompt", "send audio, a prompt, or both"),
        ({"preset": "describe"}, 400, "audio", "needs an audio upload"),
        ({"audio": "wav", "preset": "compare"}, 400, "reference", "needs a reference"),
        ({"reference": "wav", "prompt": "x"}, 400, "reference", "needs `audio`"),
        ({"audio": b""}, 400, "audio", "empty"),
        ({"audio": b"%PDF-1.7 not audio" * 20}, 415, "audio", "not a readable audio file"),
        ({"audio": "wav", "max_new_tokens": 0}, 400, "max_new_tokens", "greater than or equal to 1"),
        ({"audio": "wav", "max_new_tokens": 2049}, 400, "max_new_tokens", "less than or equal to 2048"),
        ({"audio": "wav", "temperature": 0}, 400, "temperature", "greater than or equal to 0.01"),
        ({"do_sample": "true", "prompt": "x", "temperature": 1e-40}, 400, "temperature", "0.01"),
        ({"audio": "wav", "top_p": 1.5}, 400, "top_p", "less than or equal to 1"),
        ({"audio": "wav", "preset": "sing"}, 400, "preset", "'describe'"),
        ({"audio": "wav", "prompt": "x" * 20_001}, 400, "prompt", "at most 20000 characters"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(server: str, kwargs: dict, status: int, field: str, message: str):
    files = {k: audio_file("wav", 1.0) if v == "wav" else v for k, v in kwargs.items() if k in ("audio", "reference")}
    fields = {k: v for k, v in kwargs.items() if k not in ("audio", "reference")}
    response = critique(server, **files, **fields)
    assert response.status_code == status, response.text
    assert any(e["loc"] == [field] and message in e["msg"] for e in response.json()["detail"]), response.text


def test_oversize_inputs_get_4xx_and_the_service_keeps_serving(server: str) -> None:
    too_long = critique(server, silence_flac(11 * 60), silence_flac(10 * 60), preset="compare")
    assert too_long.status_code == 400, too_long.text
    assert "the limit is 1200 s" in too_long.json()["detail"][0]["msg"]
    too_many_tokens = critique(server, silence_flac(600), silence_flac(590), preset="compare")
    assert too_many_tokens.status_code == 400, too_many_tokens.text
    [error] = too_many_tokens.json()["detail"]
    assert error["loc"] == ["prompt"] and "the limit is 24000" in error["msg"]
    assert critique(server, audio_file("wav", 1.0)).status_code == 200


def test_no_call_is_cut_or_resent_when_bentoml_recycles_its_runner_connections(shared_server: Served) -> None:
    """BentoML's front->runner client replaces its session every 100 calls; it used to close the old one under the
    calls in flight, which the front then sent again from zero. Now (compat/bentoml_session_refresh.py) no call is
    cut: all 240 succeed and none was sent twice."""
    server, log_before = shared_server.url, shared_server.log_path.stat().st_size
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: critique(server, prompt=f"question {i}", max_new_tokens="1"), range(240)))
    assert [r.status_code for r in responses] == [200] * 240, {r.text for r in responses if r.status_code != 200}
    with shared_server.log_path.open("rb") as log:
        log.seek(log_before)
        assert b"sending the request again" not in log.read()
