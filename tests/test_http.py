"""End to end over HTTP: a real `bentoml serve` (front + AudioLDM2 runner) on 127.0.0.1, tiny profile."""

from __future__ import annotations

import base64
import io
import re
import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import soundfile

from registry import FAMILIES
from tests.conftest import CORS_ORIGIN

FAST = {"steps": 3}
TIMEOUT = 120


def post(server: str, route: str, body: object) -> httpx.Response:
    return httpx.post(f"{server}{route}", json=body, timeout=TIMEOUT)


def read_audio(data: bytes) -> tuple[object, int, str]:
    samples, rate = soundfile.read(io.BytesIO(data))
    info = soundfile.info(io.BytesIO(data))
    return samples, rate, info.format


def test_generate_returns_a_wav_of_the_requested_length(server: str) -> None:
    response = post(server, "/generate", {"prompt": "rain on a tin roof", "duration": 2.5, "seed": 1, **FAST})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    samples, rate, container = read_audio(response.content)
    assert (rate, container, samples.ndim, len(samples)) == (16_000, "WAV", 1, 40_000)
    assert samples.std() > 0  # audible, even with random weights
    assert response.headers["x-seed"] == "1" and response.headers["x-profile"] == "tiny"


def test_generate_flac(server: str) -> None:
    response = post(server, "/generate", {"prompt": "birds", "duration": 1, "format": "flac", **FAST})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/flac"
    samples, rate, container = read_audio(response.content)
    assert (rate, container, len(samples)) == (16_000, "FLAC", 16_000)


def test_json_form_carries_every_waveform_ranked_with_provenance(server: str) -> None:
    body = {"prompt": "a dog barking", "duration": 1, "num_waveforms": 3, "seed": 40, **FAST}
    response = post(server, "/generate/json", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["sample_rate"] == 16_000 and data["duration"] == 1 and data["format"] == "wav"
    assert sorted(w["seed"] for w in data["waveforms"]) == [40, 41, 42]
    scores = [w["clap_score"] for w in data["waveforms"]]
    assert scores == sorted(scores, reverse=True)
    for waveform in data["waveforms"]:
        samples, rate, _ = read_audio(base64.b64decode(waveform["audio_base64"]))
        assert (rate, len(samples)) == (16_000, 16_000)
    assert data["provenance"] == {
        "model_id": "audio-studio/tiny-audioldm2",
        "profile": "tiny",
        "scheduler": "dpmpp",
        "steps": 3,
    }
    assert data["timings"]["total_s"] >= data["timings"]["inference_s"] > 0
    # The file form returns the best-ranked waveform.
    best = post(server, "/generate", body)
    assert best.headers["x-seed"] == str(data["waveforms"][0]["seed"])
    assert best.content == base64.b64decode(data["waveforms"][0]["audio_base64"])


def test_seeds_reproduce(server: str) -> None:
    body = {"prompt": "techno", "duration": 1, "seed": 1234, **FAST}
    first, again = post(server, "/generate", body), post(server, "/generate", body)
    other = post(server, "/generate", {**body, "seed": 1235})
    assert first.content == again.content
    assert first.content != other.content
    drawn = post(server, "/generate", {"prompt": "techno", "duration": 1, **FAST})
    replay = post(
        server, "/generate", {"prompt": "techno", "duration": 1, "seed": int(drawn.headers["x-seed"]), **FAST}
    )
    assert drawn.content == replay.content


def test_concurrent_requests_are_batched_and_match_their_solo_results(server: str) -> None:
    bodies = [
        {"prompt": f"sound {i}", "duration": [1, 2, 3][i % 3], "seed": 100 + i, "guidance_scale": 2 + i, **FAST}
        for i in range(8)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda b: post(server, "/generate/json", b), bodies))
    assert [r.status_code for r in concurrent] == [200] * 8
    for body, response in zip(bodies, concurrent, strict=True):
        samples, _, _ = read_audio(base64.b64decode(response.json()["waveforms"][0]["audio_base64"]))
        assert len(samples) == body["duration"] * 16_000
    # Jobs of one length share UNet passes on the runner's step scheduler, whatever batches BentoML's intake
    # formed (it hands each batch on at once; jobs join at the next step): group_size = most jobs in one pass.
    assert max(r.json()["timings"]["group_size"] for r in concurrent) > 1
    # Batch invariance over HTTP: each request alone gives the same audio it got in the batch.
    for body, response in zip(bodies, concurrent, strict=True):
        solo = post(server, "/generate/json", body).json()
        assert solo["waveforms"][0]["audio_base64"] == response.json()["waveforms"][0]["audio_base64"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"duration": 2}, "prompt", "Field required"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "   "}, "prompt", "not only whitespace"),
        ({"prompt": "x" * 1001}, "prompt", "at most 1000 characters"),
        ({"prompt": "x", "negative_prompt": "y" * 1001}, "negative_prompt", "at most 1000 characters"),
        ({"prompt": "x", "duration": 0.5}, "duration", "greater than or equal to 1"),
        ({"prompt": "x", "duration": 601}, "duration", "less than or equal to 600"),
        ({"prompt": "x", "steps": 0}, "steps", "greater than or equal to 1"),
        ({"prompt": "x", "steps": 501}, "steps", "less than or equal to 500"),
        ({"prompt": "x", "scheduler": "euler"}, "scheduler", "'dpmpp' or 'ddim'"),
        ({"prompt": "x", "guidance_scale": -1}, "guidance_scale", "greater than or equal to 0"),
        ({"prompt": "x", "guidance_scale": 21}, "guidance_scale", "less than or equal to 20"),
        ({"prompt": "x", "num_waveforms": 5}, "num_waveforms", "less than or equal to 4"),
        ({"prompt": "x", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompt": "x", "seed": 2**53}, "seed", "less than or equal to 9007199254740991"),
        ({"prompt": "x", "format": "ogg"}, "format", "'wav', 'flac', 'mp3' or 'opus'"),
        ({"prompt": "x", "durration": 3}, "durration", "Extra inputs are not permitted"),
        ({"prompt": "x", "duration": "long"}, "duration", "valid number"),
    ],
)
@pytest.mark.parametrize("route", ["/generate", "/generate/json"])
def test_bad_input_gets_400_naming_the_field_and_limit(
    server: str, route: str, body: dict, field: str, message: str
) -> None:
    response = post(server, route, body)
    assert response.status_code == 400, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == [field] and message in e["msg"] for e in errors), errors


def test_malformed_json_gets_400_and_the_service_keeps_serving(server: str) -> None:
    response = httpx.post(f"{server}/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert post(server, "/generate", {"prompt": "still here", "duration": 1, **FAST}).status_code == 200


def test_health_and_metrics(server: str) -> None:
    assert httpx.get(f"{server}/livez").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    assert "bentoml_service_adaptive_batch_size_bucket" in httpx.get(f"{server}/metrics").text


def test_openapi_documents_every_knob_with_default_and_bounds(server: str) -> None:
    spec = httpx.get(f"{server}/docs.json").json()
    assert {"/generate", "/generate/json"} <= set(spec["paths"])
    schema = next(v for k, v in spec["components"]["schemas"].items() if k.startswith("GenerateRequest"))
    properties = schema["properties"]
    for name in ("negative_prompt", "duration", "steps", "scheduler", "guidance_scale", "num_waveforms", "seed"):
        assert "description" in properties[name] and "default" in properties[name], name
    assert (properties["duration"]["minimum"], properties["duration"]["maximum"]) == (1, 600)
    assert (properties["steps"]["minimum"], properties["steps"]["maximum"]) == (1, 500)
    assert properties["prompt"]["maxLength"] == 1000 and schema["required"] == ["prompt"]


def test_a_page_on_an_allowed_origin_can_read_every_header_the_file_routes_send(server: str) -> None:
    response = httpx.post(
        f"{server}/generate",
        json={"prompt": "a bell", "duration": 1, "steps": 2},
        headers={"Origin": CORS_ORIGIN},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == CORS_ORIGIN
    sent = {name for name in response.headers if name.startswith("x-") or name == "content-disposition"}
    assert {"x-seed", "x-sample-rate", "content-disposition"} <= sent
    assert sent <= exposed(response), sent - exposed(response)


def exposed(response: httpx.Response) -> set[str]:
    return {name.strip().lower() for name in response.headers.get("access-control-expose-headers", "").split(",")}


def test_a_page_on_an_allowed_origin_can_submit_read_the_location_and_cancel_a_job(server: str) -> None:
    origin = {"Origin": CORS_ORIGIN}
    preflight = httpx.options(
        f"{server}/jobs/0123abcd",
        headers={
            **origin,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization, content-type, traceparent",
        },
        timeout=TIMEOUT,
    )
    assert preflight.status_code == 200, preflight.text
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    long_job = {"prompt": "a bell", "duration": 60, "steps": 50}  # still running when cancelled
    submitted = httpx.post(f"{server}/jobs/generate", json=long_job, headers=origin, timeout=TIMEOUT)
    assert submitted.status_code == 202 and submitted.headers["access-control-allow-origin"] == CORS_ORIGIN
    readable = {"location", "retry-after", "content-disposition", "www-authenticate"}
    sent = {name for name in submitted.headers if name.startswith("x-") or name in readable}
    assert "location" in sent and sent <= exposed(submitted), sent - exposed(submitted)
    cancelled = httpx.delete(f"{server}{submitted.headers['location']}", headers=origin, timeout=TIMEOUT)
    assert cancelled.status_code == 202 and cancelled.headers["access-control-allow-origin"] == CORS_ORIGIN


def request_series(server: str) -> set[str]:
    """The front's request series on /metrics: one line per label set."""
    text = httpx.get(f"{server}/metrics", timeout=TIMEOUT).text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if "endpoint=" in line and not line.startswith("#")}


def test_random_paths_and_job_ids_add_no_metric_series(server: str) -> None:
    """BentoML labels its request metrics by route template (`/jobs/{job_id}`) and every unknown path as one."""

    def visit(count: int) -> None:
        for _ in range(count):
            assert httpx.get(f"{server}/{secrets.token_hex(8)}", timeout=TIMEOUT).status_code == 404
            assert httpx.get(f"{server}/jobs/{secrets.token_hex(16)}", timeout=TIMEOUT).status_code == 404
            assert httpx.get(f"{server}/ui/{secrets.token_hex(4)}.js", timeout=TIMEOUT).status_code == 404

    visit(1)  # each kind of answer has its series now
    before = request_series(server)
    assert any('endpoint="/jobs/{job_id}"' in series for series in before)
    assert any('endpoint="unmatched"' in series for series in before)
    visit(50)
    assert request_series(server) == before


def test_each_runner_has_one_label_on_every_metric(server: str) -> None:
    """Every runner did work (a generate on each model, a critique), so each labels its batch, cancel and room
    metrics."""
    assert post(server, "/generate", {"prompt": "a bell", "duration": 1, "steps": 2}).status_code == 200
    assert (
        post(server, "/generate", {"prompt": "a bell", "duration": 1, "steps": 2, "model": "audioldm"}).status_code
        == 200
    )
    critique = httpx.post(f"{server}/critique", data={"prompt": "what key?", "max_new_tokens": "8"}, timeout=TIMEOUT)
    assert critique.status_code == 200, critique.text
    labels = set(re.findall(r'\brunner="([^"]+)"', httpx.get(f"{server}/metrics", timeout=TIMEOUT).text))
    assert labels == {family.name for family in FAMILIES}
